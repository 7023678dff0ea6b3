package cluster

import (
	"fmt"
	"strings"

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
//
// Every node of a test inherits the variable; each takes the faults that
// name it.
const faultEnv = "ROOST_TEST_FAULT"

// faults are the injected faults (see faultEnv); nil for none.
type faults struct {
	stallInbound string
}

// parseFaults reads faultEnv's value for node; nil for none.
func parseFaults(s, node string) (*faults, error) {
	if s == "" {
		return nil, nil
	}
	var f *faults
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		v, at, _ := strings.Cut(v, "@")
		switch {
		case k != "stall-inbound":
			return nil, fmt.Errorf("%s: unknown fault %q", faultEnv, k)
		case at == node:
			f = &faults{stallInbound: v}
		}
	}
	return f, nil
}

// stalls reports whether op is never to be replicated.
func (f *faults) stalls(op *broker.Op) bool {
	return f != nil && op.Kind == broker.OpInboundPut && op.ClientID == f.stallInbound
}
