package cluster

import (
	"sync"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// Which of a node's plain filters a persistent session holds.
//
// Survivors hold a QoS 1/2 message for a dead node only for its
// persistent sessions (held.go): a clean session dies with its node, and
// holding for it made publishes that match only a dead node's clean
// subscribers wait for the held subject's partition (during the leader
// elections after a kill, longer than the forward timeout:
// TestClusterNodeLoss). The broker's interest calls (Subscribed) do not
// say which sessions a filter belongs to, but what the broker journals
// does: a session outlives its connection exactly when it has a record
// in the store (broker/session.go recordSession), and its subscriptions
// are OpSubPut/OpSubDel ops of that record. So the node counts, from the
// ops it replicates, the sessions per plain filter, and announces a
// filter with at least one as the interest key {filter, persistGroup}
// next to the plain one. Remote nodes keep those keys out of their
// routing tree and, when the node's routes close, make them its orphan
// interest (interest.go forget).
//
// A session that leaves this node without an OpSessionDel (handed over,
// fenced, dropped at start because another node owns it) keeps its keys
// until forgotten (sessions.leave). A key kept too long only makes
// survivors hold what nobody here needs, as every plain filter was held
// before; a key missing would lose messages, so ops are counted before
// they are replicated.

// persistGroup is the pseudo share group of a persistent filter key. U+0000
// cannot appear in an MQTT string [MQTT-1.5.4-2], so no real share group
// has this name.
const persistGroup = "\x00persistent"

// persistKey is the interest key announcing that a persistent session on
// the node subscribes to filter.
func persistKey(filter string) ikey { return ikey{filter, persistGroup} }

// isPersist reports whether k is a persistent filter key, not routing
// interest.
func (k ikey) isPersist() bool { return k.group == persistGroup }

// persistentFilters counts the plain filters of each persistent session
// this node journals, and keeps local's persistent keys in step.
type persistentFilters struct {
	mu    sync.Mutex
	local *localInterest
	subs  map[string]map[string]struct{} // client id -> plain filters
}

func newPersistentFilters(local *localInterest) *persistentFilters {
	return &persistentFilters{local: local, subs: map[string]map[string]struct{}{}}
}

// plainFilter returns a stored subscription's filter when it is a plain
// one: shared groups are served by members on live nodes and never held
// for (held.go).
func plainFilter(f string) (string, bool) {
	group, rest, _, err := topic.ParseShare(f)
	if err != nil || group != "" {
		return "", false
	}
	return rest, true
}

// apply counts op.
func (p *persistentFilters) apply(op *broker.Op) {
	switch op.Kind {
	case broker.OpSubPut:
		if f, ok := plainFilter(op.Sub.Filter); ok {
			p.add(op.ClientID, f)
		}
	case broker.OpSubDel:
		if f, ok := plainFilter(op.Sub.Filter); ok {
			p.remove(op.ClientID, f)
		}
	case broker.OpSessionDel:
		p.leave(op.ClientID)
	}
}

// restore counts the subscriptions of a session the node's own store
// loaded at start.
func (p *persistentFilters) restore(ss *broker.StoredSession) {
	for _, sub := range ss.Subs {
		if f, ok := plainFilter(sub.Filter); ok {
			p.add(ss.ClientID, f)
		}
	}
}

func (p *persistentFilters) add(id, f string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fs := p.subs[id]
	if fs == nil {
		fs = map[string]struct{}{}
		p.subs[id] = fs
	}
	if _, ok := fs[f]; !ok {
		fs[f] = struct{}{}
		p.local.add(persistKey(f))
	}
}

func (p *persistentFilters) remove(id, f string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.subs[id][f]; ok {
		delete(p.subs[id], f)
		p.local.remove(persistKey(f))
	}
}

// leave forgets every filter of session id: it ended, or lives on
// another node now.
func (p *persistentFilters) leave(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for f := range p.subs[id] {
		p.local.remove(persistKey(f))
	}
	delete(p.subs, id)
}
