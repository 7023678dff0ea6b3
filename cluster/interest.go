package cluster

import (
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/topic"
)

// ikey is one (filter, share group) pair of a node's subscription tree;
// group is "" for plain subscriptions.
type ikey struct{ filter, group string }

// groupKey is how the broker names a shared group in RemoteMessage.Groups.
func (k ikey) groupKey() string { return k.group + "\x00" + k.filter }

// delta is one change of a node's interest, numbered: seq is the node's
// interest version after the change.
type delta struct {
	seq uint64
	add bool
	key ikey
}

// localInterest is what this node's subscription tree holds, counted per
// (filter, group), with the changes not yet told to the other nodes. The
// broker calls add and remove under session locks, so they only touch
// memory and wake the publisher.
type localInterest struct {
	mu      sync.Mutex
	refs    map[ikey]int
	seq     uint64
	pending []delta
	wake    chan struct{}
	// arriving counts, per share group ({filter, group}), the sessions
	// moving in here live (moveIn) that are its members. While one is,
	// the group's away key is not announced (announced): every group
	// message given to this node is held for the arriving member and
	// reaches it at its adoption, whatever disowned copy of another
	// member the node also has.
	arriving map[ikey]int
	// pinned counts, per share group hold key, the restored sessions
	// here not settled yet that hold it (persistentFilters.restore):
	// such a key is announced beside a member of the group here
	// (memberHold), since the broker here gives the restored copy its
	// turns too (pickShared), and a copy owned elsewhere passes what it
	// takes on by the held way.
	pinned map[ikey]int
}

func newLocalInterest() *localInterest {
	return &localInterest{refs: make(map[ikey]int), wake: make(chan struct{}, 1)}
}

func (l *localInterest) add(k ikey) {
	l.mu.Lock()
	was := l.announced(k)
	hk, shared := k.memberHold()
	wasHold := shared && l.announced(hk)
	l.refs[k]++
	l.changedLocked(k, was)
	if shared {
		l.changedLocked(hk, wasHold)
	}
	l.mu.Unlock()
	l.signal()
}

func (l *localInterest) remove(k ikey) {
	l.mu.Lock()
	was := l.announced(k)
	hk, shared := k.memberHold()
	wasHold := shared && l.announced(hk)
	n, ok := l.refs[k]
	switch {
	case !ok:
		// The broker reports each removal once per addition; never
		// reached, but a negative count would hide interest forever.
	case n > 1:
		l.refs[k] = n - 1
	default:
		delete(l.refs, k)
	}
	// The hold key back out before the member's key goes: the others
	// never have neither of this node's keys for the group.
	if shared {
		l.changedLocked(hk, wasHold)
	}
	l.changedLocked(k, was)
	l.mu.Unlock()
	l.signal()
}

// arrive counts (in) or uncounts a session moving in here live as a
// member of share group g ({filter, group}): see arriving. Two members
// of one group swapping nodes each left a disowned copy on the node the
// other moved to, so both nodes announced the group's away key and
// publishers elsewhere, leaving nobody out (all away), gave each node
// turns; those a node gave the disowned copy before its own move in was
// registered reached that member in the copy's export, delivered at
// the adoption ahead of what the member's new node had held from the
// same publisher: out of order [MQTT-4.6.0-5] (test/jepsen
// TestClusterFull seed 44, session 21: g0m0 n1 -> n2, g0m1 n2 -> n1;
// g0m1 got pub0#681 and #683 from n2's copy before #680, #682 and #684
// held by n1; TestReproGroupSwapOrder). The node with the arriving
// member now serves the group's turns, the one with only a disowned
// copy is left out.
func (l *localInterest) arrive(g ikey, in bool) {
	k := awayKey(g)
	l.mu.Lock()
	was := l.announced(k)
	switch {
	case in:
		if l.arriving == nil {
			l.arriving = make(map[ikey]int)
		}
		l.arriving[g]++
	case l.arriving[g] > 1:
		l.arriving[g]--
	default:
		delete(l.arriving, g)
	}
	l.changedLocked(k, was)
	l.mu.Unlock()
	l.signal()
}

// pin counts (on) or uncounts a restored session here holding hold key
// k: see pinned.
func (l *localInterest) pin(k ikey, on bool) {
	l.mu.Lock()
	was := l.announced(k)
	switch {
	case on:
		if l.pinned == nil {
			l.pinned = make(map[ikey]int)
		}
		l.pinned[k]++
	case l.pinned[k] > 1:
		l.pinned[k]--
	default:
		delete(l.pinned, k)
	}
	l.changedLocked(k, was)
	l.mu.Unlock()
	l.signal()
}

// announced reports whether k is in the interest told to the other
// nodes: held here, for an away key no member of its group arriving
// (arriving), and for a share group's hold key no persistent member of
// the group here announced by its persistent key (memberHold) unless a
// restored session here holds it (pinned). l.mu is held.
func (l *localInterest) announced(k ikey) bool {
	switch {
	case l.refs[k] == 0:
		return false
	case k.isAway():
		return l.arriving[k.awayOf()] == 0
	case k.isHold() && k.orphanKey().group != "":
		return l.refs[k.persistOf()] == 0 || l.pinned[k] > 0
	}
	return true
}

// memberHold returns, for k a share group's persistent key (a settled
// persistent member of the group here), the group's hold key, which is
// not announced while k is: a node that holds for a group (a claim's
// keys, claimHold; a fenced copy's, fenceKeepHeld) while it also has a
// member of it in its server counted as holding, so publishers
// elsewhere did not leave it out of the group's turns beside a
// restarted node whose only member of the group was a restored copy
// not settled yet (remoteInterest.serving keeps every node when all
// hold): that node got turns and passed them on (passon.go) to the
// member it had, one hop behind the turns sent there directly, and
// that member got one publisher's messages out of order
// [MQTT-4.6.0-5] (test/jepsen TestClusterFull seed 118, session 22:
// g0m1 on n3, live, beside n3's claim of g0m0 not yet adopted; n2's
// restored g0m0; g0m1 got pub1#323 after #324; TestReproClaimHoldOrder).
// The group's messages this node gets go to its member, as any
// node's with a live member do; were the node to die, its persistent
// key makes the group held for it as the hold key did. Not a restored
// session's hold key (pinned): that copy is in the server here and
// takes its turns of what the node gets.
func (k ikey) memberHold() (ikey, bool) {
	if !strings.HasPrefix(k.group, persistGroup+"\x00") {
		return ikey{}, false
	}
	return k.holdKey(), true
}

// changedLocked queues the delta of k if whether it is announced changed
// from was. l.mu is held.
func (l *localInterest) changedLocked(k ikey, was bool) {
	if now := l.announced(k); now != was {
		l.seq++
		l.pending = append(l.pending, delta{l.seq, now, k})
	}
}

func (l *localInterest) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// has reports whether this node has a subscription for k.
func (l *localInterest) has(k ikey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refs[k] > 0
}

// take returns the changes not yet published, and the current version.
func (l *localInterest) take() ([]delta, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.pending
	l.pending = nil
	return d, l.seq
}

// snapshot returns every key and the version they are as of.
func (l *localInterest) snapshot() ([]ikey, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]ikey, 0, len(l.refs))
	for k := range l.refs {
		if l.announced(k) {
			keys = append(keys, k)
		}
	}
	return keys, l.seq
}

// peer is what this node knows of another node's interest. A node's
// interest is identified by its incarnation (a random id per process
// start) and versioned by seq; deltas apply only in order, anything else
// (a gap, a new incarnation, a heartbeat announcing a later version) makes
// this node fetch a full snapshot.
type peer struct {
	name     string
	inc      string
	seq      uint64
	synced   bool
	fetching bool
	want     uint64 // a version seen while fetching; fetch again if newer
	keys     map[ikey]struct{}
	lastSeen time.Time
	// excused: how long this node itself did not run since it last
	// heard from the peer (its stalls, excuseStall): silence of its own
	// that expire does not count against the peer.
	excused time.Duration
	// gone is closed when the node is forgotten, its routes closed or
	// silent (forget), ending the waits of forwards to it at once. Their
	// outcome is unknown (it may have recorded a message for a
	// persistent session, whose replicated record a survivor serves, or
	// not), so they fail without waiting (ack.go), and a publish's
	// forward is held for the node's persistent sessions in the order
	// sent (holdOut), before the holds of later messages. A node
	// forgotten for silence (paused, cut off) may still take a forward
	// out to it when it returns: its copy and the hold then meet as one
	// message the session has, QoS 1 maybe twice, QoS 2 once by its
	// copy name (TestReproSilentHoldOrder). Closed at the route close
	// only, the forwards out to a silent node waited for their deadline
	// while the holds of later messages landed at once, and a session
	// claimed elsewhere got them after those (test/jepsen
	// TestClusterFull seed 941, long faults, session 29: ps1 got
	// pub1#276-#279 after #280-#283; bench/jepsen/RESULTS.md "s941").
	gone chan struct{}
}

// remoteInterest is every other node's interest in one tree, keyed by node
// name, so that one match of a topic names the nodes that want it.
type remoteInterest struct {
	mu    sync.Mutex
	peers map[string]*peer
	tree  *topic.Tree[string, struct{}]
	// orphans: the interest of dropped nodes, for their persistent
	// sessions (held.go); its lock comes after mu.
	orphans *orphanInterest
	// everHeard: every node heard from since this node started, alive or
	// not (heardNodes). A node's name and no more: a cluster has few.
	everHeard map[string]struct{}
	// away: the share groups each node announced away keys of
	// (awayKey); its lock comes after mu.
	away nodeGroups
	// kept: the sessions each node announced kept keys of (keep.go,
	// keptKey).
	kept keptNodes
	// drops: per node, how many times it was forgotten (its gone
	// channel closed): holdOut looks through the forwards in flight once
	// per drop.
	drops map[string]uint64
}

// nodeGroups is, per node, a set of share groups ({filter, group}),
// with the count of nodes that have any, read without the lock.
type nodeGroups struct {
	mu    sync.Mutex
	keys  map[string][]ikey
	count atomic.Int32
}

func (g *nodeGroups) add(node string, k ikey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ks, ok := g.keys[node]
	if slices.Contains(ks, k) {
		return
	}
	if g.keys == nil {
		g.keys = map[string][]ikey{}
	}
	g.keys[node] = append(ks, k)
	if !ok {
		g.count.Add(1)
	}
}

func (g *nodeGroups) remove(node string, k ikey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ks := g.keys[node]
	i := slices.Index(ks, k)
	if i < 0 {
		return
	}
	if ks = slices.Delete(ks, i, i+1); len(ks) > 0 {
		g.keys[node] = ks
	} else {
		delete(g.keys, node)
		g.count.Add(-1)
	}
}

func (g *nodeGroups) drop(node string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.keys[node]; ok {
		delete(g.keys, node)
		g.count.Add(-1)
	}
}

// without returns those of nodes that do not have k, or nodes itself when
// all or none have it.
func (g *nodeGroups) without(k ikey, nodes []string) []string {
	if g.count.Load() == 0 {
		return nodes
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var rest []string
	for _, node := range nodes {
		if !slices.Contains(g.keys[node], k) {
			rest = append(rest, node)
		}
	}
	if len(rest) == 0 || len(rest) == len(nodes) {
		return nodes
	}
	return rest
}

func newRemoteInterest() *remoteInterest {
	return &remoteInterest{peers: make(map[string]*peer), tree: topic.NewTree[string, struct{}](),
		orphans: newOrphanInterest(), everHeard: make(map[string]struct{})}
}

// seen notes a sign of life from node and returns its record, creating it;
// isNew reports the creation. r.mu must be held.
func (r *remoteInterest) seen(node string, now time.Time) (p *peer, isNew bool) {
	p = r.peers[node]
	if p == nil {
		p = &peer{name: node, keys: make(map[ikey]struct{}), gone: make(chan struct{})}
		r.peers[node] = p
		r.everHeard[node] = struct{}{}
		isNew = true
	}
	p.lastSeen, p.excused = now, 0
	return p, isNew
}

// keepAlive counts now as a sign of life from node, if known (a test
// fault's: gone-late).
func (r *remoteInterest) keepAlive(node string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.peers[node]; p != nil {
		p.lastSeen, p.excused = now, 0
	}
}

// applyDeltas applies what node announced and reports whether a snapshot
// must be fetched.
func (r *remoteInterest) applyDeltas(node, inc string, ds []delta, now time.Time) (fetch, isNew bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, isNew := r.seen(node, now)
	for _, d := range ds {
		if !p.synced || p.inc != inc || d.seq > p.seq+1 {
			return r.needFetch(p, d.seq), isNew
		}
		if d.seq <= p.seq {
			continue // already in a snapshot
		}
		r.applyOne(p, d.key, d.add)
		p.seq = d.seq
	}
	return false, isNew
}

// heartbeat notes node's announced version and reports whether a snapshot
// must be fetched (deltas were lost, or the node restarted).
func (r *remoteInterest) heartbeat(node, inc string, seq uint64, now time.Time) (fetch, isNew bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, isNew := r.seen(node, now)
	if !p.synced || p.inc != inc || seq > p.seq {
		return r.needFetch(p, seq), isNew
	}
	return false, isNew
}

// needFetch marks p for a snapshot fetch; it reports false when one is in
// progress (which fetches again on its end if version seq is newer).
func (r *remoteInterest) needFetch(p *peer, seq uint64) bool {
	if p.fetching {
		p.want = max(p.want, seq)
		return false
	}
	p.fetching = true
	p.want = 0
	return true
}

// applyOne adds or removes one of p's keys. A persistent filter key
// (persistent.go) is kept for the orphan interest, out of the routing
// tree: the plain key beside it routes.
//
// A hold key (persistent.go) is the live node's orphan interest: what it
// matches is held for the node, as for a dead one, until the key goes.
func (r *remoteInterest) applyOne(p *peer, k ikey, add bool) {
	if add {
		if _, ok := p.keys[k]; !ok {
			p.keys[k] = struct{}{}
			if k.isAway() {
				r.away.add(p.name, k.awayOf())
			} else if k.isKept() {
				r.kept.set(p.name, k, true)
			} else if k.isHold() {
				r.orphans.add(p.name, k.orphanKey())
			} else if !k.isPersist() {
				r.tree.Subscribe(k.filter, k.group, p.name, struct{}{})
			}
		}
		return
	}
	if _, ok := p.keys[k]; ok {
		delete(p.keys, k)
		if k.isAway() {
			r.away.remove(p.name, k.awayOf())
		} else if k.isKept() {
			r.kept.set(p.name, k, false)
		} else if k.isHold() {
			r.orphans.remove(p.name, k.orphanKey())
		} else if !k.isPersist() {
			r.tree.Unsubscribe(k.filter, k.group, p.name)
		}
	}
}

// applySnapshot replaces node's interest by a fetched snapshot (keys as of
// version seq of incarnation inc) and reports whether to fetch again. ok
// false means the fetch failed: the next heartbeat tries again.
func (r *remoteInterest) applySnapshot(node, inc string, seq uint64, keys []ikey, ok bool) (again bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.peers[node]
	if p == nil {
		return false // declared gone meanwhile
	}
	p.fetching = false
	if !ok {
		return false
	}
	next := make(map[ikey]struct{}, len(keys))
	for _, k := range keys {
		next[k] = struct{}{}
	}
	for k := range p.keys {
		if _, keep := next[k]; !keep {
			r.applyOne(p, k, false)
		}
	}
	p.inc, p.seq, p.synced = inc, seq, true
	r.orphans.drop(node) // its interest is known again
	for k := range p.keys {
		if k.isHold() {
			r.orphans.add(node, k.orphanKey()) // but these it holds for
		}
	}
	for k := range next {
		r.applyOne(p, k, true)
	}
	if p.want > seq {
		p.fetching = true
		p.want = 0
		return true
	}
	return false
}

// expire forgets nodes not heard from since before cutoff, this node's
// own stalls since excused (excuseStall), with their interest, and
// returns their names.
func (r *remoteInterest) expire(cutoff time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []string
	for name, p := range r.peers {
		if p.lastSeen.Add(p.excused).Before(cutoff) {
			r.forget(p)
			gone = append(gone, name)
		}
	}
	return gone
}

// excuseStall notes that this node did not run for gap (SIGSTOP, a frozen
// VM: its expiry loop's ticks came late, awayMarks.ticked): no peer's
// heartbeat could be heard meanwhile, whether the peer ran or not, so the
// gap does not count as the peer's silence. Counted, a node back from a
// pause past deadAfter dropped every peer whose heartbeat it had not read
// yet at its first tick, held for that peer's persistent sessions what
// its publishers sent until the peer's next heartbeat (up to a second),
// and then forwarded again: the peer, which had not been silent and so
// read nothing as a node back from a silence does (catchUpOnReturn),
// applied the holds by its follower after the direct forwards of the
// publisher's newer messages [MQTT-4.6.0-6] (test/jepsen TestCluster in
// a fresh clone, session 26: n3 paused 3.9 s, dropped n1 77 ms after its
// return and heard it again 161 ms later; pub0#85 and #86, held for n1
// in between, reached ps0-ps3 and g0m1 on n1 after #87-#89;
// TestReproPausedNodeHeldOrder's pz-far). A peer that died meanwhile is
// dropped as its routes close; one silent past the gap still is. The
// stall was found at now: a peer heard since it ended (before the expiry
// loop's first tick after it) is excused no more than since then. It
// reports whether the excuse kept a peer that expire would have dropped
// at now: the stall was that long.
func (r *remoteInterest) excuseStall(gap time.Duration, now time.Time) (kept bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.peers {
		kept = kept || p.lastSeen.Add(p.excused).Before(now.Add(-deadAfter))
		p.excused = max(0, min(p.excused+gap, now.Sub(p.lastSeen)))
	}
	return kept
}

// forget drops p and its interest, and ends the waits of the forwards out
// to it (peer.gone), whether its routes closed or it fell silent.
func (r *remoteInterest) forget(p *peer) {
	if p.synced {
		// Its persistent sessions get nothing forwarded any more,
		// whether its process died or it is only silent (paused, cut
		// off): what matches them is held for them (held.go). Only its
		// persistent filter keys are kept: its clean sessions died
		// with it, or are out of reach.
		r.orphans.keep(p.name, p.keys)
	}
	for k := range p.keys {
		if !k.isPersist() && !k.isAway() && !k.isKept() {
			r.tree.Unsubscribe(k.filter, k.group, p.name)
		}
	}
	r.away.drop(p.name)
	r.kept.drop(p.name)
	delete(r.peers, p.name)
	if r.drops == nil {
		r.drops = map[string]uint64{}
	}
	r.drops[p.name]++ // with the close, under mu: holdOut
	close(p.gone)
}

// dropsOf returns how many times node was forgotten (forget).
func (r *remoteInterest) dropsOf(node string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.drops[node]
}

// forgetUnrouted forgets the nodes that have no route to this node any
// more (routed names them), and returns them: a killed node's routes close
// at once, long before its heartbeats are missed.
func (r *remoteInterest) forgetUnrouted(routed map[string]bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []string
	for name, p := range r.peers {
		if !routed[name] {
			r.forget(p)
			gone = append(gone, name)
		}
	}
	return gone
}

// goneCh returns the channel closed when node is forgotten (its routes
// closed, or silent); a closed one for a node not known.
func (r *remoteInterest) goneCh(node string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.peers[node]; p != nil {
		return p.gone
	}
	c := make(chan struct{})
	close(c)
	return c
}

// nodes returns the names of the nodes known alive, sorted.
func (r *remoteInterest) nodes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.peers))
	for n := range r.peers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// heardNodes returns the names of the nodes heard from since this node
// started, alive or gone, sorted: those a session taken from the stream
// may have had messages held under (held.go, takeHeld). Not only the
// live ones and those whose orphan interest is kept: a dead node's is
// dropped heldGrace after the janitors' scan, and a claim that read the
// session only at a later try (the stream was electing a leader) did not
// read the dead node's held subject, which held what was published for
// the session meanwhile (TestClusterQoS2ResendUnconfirmedIsRouted).
func (r *remoteInterest) heardNodes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.everHeard))
}

// target is one node a message goes to and the shared groups it serves.
type target struct {
	node   string
	groups []string
}

// plan decides which nodes get a message on topic name with id: every node
// with a plain matching subscription, and for each matching shared group
// that has no member on this node (local members first), one node with
// members, taking turns by message id (among those serving leaves).
func (r *remoteInterest) plan(name string, id uint64, local *localInterest) []target {
	targets, _ := r.planHeld(name, id, local, nil)
	return targets
}

// planHeld is plan, and also returns the groups ("group\x00filter") whose
// turns left out a node that holds for them (serving), each with that
// node ("node group\x00filter"), for Forward's log; nil for none. The
// groups of passed are planned as if they had no member here: the broker
// gave them to none (broker.GroupPasser).
func (r *remoteInterest) planHeld(name string, id uint64, local *localInterest, passed []string) ([]target, []string) {
	var (
		targets []target
		shared  map[ikey][]string
		left    []string
	)
	at := func(node string) *target {
		for i := range targets {
			if targets[i].node == node {
				return &targets[i]
			}
		}
		targets = append(targets, target{node: node})
		return &targets[len(targets)-1]
	}
	r.tree.Match(name, func(filter, group, node string, _ struct{}) {
		if group == "" {
			at(node)
			return
		}
		if shared == nil {
			shared = make(map[ikey][]string)
		}
		k := ikey{filter, group}
		shared[k] = append(shared[k], node)
	})
	for k, nodes := range shared {
		if local.has(k) && !slices.Contains(passed, k.groupKey()) {
			continue
		}
		slices.Sort(nodes) // the tree's order is not stable
		if live := r.serving(k, nodes); len(live) < len(nodes) {
			for _, node := range nodes {
				if !slices.Contains(live, node) {
					left = append(left, node+" "+k.groupKey())
				}
			}
			nodes = live
		}
		t := at(nodes[id%uint64(len(nodes))])
		t.groups = append(t.groups, k.groupKey())
	}
	return targets, left
}

// serving returns nodes, the nodes with members of share group k, without
// those that hold for k (a hold key of the group: a restarted node's
// restored member not settled yet, one dropped and kept for cover, a
// fenced copy), unless all do. Such a node's member may be a copy that is
// not its session's own: given the group's message, the node passes it
// on to a node with a member (passon.go), one hop behind the messages
// the group's other turns send there directly, and the member there got
// one publisher's messages out of their order [MQTT-4.6.0-5] (test/jepsen
// TestClusterFull seed 42, 2026-12-06: g0m0 on n2 got pub1#121 from n3
// before pub1#119, which n3 gave to n1, whose restored g0m1 was unsettled
// for 8 s; n1 passed it on 190 ms later; TestReproPassOnOrder). Of the
// rest, it leaves out those whose members of k are disowned copies (an
// away key: awayKey), unless all are: what such a copy takes reaches its
// session behind what is sent to the session's new node directly
// (TestReproGroupMoveOrder). Left to the nodes with live members, every
// message of the group goes one way. A group whose only nodes hold for
// it goes to them as before: their members' copies keep or pass on what
// they take. Any member may get a group's message (MQTT 5 4.8.2), so
// nothing is owed to the left-out node. The common case (no hold or away
// key anywhere) costs two atomic loads.
func (r *remoteInterest) serving(k ikey, nodes []string) []string {
	if len(nodes) < 2 {
		return nodes
	}
	if r.orphans.count.Load() > 0 {
		nodes = r.orphans.notHolding(k, nodes)
	}
	if len(nodes) < 2 {
		return nodes
	}
	return r.away.without(k, nodes)
}

// groupNodes returns, for each share group of groups ("group\x00filter")
// with a member on another node matching topic name, one such node,
// taking turns by id as plan does; by node, the groups it is to serve.
func (r *remoteInterest) groupNodes(name string, groups []string, id uint64) map[string][]string {
	var nodes map[string][]string // group key -> nodes
	r.tree.Match(name, func(filter, group, node string, _ struct{}) {
		if group == "" {
			return
		}
		if gk := (ikey{filter, group}).groupKey(); slices.Contains(groups, gk) {
			if nodes == nil {
				nodes = make(map[string][]string)
			}
			nodes[gk] = append(nodes[gk], node)
		}
	})
	var out map[string][]string
	for gk, ns := range nodes {
		slices.Sort(ns) // the tree's order is not stable
		if out == nil {
			out = make(map[string][]string)
		}
		to := ns[id%uint64(len(ns))]
		out[to] = append(out[to], gk)
	}
	return out
}

// Interest messages between nodes (all start with wireVersion, then a
// kind byte):
//
//	heartbeat 'H': node, incarnation, seq
//	deltas    'D': node, incarnation, count, then per delta: seq, add (byte), filter, group
//	snapshot  'S': incarnation, seq, count, then per key: filter, group
//	part      'P': incarnation, seq, part, parts, count, then per key: filter, group
//
// Strings and numbers are as in wire.go. A NATS message has a size limit
// (the engine's max_payload, 8 MiB at least): deltas beyond it go in
// several 'D' messages, and a snapshot beyond it as 'P' parts of one
// snapshot, answered to one request; one that fits is a single 'S', which
// nodes of earlier versions read.

func encodeHeartbeat(node, inc string, seq uint64) []byte {
	b := []byte{wireVersion, 'H'}
	b = appendString(b, node)
	b = appendString(b, inc)
	return binary.AppendUvarint(b, seq)
}

func encodeDeltas(node, inc string, ds []delta) []byte {
	b := []byte{wireVersion, 'D'}
	b = appendString(b, node)
	b = appendString(b, inc)
	b = binary.AppendUvarint(b, uint64(len(ds)))
	for _, d := range ds {
		b = binary.AppendUvarint(b, d.seq)
		b = append(b, boolBit(d.add, 0))
		b = appendString(b, d.key.filter)
		b = appendString(b, d.key.group)
	}
	return b
}

// encodeDeltasLimited is encodeDeltas in messages of at most limit bytes
// (a lone delta larger than that goes alone), in order.
func encodeDeltasLimited(node, inc string, ds []delta, limit int) [][]byte {
	var out [][]byte
	for len(ds) > 0 {
		size := 2 + stringSize(node) + stringSize(inc) + binary.MaxVarintLen64
		n := 0
		for n < len(ds) {
			d := ds[n]
			sz := uvarintSize(d.seq) + 1 + stringSize(d.key.filter) + stringSize(d.key.group)
			if n > 0 && size+sz > limit {
				break
			}
			size += sz
			n++
		}
		out = append(out, encodeDeltas(node, inc, ds[:n]))
		ds = ds[n:]
	}
	return out
}

// encodeSnapshotParts encodes one snapshot as 'P' parts of at most limit
// bytes each (a lone key larger than that goes alone).
func encodeSnapshotParts(inc string, seq uint64, keys []ikey, limit int) [][]byte {
	var chunks [][]ikey
	for len(keys) > 0 {
		size := 2 + stringSize(inc) + 4*binary.MaxVarintLen64
		n := 0
		for n < len(keys) {
			sz := stringSize(keys[n].filter) + stringSize(keys[n].group)
			if n > 0 && size+sz > limit {
				break
			}
			size += sz
			n++
		}
		chunks = append(chunks, keys[:n])
		keys = keys[n:]
	}
	if len(chunks) == 0 {
		chunks = [][]ikey{nil}
	}
	out := make([][]byte, 0, len(chunks))
	for i, c := range chunks {
		b := []byte{wireVersion, 'P'}
		b = appendString(b, inc)
		b = binary.AppendUvarint(b, seq)
		b = binary.AppendUvarint(b, uint64(i))
		b = binary.AppendUvarint(b, uint64(len(chunks)))
		b = binary.AppendUvarint(b, uint64(len(c)))
		for _, k := range c {
			b = appendString(b, k.filter)
			b = appendString(b, k.group)
		}
		out = append(out, b)
	}
	return out
}

// stringSize is how many bytes appendString adds for s.
func stringSize(s string) int { return uvarintSize(uint64(len(s))) + len(s) }

// uvarintSize is how many bytes binary.AppendUvarint adds for v.
func uvarintSize(v uint64) int { return len(binary.AppendUvarint(nil, v)) }

func encodeSnapshot(inc string, seq uint64, keys []ikey) []byte {
	b := []byte{wireVersion, 'S'}
	b = appendString(b, inc)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k.filter)
		b = appendString(b, k.group)
	}
	return b
}

// control is a decoded heartbeat or delta batch.
type control struct {
	kind      byte
	node, inc string
	seq       uint64
	deltas    []delta
}

func decodeControl(b []byte) (control, error) {
	r := reader{b: b}
	var c control
	if r.byte() != wireVersion {
		return c, errWire
	}
	c.kind = r.byte()
	c.node, c.inc = r.string(), r.string()
	switch c.kind {
	case 'H':
		c.seq = r.uvarint()
	case 'D':
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			return c, errWire
		}
		for range n {
			d := delta{seq: r.uvarint(), add: r.byte() == 1}
			d.key.filter, d.key.group = r.string(), r.string()
			c.deltas = append(c.deltas, d)
		}
	default:
		return c, errWire
	}
	if r.err != nil || len(r.b) != 0 {
		return c, errWire
	}
	return c, nil
}

func decodeSnapshot(b []byte) (inc string, seq uint64, keys []ikey, err error) {
	r := reader{b: b}
	if r.byte() != wireVersion || r.byte() != 'S' {
		return "", 0, nil, errWire
	}
	inc, seq = r.string(), r.uvarint()
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return "", 0, nil, errWire
	}
	keys = make([]ikey, 0, n)
	for range n {
		keys = append(keys, ikey{r.string(), r.string()})
	}
	if r.err != nil || len(r.b) != 0 {
		return "", 0, nil, errWire
	}
	return inc, seq, keys, nil
}

// snapshotPart is one decoded 'P' message.
type snapshotPart struct {
	inc         string
	seq         uint64
	part, parts uint64
	keys        []ikey
}

func decodeSnapshotPart(b []byte) (snapshotPart, error) {
	r := reader{b: b}
	var p snapshotPart
	if r.byte() != wireVersion || r.byte() != 'P' {
		return p, errWire
	}
	p.inc, p.seq = r.string(), r.uvarint()
	p.part, p.parts = r.uvarint(), r.uvarint()
	n := r.uvarint()
	if n > uint64(len(r.b)) || p.part >= p.parts {
		return p, errWire
	}
	p.keys = make([]ikey, 0, n)
	for range n {
		p.keys = append(p.keys, ikey{r.string(), r.string()})
	}
	if r.err != nil || len(r.b) != 0 {
		return p, errWire
	}
	return p, nil
}

// size returns how many (filter, group) entries this node announces.
func (l *localInterest) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.refs)
}

// peerStatus is what status reports of one node.
type peerStatus struct {
	name     string
	entries  int
	synced   bool
	lastSeen time.Time
}

// status returns every node known alive with its interest entries, sorted
// by name.
func (r *remoteInterest) status() []peerStatus {
	r.mu.Lock()
	out := make([]peerStatus, 0, len(r.peers))
	for _, p := range r.peers {
		out = append(out, peerStatus{name: p.name, entries: len(p.keys), synced: p.synced, lastSeen: p.lastSeen})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b peerStatus) int { return strings.Compare(a.name, b.name) })
	return out
}
