package cluster

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
// shared; a hold key too), not routing interest.
func (k ikey) isPersist() bool {
	return strings.HasPrefix(k.group, persistGroup) || strings.HasPrefix(k.group, holdGroup)
}

// holdGroup is the pseudo share group of a hold key: the persistent key
// of a session a restarted node restored and has not settled yet
// (held.go, restoredGate). The other nodes hold what it matches for the
// node, as for a dead node, while they forward the rest to it.
const holdGroup = "\x00hold"

// isHold reports whether k is a hold key.
func (k ikey) isHold() bool { return strings.HasPrefix(k.group, holdGroup) }

// holdKey is persistent key k's hold key; persistOf the reverse.
func (k ikey) holdKey() ikey {
	return ikey{k.filter, holdGroup + strings.TrimPrefix(k.group, persistGroup)}
}

func (k ikey) persistOf() ikey {
	return ikey{k.filter, persistGroup + strings.TrimPrefix(k.group, holdGroup)}
}

// orphanKey is the key of persistent key k in the orphan interest's tree:
// its filter, and "" or the share group.
func (k ikey) orphanKey() ikey {
	g := strings.TrimPrefix(strings.TrimPrefix(k.group, persistGroup), holdGroup)
	return ikey{k.filter, strings.TrimPrefix(g, "\x00")}
}

// awayGroup is the pseudo share group of an away key: awayKey.
const awayGroup = "\x00away"

// awayKey is the interest key announcing that a member of share group k
// ({filter, group}) here is a disowned copy (keep.go): its client is
// connecting elsewhere, or its session is served elsewhere already, and
// what the copy takes reaches the session by a longer way (its live
// move's export, or this node's held subject read by its next owner)
// than what publishers send that owner directly. Other nodes leave this
// node out of the group's turns while another node serves the group
// (remoteInterest.serving), so that one publisher's messages reach the
// member one way, in their order [MQTT-4.6.0-5] (test/jepsen
// TestClusterFull seeds 44 and 47, 2026-12-06; TestReproGroupMoveOrder).
// Not routing interest: the group's own key beside it routes.
func awayKey(k ikey) ikey { return ikey{k.filter, awayGroup + "\x00" + k.group} }

// isAway reports whether k is an away key; awayOf is the share group's
// key ({filter, group}) it names.
func (k ikey) isAway() bool { return strings.HasPrefix(k.group, awayGroup) }

func (k ikey) awayOf() ikey {
	return ikey{k.filter, strings.TrimPrefix(strings.TrimPrefix(k.group, awayGroup), "\x00")}
}

// persistentFilters counts the plain filters of each persistent session
// this node journals, and keeps local's persistent keys in step.
type persistentFilters struct {
	mu    sync.Mutex
	local *localInterest
	subs  map[string]map[ikey]struct{} // client id -> persistent keys
	// holding: the restored sessions announced by hold keys until the
	// node settles (settle), their plain filters and share groups in
	// held.
	holding map[string]bool
	held    *topic.Tree[string, struct{}]
	nheld   atomic.Int32
	// leaving: the restored sessions that ended before the node settled,
	// their hold keys kept for cover (leaveKeepHeld): a claimer reads
	// the session from the stream, then what was held (adoptHeld: twice,
	// each up to the forward timeout), and announces its interest after.
	leaving map[string]bool
	cover   time.Duration
	// leaveAt: when the hold keys of a fenced session go (fenceKeepHeld:
	// a second call puts it off).
	leaveAt map[string]time.Time
	// claiming: the claims of each id here still reading it
	// (claimKeepHeld or claimReading, until claimHeldUntil or
	// claimAdopted), whose hold keys stay whatever leaveAt says.
	claiming map[string]int
	// pinned: the restored sessions in the server and not settled
	// (restore), whose hold keys of share groups are announced even
	// beside a member of the group here (localInterest.pin).
	pinned map[string][]ikey
	// away: the away keys out for each disowned copy here (awayOn), an
	// entry (maybe empty) per copy: a copy adopted after its disown
	// (liveMoves.adoptCut) gets its share groups' keys as they come.
	away map[string][]ikey
	// after runs f once d has passed (time.AfterFunc; a unit test runs
	// the hold keys' ends itself).
	after func(d time.Duration, f func())
	// left, if set, is told each id whose hold keys leaveHeld ended: a
	// dropped copy's record goes with them (sessions.unspare).
	left func(id string)
}

func newPersistentFilters(local *localInterest) *persistentFilters {
	return &persistentFilters{local: local, subs: map[string]map[ikey]struct{}{},
		holding: map[string]bool{}, held: topic.NewTree[string, struct{}](), leaving: map[string]bool{}, pinned: map[string][]ikey{},
		cover: 3*5*time.Second + 2*heartbeatEvery, // Sessions sets it from the config
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
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
		// A restored session that ends before the node settled (claimed
		// elsewhere: takeUnsettled) keeps its hold keys until leaveHeld
		// or the settle: its claimer's read is covered by the holding.
		p.mu.Lock()
		holding := p.holding[op.ClientID]
		p.mu.Unlock()
		if holding {
			p.leaveKeepHeld(op.ClientID)
		} else {
			p.leave(op.ClientID)
		}
	}
}

// restore counts the subscriptions of a session the node's own store
// loaded at start.
// They are announced by hold keys until the node settles (settle).
func (p *persistentFilters) restore(ss *broker.StoredSession) {
	p.mu.Lock()
	if !p.holding[ss.ClientID] {
		p.holding[ss.ClientID] = true
		p.nheld.Add(1)
	}
	p.mu.Unlock()
	for _, sub := range ss.Subs {
		if k, ok := persistFilter(sub.Filter); ok {
			p.mu.Lock()
			if hk := k.holdKey(); !slices.Contains(p.pinned[ss.ClientID], hk) {
				p.pinned[ss.ClientID] = append(p.pinned[ss.ClientID], hk)
				p.local.pin(hk, true)
			}
			p.mu.Unlock()
			p.add(ss.ClientID, k.holdKey())
			p.mu.Lock()
			p.held.Subscribe(k.filter, k.orphanKey().group, ss.ClientID, struct{}{})
			p.mu.Unlock()
		}
	}
}

// unpinLocked ends id's pins (pinned): its restored session left the
// server, settled, or its keys became a fence's or a claim's. p.mu is
// held.
func (p *persistentFilters) unpinLocked(id string) {
	for _, k := range p.pinned[id] {
		p.local.pin(k, false)
	}
	delete(p.pinned, id)
}

// holdingAny reports whether hold keys are out: restored sessions not
// settled yet, or claimed elsewhere and kept for cover (leaveKeepHeld).
func (p *persistentFilters) holdingAny() bool { return p.nheld.Load() > 0 }

// holds reports whether a hold key here of a plain filter matches topic
// name. (Node.forward asks holdMatches, through heldHere, which has the
// share groups too.)
func (p *persistentFilters) holds(name string) bool {
	if p.nheld.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	found := false
	p.held.Match(name, func(_, group, _ string, _ struct{}) { found = found || group == "" })
	return found
}

// heldMatch is one hold key here that a topic matches: the session it
// is for, and its share group ("group\x00filter"), "" for a plain filter;
// fenced says the key is a fenced session's (fenceKeepHeld), not a
// restored one's.
type heldMatch struct {
	id, group string
	fenced    bool
}

// holdMatches returns the hold keys here (restored sessions not settled
// yet, fenced ones) that topic name matches.
func (p *persistentFilters) holdMatches(name string) []heldMatch {
	if p.nheld.Load() == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []heldMatch
	p.held.Match(name, func(filter, group, id string, _ struct{}) {
		if group != "" {
			group += "\x00" + filter
		}
		_, fenced := p.leaveAt[id]
		out = append(out, heldMatch{id, group, fenced})
	})
	return out
}

// settle announces the restored sessions still here (here) by their
// persistent keys instead of their hold keys: the node settled. The
// persistent key goes out first, so that the others never have neither.
// Those that left keep their hold keys until leaveHeld; the others
// without a session here (never handed one back) lose them.
func (p *persistentFilters) settle(here func(id string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.holding {
		if !p.leaving[id] {
			p.unholdLocked(id, here(id))
		}
	}
}

// unholdLocked ends id's hold keys, replacing them by persistent keys if
// keep (else they are forgotten: the session left); p.mu held.
func (p *persistentFilters) unholdLocked(id string, keep bool) {
	if !p.holding[id] {
		return
	}
	p.unpinLocked(id)
	delete(p.holding, id)
	p.nheld.Add(-1)
	ks := p.subs[id]
	for k := range ks {
		if !k.isHold() {
			continue
		}
		if pk := k.persistOf(); keep {
			if _, ok := ks[pk]; !ok {
				ks[pk] = struct{}{}
				p.local.add(pk)
			}
		}
		delete(ks, k)
		p.local.remove(k)
		p.held.Unsubscribe(k.filter, k.orphanKey().group, id)
	}
	if len(ks) == 0 {
		delete(p.subs, id)
	}
}

// leaveHeld forgets id's hold keys only (leaveKeepHeld: once the
// session's claimer announced its interest).
func (p *persistentFilters) leaveHeld(id string) {
	p.mu.Lock()
	delete(p.leaving, id)
	p.unholdLocked(id, false)
	p.mu.Unlock()
	if p.left != nil {
		p.left(id)
	}
}

func (p *persistentFilters) add(id string, k ikey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.insertLocked(id, k)
	p.awayAddLocked(id, k)
}

// insertLocked counts key k for session id, once; it reports whether k
// was new for id.
func (p *persistentFilters) insertLocked(id string, k ikey) bool {
	ks := p.subs[id]
	if ks == nil {
		ks = map[ikey]struct{}{}
		p.subs[id] = ks
	}
	if _, ok := ks[k]; ok {
		return false
	}
	ks[k] = struct{}{}
	p.local.add(k)
	return true
}

// arriving announces the persistent keys of subs, the subscriptions of
// session id moving here live (liveMoves.moveIn), from the move's first
// step, when this node's routing interest in them goes out; its
// adoption's ops count them later (apply). It returns the keys it added,
// for departed.
//
// The move holds for the session what publishers forward here from then
// on, and confirms it only once the session is adopted. Killed before,
// this node confirms none of it, and each publisher holds its message
// for this node by the keys it announced (appendGone: the orphan
// interest): without the session's keys, nothing was held, the publish
// was acknowledged, and the session's next owner, reading this node's
// held subject, found nothing (test/jepsen TestClusterFull seed 832: g1
// pub0#154, forwarded by n1 to n3 for g1m1 moving in there, n3 killed
// before the adoption; TestReproMoveInKilled). With them it is held, and
// read as for any session of a dead node.
func (p *persistentFilters) arriving(id string, subs []broker.StoredSub) []ikey {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var added []ikey
	for _, s := range subs {
		if k, ok := persistFilter(s.Filter); ok && p.insertLocked(id, k) {
			added = append(added, k)
		}
	}
	return added
}

// departed withdraws the keys arriving added for id: its move ended
// without the session here.
func (p *persistentFilters) departed(id string, added []ikey) {
	if p == nil || len(added) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range added {
		if _, ok := p.subs[id][k]; ok {
			delete(p.subs[id], k)
			p.local.remove(k)
		}
	}
	if len(p.subs[id]) == 0 {
		delete(p.subs, id)
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

// awayOn announces an away key (awayKey) for each share group of id,
// whose copy here was just disowned (keep.go); a second call does
// nothing. A session without persistent keys here has no copy to keep.
func (p *persistentFilters) awayOn(id string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.away[id]; ok {
		return
	}
	if p.away == nil {
		p.away = map[string][]ikey{}
	}
	p.away[id] = nil
	for k := range p.subs[id] {
		p.awayAddLocked(id, k)
	}
}

// awayAddLocked announces the away key of persistent key k's share group
// for id if id is a disowned copy here and the key is not out for it
// yet. p.mu is held.
func (p *persistentFilters) awayAddLocked(id string, k ikey) {
	ks, ok := p.away[id]
	g := k.orphanKey()
	if !ok || g.group == "" || slices.Contains(ks, awayKey(g)) {
		return
	}
	p.away[id] = append(ks, awayKey(g))
	p.local.add(awayKey(g))
}

// awayOff withdraws id's away keys: its copy here is no longer disowned
// (ended, moved out, or resumed here).
func (p *persistentFilters) awayOff(id string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.awayOffLocked(id)
}

func (p *persistentFilters) awayOffLocked(id string) {
	for _, k := range p.away[id] {
		p.local.remove(k)
	}
	delete(p.away, id)
}

// leave forgets every filter of session id: it ended, or lives on
// another node now.
func (p *persistentFilters) leave(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.awayOffLocked(id)
	p.unholdLocked(id, false)
	for k := range p.subs[id] {
		p.local.remove(k)
	}
	delete(p.subs, id)
}

// leaveKeepHeld is leave for a restored session claimed elsewhere before
// the node settled: its hold keys stay, so that the others hold what it
// matches while its claimer reads it (held.go takeUnsettled), for
// p.cover, then leaveHeld. It reports whether they stay (false: id was
// not held for).
func (p *persistentFilters) leaveKeepHeld(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.holding[id] {
		return false
	}
	p.unpinLocked(id)
	for k := range p.subs[id] {
		if !k.isHold() {
			p.local.remove(k)
			delete(p.subs[id], k)
		}
	}
	if !p.leaving[id] {
		p.leaving[id] = true
		// leaveHeldAt, not leaveHeld: a claim here within cover (the
		// client back on this node) or a fence puts the keys' end off
		// (leaveAt) and starts no timer of its own, this one being
		// out. Ending them here ended a claim's keys while it still
		// read, and nobody held for the session (test/jepsen
		// TestClusterFull seed 194: n1's restored g0m1 dropped at
		// 19.767, n1's claim of it holding from 23.969; its keys went
		// at 36.767 while the claim read until 37.520;
		// TestReproClaimDropCover).
		p.after(p.cover, func() { p.leaveHeldAt(id) })
	}
	return true
}

// fenceKeepHeld turns the persistent keys of id, a session fenced here
// (another node claimed it while this one did not answer), into hold keys
// for p.cover, then leaveHeld; false if id has none. The fenced copy ends
// here without a handover, and its claimer may take seconds to read the
// session from the stream, or die first and leave it to a later claim:
// meanwhile no node routes for the session, and a message acknowledged in
// that window reached nobody (test/jepsen TestClusterFull seed 42: ps1,
// 136 lost in 6 s). Held for this node instead, it is read by whoever
// takes the session from the stream (every node's held subject since the
// session's last op: takeHeld), as for a restored session dropped here
// (leaveKeepHeld).
func (p *persistentFilters) fenceKeepHeld(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ks := p.subs[id]
	if len(ks) == 0 {
		return false
	}
	p.unpinLocked(id)
	for k := range ks {
		if k.isHold() {
			continue
		}
		// The hold key goes out before the persistent key goes: a
		// node dying now is held for by either.
		p.addHoldLocked(id, ks, k.holdKey())
		delete(ks, k)
		p.local.remove(k)
	}
	p.holdUntilLocked(id, time.Now().Add(p.cover))
	return true
}

// addHoldLocked puts out hold key hk of id's session (its keys ks) unless
// it is out already. p.mu is held.
func (p *persistentFilters) addHoldLocked(id string, ks map[ikey]struct{}, hk ikey) {
	if hasKey(ks, hk) {
		return
	}
	ks[hk] = struct{}{}
	p.local.add(hk)
	p.held.Subscribe(hk.filter, hk.orphanKey().group, id, struct{}{})
}

// holdUntilLocked counts id as held for, and has its hold keys go at
// until (leaveHeldAt). p.mu is held.
func (p *persistentFilters) holdUntilLocked(id string, until time.Time) {
	if !p.holding[id] {
		p.holding[id] = true
		p.nheld.Add(1)
	}
	if p.leaveAt == nil {
		p.leaveAt = map[string]time.Time{}
	}
	p.leaveAt[id] = until
	if !p.leaving[id] {
		// (Leaving already, dropped at a restart or fenced before:
		// that timer ends the keys, at until: it is leaveHeldAt too.)
		p.leaving[id] = true
		p.after(p.cover, func() { p.leaveHeldAt(id) })
	}
}

// claimKeepHeld puts out hold keys for subs, the subscriptions of id's
// session as a claim here read it from the stream, until at least cover
// from now (leaveHeldAt; a later call puts it off), unless unfence ends
// them first (the claim adopted the session). While a claim reads the
// held subjects (seconds under load), or after a newer claim superseded
// it, no node announces the session's interest: the others hold what the
// keys match for this node instead, and whoever adopts the session reads
// this node's held subject with the others (adoptHeld). It reports
// whether subs gave a key.
func (p *persistentFilters) claimKeepHeld(id string, subs []broker.StoredSub) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Counted whether or not subs give a key: every claim ends by
	// claimHeldUntil or claimAdopted, which count it down.
	if p.claiming == nil {
		p.claiming = map[string]int{}
	}
	p.claiming[id]++
	p.unpinLocked(id)
	ks := p.subs[id]
	added := false
	for _, sub := range subs {
		k, ok := persistFilter(sub.Filter)
		if !ok {
			continue
		}
		if ks == nil {
			ks = map[ikey]struct{}{}
			p.subs[id] = ks
		}
		p.addHoldLocked(id, ks, k.holdKey())
		added = true
	}
	if !added {
		return false
	}
	p.holdUntilLocked(id, maxTime(p.leaveAt[id], time.Now().Add(p.cover)))
	return true
}

// claimReading counts a claim of id here that is about to read the
// session from the stream as claimKeepHeld counts one, if hold keys of id
// are out here already (a fence's, an earlier claim's, a dropped restored
// copy's): they stay while it reads. It reports whether it counted; one
// that did ends by claimHeldUntil.
func (p *persistentFilters) claimReading(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.holding[id] {
		return false
	}
	if p.claiming == nil {
		p.claiming = map[string]int{}
	}
	p.claiming[id]++
	return true
}

// claimHeldUntil puts the end of id's claim hold keys (claimKeepHeld) off
// to cover from now: the claim ended without the session here, or its
// read of the stream ended (claimReading). False if id has none with an
// end (a dropped restored copy's keys end by leaveKeepHeld's timer).
func (p *persistentFilters) claimHeldUntil(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claimEndLocked(id)
	if _, ok := p.leaveAt[id]; !ok {
		return false
	}
	p.leaveAt[id] = maxTime(p.leaveAt[id], time.Now().Add(p.cover))
	return true
}

// claimAdopted ends id's hold keys: a claim here adopted the session (its
// interest is out) as unfence does.
func (p *persistentFilters) claimAdopted(id string) {
	p.mu.Lock()
	p.claimEndLocked(id)
	p.mu.Unlock()
	p.unfence(id)
}

// claimEndLocked counts one claim of id here as ended. p.mu is held.
func (p *persistentFilters) claimEndLocked(id string) {
	if p.claiming[id] > 1 {
		p.claiming[id]--
		return
	}
	delete(p.claiming, id)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// leaveHeldAt is leaveHeld once leaveAt has passed and no claim here
// reads id any more. A claim's keys went at cover after its start while
// it still read (an adoption that waited; a publisher's messages from
// then on held for nobody, TestReproClaimDropCover in CI, session 26):
// they stay until cover after its end (claimHeldUntil).
func (p *persistentFilters) leaveHeldAt(id string) {
	p.mu.Lock()
	d := time.Until(p.leaveAt[id])
	if p.claiming[id] > 0 {
		d = max(d, p.cover)
	}
	if d > 0 {
		p.mu.Unlock()
		p.after(d, func() { p.leaveHeldAt(id) })
		return
	}
	delete(p.leaveAt, id)
	p.mu.Unlock()
	p.leaveHeld(id)
}

// unfence undoes fenceKeepHeld: id's session was handed over after all.
// Its persistent keys are back until it is forgotten here (leave), as for
// any session handed over.
func (p *persistentFilters) unfence(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.leaving, id)
	delete(p.leaveAt, id)
	p.unholdLocked(id, true)
}

func hasKey(ks map[ikey]struct{}, k ikey) bool {
	_, ok := ks[k]
	return ok
}
