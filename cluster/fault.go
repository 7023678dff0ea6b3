package cluster

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// faultEnv names the environment variable through which a process test
// asks a node for a fault at a step no signal can hit in time. It is for
// tests only: unset (always, in production) it costs a nil check.
//
//	stall-inbound=CLIENT@NODE  on node NODE, the QoS 2 packet ids of
//	                      CLIENT (OpInboundPut) are kept in the node's own
//	                      store but never replicated: a Wait for them
//	                      times out, as if the node died before its
//	                      partition stream took them
//	read-late=CLIENT@NODE  on NODE, reading CLIENT's session from its
//	                      partition stream (a claim whose previous owner
//	                      did not answer) fails until the node has held
//	                      messages for a dead node (orphan interest) and
//	                      stopped again, as when the stream elects a
//	                      leader for that long
//	delay-release=CLIENT@NODE  on node NODE, a claim of CLIENT waits
//	                      releaseDelay between writing the owner record and
//	                      asking the previous owner to let go, as a slow
//	                      route would: the previous owner's watcher sees
//	                      the record and fences the session first
//
// Every node of a test inherits the variable; each takes the faults that
// name it.
const faultEnv = "ROOST_TEST_FAULT"

// faults are the injected faults (see faultEnv); nil for none.
type faults struct {
	stallInbound string
	readLate     string
	orphansSeen  atomic.Bool // read-late: orphan interest was kept once
	delayRelease string
}

// releaseDelay is how long delay-release holds a release request: past
// fenceGrace, after which a fenced session has ended on its node.
const releaseDelay = fenceGrace + time.Second

// parseFaults reads faultEnv's value for node; nil for none.
func parseFaults(s, node string) (*faults, error) {
	if s == "" {
		return nil, nil
	}
	var f *faults
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		v, at, _ := strings.Cut(v, "@")
		if k != "stall-inbound" && k != "read-late" && k != "delay-release" {
			return nil, fmt.Errorf("%s: unknown fault %q", faultEnv, k)
		}
		if at != node {
			continue
		}
		if f == nil {
			f = &faults{}
		}
		switch k {
		case "stall-inbound":
			f.stallInbound = v
		case "read-late":
			f.readLate = v
		default:
			f.delayRelease = v
		}
	}
	return f, nil
}

// delays reports whether a claim of id waits releaseDelay before its
// release request.
func (f *faults) delays(id string) bool {
	return f != nil && f.delayRelease == id
}

// stalls reports whether op is never to be replicated.
func (f *faults) stalls(op *broker.Op) bool {
	return f != nil && op.Kind == broker.OpInboundPut && op.ClientID == f.stallInbound
}

// readsLate reports whether reading id's session from the stream is to
// fail: until orphan interest (orphans: the nodes kept) was kept and is
// no more.
func (f *faults) readsLate(id string, orphans int32) bool {
	if f == nil || id != f.readLate {
		return false
	}
	if orphans > 0 {
		f.orphansSeen.Store(true)
		return true
	}
	return !f.orphansSeen.Load()
}
