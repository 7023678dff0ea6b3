package cluster

import (
	"strings"
	"sync"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// Which of a node's plain filters and share groups a persistent session
// holds.
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
// next to the plain one; a share group with a persistent member here as
// {filter, persistGroup NUL group}. Remote nodes keep those keys out of their
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

// persistShareKey is the interest key announcing that a persistent
// session on the node is a member of share group group for filter: a
// group whose members all die with a node is held for too (held.go).
func persistShareKey(filter, group string) ikey {
	return ikey{filter, persistGroup + "\x00" + group}
}

// isPersist reports whether k is a persistent filter key (plain or
// shared), not routing interest.
func (k ikey) isPersist() bool { return strings.HasPrefix(k.group, persistGroup) }

// orphanKey is the key of persistent key k in the orphan interest's tree:
// its filter, and "" or the share group.
func (k ikey) orphanKey() ikey {
	return ikey{k.filter, strings.TrimPrefix(strings.TrimPrefix(k.group, persistGroup), "\x00")}
}

// persistentFilters counts the plain filters of each persistent session
// this node journals, and keeps local's persistent keys in step.
type persistentFilters struct {
	mu    sync.Mutex
	local *localInterest
	subs  map[string]map[ikey]struct{} // client id -> persistent keys
}

func newPersistentFilters(local *localInterest) *persistentFilters {
	return &persistentFilters{local: local, subs: map[string]map[ikey]struct{}{}}
}

// persistFilter returns a stored subscription's persistent key: plain
// or, for a share group member, the group's.
func persistFilter(f string) (ikey, bool) {
	group, rest, _, err := topic.ParseShare(f)
	if err != nil {
		return ikey{}, false
	}
	if group != "" {
		return persistShareKey(rest, group), true
	}
	return persistKey(rest), true
}

// apply counts op.
func (p *persistentFilters) apply(op *broker.Op) {
	switch op.Kind {
	case broker.OpSubPut:
		if k, ok := persistFilter(op.Sub.Filter); ok {
			p.add(op.ClientID, k)
		}
	case broker.OpSubDel:
		if k, ok := persistFilter(op.Sub.Filter); ok {
			p.remove(op.ClientID, k)
		}
	case broker.OpSessionDel:
		p.leave(op.ClientID)
	}
}

// restore counts the subscriptions of a session the node's own store
// loaded at start.
func (p *persistentFilters) restore(ss *broker.StoredSession) {
	for _, sub := range ss.Subs {
		if k, ok := persistFilter(sub.Filter); ok {
			p.add(ss.ClientID, k)
		}
	}
}

func (p *persistentFilters) add(id string, k ikey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.subs[id]
	if ks == nil {
		ks = map[ikey]struct{}{}
		p.subs[id] = ks
	}
	if _, ok := ks[k]; !ok {
		ks[k] = struct{}{}
		p.local.add(k)
	}
}

func (p *persistentFilters) remove(id string, k ikey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.subs[id][k]; ok {
		delete(p.subs[id], k)
		p.local.remove(k)
	}
}

// leave forgets every filter of session id: it ended, or lives on
// another node now.
func (p *persistentFilters) leave(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.subs[id] {
		p.local.remove(k)
	}
	delete(p.subs, id)
}
