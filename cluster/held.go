package cluster

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// Messages held for a node that is gone.
//
// A node that dies (its routes close) is dropped from the routing, but
// its persistent sessions live on in the partition streams: until a
// survivor adopts them (janitor.go, after Config.AdoptAfter), a client
// resumes one elsewhere (owner.go) or the node comes back, nobody queues
// for them, and a QoS 1/2 message acknowledged to its publisher in that
// window would be lost for them. So every node keeps the interest of a
// node whose routes closed as the node's orphan interest, and a QoS 1/2
// message matching it is appended to the node's held subject
// (sessPrefix.<partition>.held.<node key>); the publisher's PUBACK/PUBREC
// waits for that append as for a forward. A forward that was out when its
// node was dropped is held the same way instead of counting as done: the
// node may have died before its copy was replicated, or, silent (paused,
// cut off), take it only after the holds of later messages were read
// elsewhere (peer.gone). A node dropped for silence is held for as one
// whose routes closed (orphanInterest). Held messages are applied
//
//   - by the node itself when it is back: a durable consumer follows its
//     held subject all the time, and each message goes to its persistent
//     sessions (clean ones are new since, and must not get old messages
//     out of order);
//   - by a node that takes a session from the stream (a claim its owner
//     did not answer, or an adoption): what was held for any node since
//     the session's last op in the stream (what was held before reached
//     it when its node applied it; the owner record may name a node that
//     never had the session) goes to it before its CONNACK, and the node
//     follows the held subjects for heldWatch, since publishers go on
//     holding until they drop the orphan interest.
//
// A share group whose persistent members were all on the dead node is
// held for too (the message names the group), while no live node has a
// member: claimGroups makes it one delivery per group among the readers.
// A node restarted with sessions in its store holds for them until they
// are settled (restoredGate, below).
//
// A session that holds a message already (a forward its node journalled
// before it died, unconfirmed) does not get the held copy, which is
// acknowledged once the session's copy, journalled again, is replicated
// (broker.Server.RejournalMessage: on a restarted node that copy may be
// in its own store only). A message can also come both held and
// forwarded to the session's new node once its publisher sees that
// node's interest: forwards and held messages carry their origin (node,
// incarnation, message id), and a session taken from the stream
// remembers the origins it got for heldWatch (originWatch).
//
// The orphan interest is dropped when the node's interest is known again
// (its snapshot), or heldGrace after this node's janitor adopted the
// node's sessions (the adopters' interest is known by then).

const (
	heldToken   = "held"
	heldVersion = 1
	// heldGrace: how long after its adoption scan a node still holds
	// messages for a dead node's sessions (the adopters' interest must
	// reach this node first).
	heldGrace = 3 * time.Second
	// heldPoll: how often a taken-over session's follower reads the held
	// subject again.
	heldPoll = 250 * time.Millisecond
	// maxApplied bounds the held messages a node remembers applying.
	maxApplied = 1 << 16
)

// heldWatch is how long a session taken from the stream follows the held
// subjects, and remembers the origins it got: the
// publishers hold for at most AdoptAfter + heldGrace after the node's
// loss, and a hold's append may take ForwardTimeout.
func (n *Node) heldWatch() time.Duration {
	return n.cfg.AdoptAfter + heldGrace + n.cfg.ForwardTimeout + deadAfter
}

// originKey names a message where it was published, so that two copies
// of it (held and forwarded) are seen as one.
type originKey struct {
	node, inc string
	id        uint64
}

// copy is k as the broker tells copies of one QoS 2 message apart
// (broker.RemoteMessage.Copy): every copy of a message (forwarded, held,
// kept) carries the same k, so a session that got one gets no other,
// even after its client completed it, the session moved, or its node died
// and another took it from the stream (its record keeps what it got):
// bench/jepsen/RESULTS.md, "QoS 2 twice to persistent sessions". Never 0.
func (k originKey) copy() uint64 {
	if k.id == 0 {
		return 0 // no message id: not a copy of one message
	}
	h := fnv.New64a()
	h.Write([]byte(k.node))
	h.Write([]byte{0})
	h.Write([]byte(k.inc))
	h.Write(binary.BigEndian.AppendUint64([]byte{0}, k.id))
	return h.Sum64() | 1
}

// place is k as the broker orders a catching-up session's messages by
// (broker.Place): ids grow in publication order within one process.
func (k originKey) place() broker.Place {
	return broker.Place{Source: k.node + "\x00" + k.inc, Seq: k.id}
}

// orphanInterest is the interest of nodes this node dropped, kept until
// their sessions live elsewhere or they are back: the plain filters and
// share groups of their persistent sessions (persistent.go); a clean
// session died with its node. A group is held for only while no live
// node has a member (heldTargets): it gets each message once.
//
// A node dropped for silence (paused, cut off) is held for as one whose
// routes closed (killed): from here the two cannot be told apart, and
// either way its persistent sessions get nothing forwarded any more.
// Held, a message is acknowledged only once a quorum kept it for them;
// not held, it was acknowledged and lost for them (what was published
// between the drop and their adoption or the node's return,
// TestClusterPartitionPersistent), and on a minority side a publish was
// acknowledged that the other side's persistent sessions never got.
type orphanInterest struct {
	mu    sync.Mutex
	tree  *topic.Tree[string, struct{}]
	keys  map[string][]ikey
	count atomic.Int32 // nodes kept, for Forward's fast path
}

func newOrphanInterest() *orphanInterest {
	return &orphanInterest{tree: topic.NewTree[string, struct{}](), keys: map[string][]ikey{}}
}

// keep makes node's persistent filter keys its orphan interest
// (replacing any).
func (o *orphanInterest) keep(node string, keys map[ikey]struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(node)
	var kept []ikey
	for k := range keys {
		if k.isPersist() {
			ok := k.orphanKey()
			o.tree.Subscribe(ok.filter, ok.group, node, struct{}{})
			kept = append(kept, ok)
		}
	}
	if len(kept) > 0 {
		o.keys[node] = kept
		o.count.Add(1)
	}
}

// add makes k (an orphan key) one of node's orphan interest: a hold key
// of a live node (interest.go applyOne).
func (o *orphanInterest) add(node string, k ikey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ks, ok := o.keys[node]
	if slices.Contains(ks, k) {
		return
	}
	o.tree.Subscribe(k.filter, k.group, node, struct{}{})
	o.keys[node] = append(ks, k)
	if !ok {
		o.count.Add(1)
	}
}

// remove undoes add.
func (o *orphanInterest) remove(node string, k ikey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ks := o.keys[node]
	i := slices.Index(ks, k)
	if i < 0 {
		return
	}
	o.tree.Unsubscribe(k.filter, k.group, node)
	if ks = slices.Delete(ks, i, i+1); len(ks) > 0 {
		o.keys[node] = ks
	} else {
		delete(o.keys, node)
		o.count.Add(-1)
	}
}

// drop forgets node's orphan interest (it is back, or its sessions were
// adopted).
func (o *orphanInterest) drop(node string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(node)
}

func (o *orphanInterest) dropLocked(node string) {
	ks, ok := o.keys[node]
	if !ok {
		return
	}
	for _, k := range ks {
		o.tree.Unsubscribe(k.filter, k.group, node)
	}
	delete(o.keys, node)
	o.count.Add(-1)
}

// notHolding returns those of nodes that do not have k (filter, share
// group) among their orphan keys, or nodes itself when all or none have
// it (serving).
func (o *orphanInterest) notHolding(k ikey, nodes []string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var live []string
	for _, node := range nodes {
		if !slices.Contains(o.keys[node], k) {
			live = append(live, node)
		}
	}
	if len(live) == 0 || len(live) == len(nodes) {
		return nodes
	}
	return live
}

// nodes returns the nodes with orphan interest here.
func (o *orphanInterest) nodes() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.keys))
	for node := range o.keys {
		out = append(out, node)
	}
	return out
}

// orphanMatch is a dropped node's interest in one topic: a plain filter
// of its persistent sessions, and the share groups ("group\x00filter",
// as RemoteMessage.Groups) its persistent sessions were members of.
type orphanMatch struct {
	node   string
	plain  bool
	groups []string
}

// match returns the dropped nodes with interest in topic name.
func (o *orphanInterest) match(name string) []orphanMatch {
	if o.count.Load() == 0 {
		return nil
	}
	var out []orphanMatch
	o.tree.Match(name, func(filter, group string, node string, _ struct{}) {
		i := slices.IndexFunc(out, func(m orphanMatch) bool { return m.node == node })
		if i < 0 {
			out = append(out, orphanMatch{node: node})
			i = len(out) - 1
		}
		if group == "" {
			out[i].plain = true
		} else if gk := (ikey{filter, group}).groupKey(); !slices.Contains(out[i].groups, gk) {
			out[i].groups = append(out[i].groups, gk)
		}
	})
	return out
}

// heldTargets returns what a QoS 1/2 message on topic name is held for:
// the dropped nodes whose persistent sessions match it, each with the
// share groups that no live node serves (targets, from plan: every group
// with a member on a live node, unless one is here) and no member here
// has; a group with a live member gets the message there.
func (n *Node) heldTargets(name string, targets []target, passed []string) []orphanMatch {
	ms := n.remote.orphans.match(name)
	out := ms[:0]
	for _, m := range ms {
		m.groups = slices.DeleteFunc(m.groups, func(gk string) bool {
			if slices.ContainsFunc(targets, func(t target) bool { return slices.Contains(t.groups, gk) }) {
				return true
			}
			group, filter, _ := strings.Cut(gk, "\x00")
			return n.local.has(ikey{filter, group}) && !slices.Contains(passed, gk)
		})
		if m.plain || len(m.groups) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// heldHere returns what a QoS 1/2 message on topic name, published here,
// is held for this node by its own hold keys (persistent.go), if
// anything. A plain filter of a restored session not settled yet: its
// copy may be stale. A share group of a session whose keys are here
// without a member of the group in the server (a claim reading the
// session from the stream, a fenced or dropped copy), unless a live node
// serves the group (targets) or another node holds for it (held, from
// heldTargets): the others hold what the keys match for this node, but
// a publish here goes to no other node, and held for nobody it reached
// no member (test/jepsen TestClusterFull seed 194: 12 lost for g0,
// published on n2 while g0's only members were claims waiting on n2;
// TestReproClaimOwnPublish). Whoever adopts the session reads this
// node's held subject (adoptHeld), its group claimed once there.
func (n *Node) heldHere(name string, targets []target, held []orphanMatch, passed []string) (orphanMatch, bool) {
	ms := n.sess.persist.holdMatches(name)
	if len(ms) == 0 {
		return orphanMatch{}, false
	}
	self := orphanMatch{node: n.cfg.Node}
	for _, m := range ms {
		if m.group == "" {
			self.plain = true
			continue
		}
		if slices.Contains(self.groups, m.group) ||
			slices.ContainsFunc(targets, func(t target) bool { return slices.Contains(t.groups, m.group) }) ||
			slices.ContainsFunc(held, func(om orphanMatch) bool { return slices.Contains(om.groups, m.group) }) {
			continue
		}
		group, filter, _ := strings.Cut(m.group, "\x00")
		if n.local.has(ikey{filter, group}) && !slices.Contains(passed, m.group) {
			continue // its member here takes it (not one the broker passed)
		}
		self.groups = append(self.groups, m.group)
	}
	return self, self.plain || len(self.groups) > 0
}

// matchNode returns dropped node's interest in topic name (holdForGone).
func (o *orphanInterest) matchNode(node, name string) orphanMatch {
	for _, m := range o.match(name) {
		if m.node == node {
			return m
		}
	}
	return orphanMatch{node: node}
}

// originWatch remembers, for sessions taken from the stream lately, the
// origins of the messages they got, so that a copy held for their
// previous node and a forwarded copy are delivered once.
type originWatch struct {
	mu    sync.Mutex
	n     atomic.Int32
	until map[string]time.Time
	seen  map[string]map[originKey]struct{}
	// away: per id, the origins noted in seen while the session here
	// was a disowned copy (keep.go). The copy kept them for the
	// session's next owner; a claim that takes the session from the
	// stream here in place of the copy forgets them (arrive).
	away map[string]map[originKey]struct{}
	// held: per id, the origins noted in seen from held copies (a read
	// ahead's, a follower's) given to the copy of the session here. A
	// later claim that takes the session from the stream here in place
	// of that copy forgets them too (arrive).
	held map[string]map[originKey]struct{}
	// self: this node's process (node, incarnation); localAfter: per id,
	// the last id this process gave a message published here when the
	// session was already here (see first).
	self       originKey
	localAfter map[string]uint64
	// lastLocal: the highest message id published here (Forward).
	lastLocal atomic.Uint64
}

// noteLocal notes a message published on this node (Forward).
func (w *originWatch) noteLocal(id uint64) {
	for {
		last := w.lastLocal.Load()
		if id <= last || w.lastLocal.CompareAndSwap(last, id) {
			return
		}
	}
}

// watch starts (or extends) id's watch until then. Called once the
// session is in the server: a message published here from then on
// reached it by its local delivery.
func (w *originWatch) watch(id string, until time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.until == nil {
		w.until, w.seen = map[string]time.Time{}, map[string]map[originKey]struct{}{}
		w.away, w.localAfter = map[string]map[originKey]struct{}{}, map[string]uint64{}
		w.held = map[string]map[originKey]struct{}{}
	}
	cur, ok := w.until[id]
	if !ok {
		w.n.Add(1)
		w.seen[id] = map[originKey]struct{}{}
		w.localAfter[id] = w.lastLocal.Load()
	}
	// Never shortened: each caller needs its watch to last until its
	// own end (a fence's, an adoption's).
	if until.After(cur) {
		w.until[id] = until
	}
}

// arrive watches id until then, as from now for the messages published
// here: id was just taken from the stream here (a claim, an adoption). A
// watch left from before (the session was here before, or a fence here
// watched every session: fenceHold) took what was published here since it
// began as delivered locally, but while the session was away, in the
// stream only, nothing was: kept, it dropped their held copies
// (TestClusterFull seed 42, with fenceHold: 160 acknowledged messages
// published on the adopting node during the claims lost for the two
// sessions it adopted). (A session moved here live counts them from its
// arrival too: movedIn.)
// Likewise the forwards a disowned copy here took: they went to the copy
// that the session from the stream replaces, and their kept copies
// (keep.go) are how it gets them; noted, the adoption dropped them all
// (test/jepsen TestClusterFull seed 49, ps3: 25 lost, every kept copy
// of a forward; TestReproFenceWindowWatched).
// And the held copies (a read ahead's, a follower's) the copy took that
// this read replaces: the record read now has them if an op of that copy
// reached the stream (queued: its readers leave them, recordHas and
// RejournalMessage; completed at QoS 2: its Seen), and this read's
// readers find them where they were held or kept. Noted, they were
// passed over: a claim here whose client had gone adopted the session
// with five held group messages its read ahead claimed for it, lost the
// id to a claim elsewhere before any op of its adoption was in the
// stream, and the client's next claim here read the same record and the
// same five, and delivered none (test/jepsen TestClusterFull short
// faults, seed 414: g0 lost 5; TestOriginWatchArrive). A QoS 1 message
// the replaced copy's client completed may come again.
func (w *originWatch) arrive(id string, until time.Time) {
	w.mu.Lock()
	if _, ok := w.until[id]; ok {
		w.localAfter[id] = w.lastLocal.Load()
		for k := range w.away[id] {
			delete(w.seen[id], k)
		}
		for k := range w.held[id] {
			delete(w.seen[id], k)
		}
	}
	delete(w.away, id)
	delete(w.held, id)
	w.mu.Unlock()
	w.watch(id, until)
}

// movedIn makes the messages published here count as delivered to id
// locally from now (first), for id just put in the server by a live move,
// as arrive does for a session taken from the stream. A watch left from
// an earlier stay here (a fence's, a claim's, a return from a silence
// watches every session here) counted from when it began, but while the
// session was on another node a message published here reached it there
// by a forward, or was held for that node: one held and not applied there
// before the move is what the move's reads of the old owner's held subject
// bring here (beginHanded), and taken for a local delivery it was dropped
// (test/jepsen TestClusterFull, long faults, seed 615, session 26: ps3
// moved n2 -> n1 -> n2, n1 paused between; the 29 messages published on n2
// meanwhile were held for n1, read by n2's catch-up and given to nobody).
// A copy the move carried and a held copy of the same message may both
// reach the session: QoS 1 again, QoS 2 left out by the session's Origins.
// The origins noted as the session's stay (seen, away).
func (w *originWatch) movedIn(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.until[id]; ok {
		w.localAfter[id] = w.lastLocal.Load()
	}
}

// forgetAway forgets the origins noted while id's session here was a
// disowned copy (away): a move that brings the session here live reads
// what that copy kept (takeHeldBack) because the state it adopts does not
// have it. Noted, those origins counted as the session's, and the read
// passed over every kept copy of a forward the copy took (test/jepsen
// TestClusterFull long faults, seed 1146, session 30: ps1's copy on n1,
// watched since its move in, disowned for n2's claim at 46.333, took
// pub2#514-#516 forwarded from n2 and kept them; n1's claim back at
// 46.395 adopted n2's copy, which did not have them, and read n1's
// subject from the disown: the three kept copies, and n2's hold of #514
// for n1, were left out as got; TestOriginWatchClaimBack). A message the
// adopted state has queued is left out by its queue (RejournalMessage);
// one its client completed elsewhere may come again, QoS 1 only (QoS 2
// by the session's Origins).
func (w *originWatch) forgetAway(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.away[id] {
		delete(w.seen[id], k)
	}
	delete(w.away, id)
}

// first reports whether id has not got the message k yet, and notes it.
// Ids not watched always get it. A message published on this node (this
// process) after the session came here reached it locally: a copy held
// for another node (its previous one, say) is not delivered again.
// disowned says the session here is a disowned copy (keep.go): what it
// gets is noted apart too, for arrive to forget.
func (w *originWatch) first(id string, k originKey, disowned bool) bool {
	return w.firstOf(id, k, disowned, false, false)
}

// firstKept is first for a copy of k kept for id's session (keep.go):
// one this node's disowned copy of the session took, here. A message
// published here is not one the session got by the local delivery then:
// the copy took it, and for a share group it was the group's one copy,
// the node serving the group itself rather than the member's owner
// elsewhere. Taken for a local delivery, a move that brought the session
// back here by a live move (the watch left as it was) dropped every kept
// copy of a message published here since the watch began (test/jepsen
// TestClusterFull seed 47 on main 2026-12-06: g0 pub1#372-381, n1's
// "share group missed here after its claim" for g0m1;
// TestReproGroupKeptLocal). Its plain subscriptions may so get one a
// second time, if this node also forwarded it to the owner: QoS 1 may
// come again, QoS 2 is left out by its Origin or copy name.
func (w *originWatch) firstKept(id string, k originKey, disowned bool) bool {
	return w.firstOf(id, k, disowned, true, false)
}

// firstOf is first, or firstKept when kept; held says k is a held copy
// (a read ahead's, a follower's), noted apart too, for arrive to forget.
func (w *originWatch) firstOf(id string, k originKey, disowned, kept, held bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen, ok := w.seen[id]
	if !ok {
		return true
	}
	if !kept && k.node == w.self.node && k.inc == w.self.inc && k.id > w.localAfter[id] {
		return false
	}
	if _, dup := seen[k]; dup {
		return false
	}
	seen[k] = struct{}{}
	if disowned {
		if w.away[id] == nil {
			w.away[id] = map[originKey]struct{}{}
		}
		w.away[id][k] = struct{}{}
	}
	if held {
		if w.held[id] == nil {
			w.held[id] = map[originKey]struct{}{}
		}
		w.held[id][k] = struct{}{}
	}
	return true
}

// watched reports whether id is watched (taken from the stream lately).
func (w *originWatch) watched(id string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	u, ok := w.until[id]
	return ok && now.Before(u)
}

// sweep ends the watches past their end.
func (w *originWatch) sweep(now time.Time) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, u := range w.until {
		if now.After(u) {
			delete(w.until, id)
			delete(w.seen, id)
			delete(w.away, id)
			delete(w.held, id)
			w.n.Add(-1)
		}
	}
}

// dedupPick wraps a forwarded message's Pick so that a watched session
// gets a message once, whether held or forwarded. The decision is made
// once per session per message (a session may match with several
// subscriptions).
func (n *Node) dedupPick(k originKey, inner func(string) bool) func(string) bool {
	return n.dedupPickOf(k, inner, "", false)
}

// dedupPickHeld is dedupPick for a held message (held says so: a read
// ahead's, a follower's; originWatch.held) kept for session kept ("" for
// none: heldFor), which is asked firstKept.
func (n *Node) dedupPickHeld(k originKey, inner func(string) bool, kept string) func(string) bool {
	return n.dedupPickOf(k, inner, kept, true)
}

// dedupPickOf is dedupPick, or dedupPickHeld when held.
func (n *Node) dedupPickOf(k originKey, inner func(string) bool, kept string, held bool) func(string) bool {
	if n.watch.n.Load() == 0 {
		return inner
	}
	decided := map[string]bool{}
	return func(id string) bool {
		if v, ok := decided[id]; ok {
			return v
		}
		disowned := n.sess != nil && n.sess.kept.has(id)
		v := (inner == nil || inner(id)) && n.watch.firstOf(id, k, disowned, id == kept, held)
		decided[id] = v
		return v
	}
}

// heldSubject is node's held subject, in the partition its name hashes to.
func (s *sessions) heldSubject(node string) string {
	return sessPrefix + "." + strconv.Itoa(s.partition(node)) + "." + heldToken + "." + ownerKey(node)
}

// encodeHeld is a held message: its origin, then the forwarded form
// (wire.go).
func encodeHeld(k originKey, fwd []byte) []byte {
	b := make([]byte, 0, 24+len(k.node)+len(k.inc)+len(fwd))
	b = append(b, heldVersion)
	b = appendString(b, k.node)
	b = appendString(b, k.inc)
	b = binary.AppendUvarint(b, k.id)
	return append(b, fwd...)
}

// heldForm returns the forwarded form a held message carries after its
// origin (encodeHeld); false if b is not a held message.
func heldForm(b []byte) ([]byte, bool) {
	r := reader{b: b}
	if r.byte() != heldVersion {
		return nil, false
	}
	r.string()
	r.string()
	r.uvarint()
	return r.b, r.err == nil
}

func decodeHeld(b []byte) (originKey, *broker.RemoteMessage, error) {
	r := reader{b: b}
	if r.byte() != heldVersion {
		return originKey{}, nil, errWire
	}
	k := originKey{node: r.string(), inc: r.string(), id: r.uvarint()}
	if r.err != nil {
		return originKey{}, nil, errWire
	}
	rm, err := decodeForward(r.b)
	if err == nil {
		rm.Copy = k.copy()
	}
	return k, rm, err
}

// readyJS returns the sessions' JetStream handle once their streams are
// ready here, errNotReady before.
func (s *sessions) readyJS() (jetstream.JetStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		return nil, errNotReady
	}
	return s.js, nil
}

// openJS is readyJS for an append that carries no epoch (a hold): the
// partition streams are open once start began, seconds before the
// restored sessions' owners are read (ready) on a loaded restarted node.
func (s *sessions) openJS() (jetstream.JetStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.js == nil {
		return nil, errNotReady
	}
	return s.js, nil
}

// awaitOpenJS is openJS, polled every openJSPoll until ctx ends.
func (s *sessions) awaitOpenJS(ctx context.Context) (jetstream.JetStream, error) {
	for {
		js, err := s.openJS()
		if err == nil {
			return js, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(openJSPoll):
		}
	}
}

// openJSPoll is awaitOpenJS's pause: the streams open once, and a claim
// waits for them behind a live move's CONNACK.
const openJSPoll = 25 * time.Millisecond

// restoredAny reports whether the node restored sessions at start whose
// owners are not read yet.
func (s *sessions) restoredAny() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.restored) > 0
}

// hold appends msg (pub: its PUBLISH; o: its Origin, if any) to node's
// held subject, with the share groups it is held for, and returns the
// append's future; nil, nil when sessions are not replicated here.
// groupsOnly: no plain subscription there is owed it (the node's held-for
// interest in its topic is those groups' only), so its follower gives it
// to no session's plain subscription: it gave a session that moved there
// since, which had the message where it was, a second copy (bench/jepsen
// RESULTS.md, traced runs of session 16).
//
// The plain copy and each group go in appends of their own (holdSplit).
func (n *Node) hold(node string, msg *broker.Message, pub []byte, o broker.Origin, groups []string, groupsOnly bool) ([]jetstream.PubAckFuture, error) {
	k := originKey{n.cfg.Node, n.inc, msg.ID}
	return holdSplit(k, o, node, groups, !groupsOnly, func(gs []string, only bool, id string) (jetstream.PubAckFuture, error) {
		return n.holdAs(node, msg, pub, o, gs, only, id)
	})
}

// holdSplit makes a hold of message k (Origin o) for node: plain, a copy
// for node's plain subscriptions naming no group, under holdMsgID; then
// each of groups apart, for that group only, under groupHoldMsgID. It
// returns the appends' futures (none when sessions are not replicated).
//
// One id names one content. The publisher's hold for a node and the
// node's own hold of the same forward (holdHere, diskhold) share the
// plain id, so that the plain subscriptions get one copy; but the two
// named different groups (the publisher the groups it held for the
// node's hold keys, which it did not forward; the node the forward's
// groups it missed), and JetStream kept whichever append came first and
// answered the other "duplicate": the groups of the other were lost
// (test/jepsen TestClusterFull short faults seed 260, session 24: n2 held
// pub2#74-#76 for n3 with g0 for g0m0's claim there, n3 held the same
// forwards for its plain claim keys, its appends landed first while the
// partition elected a leader, and g0 never got them;
// TestReproHoldSameIDGroup). A group's own id is the same for the same
// message, node and group, whoever holds it, so a repeat is still dropped.
func holdSplit(k originKey, o broker.Origin, node string, groups []string, plain bool, append1 func(groups []string, groupsOnly bool, id string) (jetstream.PubAckFuture, error)) ([]jetstream.PubAckFuture, error) {
	var fs []jetstream.PubAckFuture
	if plain {
		f, err := append1(nil, false, holdMsgID(k, o, node, false))
		if err != nil || f == nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	for _, gk := range groups {
		f, err := append1([]string{gk}, true, groupHoldMsgID(k, o, node, gk))
		if err != nil || f == nil {
			return fs, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// holdAs is hold under the message id id.
func (n *Node) holdAs(node string, msg *broker.Message, pub []byte, o broker.Origin, groups []string, groupsOnly bool, id string) (jetstream.PubAckFuture, error) {
	s := n.sess
	if s == nil {
		return nil, nil
	}
	if _, err := s.readyJS(); err != nil {
		return nil, fmt.Errorf("held for %s: %w", node, err)
	}
	k := originKey{n.cfg.Node, n.inc, msg.ID}
	m := nats.NewMsg(s.heldSubject(node))
	var extra byte
	if groupsOnly {
		extra = flagGroupsOnly
	}
	m.Data = encodeHeld(k, encodeForwardFlags(msg, groups, pub, o, extra|boolBit(msg.Resent(), 4)))
	m.Header.Set(jetstream.MsgIDHeader, id)
	f, err := n.appendHeld(node, m, func(m *nats.Msg) jetstream.PubAckFuture {
		if f := n.fault.unanswers(m); f != nil {
			return f
		}
		if f := n.fault.holdAnsweredLate(m); f != nil {
			return f
		}
		return n.fault.pacesHold(node, m, n.publishHeld, n.heldAnswers, n.log.Info)
	})
	if err != nil {
		return nil, fmt.Errorf("held for %s: %w", node, err)
	}
	return f, nil
}

// heldAnswers reports whether the partition stream of node's held
// subject answers (has a leader): hold-paced's landing.
func (n *Node) heldAnswers(node string) bool {
	js, err := n.sess.readyJS()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(n.ctx, time.Second)
	defer cancel()
	_, err = js.Stream(ctx, streamName(n.sess.partition(node)))
	return err == nil
}

// holdMsgID is the id of the plain hold of message k (Origin o, if any)
// for node (holdSplit): the same id for the same message and node, so
// that a repeat is dropped, also a resend's routing under the same Origin
// from another node, and the node's own hold of a forward (holdHere,
// diskhold), which names no group either. groupsOnly gives the base of
// the ids of holds for share groups (groupHoldMsgID, goneGroupsMsgID),
// never an id of its own: a hold for groups once had it, whatever its
// groups, and two holds naming different groups kept one of them.
func holdMsgID(k originKey, o broker.Origin, node string, groupsOnly bool) string {
	prefix := "h."
	if groupsOnly {
		prefix = "h.g."
	}
	if !o.IsZero() {
		return prefix + "o." + strconv.FormatUint(o.Hash(), 36) + "." + node
	}
	return prefix + k.inc + "." + strconv.FormatUint(k.id, 36) + "." + node
}

// holdForGone decides a forward to node that died before it confirmed
// (errGone). The node may have died before its persistent sessions'
// copies were replicated: if one of them has a matching filter, msg is
// held for them instead. Otherwise only clean sessions there wanted it,
// and they died with the node: nothing is lost by acknowledging msg (a
// clean session is not kept across its node's loss, docs/cluster.md).
//
// groups are the share groups the forward asked node to serve: those its
// persistent sessions were members of are held too (one delivery each,
// held.go claimGroups); the others had only clean members there.
//
// heldPlain says the routing held msg for node already, for its plain
// subscriptions (node's hold keys: a restarted node's unsettled
// sessions, a fenced copy's end, a claim's), and so without the groups
// it asked node to serve. Then the groups are held apart, for them
// only, under an id of their own (goneGroupsMsgID): under the routing's
// hold id the append was answered "duplicate", the held copy named no
// group, and the groups' members read it elsewhere without them
// (test/jepsen TestClusterFull on main 2026-12-06, seed 41: g1
// pub2#127, pub0#151-152, published on n3 between n1's kill and n3's
// "node gone", three "message held for a node already" lines; seed 43:
// g0 pub2#208-209, g1 pub0#204 the same way around n2's kill;
// TestReproGroupGoneHeld).
func (n *Node) holdForGone(ctx context.Context, node string, msg *broker.Message, pub []byte, o broker.Origin, groups []string, heldPlain bool) error {
	fs, err := n.appendGone(node, msg, pub, o, groups, heldPlain)
	return errors.Join(err, n.settleHolds(ctx, node, fs))
}

// appendGone is holdForGone's appends, not waited for; none for none.
func (n *Node) appendGone(node string, msg *broker.Message, pub []byte, o broker.Origin, groups []string, heldPlain bool) ([]jetstream.PubAckFuture, error) {
	m := n.remote.orphans.matchNode(node, msg.Topic)
	m.groups = slices.DeleteFunc(m.groups, func(gk string) bool { return !slices.Contains(groups, gk) })
	if heldPlain {
		if len(m.groups) == 0 {
			return nil, nil
		}
		n.log.Info("cluster: a node gone before it confirmed a forward: its share groups held apart",
			"peer", node, "topic", msg.Topic, "groups", groupKeys(m.groups))
		k := originKey{n.cfg.Node, n.inc, msg.ID}
		f, err := n.holdAs(node, msg, pub, o, m.groups, true, goneGroupsMsgID(k, o, node))
		if err != nil || f == nil {
			return nil, err
		}
		return []jetstream.PubAckFuture{f}, nil
	}
	if !m.plain && len(m.groups) == 0 {
		return nil, nil
	}
	return n.hold(node, msg, pub, o, m.groups, !m.plain)
}

// holdOut holds for node, gone, each publish's forward out to it that it
// neither answered nor had held yet, in the order they were sent: called
// when node is dropped (its routes closed, or silent), and by a routing
// about to hold a later message for node, so that nothing it holds lands
// before them. The appends are not waited for here (settleGone).
//
// It looks through every forward in flight only the first time after
// node was dropped (the forwards out to it then are gone at once); after
// that only through those registered to node gone already (replies'
// late), so a message held while node is away costs its routing no scan
// of the forwards to the other nodes.
func (n *Node) holdOut(node string) {
	n.holdOutMu.Lock()
	defer n.holdOutMu.Unlock()
	closes := n.remote.dropsOf(node)
	all := closes != n.heldOutAt[node]
	for _, pr := range n.replies.goneOut(node, all) {
		n.holdGone(pr)
	}
	if all {
		if n.heldOutAt == nil {
			n.heldOutAt = map[string]uint64{}
		}
		n.heldOutAt[node] = closes
	}
}

// holdGone makes pr's hold for its node gone (holdOut, under holdOutMu).
func (n *Node) holdGone(pr *pendingReply) {
	w := pr.out
	if w.gone == nil {
		w.gone = make([]goneHold, len(w.targets))
	}
	h := &w.gone[pr.target]
	h.fs, h.err = n.appendGone(pr.node, w.msg, w.pub, w.o, w.targets[pr.target].groups, pr.heldPlain)
	pr.held = true
}

// settleGone decides pr, a publish's forward whose node went away before
// it answered (errGone): it waits for the hold holdOut made for it, made
// now if neither the drop nor a later routing got to it yet. One no
// longer waited for (swept past its deadline) is held now.
func (n *Node) settleGone(ctx context.Context, pr *pendingReply) error {
	n.holdOut(pr.node)
	w := pr.out
	n.holdOutMu.Lock()
	held := pr.held
	var h goneHold
	if held {
		h = w.gone[pr.target]
	}
	n.holdOutMu.Unlock()
	if !held {
		return n.holdForGone(ctx, pr.node, w.msg, w.pub, w.o, w.targets[pr.target].groups, pr.heldPlain)
	}
	return errors.Join(h.err, n.settleHolds(ctx, pr.node, h.fs))
}

// groupHoldMsgID is the id of the hold of message k (Origin o) for node,
// for share group gk alone (holdSplit).
func groupHoldMsgID(k originKey, o broker.Origin, node, gk string) string {
	return holdMsgID(k, o, node, true) + "." + ownerKey(gk)
}

// goneGroupsMsgID is the id of holdForGone's hold of a forward's share
// groups apart from the routing's hold for node: the same for a repeat
// (a resend under the same Origin too), and none of the routing's own
// (holdMsgID), nor of node's hold of the forward for itself (holdHere).
func goneGroupsMsgID(k originKey, o broker.Origin, node string) string {
	return "h.f." + strings.TrimPrefix(holdMsgID(k, o, node, true), "h.g.")
}

// settleHolds waits for each of a hold's appends (settleHeld).
func (n *Node) settleHolds(ctx context.Context, node string, fs []jetstream.PubAckFuture) error {
	var err error
	for _, f := range fs {
		err = errors.Join(err, n.settleHeld(ctx, node, f))
	}
	return err
}

// settleHeld waits for a hold's append (appendHeld), which its lane
// publishes again while the partition stream does not answer (electing a
// leader: nats.go gives up at once, "no response from stream"), until
// ForwardTimeout, in the order of the lane; its Msg-Id keeps it once in
// the stream.
func (n *Node) settleHeld(ctx context.Context, node string, f jetstream.PubAckFuture) error {
	select {
	case ack := <-f.Ok():
		if ack != nil && ack.Duplicate {
			// The same message held for node before (a repeat, or a
			// resend's routing under the same Origin).
			n.log.Debug("cluster: message held for a node already", "peer", node, "seq", ack.Sequence)
		}
		return nil
	case err := <-f.Err():
		return err
	case <-ctx.Done():
		return fmt.Errorf("held for %s: %w", node, ctx.Err())
	}
}

// heldRetryWait is the pause before a hold is published again after its
// partition stream did not answer (holdLane.retry).
const heldRetryWait = 250 * time.Millisecond

// jsDupInProcess is JetStream's answer to a message whose Msg-Id another
// append still in process has (409, "duplicate message id is in
// process"); nats.go names no constant for it.
const jsDupInProcess jetstream.ErrorCode = 10158

// holdAgain reports whether a hold's append that failed with err is to be
// published again (holdLane): its stream did not answer, or an append
// of the same message id was still in process. The second is a node's
// hold of a forward for itself (holdHere) meeting its publisher's hold of
// the same message for it, and kept copies of a QoS 2 resend routed twice
// at once: once the other append is in, the same id is answered as a
// duplicate, or stored if that append failed. Before, the forward was not
// confirmed and its publisher's client resent it (test/jepsen
// TestClusterFull seed 42, 2026-12-05 18:39: 22 refusals on n3).
func holdAgain(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.As(err, &api) && api.ErrorCode == jsDupInProcess
}

// deliverHeld delivers one held message to those of the sessions ids
// names that match it and do not hold it already (a forward their node
// took and journalled before it died, whose confirmation died with it,
// is held too), with its Message Expiry counted from when it was held.
// It returns the store ticket of the copies, and of those it journalled
// again (deliverHeldTo).
func (n *Node) deliverHeld(m jetstream.Msg, ids func(string) bool, candidates []string) (broker.Ticket, error) {
	return n.deliverHeldTo(m, ids, nil, candidates)
}

// deliverHeldTo is deliverHeld where a share group's member among ids
// that away names (a disowned copy here: followOwnHeld, ownHeldTo) gets
// the group's message only if the group has no other member among ids.
func (n *Node) deliverHeldTo(m jetstream.Msg, ids, away func(string) bool, candidates []string) (broker.Ticket, error) {
	k, rm, err := decodeHeld(m.Data())
	if err != nil {
		return 0, err
	}
	ids = onlyFor(m, ids) // a disowned copy's message is its session's alone (keep.go)
	if rm.ExpiresIn > 0 {
		md, err := m.Metadata()
		if err != nil {
			return 0, err
		}
		if rm.ExpiresIn -= time.Since(md.Timestamp); rm.ExpiresIn <= 0 {
			return 0, nil // expired while held [MQTT-3.3.2-5]
		}
	}
	// Asked here, not in Pick: Pick runs under the subscription tree's
	// lock, which must not wait for a session's.
	// A session that has the message gets no held copy, and its own copy
	// is journalled again: on a restarted node it may be in this node's
	// store only (the forward's op lost with the killed process), and the
	// held copy is acknowledged once the returned ticket is durable. Not
	// again, a claimer that read the session from the stream found newer
	// messages of the publisher there (this node's follower applied them
	// from its held subject) and this one behind them, read from the held
	// subject by its sequence, or, past it, nowhere (test/jepsen
	// TestClusterFull seed 43: n2's restored ps0 had pub2#250 in its own
	// store only; n1's claim delivered it after #251-#300;
	// TestReproRestoredLocalCopy).
	// Under the gate, as a delivery: an adoption marks its first op as
	// the rollup of the session's record (sessions.adopt), which this op
	// must not take.
	has := map[string]bool{}
	var again broker.Ticket
	n.gate.RLock()
	for _, id := range candidates {
		if !ids(id) {
			continue
		}
		if ok, t := n.srv.RejournalMessage(id, rm.From, rm.Topic, rm.Payload); ok {
			has[id] = true
			again = max(again, t)
		}
	}
	n.gate.RUnlock()
	heldGroups := rm.Groups
	claimed, chosen, err := n.claimGroups(k, rm.Origin, rm.Groups, ids, away, candidates, has, heldFor(m))
	if err != nil {
		return 0, err
	}
	n.fault.claimedFor(n, chosen)
	rm.Groups, rm.Members = claimed, chosen
	rm.Pick = n.dedupPickHeld(k, func(id string) bool { return ids(id) && !has[id] }, heldFor(m))
	rm.PickShared = true // a group goes to one of the sessions ids names
	// Its place always, kept with its queued copies (place.go); Late
	// only while a session here catches up.
	rm.Place, rm.Late = n.places.of(k), n.catching.Load() > 0
	// Acknowledged to its publisher once held: the queue limit is for
	// new messages (seen: 1,042 held delivered at a claim, then the
	// follower's copies dropped as queue_full, acknowledged and lost).
	rm.Accepted = true
	n.gate.RLock()
	_, t := n.srv.DeliverRemote(rm)
	n.gate.RUnlock()
	t = max(t, again)
	if away == nil {
		n.keepHeld(k, m, rm, heldGroups, ids, candidates)
	}
	var passOn map[string][]string
	for _, gk := range rm.Missed {
		id, ok := chosen[gk]
		if !ok {
			continue
		}
		group, filter, _ := strings.Cut(gk, "\x00")
		if to := n.mv.movedTo(id, gk); to != "" {
			if passOn == nil {
				passOn = make(map[string][]string)
			}
			passOn[to] = append(passOn[to], gk)
			n.log.Info("cluster: held message's share group missed here after its claim; passed on to the member's new owner",
				"client_id", id, "group", group, "filter", filter, "peer", k.node, "to", to, "msg_id", k.id)
			continue
		}
		n.log.Info("cluster: held message's share group missed here after its claim; left to the member's next reader",
			"client_id", id, "group", group, "filter", filter, "peer", k.node)
	}
	for to, gks := range passOn {
		n.passMissed(to, rm, gks)
	}
	return t, nil
}

// keepHeld keeps, as keep does a forward's, what a follower of the held
// subjects for sessions taken from the stream here (follow) gives a copy
// disowned here meanwhile (rm.Away, as DeliverRemote saw it), and, for a
// session of ids (among candidates) lost here whose copy has ended
// without a live move out (endedUnmoved: a live move's new owner has
// what the copy took and the places of this node's followers, and a
// kept copy there came behind newer forwards: test/jepsen
// TestClusterFull short faults, seed 453 on this change's first form, ps3
// reordered), what was held before the loss: m with the share groups it was held
// for (groups), no claim made. The session's new owner read the stream
// from its last op, which this node wrote after the hold (its adoption),
// and so read the held subjects from after it: what the follower had not
// given the session by then went to the disowned copy, and ended with it,
// or to nobody (test/jepsen TestClusterFull short faults, seed 453: n2's
// follower of n3's subject, its adoption's read ahead cut by a failed
// claim, claimed two held g1 messages for g1m0 0.4 s after n1's claim
// fenced n2's copy and gave them to it; n1's read ahead of n3's subject
// began at n2's op of 28.382, after the holds of 23.2: both lost;
// TestReproHeldToDisowned, where the copy also ended, handed over to a
// claim that read the stream, before the follower was done: 5 of 20
// missed here "after its claim"). Kept, the new owner's follower of this
// node's subject reads them (they count from when they were kept, after
// the loss), and claims a group for its session, or finds the claim this
// follower made for the same session, its own (ownClaim). Left alone
// here, nobody read them, for the same reason. What was held after the
// loss the new owner reads where it was held.
//
// Not for this node's own follower (followOwnHeld): what it gives a
// disowned copy is in this node's own subject, which a claimer reads
// from where the op's follower stood (opHeldHeader). The keep's wait is
// the follower's; one that fails is said, and the message is not read
// again: the copy has it, and the follower would not give it again.
func (n *Node) keepHeld(k originKey, m jetstream.Msg, rm *broker.RemoteMessage, groups []string, ids func(string) bool, candidates []string) {
	kept := withAway(nil, rm.Away)
	var at time.Time
	for _, c := range candidates {
		if !ids(c) || slices.ContainsFunc(kept, func(kc keptCopy) bool { return kc.id == c }) {
			continue
		}
		lost, ok := n.sess.endedUnmoved(c)
		if !ok {
			continue
		}
		if at.IsZero() {
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			at = heldTime(m, md.Timestamp)
		}
		// heldBackMargin: the hold's time is its stream leader's clock.
		if at.Before(lost.Add(heldBackMargin)) {
			kept = append(kept, keptCopy{id: c, groups: groups})
		}
	}
	if len(kept) == 0 {
		return
	}
	names := make([]string, len(kept))
	for i, kc := range kept {
		names[i] = kc.id
	}
	fwd, ok := heldForm(m.Data())
	var err error
	if !ok {
		err = errWire
	} else {
		var fs []jetstream.PubAckFuture
		fs, err = n.keep(k, rm.Origin, fwd, kept)
		err = errors.Join(err, n.settleKept(fs))
	}
	if err != nil {
		n.log.Warn("cluster: a held message for a session lost here not kept for it; lost for it unless its next owner reads it elsewhere",
			"clients", names, "topic", rm.Topic, "origin", k.node, "err", err)
		return
	}
	// msg_id: with the two lines of claimNamed and deliverHeldTo that
	// name it, a trace tells one message's keep, pass-on and take apart
	// (bench/jepsen/RESULTS.md, "hs28": three such lines within 1 ms, a
	// QoS 2 message twice, not tied to one message).
	n.log.Debug("cluster: a held message for a session lost here kept in the held subject for it",
		"clients", names, "topic", rm.Topic, "origin", k.node, "msg_id", k.id)
}

// passMissed passes a held message's share groups gks, claimed here for
// a member whose session then left by a live move to node to, on to that
// node. Left to the member's next reader, it was lost: a live move's new
// owner reads no held subject of the old one, and other readers leave a
// claim that names another session (test/jepsen TestClusterFull seed 41
// on main 2026-12-06 09:53:49, g1 pub2#406-407: n1 held them for n3
// while n3 was paused; at n3's resume its own follower claimed them for
// g1m0's disowned copy there, which moved live to n2 at the same moment,
// 49.444-49.468; missed at 49.470 and 49.484; n1's reader for g1m1
// found the claim naming g1m0 and left them; TestReproGroupHeldMovedOut).
// A move's groups are passed on for moveLinger after its export, as a
// forward's are (redirect). Not confirmed by to, the message is lost for
// the group as before: read again, it would find no member here to claim
// it for.
//
// The wait holds this node's follower of its held subject, and with it
// the restored sessions' settling: after one pass-on to a node went
// unconfirmed, those to the same node within moveLinger are sent without
// waiting (a node paused or cut off would otherwise cost forward_timeout
// a message).
func (n *Node) passMissed(to string, rm *broker.RemoteMessage, gks []string) {
	if d := n.fault.missedDelay(); d > 0 {
		select {
		case <-time.After(d):
		case <-n.ctx.Done():
		}
	}
	wait := n.mv.passWaits(to)
	if err := n.reforwardWait(to, rm, gks, wait); err != nil {
		n.mv.passUnconfirmed(to)
		n.log.Warn("cluster: held message's share group passed on to a moved member's new owner not confirmed; lost for the group",
			"peer", to, "topic", rm.Topic, "groups", strings.ReplaceAll(strings.Join(gks, " "), "\x00", "/"), "err", err)
	} else if !wait {
		n.log.Warn("cluster: held message's share group passed on to a moved member's new owner without waiting: a pass-on to it went unconfirmed lately",
			"peer", to, "topic", rm.Topic, "groups", strings.ReplaceAll(strings.Join(gks, " "), "\x00", "/"))
	}
}

// errClaim: a held message's share group could not be claimed; it is to
// be read again.
var errClaim = errors.New("cluster: claiming a held message for its share group")

// claimGroups returns which of a held message's share groups this node
// serves, and the member here each goes to. A message held for a dead
// node's group is read by the node when it is back and by every node
// that took one of its sessions from the stream: several may have a
// member of the group, and the group is to get it once. So a node with
// a member among candidates claims the message for the group first, a
// stream append under a message id made of the message's origin and the
// group: JetStream keeps the first and answers the others "duplicate"
// (within the stream's two-minute window, far beyond heldWatch). has
// names the candidates that hold the message already (a forward their
// node journalled, held too): a group one of whose members here is among
// them got it then, and its claim, naming that member, only keeps later
// readers from giving it to another member (one that read it first has:
// a rare duplicate for the group). Only a member's copy says so: a
// candidate that holds the message through a plain subscription says
// nothing of the group, which its publisher held for apart (a dead
// node's orphan group key, a groups-only hold). Taken for the group's
// copy, a plain subscriber taken from the stream here lately, offline
// with the forward in its queue and followed with the member, had every
// such message claimed for the member and delivered to nobody, and the
// member's next readers found the claims and left them (test/jepsen
// TestClusterFull seed 58 with long faults: n1's followers for ps1 and
// g0m0, 32 acknowledged messages lost for g0;
// TestReproHeldGroupPlainCopy).
// (Claimed and then lost with this node before the copy was durable, the
// message is lost for the group: a second fault within that moment.)
//
// The claim names the member it is for, and the delivery gives the group
// to that member or to nobody (RemoteMessage.Members): a member that
// leaves between the claim and the delivery (its restored copy dropped
// for a claim elsewhere) has its next reader on the other node, which
// takes a claim naming its session over (ownClaim). Unnamed, that reader
// found the claim made and left the message while the delivery here
// missed the group (test/jepsen TestClusterFull seed 41, pub0#533 for
// g1; TestReproGroupClaimMissed).
func (n *Node) claimGroups(k originKey, o broker.Origin, groups []string, ids, away func(string) bool, candidates []string, has map[string]bool, kept string) ([]string, map[string]string, error) {
	if len(groups) == 0 {
		return []string{}, nil, nil
	}
	members := map[string][]string{} // "$share/group/filter" of the candidates: who
	awayOnly := map[string][]string{}
	for _, id := range candidates {
		if !ids(id) {
			continue
		}
		if _, subs, ok := n.srv.Client(id); ok {
			for _, sub := range subs {
				if !strings.HasPrefix(sub.Filter, "$share/") {
					continue
				}
				if away != nil && away(id) {
					awayOnly[sub.Filter] = append(awayOnly[sub.Filter], id)
				} else {
					members[sub.Filter] = append(members[sub.Filter], id)
				}
			}
		}
	}
	// A disowned copy is the group's member here only when no live
	// member is (as the broker picks for forwarded messages: keep.go).
	for f, ids := range awayOnly {
		if _, ok := members[f]; !ok {
			members[f] = ids
		}
	}
	var movedOut map[string]bool // filters named for a member that moved out live
	if away != nil {
		// This node's own follower (followOwnHeld): a group with no
		// member here whose member moved out live lately is claimed for
		// that session, and the delivery, missing it, passes the
		// message on to its new owner (passMissed), which reads no held
		// subject of this node.
		for _, gk := range groups {
			group, filter, _ := strings.Cut(gk, "\x00")
			f := "$share/" + group + "/" + filter
			if _, ok := members[f]; ok {
				continue
			}
			if id := n.mv.movedMember(gk); id != "" {
				members[f] = []string{id}
				if movedOut == nil {
					movedOut = make(map[string]bool)
				}
				movedOut[f] = true
			}
		}
	}
	names := make(map[string]string, len(members))
	had := make(map[string]bool, len(members))
	for f, ids := range members {
		// Members take turns by the hold's id, as the broker's pick
		// takes turns by message; one that holds the message is the
		// group's copy.
		names[f] = ids[k.id%uint64(len(ids))]
		if i := slices.IndexFunc(ids, func(id string) bool { return has[id] }); i >= 0 {
			names[f], had[f] = ids[i], true
		} else if len(has) > 0 {
			n.log.Debug("cluster: a held message that sessions here hold is claimed for a share group none of whose members here holds it",
				"group", strings.TrimPrefix(f, "$share/"), "peer", k.node)
		}
	}
	out, err := n.claimNamed(k, o, groups, names, func(f string) bool { return had[f] }, movedOut, members, kept)
	if err != nil {
		return nil, nil, err
	}
	chosen := make(map[string]string, len(out)) // names, as claimNamed left it
	for _, gk := range out {
		group, filter, _ := strings.Cut(gk, "\x00")
		chosen[gk] = names["$share/"+group+"/"+filter]
	}
	return out, chosen, nil
}

// claimFor is claimNamed for the members ("$share/group/filter") given,
// each named member; o is the message's Origin, if any. member, if not
// "", is the one session the claim is made for: a read ahead for a
// session taken from the stream (heldahead.go). kept is the session a
// kept copy is marked for (heldFor), "" for a hold.
func (n *Node) claimFor(k originKey, o broker.Origin, groups []string, members map[string]bool, had bool, member, kept string) ([]string, error) {
	names := make(map[string]string, len(members))
	for f, in := range members {
		if in {
			names[f] = member
		}
	}
	return n.claimNamed(k, o, groups, names, func(string) bool { return had }, nil, nil, kept)
}

// claimNamed claims the groups of groups that have a member here
// (names, by "$share/group/filter"), and returns those it won, but for
// those whose named member had says holds the message already. A claim
// names the session it is for (names' value; "" for none) and a claim
// found already made for the same session is its own: see ownClaim. So
// is one found made for another of the group's members here (others, by
// filter: a follower's candidates), unless the named member holds the
// message; names then names that member, for the delivery.
//
// Except for a member that moved out of here live (movedOut, by filter:
// the follower's pass-on, claimGroups): a claim already made for it is
// another reader's, a read ahead for the session's claim from the stream
// that gave it the message (here or elsewhere) before it moved, unless
// this node's follower made it for the same pass-on and was handed the
// message back (errClaim) before it passed it on (liveMoves.passClaimed).
// Taken as its own, the follower passed the message on again and the
// new owner gave the group a second copy: to the member that had
// completed it, under no copy name it knew, or to another member
// (test/jepsen TestClusterFull short faults, seed 119: pub2#88 held by
// n1 for killed n3, claimed at 00.719 for g0m0 and at 01.386 for g1m1 by
// read aheads and delivered; n3's follower read it at 11.765, after both
// had moved out of n3 live, and passed it on to n2, where g1m1 got it
// again and g0m1 got g0's second copy; TestReproGroupHeldPassedTwice).
//
// kept, if not "", is the session the held message is a kept copy for
// (heldFor): a claim found made for that session's served copy
// (servedClaim) is its own too (keptServed).
func (n *Node) claimNamed(k originKey, o broker.Origin, groups []string, names map[string]string, had func(string) bool, movedOut map[string]bool, others map[string][]string, kept string) ([]string, error) {
	out := []string{}
	if len(groups) == 0 {
		return out, nil
	}
	s := n.sess
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	for _, gk := range groups {
		group, filter, _ := strings.Cut(gk, "\x00")
		f := "$share/" + group + "/" + filter
		member, ok := names[f]
		if !ok {
			continue
		}
		if js == nil {
			return nil, fmt.Errorf("%w: %w", errClaim, errNotReady)
		}
		m := s.claimMsg(k, o, gk, member)
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
		var ack *jetstream.PubAck
		err := n.fault.claimUnanswered()
		if err == nil {
			ack, err = publishClaim(ctx, js, m)
		}
		passing := movedOut[f]
		mid := m.Header.Get(jetstream.MsgIDHeader)
		switch {
		case err != nil || member == "":
		case passing && ack.Duplicate:
			if n.mv.passClaimed(mid) {
				ack.Duplicate = false
			} else {
				n.log.Info("cluster: held message's share group claimed by another reader before its member moved out live; left to that reader",
					"client_id", member, "group", group, "filter", filter, "peer", k.node)
			}
		case passing:
			n.mv.notePassClaim(mid)
		case ack.Duplicate:
			var by string
			if by, err = claimData(ctx, js, ack); err != nil {
				break
			}
			alt := others[f]
			if had(f) {
				alt = nil // the group's copy is the one member here holds
			}
			switch {
			case keptServed(by, member, kept):
				if !had(f) { // else the session holds it: nothing taken
					n.log.Info("cluster: kept copy's share group claimed for its own session's served copy; taken here as the session's",
						"client_id", member, "group", group, "filter", filter, "peer", k.node, "msg_id", k.id)
				}
				ack.Duplicate = false
			case !ownClaim(by, member, alt):
				// Said: without this line a trace had to read the
				// claims from the stream's blocks (RESULTS.md,
				// "loss194").
				n.log.Info("cluster: held message's share group claimed for another member; left out here",
					"client_id", member, "claimed_for", strings.TrimPrefix(by, "\x00"), "served", strings.HasPrefix(by, "\x00"),
					"group", group, "filter", filter, "peer", k.node)
			case by != member:
				n.log.Debug("cluster: held message's share group claimed for another member here; delivered to it",
					"client_id", by, "turn", member, "group", group, "filter", filter, "peer", k.node)
				names[f] = by
				ack.Duplicate = false
			default:
				ack.Duplicate = false
			}
		}
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", errClaim, group, err)
		}
		// A member here that holds it already (had) claims it too,
		// without a second copy, so that readers after this one
		// leave it.
		if !ack.Duplicate && !had(f) {
			out = append(out, gk)
		}
	}
	return out, nil
}

// claimMsg is the claim of held message k (Origin o, if any) for share
// group gk, naming member. Under its Origin, if any: a QoS 2 resend
// routed again from another node is held under another key, the same
// message. Else under k's copy name (copyClaimMsg).
func (s *sessions) claimMsg(k originKey, o broker.Origin, gk, member string) *nats.Msg {
	if o.IsZero() {
		return s.copyClaimMsg(k.copy(), gk, member)
	}
	m := nats.NewMsg(s.claimSubject(o))
	m.Header.Set(jetstream.MsgIDHeader, "g.o."+strconv.FormatUint(o.Hash(), 36)+"."+ownerKey(gk))
	m.Data = []byte(member)
	return m
}

// copyClaimMsg is the claim for share group gk, naming member, of the
// message with no Origin whose copies are named copy (originKey.copy):
// a held copy's reader, a first routing (claimServed, under the
// forward's source) and the adoption of a session with the message
// queued (claimQueued: a queued delivery keeps only the copy name, as
// its Origin's Nonce) make the same claim. Under the holding node's
// name and the message's id, as before, an adoption could not name the
// claim: a clean publisher's copy queued for a member whose first
// routing's claim was not made, moved live or read from the stream, went
// out unclaimed while the forward's groups were held for the dead node
// and their reader gave the group a second copy (test/jepsen
// TestClusterFull short faults, seeds 215 and 217;
// TestReproGroupCopyUnclaimedRead). One subject per partition, the
// partition by the copy name.
func (s *sessions) copyClaimMsg(copy uint64, gk, member string) *nats.Msg {
	c := strconv.FormatUint(copy, 36)
	m := nats.NewMsg(sessPrefix + "." + strconv.Itoa(s.partition(c)) + ".heldgroup.copies")
	m.Header.Set(jetstream.MsgIDHeader, "g.c."+c+"."+ownerKey(gk))
	m.Data = []byte(member)
	return m
}

// claimServed claims, for the first routing of a QoS 2 message under o,
// the share groups it gave to a live member here (groups: ServedGroups,
// RemoteMessage.Served), as ClaimGroup does for a resend, once the
// member's copy here is durable. First routings claimed nothing, and a
// node prefers its own members: a resend routed from another node (the
// publisher moved, its first routing not confirmed) gave the group to a
// member there too (test/jepsen TestClusterFull: seed 42 pub0#131 to two
// members of g0 and of g1; TestReproGroupResendElsewhere). Now the
// resend's claim finds the group claimed and leaves it out.
//
// A forward with no Origin (a clean publisher's QoS 2 message, named by
// its copy) is claimed under k, its source, as a reader claims a copy of
// it held for this node: the sender holds the forward's groups for this
// node when it dies before its confirmation left (holdForGone), and the
// reader of that copy for another member found the group unclaimed and
// gave it a second copy (test/jepsen TestClusterFull short faults, seed
// 133: pub2#170 given to g0m0 on n3 at 49.243, n3's confirmation held
// back by its own holds and lost with its kill at 49.742; n1 held g0 for
// n3 at 49.981, and n2's read ahead for g0m1 claimed it at 54.295;
// TestReproGroupServedGone). The claim names no member: no reader takes
// it for its own (ownClaim). Only a group that the others hold for this
// node should it die (a persistent member here: its persistent or hold
// key, orphanInterest) is claimed so: no other copy of a group of clean
// members here is ever read, and a clean publisher's message to them
// made no stream write before (BenchmarkClusterGroupQoS2 remote-clean:
// 0.5 ms/op, 1.3 with a claim per message; RESULTS.md, "g133").
//
// Not before the member's copy is durable: the claim goes to another
// stream than the member's queued copy, straight away, while the copy
// waits in its partition's queue; a node killed in between left the
// claim without the copy, and the resend left the group out: nobody got
// the message (test/jepsen TestClusterFull short faults, seed 112: g1
// never got pub0#167, given to g1m1 on n1 29 ms before n1's kill;
// TestReproGroupClaimBeforeQueued). A copy that does not become durable
// here is not claimed: the resend may give the group its message again
// (a duplicate if the copy reached its member), never leave it out. The
// wait is the one the publisher's PUBREC waits for, so a resend (after
// no PUBREC) finds the claim made unless this node died or its stores
// failed; an append lost with this node leaves the duplicate as before.
// So does one not in yet when the member's PUBLISH goes out (it waits
// for the same durable copy, not for the claim) and the node dies: the
// claim is sent as that wait ends, a stream round trip's window. That
// window is closed for a persistent member's QoS 2 copy, whose group
// the broker holds for ClaimServed before the PUBLISH (servedgate.go)
// and does not report here: what comes here is a clean member's copy
// or a QoS 1 one.
//
// Each claim names its member (servedClaim, members in groups' order): a
// copy that leaves this node before its claim is made (a live move, a
// stream read of its queued op) is claimed by the node that takes its
// session, and that claim, found made by this one, is the copy's own
// (claimQueued).
func (n *Node) claimServed(k originKey, o broker.Origin, groups, members []string) {
	if o.IsZero() {
		if k.id == 0 {
			return
		}
		groups, members = n.heldForHere(groups, members)
	}
	if n.sess == nil || len(groups) == 0 {
		return
	}
	s := n.sess
	s.mu.Lock()
	js, t := s.js, s.last // the member's copy is queued: before or at t
	s.mu.Unlock()
	if js == nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := s.Wait(t); err != nil {
			n.log.Info("cluster: share groups of a first routing not claimed: their copy here is not durable",
				"client_id", o.ClientID, "packet_id", o.PacketID, "peer", k.node, "groups", len(groups), "err", err)
			return
		}
		if leave, first := n.fault.leavesServed(o.ClientID, members); leave {
			if first {
				n.log.Info("cluster: test fault: a first routing's share group claims left out", "client_id", o.ClientID)
			}
			return
		}
		if d := n.fault.delaysServed(o.ClientID, members); d > 0 {
			n.log.Info("cluster: test fault: a first routing's share group claims delayed", "client_id", o.ClientID, "members", members, "for", d)
			select {
			case <-time.After(d):
			case <-n.ctx.Done():
				return
			}
		}
		fs := make([]jetstream.PubAckFuture, 0, len(groups))
		for i, gk := range groups {
			var member string
			if i < len(members) {
				member = servedClaim(members[i])
			}
			m := s.claimMsg(k, o, gk, member)
			f := n.fault.silencesServed(o.ClientID, m)
			var err error
			if f != nil {
				n.log.Info("cluster: test fault: a first routing's share group claim left unanswered", "client_id", o.ClientID)
			} else if f, err = js.PublishMsgAsync(m); err != nil {
				n.log.Debug("cluster: share group of a first routing not claimed", "client_id", o.ClientID, "peer", k.node, "err", err)
				continue
			}
			fs = append(fs, f)
		}
		n.servedClaimed(js, k, o, fs)
	}()
}

// heldForHere returns the share groups of groups ("group\x00filter")
// that the other nodes would hold for this node's persistent members
// were it to die: those with a persistent or hold key announced here;
// and of members (each group's member, in groups' order), theirs.
func (n *Node) heldForHere(groups, members []string) ([]string, []string) {
	var out, to []string
	for i, gk := range groups {
		group, filter, _ := strings.Cut(gk, "\x00")
		pk := persistShareKey(filter, group)
		if n.local.has(pk) || n.local.has(pk.holdKey()) {
			out = append(out, gk)
			if i < len(members) {
				to = append(to, members[i])
			}
		}
	}
	return out, to
}

// servedClaimed waits for claimServed's appends, each published again
// while its partition stream does not answer (an election: short faults
// make them common) or another append of its id is in process, and says
// what became of them: a claim found made means a reader of a held or
// kept copy, or a resend's routing, gave the group its copy first, and
// the member here has one too.
//
// The wait is claimSettleBound, not forward_timeout: an append sent to a
// stream whose leader was just killed gets no answer at all until the
// async publish timeout (forward_timeout), and the same stall holds the
// publisher's ops in that partition, so its connection closes and its
// resend, on another node, claims the group for its member there (seed
// 325: the claim given up 51 ms after the new leader was elected, the
// resend's claim 2.7 s later). Published again, the claim lands as soon
// as the stream has a leader, which the resend's claim waits for too. An
// election longer than the bound leaves the group to the resend, as
// before, logged.
func (n *Node) servedClaimed(js jetstream.JetStream, k originKey, o broker.Origin, fs []jetstream.PubAckFuture) {
	ctx, cancel := context.WithTimeout(n.ctx, claimSettleBound(n.cfg.ForwardTimeout))
	defer cancel()
	claimed := 0
	for _, f := range fs {
		ack, silent, err := settleClaim(ctx, js, f)
		if err != nil {
			n.log.Info("cluster: share group of a first routing not claimed: a resend elsewhere may give the group a second copy",
				"client_id", o.ClientID, "packet_id", o.PacketID, "peer", k.node, "err", err)
			continue
		}
		claimed++
		switch {
		case ack.Duplicate && silent:
			// The unanswered append may have been stored: its own
			// Msg-Id found made is no proof of another claim.
			n.log.Info("cluster: a first routing's share group claim, published again after no answer, was found made (its own first append, or a held copy's reader, a resend): the group may have it twice",
				"client_id", o.ClientID, "packet_id", o.PacketID, "peer", k.node)
		case ack.Duplicate:
			n.log.Info("cluster: a first routing's share group was claimed before (a held copy's reader, a resend): the group may have it twice",
				"client_id", o.ClientID, "packet_id", o.PacketID, "peer", k.node)
		}
	}
	if claimed > 0 {
		n.log.Debug("cluster: share groups of a first routing claimed", "client_id", o.ClientID, "peer", k.node, "groups", claimed)
	}
}

// claimSettleBound is how long servedClaimed publishes a claim again:
// three async publish timeouts (forward_timeout each), which outlasts the
// publisher's close (forward_timeout after its PUBLISH, its ops held in
// the same stream) and move before its resend; at most a minute, well
// inside the partition streams' two-minute duplicate window, so that an
// append published again is still matched with an unanswered one that
// was stored.
func claimSettleBound(forward time.Duration) time.Duration {
	return min(3*forward, time.Minute)
}

// settleClaim waits for the claim append f, published again after
// heldRetryWait while holdAgain says so or the append got no answer
// within the async publish timeout, until ctx ends. silent reports that
// an unanswered append was published again: a duplicate answer may then
// be that append's own.
func settleClaim(ctx context.Context, js jetstream.JetStream, f jetstream.PubAckFuture) (ack *jetstream.PubAck, silent bool, err error) {
	for {
		select {
		case ack := <-f.Ok():
			return ack, silent, nil
		case err := <-f.Err():
			unanswered := errors.Is(err, jetstream.ErrAsyncPublishTimeout)
			if !unanswered && !holdAgain(err) {
				return nil, silent, err
			}
			select {
			case <-ctx.Done():
				return nil, silent, fmt.Errorf("%w (%w)", ctx.Err(), err)
			case <-time.After(heldRetryWait):
			}
			again, perr := js.PublishMsgAsync(f.Msg())
			if perr != nil {
				return nil, silent, perr
			}
			f, silent = again, silent || unanswered
		case <-ctx.Done():
			return nil, silent, ctx.Err()
		}
	}
}

// publishClaim appends the group claim m, again after a short pause
// while JetStream answers that an append of its message id is still in
// process (10158): two readers claiming one message for one group at
// once (a read ahead and a follower, or two nodes' readers), or a QoS 2
// resend's claim (ClaimGroup) meeting a reader's. Once the other append
// is in, the same id is answered as a duplicate (the other claim won),
// or stored if that append failed. Before, the claim failed: a reader
// stopped there and tried the read again later, and ClaimGroup's resend
// was refused. Bounded by ctx (the caller's forward_timeout).
func publishClaim(ctx context.Context, js jetstream.JetStream, m *nats.Msg) (*jetstream.PubAck, error) {
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, 200*time.Millisecond) {
		ack, err := js.PublishMsg(ctx, m)
		var api *jetstream.APIError
		if err == nil || !errors.As(err, &api) || api.ErrorCode != jsDupInProcess {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
	}
}

var _ broker.ResendClaimer = (*Node)(nil)

// ClaimGroup implements broker.ResendClaimer: a QoS 2 resend's share
// group gk, about to go to member, live here, is claimed as a reader
// claims a kept or held copy (claimFor, under the Origin): a reader that
// finds it made leaves its copy, and a claim a reader made first keeps
// the resend from the group. The claim names member as a first
// routing's does (servedClaim): should the member's session move before
// it got the message, its adoption finds the claim its copy's own
// (claimQueued), and a claim found made for member (that adoption's, or
// a first routing's here) gives it the message again, which its session
// takes once (the Origin). So is a served claim found made for one of
// others, the group's other members here: a resend routed to that
// member's copy on another node claimed it there, and the copy moved
// here (or out of the routing there) before it got the message; the
// group goes to it here, which takes it once (the Origin), rather than
// to nobody (test/jepsen TestClusterFull short faults, seed 2027;
// broker TestResendClaimsOther). Without replicated sessions nothing
// here keeps copies: member at once.
func (n *Node) ClaimGroup(o broker.Origin, gk, member string, others []string) (string, error) {
	if n.sess == nil {
		return member, nil
	}
	group, filter, _ := strings.Cut(gk, "\x00")
	f := "$share/" + group + "/" + filter
	names := map[string]string{f: servedClaim(member)}
	var alt map[string][]string
	if len(others) > 0 {
		served := make([]string, len(others))
		for i, id := range others {
			served[i] = servedClaim(id)
		}
		alt = map[string][]string{f: served}
	}
	out, err := n.claimNamed(originKey{}, o, []string{gk}, names, func(string) bool { return false }, nil, alt, "")
	if err != nil {
		return "", err
	}
	by := ""
	if len(out) == 1 {
		by = strings.TrimPrefix(names[f], "\x00")
	}
	// Said on success too: a claim "served:M" in a stream dump is either
	// a first routing's (logged with its member) or this one, and
	// without the line a trace could not tell which node made it
	// (bench/jepsen/RESULTS.md gl29: seed 958's served:g1m1, logged by
	// no node).
	n.log.Debug("cluster: a QoS 2 resend's share group claimed before its routing here", "client_id", o.ClientID,
		"packet_id", o.PacketID, "group", group+"/"+filter, "member", member, "won", len(out) == 1, "for", by)
	return by, nil
}

// claimSubject is where a group claim under Origin o is appended. A
// message id is unique within one stream only, so the claims of one
// Origin go to one partition whatever node held the copy: the
// publisher's client id's. By the holding node's name, a QoS 2 message
// kept or held by its first publishing node and again, under the same
// Origin, by the node its resend was routed from, was claimed in two
// streams when the two names fell in different partitions, and both
// copies reached the group.
func (s *sessions) claimSubject(o broker.Origin) string {
	return sessPrefix + "." + strconv.Itoa(s.partition(o.ClientID)) + ".heldgroup." + ownerKey(o.ClientID)
}

// ownClaim reports whether a reader of a held copy, reading it for
// member (the session this read is for: a read ahead's, or the one a
// follower's turn named) or for one of others (the group's other members
// here that a follower reads for; none for a read ahead), takes the
// group claim it found made, naming by, as its own and delivers the
// group's message to by.
//
// What a claim's data means, by who makes it:
//   - a session's client id: a reader of a held or kept copy (a read
//     ahead, a follower, claimGroups) chose that session for the group's
//     copy. The reader may never have delivered it: a read ahead claims
//     before its adoption is decided (adoptHeld), and an adoption given up
//     for a newer claim of the id leaves its claims standing with the
//     copies dropped, as does a node killed in between. So the claim is
//     the session's own wherever it is read next: its next reader takes
//     it over and delivers. The session reads what was held since its
//     last op in the stream, which a claim that adopted it and delivered
//     the message has moved past. Left out, the group never got those
//     messages (test/jepsen TestClusterFull seed 42: a member claimed
//     over and over by its reconnecting client, each claim superseded by
//     the next; 858 acknowledged messages lost for g0).
//   - "\x00" and a client id (servedClaim): the member got its copy
//     outside the held copies (a first routing, claimServed; a resend,
//     ClaimGroup; a queued copy's adoption, claimQueued). No held copy's
//     reader takes it (a client id never holds U+0000): the group has
//     its message.
//
// A follower reads for several members of a group and names one by the
// hold's id (claimGroups); a claim found made for another of them is
// that member's, read here: the turn only chooses a member when no claim
// was made. Left out there, the message was lost whenever the turn named
// another member than the claim: the claim's session, here, was not read
// for again (test/jepsen TestClusterFull short faults, seed 194: held
// g0 messages claimed for g0m0 by n3's read ahead, superseded and n3
// killed before it adopted; n2's read ahead for g0m0 failed on a claim's
// "no response from stream" and left them to n2's follower, which read
// them with g0m0 and g0m1 in the server: the 9 whose turn named g0m1
// were acknowledged and lost; TestReproGroupClaimOtherMember). A read
// ahead has no others: a claim for another session is left to that
// session's own reader, which takes it over as above. Other readers of
// the claims: claimQueued drops a queued copy of a member whose group was
// claimed for anyone else (the claim's member gets the group's message
// from its reader), and ClaimGroup (member "\x00"+id) refuses a resend
// the group got by a held copy's reader.
func ownClaim(by, member string, others []string) bool {
	return by == member || slices.Contains(others, by)
}

// keptServed reports whether a reader of a copy kept for session kept
// (keep.go), reading it for member, takes a served claim it found made
// (by) as its own: made for that same session. A kept copy is the
// group's one copy, given to that session alone, and the claim was made
// by a copy of the same session (an adoption's claimQueued of the queue
// a live move handed over, which holds what the disowned copy took
// before its answer, kept copies included). That copy may never deliver
// it: a move cut by a newer claim after its claims is adopted as a
// disowned copy with no client and its ops kept local, and the claim
// that took the session reads the stream, where the message is only as
// this kept copy. Left out there as served elsewhere, it was lost
// (TestReproKeptNamedClaimBack: n3's move of kn-sub claimed q2-0, q2-2
// and q2-4 for "\x00kn-sub" at 19.827, was cut by n2's claim back and
// ended; n2's read ahead of its own subject left the three out,
// "claimed_for=kn-sub served=true"). Taken, the session gets it once: a
// copy of it the adopted record holds is left out (recordHas, has), and
// one the session got before under the same Origin or copy name
// (StoredSession.Seen) is not delivered again, as for a resend
// ClaimGroup routes to the member its claim named.
func keptServed(by, member, kept string) bool {
	return kept != "" && member == kept && by == servedClaim(kept)
}

// heldConsumer names node's durable consumer of its held subject (hex: a
// consumer name allows fewer characters than a node name).
func (s *sessions) heldConsumer(node string) string {
	return "roost-held-" + hex.EncodeToString([]byte(node))
}

// followOwnHeld applies what other nodes held for this node while they had
// dropped it (restarted or paused here): a durable consumer, so that a
// restart goes on after what was applied, acknowledged once the copies
// are in the store.
func (s *sessions) followOwnHeld() {
	defer s.n.wg.Done()
	n := s.n
	name, stream := s.heldConsumer(n.cfg.Node), streamName(s.partition(n.cfg.Node))
	var backoff time.Duration
	// applied: stream sequences applied by this process, whose
	// acknowledgement may not have reached the consumer (it delivers them
	// again): applied twice, a message the session completed meanwhile
	// would reach it twice.
	// Each with the store ticket of its copies: acknowledged only once
	// those are durable, also when read again after a failed wait.
	applied := map[uint64]broker.Ticket{}
	var gap heldGap
	for n.ctx.Err() == nil {
		began := time.Now()
		err := s.followOwnHeldOnce(stream, name, applied, &gap)
		if n.ctx.Err() != nil {
			return
		}
		backoff = followBackoff(backoff, time.Since(began))
		n.log.Warn("cluster: following messages held for this node; again soon", "err", err, "backoff", backoff)
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// followSteady is how long a follow of what is held for this node must
// have run for its failure to start the backoff afresh.
const followSteady = 10 * time.Second

// followBackoff is the wait after a follow of what is held for this node
// that ended after ran, the previous wait having been last (0: none
// yet): doubled up to 2 s while follows keep failing, 100 ms again after
// one that ran followSteady, whose failure is a new one (a leader
// change), not the last one again.
func followBackoff(last, ran time.Duration) time.Duration {
	if last == 0 || ran >= followSteady {
		return 100 * time.Millisecond
	}
	return min(2*last, 2*time.Second)
}

// fetchWait is how long a fetch of what is held for this node waits for
// a message when none is there (followOwnHeldOnce); the server ends the
// pull a little before it (FetchContext: at 90 %).
const fetchWait = 2 * time.Second

// fetchWaiting fetches up to fetchMax messages of cons, waiting up to
// fetchWait, or until ctx ends, for them; done (nil after an error) ends
// the wait's timer once the batch was read.
func fetchWaiting(ctx context.Context, cons jetstream.Consumer) (b jetstream.MessageBatch, done context.CancelFunc, err error) {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	if b, err = cons.Fetch(fetchMax, jetstream.FetchContext(fctx)); err != nil {
		cancel()
		return nil, nil, err
	}
	return b, cancel, nil
}

// heldGap tracks, across the follower's passes, whether its consumer
// delivered messages this process never got: a fetch whose reply was lost
// (a leadership change while it was on its way, the pass ending with
// "nats: leadership change"), or messages a pass left unacknowledged. The
// consumer delivers those again only after its AckWait, after the later
// ones; meanwhile the stream sequence of the last message applied is not
// where the follower stands: every message before gate.next is applied,
// and a return's catch-up ending at gate.next past them sent the forwards
// made after the return before them (TestReproReturnHoldLanding with a
// plain roost, session 27: 5 held messages delivered 14 s after newer
// ones), and a handover naming this node's held subject from there
// (withOwnBehind) would have the new owner pass them over. While open,
// gate.next follows the consumer's ack floor instead.
type heldGap struct {
	open bool
	dseq uint64 // the consumer's delivery sequence of the last message read
	// looked: this process has seen the consumer's state once; mine:
	// then nothing was delivered and unacknowledged, so every message
	// past the ack floor acknowledged since was applied by this process
	// (the applied map), and a reset to the floor (resendLost) delivers
	// again only what it applied, left out as applied, or never got.
	looked, mine bool
	reset        time.Time // the last reset to the floor (resendLost)
}

// first notes the consumer's state at this process's first look at it
// (ci nil: not known, no reset).
func (g *heldGap) first(ci *jetstream.ConsumerInfo) {
	if !g.looked {
		g.looked, g.mine = true, ci != nil && ci.NumAckPending == 0
	}
}

// resets reports whether an empty read whose consumer state is ci finds
// messages delivered that this process never got, to be sent again now
// (resendLost): none in its hands (every message read was acknowledged
// or handed back before the read), those acknowledged past the floor
// all its own (mine, within the applied map's reach), and the last
// reset heldResetEvery ago.
func (g *heldGap) resets(ci *jetstream.ConsumerInfo, now time.Time) bool {
	return g.mine && ci.NumAckPending > 0 && ci.Delivered.Stream-ci.AckFloor.Stream < maxApplied &&
		now.Sub(g.reset) >= heldResetEvery
}

// heldResetEvery bounds how often the follower sends its consumer back to
// its ack floor (resendLost): once the reset is applied, the next read
// gets the messages.
const heldResetEvery = 2 * time.Second

// see notes, for a message read at delivery sequence dseq: a delivery
// sequence that does not follow the last one read means deliveries this
// process did not get.
func (g *heldGap) see(dseq uint64) {
	if dseq != g.dseq+1 {
		g.open = true
	}
	g.dseq = dseq
}

func (s *sessions) followOwnHeldOnce(stream, name string, applied map[uint64]broker.Ticket, gap *heldGap) error {
	n := s.n
	if n.fault.ownHeldUnreached(n.srv.HasSession) {
		return errors.New("test fault: own-held-unreached")
	}
	if err := n.fault.heldLeaderlessErr(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(n.ctx, followAttempt)
	cons, err := s.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: s.heldSubject(n.cfg.Node), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 2 * n.cfg.ForwardTimeout, MaxAckPending: fetchMax,
	})
	cancel()
	if err != nil {
		return err
	}
	// Where this process's applying begins: every message of the subject
	// up to the consumer's ack floor was applied durably (acknowledged
	// after WaitDurable), the rest is read from here. A restored session
	// claimed elsewhere before it settled sends its claimer here
	// (takeUnsettled) rather than to the time of the session's last op:
	// the ops of a batch applied here may land in the stream seconds
	// later (a partition electing a leader), after messages held for
	// this node meanwhile that the copy never got, which a read by time
	// then passed over (TestReproUnsettledOpsLate;
	// TestClusterRestartedNodeSessionResumedElsewhere in CI: 12 of 413
	// lost, here 338 of 792).
	gap.first(cons.CachedInfo())
	if ci := cons.CachedInfo(); ci != nil {
		s.gate.next.CompareAndSwap(0, ci.AckFloor.Stream+1)
		// Delivered and not acknowledged: not in this pass's hands (a
		// lost fetch's, an earlier process's, a NAK's).
		gap.dseq = ci.Delivered.Consumer
		if ci.NumAckPending > 0 {
			gap.open = true
		}
	} else {
		gap.open = true
	}
	// Until the restored sessions are settled, what was held for this
	// node up to now is read, and the gate opens once it is applied
	// (restoredGate): up to the subject's last message as of the first
	// read, not until nothing is left, which publishers holding for
	// this node all the while it is unsettled can put off for good.
	var target uint64
	if s.gate.unsettledAny() {
		if target, err = s.heldLast(stream); err != nil {
			return err
		}
	}
	// The catch-up after the settle reads up to the subject's last
	// message as of its first read, for the same reason.
	var caughtTo uint64
	caughtKnown := false
	// The wait of a fetch ends with the node (fetchWait): bounded by a
	// fixed wait alone, it held up every node's Close by up to 2 s.
	var fetchDone context.CancelFunc
	defer func() {
		if fetchDone != nil {
			fetchDone()
		}
	}()
	for n.ctx.Err() == nil {
		if fetchDone != nil {
			fetchDone()
		}
		// A catch-up begun on the node's return from a silence ends as
		// the settle's does, from its own start.
		if rc := s.returnCatch.Swap(nil); rc != nil {
			if prev := s.settleCatch; prev != nil {
				s.settleCatch = func() { prev(); (*rc)() }
			} else {
				s.settleCatch = *rc
			}
			s.settledAt, caughtKnown = time.Now(), false
			s.landing = s.returnEnds.Swap(nil)
		}
		// Restored sessions settled and catching up: the read that ends
		// their catch-up begins heldPoll after the settle at the
		// earliest, as an adopted session's followers' first read does,
		// so that publishers saw their keys meanwhile.
		catching := s.settleCatch != nil
		if catching {
			select {
			case <-n.ctx.Done():
				return nil
			case <-time.After(heldPoll - time.Since(s.settledAt)):
			}
			if !caughtKnown {
				if err := n.fault.heldLeaderlessErr(); err != nil {
					return err
				}
				if back, ok := n.fault.endAtReturn(); ok {
					if caughtTo, err = s.heldEndAt(stream, back); err != nil {
						return err
					}
					n.fault.endTaken()
					n.log.Info("cluster: test fault: the catch-up's first read of the held subject's end taken as of the return", "seq", caughtTo)
				} else if caughtTo, err = s.heldLast(stream); err != nil {
					return err
				}
				caughtKnown = true
			}
		}
		// A full store takes nothing durably: what is held for this
		// node waits in the subject, unacknowledged, until it has room
		// (diskhold.go). Applied meanwhile, the copies would be in the
		// sessions' memory only, and acknowledged on their next read.
		if err := s.Healthy(); err != nil {
			select {
			case <-n.ctx.Done():
				return nil
			case <-time.After(heldPoll):
			}
			continue
		}
		n.full.holding.Store(false)
		draining := s.gate.unsettledAny() || catching
		var batch jetstream.MessageBatch
		if empty, first := n.fault.heldReadEmpty(n.ctx.Done()); empty {
			if first {
				n.log.Warn("cluster: test fault: reads of what is held for this node come back empty", "for", n.fault.heldEmpty)
			}
			batch = emptyBatch{}
		} else if draining {
			batch, err = cons.FetchNoWait(n.fault.heldBatch(fetchMax))
		} else {
			batch, fetchDone, err = fetchWaiting(n.ctx, cons)
		}
		if err != nil {
			return err
		}
		var persistent []string
		var in map[string]bool
		var arrived map[string]time.Time
		got := 0
		// The batch's copies are delivered first and waited for once
		// (a ticket covers every op before it): one replication round
		// per batch rather than per message, so that a node that comes
		// back while publishers hold for it catches up with them.
		var (
			msgs  []jetstream.Msg
			seqs  []uint64
			fulls []uint64 // copy names held for a full store, 0 for others
			last  broker.Ticket
		)
		// failed: a claim failed (errClaim); the batch's later messages
		// are handed back too, and the follower reads again from there.
		var failed error
		for m := range batch.Messages() {
			got++
			if failed != nil {
				nakHeld(n, m)
				continue
			}
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			seq := md.Sequence.Stream
			if draining && n.fault.heldFetchLost() {
				n.log.Info("cluster: test fault: a held message read while draining lost on its way", "seq", seq)
				continue
			}
			gap.see(md.Sequence.Consumer)
			// Held here for a full store: the session may have it in
			// memory only (diskhold.go).
			var fullCopy uint64
			if k, ok := heldOrigin(m.Data()); ok {
				if t := n.full.ticket(k.copy()); t != 0 {
					fullCopy, last = k.copy(), max(last, t)
				}
			}
			prior, done := applied[seq]
			last = max(last, prior)
			// A message kept for a disowned copy here (keep.go) is in
			// that copy already, and for no other session.
			if !done && heldFor(m) == "" {
				if persistent == nil {
					persistent = s.persistentHere()
					in = make(map[string]bool, len(persistent))
					for _, id := range persistent {
						in[id] = true
					}
					arrived = s.arrivals()
				}
				// A session that came here after the message was held
				// was elsewhere then: it got it there, or its claim
				// read it (adoptHeld). Seen: a session moved here live
				// while the others still held for this node's restored
				// sessions (hold keys of one claimed elsewhere), and got
				// their copies again: QoS 2 twice.
				if d := n.fault.ownHeldLate(); d > 0 {
					select {
					case <-n.ctx.Done():
						return nil
					case <-time.After(time.Until(md.Timestamp.Add(d))):
					}
					// A test waits for these (TestReproRestoredLocalCopy).
					n.log.Debug("cluster: test fault: a held message applied late", "seq", seq)
				}
				to, away := s.ownHeldTo(in, arrived, md.Timestamp)
				t, err := n.deliverHeldTo(m, to, away, persistent)
				if errors.Is(err, errClaim) {
					// Handed back (NAK) to be delivered again at once,
					// not after AckWait: a fetch meanwhile found nothing,
					// and the restored sessions settled before what was
					// held for them was applied; a claim from another
					// node then moved them live without it
					// (TestReproGroupClaimUnanswered: 28 and 66 lost).
					failed = err
					nakHeld(n, m)
					continue
				}
				if err != nil {
					n.log.Warn("cluster: held message unreadable; dropped", "err", err)
				}
				last = max(last, t)
				// Noted before the wait: the copies are in the sessions
				// and the local store whatever the wait says; delivered
				// again, they would be duplicates.
				applied[seq] = t
			}
			if seen := s.gate.seen.Load(); seq >= seen && !gap.open {
				s.gate.seen.Store(seq + 1)
			}
			msgs, seqs = append(msgs, m), append(seqs, seq)
			fulls = append(fulls, fullCopy)
		}
		if err := n.srv.WaitDurable(last); err != nil {
			return fmt.Errorf("store: %w", err) // not acknowledged: delivered again after a restart
		}
		for i, m := range msgs {
			if !gap.open {
				s.gate.next.Store(seqs[i] + 1) // applied durably (or unreadable)
			}
			if err := m.DoubleAck(n.ctx); err != nil {
				return err
			}
			if fulls[i] != 0 {
				n.full.forget(fulls[i])
			}
		}
		if gap.open {
			if err := s.heldFloor(cons, gap); err != nil {
				return err
			}
		}
		if failed != nil {
			return failed // the handed back messages are read again
		}
		if len(applied) > maxApplied {
			for old := range applied {
				if old+maxApplied < seqs[len(seqs)-1] {
					delete(applied, old)
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return err // the node's end too: followOwnHeld looks at that first
		}
		if !draining {
			continue
		}
		to := target
		if catching {
			to = caughtTo
		}
		end, err := s.heldReadEnd(cons, got, to, gap)
		if err != nil {
			return err
		}
		if catching && end && s.landing != nil {
			// A return's catch-up reads on to where the others' holds
			// for this node ended (heldend.go).
			landed, err := s.heldEndsLanded(stream)
			if err != nil {
				return err
			}
			if landed > caughtTo {
				caughtTo = landed
				continue
			}
		}
		if catching && end {
			// Read to the end since the settle: what was held for the
			// restored sessions is in their queues.
			n.fault.caughtUp()
			s.settleCatch()
			s.settleCatch = nil
			s.silence.caughtUp(s.settledAt)
		}
		if end && s.gate.settle() {
			s.onSettled()
			n.log.Info("cluster: restored sessions settled: owners read, messages held for this node applied")
		}
	}
	return nil
}

// heldEndsLanded waits for the peers' answers of the catch-up on return
// under way (s.landing, taken) and returns the highest end. Where a peer
// was not waited for (gone, or the bound), the held subject's last
// message as of now stands in for its end.
func (s *sessions) heldEndsLanded(stream string) (uint64, error) {
	e := s.landing
	s.landing = nil
	landed, missing := e.wait(s.n.ctx)
	if len(missing) == 0 {
		s.n.log.Info("cluster: back from a silence: the others' holds for this node read to their end", "seq", landed)
		return landed, nil
	}
	last, err := s.heldLast(stream)
	if err != nil {
		// The next pass waits for these answers again (they stand):
		// dropped here, it found no landing and ended the catch-up at
		// whatever end it read, before the holds (the held stream
		// electing after the return is when heldLast fails), and every
		// held message came after newer forwards (a fresh clone's
		// TestReproPausedNodeHeldOrder, session 26: 120 of 124;
		// TestHeldEndsLandedKeptOnError).
		s.landing = e
		return 0, err
	}
	s.n.log.Info("cluster: back from a silence: not every node said where its holds for this node ended; read to the subject's end",
		"seq", landed, "last", last, "missing", missing)
	return max(landed, last), nil
}

// heldEndAt returns the stream sequence of the last message held for this
// node in stream that was stored by t (held-end-at-return), looking back
// from the last one through at most heldEndSteps messages.
func (s *sessions) heldEndAt(stream string, t time.Time) (uint64, error) {
	ctx, cancel := context.WithTimeout(s.n.ctx, followAttempt)
	defer cancel()
	st, err := s.heldStream(ctx, stream)
	if err != nil {
		return 0, err
	}
	subj := s.heldSubject(s.n.cfg.Node)
	m, err := st.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for seq, steps := m.Sequence, 0; steps < heldEndSteps; steps++ {
		if m != nil && m.Subject == subj && !m.Time.After(t) {
			return m.Sequence, nil
		}
		if seq <= 1 {
			return 0, nil
		}
		seq--
		if m, err = st.GetMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("held-end-at-return: no message held for this node by %v within %d", t, heldEndSteps)
}

// heldEndSteps bounds heldEndAt's look back.
const heldEndSteps = 10000

// heldLast returns the stream sequence of the last message held for this
// node in stream (its partition stream's leader answers); 0 for none ever.
func (s *sessions) heldLast(stream string) (uint64, error) {
	ctx, cancel := context.WithTimeout(s.n.ctx, followAttempt)
	defer cancel()
	return s.heldLastCtx(ctx, stream)
}

// heldStream returns the handle of partition stream stream, errNotReady
// before the session streams are open here.
func (s *sessions) heldStream(ctx context.Context, stream string) (jetstream.Stream, error) {
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return nil, errNotReady
	}
	return js.Stream(ctx, stream)
}

// heldLastCtx is heldLast within ctx.
func (s *sessions) heldLastCtx(ctx context.Context, stream string) (uint64, error) {
	st, err := s.heldStream(ctx, stream)
	if err != nil {
		return 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, s.heldSubject(s.n.cfg.Node))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil // nothing held for this node ever
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// heldReadEnd reports whether the draining reads of this node's held
// subject (the last one brought got messages) have reached to: every
// message up to it applied durably, here or by an earlier process. A
// read that came back empty is not that end by itself: a FetchNoWait
// that the partition stream's consumer does not answer (its leader being
// elected, as after this node's restart) comes back after a second with
// neither a message nor an error (nats.go v1.56), as one that found
// nothing does. Taken for the end, it settled the restored sessions, or
// ended their catch-up, before what was held for them was applied, and a
// claim from another node then moved them live without it
// (TestReproDrainEmptyRead). So an empty read short of to asks the
// consumer (its leader, or an error: the follower starts again): its ack
// floor at to or past it is the end (what this process did not apply was
// acknowledged by an earlier one). Not its pending count: the consumer's
// leader may sit on a replica that is behind the stream's (this node's
// own, just restarted), and count nothing while to is still ahead. A
// message delivered to the previous process and never acknowledged
// (killed mid-batch) comes back only after the consumer's AckWait; the
// end waits for it, which delays the settle by up to that after such a
// crash rather than settling without it.
//
// Nor is having applied a message past to the end by itself: messages
// before it may have been delivered to a fetch this node never read (its
// answer came after its wait ended: a node back from a pause, its streams
// electing, its reads slow), and come back only after AckWait. Taken for the end, the return's catch-up ended with
// them unapplied, and they came after the newer forwards
// (TestReproPausedNodeHeldOrder, session 27: n3 applied seq 104 at
// 34.28, ended the catch-up at 36.43, got seqs 1-103 at 43.21, AckWait
// after a delivery it never read; TestHeldReadEndAckFloor). So that end is the ack floor's too.
//
// Those deliveries it never read are sent again now rather than at
// AckWait (resendLost): an empty read with messages delivered and
// unacknowledged finds them (heldGap.resets).
func (s *sessions) heldReadEnd(cons jetstream.Consumer, got int, to uint64, gap *heldGap) (bool, error) {
	past := s.gate.next.Load() > to
	if !past && got > 0 {
		return false, nil // read on at once
	}
	ctx, cancel := context.WithTimeout(s.n.ctx, followAttempt)
	ci, err := cons.Info(ctx)
	cancel()
	if err != nil {
		return false, fmt.Errorf("held consumer's state at a read's end: %w", err)
	}
	if ci.AckFloor.Stream >= to {
		return true, nil
	}
	if got == 0 && gap.resets(ci, time.Now()) {
		s.resendLost(ci, gap)
	}
	if past {
		s.n.log.Debug("cluster: held subject read past its end with earlier messages unacknowledged; waiting for them",
			"to", to, "ack_floor", ci.AckFloor.Stream, "ack_pending", ci.NumAckPending)
	}
	select {
	case <-s.n.ctx.Done():
	case <-time.After(heldRetry):
	}
	return false, nil
}

// resendLost sends this node's held consumer back to its ack floor: the
// messages it delivered to reads this process never got (their answers
// lost while the node's streams elected after its return from a pause, a
// leadership change, a read given up before its answer came) are
// delivered again at once instead of after AckWait (2 x forward_timeout),
// and those past them that this process applied again are left out as
// applied (followOwnHeldOnce). Waited for, AckWait ran past the catch-up's
// bound when forward_timeout was 15 s (30 s against forward_timeout + 11
// s): the session got what came after its return before what was held for
// it (TestReproReturnHoldLanding in a fresh clone, session 32: 10 held
// messages, each delivered again 30 s after it was stored, 4 s past the
// bound; TestReproReturnFetchLost). A reset that fails leaves them to
// AckWait, as before.
func (s *sessions) resendLost(ci *jetstream.ConsumerInfo, gap *heldGap) {
	n := s.n
	gap.reset = time.Now()
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, followAttempt)
	defer cancel()
	if _, err := js.ResetConsumer(ctx, ci.Stream, ci.Name); err != nil {
		n.log.Debug("cluster: held messages delivered to reads never got not sent again; they come after the ack wait", "err", err)
		return
	}
	n.log.Info("cluster: held messages delivered to reads never got sent again: the consumer reset to its ack floor",
		"ack_floor", ci.AckFloor.Stream, "ack_pending", ci.NumAckPending, "delivered", ci.Delivered.Stream)
}

// heldFloor moves gate.next, while gap is open, to the consumer's ack
// floor: every message of the subject up to it is acknowledged, so
// applied durably. Once nothing is pending acknowledgement the gap is
// closed: the floor is the last message delivered.
func (s *sessions) heldFloor(cons jetstream.Consumer, gap *heldGap) error {
	ctx, cancel := context.WithTimeout(s.n.ctx, followAttempt)
	ci, err := cons.Info(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("held consumer's ack floor: %w", err)
	}
	if next := ci.AckFloor.Stream + 1; next > s.gate.next.Load() {
		s.gate.next.Store(next)
	}
	if ci.NumAckPending == 0 {
		gap.open, gap.dseq = false, ci.Delivered.Consumer
		if s.gate.seen.Load() < s.gate.next.Load() {
			s.gate.seen.Store(s.gate.next.Load())
		}
	}
	return nil
}

// heldRetry is how long the follower of what is held for this node waits
// before it reads again after an empty read short of its end.
const heldRetry = 100 * time.Millisecond

// emptyBatch is a read that came back without a message or an error (the
// fault held-empty).
type emptyBatch struct{}

func (emptyBatch) Messages() <-chan jetstream.Msg {
	c := make(chan jetstream.Msg)
	close(c)
	return c
}

func (emptyBatch) Error() error { return nil }

// nakHeld hands m back to the held consumer, to be delivered again now.
// A NAK that does not reach the server leaves m to its AckWait.
func nakHeld(n *Node, m jetstream.Msg) {
	if err := m.Nak(); err != nil {
		n.log.Debug("cluster: held message not handed back; read again after its ack wait", "err", err)
	}
}

// ownHeldTo is which sessions here followOwnHeld gives a message held at
// at: to, the persistent ones (in) that were here then (arrived); away,
// those of them that are disowned copies (keep.go), which get a share
// group's message only when the group has no other member among them
// (deliverHeldTo). A disowned copy gets what it matches as long as it is
// its session's copy: a claim that moves it live (handover) carries it,
// and the live move reads no held subject; a claim that reads the
// stream reads this node's held subject (the copy's ops stay local), and
// takes a group's claim made here for the session as its own (ownClaim).
// Given nothing, a copy fenced while its settled node caught up
// (onSettled) was handed over live without what the catch-up read
// (TestClusterRestartedNodeSessionResumedElsewhere: 10 of 376 lost;
// TestReproSettleCatchUpFenced); given its plain subscriptions' share
// only, a copy whose groups were all it had lost every group message the
// catch-up read (TestReproGroupClaimUnanswered under load: 28 of 126 and
// 10 of 166; TestReproCatchUpFencedGroup).
func (s *sessions) ownHeldTo(in map[string]bool, arrived map[string]time.Time, at time.Time) (to, away func(string) bool) {
	return func(id string) bool { return in[id] && !arrived[id].After(at) }, s.kept.has
}

// persistentHere lists this node's persistent sessions: what is held
// for this node goes to them only (a clean session is newer than the
// message's hold).
func (s *sessions) persistentHere() []string {
	ids := []string{}
	for _, c := range s.n.srv.Clients() {
		if c.SessionExpiry > 0 {
			ids = append(ids, c.ClientID)
		}
	}
	return ids
}

// heldFollower applies what was held for a node to the sessions this
// node took from the stream lately, for heldWatch each.
type heldFollower struct {
	node  string // whose held subject it reads
	mu    sync.Mutex
	ids   map[string]time.Time
	from  uint64    // next stream sequence to read; 0: from since on
	since time.Time // where a read by time starts
	// floor: per session, the time of its last op in the stream when it
	// was taken: a message held before then reached it already, if it
	// matched (takeHeld), however far back another session's join made
	// the follower read again. Zero for one whose own read was by
	// sequence (takeHeldFrom).
	floor map[string]time.Time
	// read: per session, the stream sequence its own reads of this
	// subject reached (its first read's end, given at join; moved on by
	// each read of the follower with it, as far as that read got, in the
	// same generation): what lies before was
	// given to it already, or was not its. A join of another session
	// makes the follower read again from further back; by the floor's
	// time alone, a session whose last op carries an earlier time than
	// messages its record holds (a restarted node's ops count from its
	// silence's start, ps41fix) got them again, and nothing remembered
	// them (the watch notes only what went through it): QoS 1 twice, and
	// a QoS 2 group message passed on to the member's new owner twice
	// (test/jepsen TestClusterFull seed 245; TestReproFollowerRewind).
	read map[string]uint64
	// after: per session handed over here with its old owner's place in
	// this subject (followHanded), that place's sequence (0 for a place
	// by time, which floor holds): nothing before it is the session's,
	// everything from it on is, whether or not the session was away from
	// this node when it was held (wasAway).
	after map[string]uint64
	// copyHas: the sessions handed over here whose place in this subject
	// was its node's own follower's (heldPos.copyHas): what is kept in it
	// for one of them alone (keep.go) is not read for it.
	copyHas map[string]bool
	gen     uint64 // counts resets (a session joined, or its first read failed)
	// wake asks for a read now rather than at the next tick (heldPoll):
	// set when the follower is made, never changed (follow reads it
	// without mu); nil in unit tests, where nothing reads it.
	wake chan struct{}
	// waits: hand-overs waiting (awaitHeld) for the first read of a
	// session whose own first read failed, by the gen it was asked at.
	waits map[*heldWait]uint64
}

// heldWait counts the held reads a session taken from the stream still
// needs before it has what was held for it: until then a release request
// for it waits (awaitHeld), since a session handed over before would
// leave without them (the new node does not read them: the old one
// answered), and the follower here would apply them to no session.
type heldWait struct {
	left atomic.Int32
	done func()
	// unread: the nodes whose held subject a follower has still to read
	// for it (addFrom), for the log of a catch-up cut at its bound.
	mu     sync.Mutex
	unread map[string]bool
}

// newHeldWait returns a wait for one read (add for more) that calls done
// once all are finished.
func newHeldWait(done func()) *heldWait {
	w := &heldWait{done: done}
	w.left.Store(1)
	return w
}

func (w *heldWait) add() { w.left.Add(1) }

// addFrom adds a wait for the read of node's held subject (by its
// follower: readFrom, then finish).
func (w *heldWait) addFrom(node string) {
	w.mu.Lock()
	if w.unread == nil {
		w.unread = map[string]bool{}
	}
	w.unread[node] = true
	w.mu.Unlock()
	w.add()
}

// readFrom notes that node's held subject was read for w; finish follows.
func (w *heldWait) readFrom(node string) {
	w.mu.Lock()
	delete(w.unread, node)
	w.mu.Unlock()
}

// unreadFrom returns the nodes whose held subject is still to be read
// for w, sorted.
func (w *heldWait) unreadFrom() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(maps.Keys(w.unread))
}

func (w *heldWait) finish() {
	if w.left.Add(-1) == 0 {
		w.done()
	}
}

// takeHeld delivers to id, just taken from the stream here (its last op
// written at last), what was held for any node since then, and keeps
// following the held subjects for heldWatch: publishers may hold for its
// previous node until they see its interest here. Which node held the
// session last is not known (its owner record may name a node that
// claimed it and never had it: this one, at an earlier try whose read of
// the session failed), hence every node heard from since this one
// started, gone ones too (heardNodes); held messages from
// before last reached the session already, if it matched them, when
// their node applied them. The first read is done before it returns
// (before the CONNACK), so the session gets the held messages first.
// w, if not nil, is finished once every held subject was read for id:
// here, or by its follower when the first read failed.
func (s *sessions) takeHeld(ctx context.Context, w *heldWait, id string, last time.Time, prev ...string) {
	n := s.n
	until := time.Now().Add(n.heldWatch())
	// Under the gate's write side: every publish here is routed and
	// noted (Forward) wholly before the watch starts or after, when
	// the session (in the server already) got it locally.
	n.gate.Lock()
	n.watch.arrive(id, until)
	n.gate.Unlock()
	nodes := append(append(n.remote.heardNodes(), n.remote.orphans.nodes()...), n.cfg.Node)
	nodes = append(nodes, prev...)
	slices.Sort(nodes)
	for _, node := range slices.Compact(nodes) {
		if node == "" {
			continue
		}
		// A node that gave id up before it had settled says where its
		// own applying stopped (takeUnsettled); by time, a message it
		// held before an op it applied later would be passed over.
		from := s.takeHeldFrom(node, id)
		in := func(c string, at time.Time, _ uint64, _ string) bool { return c == id && !s.wasAway(c, at) }
		next, err := s.readHeld(ctx, node, from, last, in, []string{id})
		n.log.Debug("cluster: messages held for a node read for a session taken from the stream", "client_id", id, "peer", node, "since", last, "from", from, "next", next)
		if err != nil {
			n.log.Warn("cluster: messages held for a node not read yet; following", "client_id", id, "peer", node, "err", err)
		}
		s.joinFollower(node, id, until, next, last, heldFloor(from, last), err != nil, w)
	}
}

// joinFollower adds id to node's follower, starting one if needed. next
// is where id's first read ended (0: nothing read); again says it failed,
// so the follower reads from last on again (the watch drops the copies
// the others had), and w (if not nil) is finished after its next
// complete read. floor is heldFloor's: the follower gives id nothing held
// before it.
func (s *sessions) joinFollower(node, id string, until time.Time, next uint64, last, floor time.Time, again bool, w *heldWait) {
	s.joinFollowerAfter(node, id, until, next, last, floor, again, w, nil, false)
}

// joinFollowerAfter is joinFollower, with after, if not nil, the place of
// a handover (heldFollower.after, followHanded), set in the same step as
// the join: a read that began in between would apply wasAway to id and
// move the follower past what it left out; copyHas is that place's
// (heldPos.copyHas).
func (s *sessions) joinFollowerAfter(node, id string, until time.Time, next uint64, last, floor time.Time, again bool, w *heldWait, after *uint64, copyHas bool) {
	s.mu.Lock()
	if s.followers == nil {
		s.followers = map[string]*heldFollower{}
	}
	f := s.followers[node]
	spawn := f == nil
	if spawn {
		f = &heldFollower{node: node, ids: map[string]time.Time{}, from: next, since: last, wake: make(chan struct{}, 1)}
		s.followers[node] = f
	}
	s.mu.Unlock()
	f.mu.Lock()
	f.join(id, until, next, last, again, spawn, w)
	if f.floor == nil {
		f.floor = map[string]time.Time{}
	}
	f.floor[id] = floor
	delete(f.copyHas, id)
	if after == nil {
		delete(f.after, id) // a place of an earlier handover
	} else {
		if copyHas {
			if f.copyHas == nil {
				f.copyHas = map[string]bool{}
			}
			f.copyHas[id] = true
		}
		if f.after == nil {
			f.after = map[string]uint64{}
		}
		f.after[id] = *after
		// A session moved here with its old owner's places catches up
		// (nothing is sent to its client) until this read is done:
		// waiting for the next tick, up to heldPoll, outlasted the
		// session's stay on a node whose client moves every few hundred
		// milliseconds, and its queue, never sent, grew past MaxQueued
		// and dropped acknowledged messages (named-places path at every
		// move: TestClusterLiveHandoverRoundsNamed, 5,380 and 11,710
		// lost). Woken, the follower reads at once.
		select {
		case f.wake <- struct{}{}:
		default: // a read is asked for already
		}
	}
	f.mu.Unlock()
	// Tracked only before Close waits: a claim's adoption that joined a
	// follower as its node stopped added to the wait group while Close
	// waited on it (the race detector's report on n1 at the end of
	// TestReproClaimDropCover, lhc32). Not started, the follower ends at
	// once, as follow does when the node stops.
	if spawn && !s.n.goTracked(func() { s.follow(node, f) }) {
		f.mu.Lock()
		done := f.takeWaits(^uint64(0))
		f.mu.Unlock()
		finishAll(done)
	}
}

// wakeFollower has node's follower read at once rather than at its next
// tick: a session joined it late (awaitOut) and its catch-up waits for
// that read.
func (s *sessions) wakeFollower(node string) {
	s.mu.Lock()
	f := s.followers[node]
	s.mu.Unlock()
	if f == nil {
		return
	}
	select {
	case f.wake <- struct{}{}:
	default: // a read is asked for already
	}
}

// followHanded has the followers of the held subjects ps names read on,
// for id, from where the old owner's followers were (heldPos): id's
// session was just moved here live (its state adopted, with everything
// those followers applied to it there), handed over before they had read
// for it (the old owner's held wait cut: awaitHeld). What they would
// apply from there on the old owner gives to no session once the move
// ended, and nobody else reads it for id: applied here instead. Each
// follower gives id nothing before its place, and everything from it on,
// held while id was away from this node too (wasAway: what was held then
// reached it on its node, unless, as here, that node's reads were not
// done). Messages the adopted state holds already are left out
// (deliverHeld: HasMessage; the catch-up keeps them queued until these
// reads are done), and a QoS 2 one it completed by its Origin (the
// session's Seen). w, if not nil, is finished after each follower's first
// complete read with id.
func (s *sessions) followHanded(id string, ps []heldPos, until time.Time, w *heldWait) {
	for _, p := range ps {
		if p.node == "" || p.from == 0 && p.since.IsZero() {
			continue // no place: nothing to read from
		}
		// By time (from 0), the floor is the place; every sequence is
		// after it.
		after := p.from
		s.joinFollowerAfter(p.node, id, until, p.from, p.since, p.floor, false, w, &after, p.copyHas)
	}
}

// heldPositions returns where the followers of held subjects here that
// follow id are (heldPos), this node's own follower among them while id's
// catch-up after the settle is not over, for a handover of id's session
// before their reads for it were done. A follower's place is a lower
// bound: every message before it was read for id (join moves it back for
// a session that joins, and a read under way moves it only once done),
// and one from it on that a read under way gave id already is in what is
// handed over.
func (s *sessions) heldPositions(id string) []heldPos {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	fs := make([]*heldFollower, 0, len(s.followers))
	for _, f := range s.followers {
		fs = append(fs, f)
	}
	s.mu.Unlock()
	var out []heldPos
	for _, f := range fs {
		f.mu.Lock()
		if _, ok := f.ids[id]; ok {
			p := heldPos{node: f.node, from: f.from, since: f.since, floor: f.floor[id], copyHas: f.copyHas[id]}
			if a := f.after[id]; a > p.from {
				p.from = a // nothing before it is id's (followHanded)
			}
			out = append(out, p)
		}
		f.mu.Unlock()
	}
	// A restored session settled here whose catch-up has not read this
	// node's own held subject to its end: the catch-up gives what it
	// reads from here on to the sessions here only, and a live move
	// carries none of it (onSettled: a release request's wait for it is
	// bounded, heldWaitMax; cut, what was held for this node after the
	// settling read reached no session: TestReproDrainCutCatchUp). Not
	// when a follower here reads this node's subject for id already: id
	// left and was taken from the stream here since, and that follower's
	// place is its own.
	if from := s.gate.ownCatchFrom(id); from > 0 {
		own := s.n.cfg.Node
		if !slices.ContainsFunc(out, func(p heldPos) bool { return p.node == own }) {
			out = append(out, heldPos{node: own, from: from, copyHas: true})
		}
	}
	slices.SortFunc(out, func(a, b heldPos) int { return strings.Compare(a.node, b.node) })
	return out
}

// withOwnBehind adds to ps, for a live handover of id's session, this
// node's own held subject from the first message its follower
// (followOwnHeld) has not applied durably, when the others may have held
// for this node lately (awayMarks) and that follower has not handled the
// subject's last message (or it cannot be read): what the others held
// for this node while they had dropped it (paused, cut off) reaches the
// sessions here only through that follower, and a live move carries
// only what the copy has. Handed over before the follower applied it,
// the session left without it, the follower then gave it to no session,
// and the new owner read no held subject (test/jepsen TestClusterFull
// seed 46: ps2 and ps3, moved off n3 14 ms and 219 ms after its resume,
// its partition stream unavailable for 9 s;
// TestReproPausedOwnerMovesLive). The new owner gives id what is held
// there from that place on, held since id came here (the floor: what
// the follower here would have given it); a copy of one it had already
// is left out (deliverHeld: HasMessage, Seen; the watch).
//
// Only then: the copies kept for a disowned copy (keep.go) land in this
// subject at every move, and named at nearly every move, the new owners'
// reads from the named places lost messages (TestClusterLiveHandoverRounds:
// 1,728, 95 and 16,121 in its subtests); and a wait here for the
// follower to catch up (500 ms) delayed every answer on a loaded node
// (in one traced run, an answer 500 ms late raced its node's own newer
// claim of the id). A short wait (ownBehindWait) still spares a
// follower that keeps up.
func (s *sessions) withOwnBehind(id string, ps []heldPos, by time.Time) []heldPos {
	if s == nil {
		return ps
	}
	always := s.n.fault.namesOwn(id)
	// A restored session whose hold keys went lately: a hold made under
	// them whose append its partition stream did not answer (a leader
	// election) is published again and lands after the settle, the
	// catch-up and this handover, where no read can see it yet; the
	// follower here would apply it to no session, and the new owner read
	// nothing here for id (test/jepsen TestClusterFull seed 187: ps2
	// moved live n2 -> n3 80 ms and 335 ms before two holds for n2 made
	// 2 s earlier landed; TestReproHoldLandsAfterMove). So named whatever
	// the follower handled.
	landing := s.keysWentLately(id)
	if !always && !landing && !s.n.away.maybe(time.Now(), s.n.heldWatch()) {
		return ps
	}
	own := s.n.cfg.Node
	if slices.ContainsFunc(ps, func(p heldPos) bool { return p.node == own }) {
		return ps // read on from there already (ownCatchFrom)
	}
	next := s.gate.next.Load()
	if next == 0 {
		return ps // the follower never began here: no place to name
	}
	ctx, cancel := context.WithDeadline(s.n.ctx, minTime(by, time.Now().Add(ownLastRead)))
	last, err := s.heldLastCtx(ctx, streamName(s.partition(own)))
	cancel()
	// Handled up to the later of the two places (seen moves first, but
	// is 0 until this process handled a message); none held ever: last 0.
	handled := func() uint64 { return max(s.gate.seen.Load(), s.gate.next.Load()) }
	wait := time.Now().Add(ownBehindWait)
	for err == nil && last >= handled() {
		if time.Now().After(wait) {
			err = fmt.Errorf("the follower of this node's held subject is before %d", last)
			break
		}
		select {
		case <-s.n.ctx.Done():
			return ps
		case <-time.After(ownBehindPoll):
		}
	}
	if err == nil && always {
		err = errors.New("test fault: name-own-always")
	}
	if err == nil && landing {
		err = errors.New("holds made under its hold keys may still land")
	}
	if err == nil {
		return ps
	}
	s.n.log.Info("cluster: session handed over before this node applied what was held for it: its held subject named for the new owner",
		"client_id", id, "from", next, "last", last, "err", err)
	// A follower here that reads this node's subject for id (taken from
	// the stream here) gives it what a copy of it that ended here kept:
	// not in the copy that moves, so those are read too.
	out := append(slices.Clone(ps), heldPos{node: own, from: next, floor: s.arrivals()[id], copyHas: !s.follows(own, id)})
	slices.SortFunc(out, func(a, b heldPos) int { return strings.Compare(a.node, b.node) })
	return out
}

// follows reports whether the follower here of node's held subject reads
// it for id.
func (s *sessions) follows(node, id string) bool {
	s.mu.Lock()
	f := s.followers[node]
	s.mu.Unlock()
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.ids[id]
	return ok
}

// ownLastRead bounds withOwnBehind's read of the last message held for
// this node; ownBehindWait, its wait for the follower to handle it;
// ownBehindPoll, how often it looks.
const (
	ownLastRead   = 500 * time.Millisecond
	ownBehindWait = 50 * time.Millisecond
	ownBehindPoll = 5 * time.Millisecond
)

// awayMarks tells whether the other nodes may have dropped this node
// lately (no heartbeat from it for deadAfter) and held for it: it did
// not run for a while (SIGSTOP, a frozen VM: its expiry loop's ticks
// came late), or it dropped a silent peer itself (cut off). Not a peer
// whose routes closed (killed): the others do not hold for this node
// then, and marked so, every handover from a node whose follower lags
// under load named its subject for 20 s after each kill (test/jepsen
// TestClusterFull seed 44: 8 namings in 16 s on n2).
type awayMarks struct {
	tick atomic.Int64 // when the expiry loop last ran (Unix ns)
	away atomic.Int64 // the last sign (Unix ns)
}

// stallGap: a gap between the expiry loop's runs past which this node
// counts as not having run (the others drop it after deadAfter).
const stallGap = deadAfter / 2

// ticked notes a run of the expiry loop at now and returns the gap since
// the previous run when it was a stall (0 otherwise).
func (a *awayMarks) ticked(now time.Time) time.Duration {
	prev := a.tick.Swap(now.UnixNano())
	if prev == 0 {
		return 0
	}
	gap := now.Sub(time.Unix(0, prev))
	if gap <= stallGap {
		return 0
	}
	a.away.Store(now.UnixNano())
	return gap
}

// behind reports whether at now the expiry loop has not run for
// stallGap: this node did not run, and its loop has not found it yet.
func (a *awayMarks) behind(now time.Time) bool {
	t := a.tick.Load()
	return t != 0 && now.Sub(time.Unix(0, t)) > stallGap
}

// lost notes that this node dropped a silent peer at now.
func (a *awayMarks) lost(now time.Time) { a.away.Store(now.UnixNano()) }

// maybe reports whether at now the others may have held for this node
// within the last within: a sign since, or a stall under way (the expiry
// loop has not run since the process resumed: a release request can be
// answered first).
func (a *awayMarks) maybe(now time.Time, within time.Duration) bool {
	if a.behind(now) {
		return true
	}
	t := a.away.Load()
	return t != 0 && now.Sub(time.Unix(0, t)) < within
}

// join adds id to f (f.mu held). A follower that ran before id came
// (another session's) may have read past where id's first read ended
// (next) while id was not among its ids: what lies between reached id
// from nobody (TestClusterTransports/NodeKill: a will's session adopted
// by the janitor had its follower at sequence 277 when a resumed
// session's read ahead ended at 264; 4 acknowledged messages lost). So
// the follower reads again from next at the latest (from since, by time,
// when id's read failed or read nothing: next unknown), and gen moves on
// so that a read in flight, made without id, does not advance it. The
// others get nothing again from before where their own reads reached
// (read), and by time from before their floors. w, if not nil, is
// finished after the follower's first complete read with id: until then
// what was held after id's own read has not reached id, and a hand-over
// would leave without it (awaitHeld).
func (f *heldFollower) join(id string, until time.Time, next uint64, last time.Time, again, spawn bool, w *heldWait) {
	f.ids[id] = until
	if again || next == 0 {
		delete(f.read, id) // its floor is by time alone
	} else {
		if f.read == nil {
			f.read = map[string]uint64{}
		}
		f.read[id] = next
	}
	switch {
	case again || (!spawn && (next == 0 || f.from == 0)):
		f.from, f.since = 0, minTime(f.since, last)
	case !spawn && next < f.from:
		f.from = next
	}
	if !spawn {
		f.gen++
	}
	if w != nil {
		if f.waits == nil {
			f.waits = map[*heldWait]uint64{}
		}
		// One share of w per follower: takeWaits finishes it once,
		// however many sessions joined with it. The janitor's bulk
		// adoption joins each of a chunk's sessions with the chunk's
		// wait (takeHeldAll); a share per session left it unfinished
		// for good, and every release request for those sessions
		// waited awaitHeld's whole bound twice, past the claimer's
		// releaseTimeout (TestClusterTransports/NodeKill: the claimer
		// read the stream instead, and what the adopter's copy took
		// meanwhile was lost: 35 acknowledged messages to mqtt.js 5).
		if _, ok := f.waits[w]; !ok {
			w.addFrom(f.node)
		}
		f.waits[w] = f.gen
	}
}

// heldFloor is the floor of a follower's session (heldFollower.floor)
// whose own read of a held subject began at from, or by time at last.
// The floor matters once the follower reads again from before the
// session's last op for another session that joined (join: that one's
// read failed, or found nothing): before, it gave this one too every
// message held since, which it had got already (test/jepsen
// TestClusterFull seed 42, 2026-12-05 06:27: ps2, taken from the stream on
// n2 with its last op at 47 s, got again 267 messages held at 8-19 s, 132
// of them QoS 2 duplicates).
func heldFloor(from uint64, last time.Time) time.Time {
	if from > 0 {
		return time.Time{}
	}
	return last
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// follow reads node's held subject every heldPoll for the sessions f
// names, until their watches end and a read since was complete (pass).
func (s *sessions) follow(node string, f *heldFollower) {
	t := time.NewTicker(heldPoll)
	defer t.Stop()
	for {
		select {
		case <-s.n.ctx.Done():
			f.mu.Lock()
			done := f.takeWaits(^uint64(0))
			f.mu.Unlock()
			finishAll(done)
			return
		case <-t.C:
		case <-f.wake:
		}
		s.mu.Lock() // s.mu before f.mu: joinFollower finds f under s.mu
		f.mu.Lock()
		p := f.pass(time.Now())
		if len(p.ids) == 0 {
			delete(s.followers, node)
			done := f.takeWaits(^uint64(0))
			f.mu.Unlock()
			s.mu.Unlock()
			finishAll(done)
			return
		}
		s.mu.Unlock()
		f.mu.Unlock()
		ids := p.ids
		if stall, first := s.n.fault.stallsFollower(node, ids); stall {
			if first {
				s.n.log.Warn("cluster: test fault: a held follower does not read", "peer", node, "sessions", len(ids))
			}
			f.endStalled(p)
			continue
		}
		if stall, first, after := s.n.fault.stallsUntilLost(node, ids, s.lostHere); stall || after {
			switch {
			case first:
				s.n.log.Warn("cluster: test fault: a held follower does not read", "peer", node, "sessions", len(ids))
			case after:
				s.n.log.Warn("cluster: test fault: a held follower reads once its session was claimed elsewhere", "peer", node, "client_id", s.n.fault.heldUntilLost)
			}
			if stall {
				f.endStalled(p)
				continue
			}
		}
		in := func(c string, at time.Time, seq uint64, kept string) bool {
			floor, ok := p.floors[c]
			if !ok || at.Before(floor) || seq < p.reads[c] {
				return false
			}
			if kept == c && p.copyHas[c] {
				return false // in the copy that moved here (heldPos.copyHas)
			}
			// A session handed over here with where its old owner's
			// follower of this subject was (heldPos) gets what is
			// from there on, held while it was away included: the old
			// owner did not apply it (followHanded).
			if a, handed := p.after[c]; handed {
				return seq >= a
			}
			return !s.wasAway(c, at)
		}
		ctx, cancel := context.WithTimeout(s.n.ctx, s.n.cfg.ForwardTimeout)
		next, err := s.readHeld(ctx, node, p.from, p.since, in, ids)
		cancel()
		if err != nil {
			s.n.log.Debug("cluster: reading messages held for a node", "peer", node, "err", err)
		}
		f.mu.Lock()
		done, left := f.passDone(p, next, err)
		f.mu.Unlock()
		for id, past := range left {
			s.n.log.Debug("cluster: a session's follower of a held subject done: its watch over, read to the end since", "peer", node, "client_id", id, "next", next, "past_watch", past.Round(time.Millisecond))
		}
		finishAll(done)
	}
}

// followPass is what one read of a follower is for (heldFollower.pass):
// its sessions and their bounds as the read began.
type followPass struct {
	ids     []string
	floors  map[string]time.Time
	reads   map[string]uint64
	after   map[string]uint64
	copyHas map[string]bool
	// over: the sessions among ids whose watch had ended when the read
	// began, by their watch's end: they leave once it is complete.
	over  map[string]time.Time
	began time.Time
	from  uint64
	since time.Time
	gen   uint64
}

// pass returns what a read that begins at now is for (f.mu held). A
// session whose watch has ended is read for until a read begun since
// is complete: the watch bounds when a message may be held for it, not
// when the follower reads it. Dropped at its watch's end, a session
// whose reads were behind, or had just failed, never got what was held
// for it before then: a read begun within the watch, slow at load,
// failed on its claim for a kept group message some 45 s past the
// watch's end (errClaim: "read again from here"), the next tick found
// the watch over and ended the follower, and the last four messages the
// session's disowned copy kept were read by nobody
// (TestReproKeptServedCut, race roost at load 120: q1-92..q2-93,
// bench/jepsen/RESULTS.md "ks33"; TestHeldFollowerReadsPastItsWatch).
// No bound past the end: the reads fail only while the partition stream
// or a claim's stream does not answer, and what they would pass over is
// acknowledged.
func (f *heldFollower) pass(now time.Time) followPass {
	p := followPass{began: now, from: f.from, since: f.since, gen: f.gen,
		floors: make(map[string]time.Time, len(f.ids)), reads: make(map[string]uint64, len(f.ids))}
	for id, u := range f.ids {
		if now.After(u) {
			if p.over == nil {
				p.over = map[string]time.Time{}
			}
			p.over[id] = u
		}
		if f.copyHas[id] {
			if p.copyHas == nil {
				p.copyHas = map[string]bool{}
			}
			p.copyHas[id] = true
		}
		p.ids = append(p.ids, id)
		p.floors[id] = f.floor[id]
		p.reads[id] = f.read[id]
		if a, ok := f.after[id]; ok {
			if p.after == nil {
				p.after = map[string]uint64{}
			}
			p.after[id] = a
		}
	}
	return p
}

// passDone applies the end of p's read (f.mu held): next is the sequence
// after the last message it read, err its error. It returns the waits to
// finish (after a complete read) and the sessions of p.over that left f,
// by how long past their watch's end. One that joined again during the
// read (a new watch) stays.
func (f *heldFollower) passDone(p followPass, next uint64, err error) (done []*heldWait, left map[string]time.Duration) {
	if f.gen == p.gen && next > f.from {
		f.from = next
	}
	if f.gen == p.gen {
		for _, id := range p.ids {
			if _, ok := f.ids[id]; ok && next > f.read[id] {
				if f.read == nil {
					f.read = map[string]uint64{}
				}
				f.read[id] = next
			}
		}
	}
	if err != nil {
		return nil, nil
	}
	// The read began after the resets up to gen: the sessions that
	// asked for them have what was held.
	done = f.takeWaits(p.gen)
	for id, u := range p.over {
		if f.ids[id].Equal(u) {
			f.leave(id)
			if left == nil {
				left = map[string]time.Duration{}
			}
			left[id] = p.began.Sub(u)
		}
	}
	return done, left
}

// endStalled ends, as the watches end, the sessions of p.over of a
// follower that a test fault keeps from reading (held-stall,
// held-until-lost): no read of it completes.
func (f *heldFollower) endStalled(p followPass) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, u := range p.over {
		if f.ids[id].Equal(u) {
			f.leave(id)
		}
	}
}

// leave removes id from f (f.mu held).
func (f *heldFollower) leave(id string) {
	delete(f.ids, id)
	delete(f.floor, id)
	delete(f.read, id)
	delete(f.after, id)
	delete(f.copyHas, id)
}

// takeWaits removes and returns the waits asked at gen or before; f.mu
// held (they are finished after, outside the locks).
func (f *heldFollower) takeWaits(gen uint64) []*heldWait {
	var out []*heldWait
	for w, g := range f.waits {
		if g <= gen {
			delete(f.waits, w)
			w.readFrom(f.node)
			out = append(out, w)
		}
	}
	return out
}

func finishAll(ws []*heldWait) {
	for _, w := range ws {
		w.finish()
	}
}

// readHeld delivers the messages held for node, from stream sequence
// from on (0: from those held at since on), to the sessions of ids that
// match them and that in says the message (held at at, stream sequence
// seq, kept for the session kept alone: keep.go, "" for none) is for, and
// returns the sequence after the last one read (from
// when none was).
func (s *sessions) readHeld(ctx context.Context, node string, from uint64, since time.Time, in func(c string, at time.Time, seq uint64, kept string) bool, ids []string) (uint64, error) {
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return from, errNotReady
	}
	cfg := s.heldReadConfig(node, from, since)
	next := from
	err := readAll(ctx, js, streamName(s.partition(node)), cfg, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		// A session that was elsewhere when the message was held, and
		// came back here by a live move, got it where it was
		// (TestClusterFull seed 42: ps1, taken from the stream here,
		// moved to n3, got copies held for n3 there by forward, and back
		// here live got them again from this node's follower: 38 QoS 2
		// duplicates).
		// Decided here: Pick runs under the subscription tree's lock,
		// which must not wait for s.mu.
		ok := make(map[string]bool, len(ids))
		at, kept := heldTime(m, md.Timestamp), heldFor(m)
		for _, c := range ids {
			ok[c] = in(c, at, md.Sequence.Stream, kept)
		}
		inAt := func(c string) bool { return ok[c] }
		if at := s.n.fault.heldLagged(ids, md.Timestamp); !at.IsZero() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(at)):
			}
		}
		if _, err := s.n.deliverHeld(m, inAt, ids); errors.Is(err, errClaim) {
			return err // read again from here
		} else if err != nil {
			s.n.log.Warn("cluster: held message unreadable; skipped", "peer", node, "err", err)
		} else {
			s.n.log.Debug("cluster: message held for a node read", "peer", node, "seq", md.Sequence.Stream, "ids", len(ids))
		}
		next = md.Sequence.Stream + 1
		return nil
	})
	return next, err
}

// A restarted node and the sessions its own store restored.
//
// After kill -9 the node's store restores its persistent sessions as they
// were, but while it was down a client may have resumed one elsewhere
// (the claiming node read it from the stream), or the survivors adopted
// it: the copy here is stale, and the node learns so only when it has
// read the owner records (sessions.start). A message forwarded here in
// the meantime would be delivered into that copy, confirmed to its
// publisher, and dropped with the copy ("restored session dropped:
// another node owns it now"): acknowledged and lost. And a client that
// resumed its session from here meanwhile got this node's copy handed
// over without what publishers held for this node while it was down
// (its follower had not applied that yet).
//
// So a restarted node's restored sessions are settled before anything
// reaches them directly: the node has read the owner records, ended the
// sessions owned elsewhere, and applied what was held for it up to the
// end of its held subject at its first read (followOwnHeld). Until then
// it announces their persistent keys as hold keys (persistent.go): the
// other nodes go on holding what those match for this node, as while it
// was down, while everything else flows as for any node (its heartbeat,
// its other interest, clean clients and new client ids served at once).
// A forwarded message is not delivered to an unsettled restored session
// (skipUnsettled), and one published here that matches one is held for
// this node too (Forward): whoever has each session gets it from the
// held subject, this node for the ones still its own, the claiming node
// (which reads the held subjects of every node, this one too) for the
// others. A CONNECT for a restored session waits until the node settled
// (awaitRestored). A claim that reaches this node for a restored session
// before then is sent to the stream (owners.onRelease: reply 2), the copy
// here ends, and its hold keys stay until the claimer announced its
// interest. Once settled, the node announces the sessions still here by
// their persistent keys; a message the others both forwarded and held
// meanwhile is delivered once (originWatch).
//
// Before (the node kept quiet, refusing every CONNECT until settled), a
// restarted node with persistent sessions served MQTT 7.7-23 s after its
// start in TestClusterFull at load 25-35; now its clean clients and new
// ids are served as soon as it caught up with the others' interest, and
// only its restored sessions wait (docs/cluster.md).

// restoredGate is closed once the restored sessions are settled (above).
type restoredGate struct {
	done chan struct{}
	once sync.Once
	ids  map[string]bool // the restored sessions; set in Load, read only after
	// next: the stream sequence of the first message held for this node
	// that the follower has not applied durably yet (0: the follower has
	// not reached its consumer yet, nothing applied by this process).
	next atomic.Uint64
	// seen: the stream sequence after the last message held for this
	// node that the follower has given to the sessions here (in memory:
	// a live move carries it), or skipped; it moves as each message is
	// handled, next only once a batch is durable (up to fetchWait later).
	seen atomic.Uint64
	// from: for sessions claimed from an unsettled node, where that
	// node's held subject is to be read from (takeUnsettled's reply).
	// at: next as it was when this node disowned each unsettled session
	// (after that, what it applies to the session stays local).
	mu    sync.Mutex
	from  map[string]uint64
	at    map[string]uint64
	quiet time.Time
	// ended: the restored sessions whose copy from this node's store
	// ended before the settle (owned elsewhere at start, claimed or
	// fenced elsewhere since). A session of such an id here later (a
	// silent node's that the janitor adopted, a claim's, a live move's)
	// came from the stream or its owner, current, with its interest
	// announced by persistent keys and no hold key standing in for it:
	// not a restored one (end).
	ended map[string]bool
	// catching: the sessions settled here whose catch-up of this node's
	// own held subject is not over (onSettled).
	catching map[string]bool
}

// catchOwn notes ids as catching up with this node's own held subject.
func (g *restoredGate) catchOwn(ids []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.catching = make(map[string]bool, len(ids))
	for _, id := range ids {
		g.catching[id] = true
	}
}

// caughtOwn ends catchOwn: the catch-up read to its end.
func (g *restoredGate) caughtOwn() {
	g.mu.Lock()
	g.catching = nil
	g.mu.Unlock()
}

// ownCatchFrom returns, for id still catching up (catchOwn), the first
// sequence of this node's held subject not applied durably here: every
// message before it reached id here, if it matched; 0 otherwise.
func (g *restoredGate) ownCatchFrom(id string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.catching[id] {
		return 0
	}
	return g.next.Load()
}

// disown notes where the follower was when id was disowned, for
// takeUnsettled.
func (g *restoredGate) disown(id string) {
	if !g.unsettled(id) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.at == nil {
		g.at = map[string]uint64{}
	}
	if _, ok := g.at[id]; !ok {
		g.at[id] = g.next.Load()
	}
}

// settledGate returns a closed channel: a node without restored sessions
// has nothing to settle.
func settledGate() restoredGate {
	c := make(chan struct{})
	close(c)
	return restoredGate{done: c}
}

// restore opens the gate's wait for the sessions ids (Load, before the
// node is attached).
func (g *restoredGate) restore(ids []string) {
	if len(ids) == 0 {
		return
	}
	g.done = make(chan struct{})
	g.ids = make(map[string]bool, len(ids))
	for _, id := range ids {
		g.ids[id] = true
	}
}

// settle closes the gate.
func (g *restoredGate) settle() bool {
	closed := false
	g.once.Do(func() {
		select {
		case <-g.done:
		default:
			close(g.done)
			closed = true
		}
	})
	return closed
}

// unsettledAny reports whether the gate is still closed.
func (g *restoredGate) unsettledAny() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// unsettled reports whether id is a restored session not settled yet: its
// copy from this node's store, not a session of the id that came here
// after that copy ended (ended).
func (g *restoredGate) unsettled(id string) bool {
	if !g.ids[id] || !g.unsettledAny() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.ended[id]
}

// endedHere reports whether id's restored copy ended here before the
// settle (end): a session of id here now is not that copy.
func (g *restoredGate) endedHere(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ended[id]
}

// end notes that id's restored copy ended here before the settle. Taken
// for the restored copy still, a session of id adopted here afterwards
// had every forward of its messages left out (skipUnsettled) while
// publishers, seeing its persistent keys, held nothing for it: each was
// confirmed and reached nobody; and a claim from elsewhere ended it and
// sent the claimer to the stream, where those messages never were
// (TestReproOpOrderRollup in CI: n1 restarted, dropped its copy of oo-sub,
// then adopted oo-sub from the silent n3 4 s before its own settle; 6 of
// 597 lost; TestReproAdoptedBeforeSettle).
func (g *restoredGate) end(id string) {
	if !g.ids[id] {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended == nil {
		g.ended = map[string]bool{}
	}
	g.ended[id] = true
}

// takeUnsettled reports whether id is a restored session not settled
// yet, and if so ends the copy here and returns where the claiming node
// is to read this node's held subject from: it reads the session from the
// stream (reply 2) and what was held for this node, which this copy may
// lack (above). Everything before that sequence this node applied
// durably (so it is in the session's record); from there on the claiming
// node delivers what the record does not hold (deliverHeld). 0: nothing
// applied yet, read from the session's last op. Called by
// owners.onRelease (after disown: this node's later ops for id stay
// local).
func (s *sessions) takeUnsettled(id string) (bool, uint64) {
	if s == nil || !s.gate.unsettled(id) {
		return false, 0
	}
	if s.n.fault.freesOps(id) {
		s.n.log.Info("cluster: test fault: the ops held back land in the stream before the answer", "client_id", id)
		s.awaitDrained(2 * time.Second)
	}
	s.gate.mu.Lock()
	from, ok := s.gate.at[id]
	s.gate.mu.Unlock()
	if !ok {
		from = s.gate.next.Load() // not disowned (not in the server): nothing applied to it
	}
	// Its hold keys stay until the claimer's interest is out: the
	// others go on holding what it matches for this node meanwhile
	// (persistentFilters.leaveKeepHeld); its record stays with them
	// (spared.go).
	if s.dropRestored(id) {
		s.n.log.Info("restored session claimed elsewhere before it was settled here; dropped", "client_id", id, "held_from", from)
	}
	s.gate.end(id)
	return true, from
}

// endRestored notes that id's session here, if it was a restored one not
// settled yet, ended (restoredGate.end).
func (s *sessions) endRestored(id string) {
	if s != nil {
		s.gate.end(id)
	}
}

// onSettled announces the restored sessions still here by their
// persistent keys (persistent.go settle) and watches them for heldWatch:
// until the others see those keys they both forward to this node and hold
// for it what the sessions match, and the held copy of a message that
// came both ways is dropped (originWatch). They catch up meanwhile
// (catchup.go): followOwnHeldOnce ends it.
func (s *sessions) onSettled() {
	here := map[string]bool{}
	ids := []string{}
	for id := range s.gate.ids {
		if s.n.srv.HasSession(id) {
			here[id] = true
			ids = append(ids, id)
		}
	}
	// Caught up first (catchup.go): what the others held for this node
	// after the read that settled it, before they saw these keys, comes
	// after; forwarded copies of newer messages must not pass it
	// (TestClusterFull seed 44: ps3, settled on a restarted n3, got 5
	// messages held for n3 after newer ones forwarded at once).
	// Watched from here, before the keys go out: a message
	// forwarded to them from now on (by the keys of other sessions here
	// with the same filters) and held for this node is delivered once.
	// A release request for one of them waits for the catch-up too
	// (awaitHeld): handed over before the read that ends it, a session
	// left without what was held for this node since the settle, which
	// that read then applied to no session here
	// (TestClusterRestartedNodeSessionResumedElsewhere: claimed 170 ms
	// after the settle, moved with 257 messages, the catch-up's read 1 s
	// after the settle, and 20 acknowledged messages lost).
	until := time.Now().Add(s.n.heldWatch())
	s.n.gate.Lock()
	s.settleCatch, s.settledAt = s.n.catchUpAll(ids, s.n.cfg.ForwardTimeout), time.Now()
	s.endRestoreCatch() // joined by the settle's (broker CatchUp)
	if s.settleCatch == nil {
		// No restored session is left here to catch up: nothing of
		// theirs waits for the held reads (lastbeat.go).
		s.silence.caughtUp(s.settledAt)
	}
	if s.settleCatch != nil && s.n.own != nil {
		caught, released := s.settleCatch, s.n.own.holdRelease(ids)
		s.gate.catchOwn(ids)
		s.settleCatch = func() {
			s.gate.caughtOwn()
			caught()
			released()
		}
	}
	for id := range here {
		s.n.watch.watch(id, until)
	}
	s.n.gate.Unlock()
	// Their share group copies queued before the restart wait for their
	// claims (restoredclaim.go): the owner records say they are still
	// this node's, and their clients may connect from now on.
	s.claimRestored(here)
	if d := s.n.fault.settleDelay(); d > 0 {
		s.n.log.Info("cluster: test fault: the settled sessions' keys are announced late", "for", d)
		select {
		case <-time.After(d):
		case <-s.n.ctx.Done():
		}
	}
	s.persist.settle(func(id string) bool { return here[id] })
	now := time.Now()
	s.mu.Lock()
	if s.keysGone == nil {
		s.keysGone = make(map[string]time.Time, len(here))
	}
	for id := range here {
		s.keysGone[id] = now
	}
	s.mu.Unlock()
}

// keysLanding bounds how long after a restored session's hold keys went
// a hold made under them may still land in this node's held subject: the
// others see the keys go a heartbeat or two later, and a hold's lane
// publishes a hold its partition stream did not answer again until
// forward_timeout after it was made (heldlane.go).
func (n *Node) keysLanding() time.Duration {
	return n.cfg.ForwardTimeout + 2*heartbeatEvery + heldRetryWait
}

// keysWentLately reports whether id is a restored session here whose
// hold keys went within keysLanding: holds made under them may still be
// on their way to this node's held subject.
func (s *sessions) keysWentLately(id string) bool {
	s.mu.Lock()
	at, ok := s.keysGone[id]
	if ok && time.Since(at) > s.n.keysLanding() {
		delete(s.keysGone, id)
		ok = false
	}
	s.mu.Unlock()
	return ok
}

// catchRestored has the restored sessions catch up (catchup.go) from the
// moment the node is attached, until their settle's catch-up joined it
// (onSettled). Their plain subscriptions get no forward until the settle
// (skipUnsettled), but a share group of which a restored copy is the only
// member here is routed to this node at once (its membership is routing
// interest from the restore), and the copy, an away one (keep.go Away),
// takes the group's messages into its queue; what the others held for
// this node while it was down, older, is applied only by the read that
// settles it, and went behind them: one publisher's messages to the
// member out of their order (test/jepsen TestClusterFull on main
// 2026-12-06, seed 58: g1m1 got pub1#187, forwarded to the restarted n1
// 3.7 s before its settle, ahead of #157-#182, held for n1 while it was
// down; seed 50 the same on n3; TestReproRestoredGroupOrder). Catching up
// from here, what the copy takes keeps its place, and the settle's held
// messages (Late) go ahead of it in their publisher's order. Messages
// published here for such a group (keptLocal) are placed the same way.
func (s *sessions) catchRestored() {
	if s == nil || !s.gate.unsettledAny() {
		return
	}
	// Before anything is forwarded here, and before announceLoop's
	// first heartbeat moves the file's time (lastbeat.go).
	if at, ok := lastBeat(s.n.cfg.Data); ok {
		s.silence.begin(at, time.Now())
		s.n.log.Info("cluster: restored sessions' ops count from the last heartbeat before the restart until what was held for this node is read",
			"last_heartbeat", at.UTC().Format(time.RFC3339Nano))
	}
	ends := make([]func(), 0, len(s.gate.ids))
	for id := range s.gate.ids {
		if end := s.n.srv.CatchUp(id); end != nil {
			ends = append(ends, end)
		}
	}
	if len(ends) == 0 {
		return
	}
	// Held messages are Late while any session catches up
	// (deliverHeldTo).
	s.n.catching.Add(1)
	var once sync.Once
	s.restoreCatch = func() {
		once.Do(func() {
			for _, end := range ends {
				end()
			}
			s.n.catching.Add(-1)
		})
	}
}

// endRestoreCatch ends catchRestored's part of the restored sessions'
// catch-up. Called by followOwnHeld's goroutine, the settle's.
func (s *sessions) endRestoreCatch() {
	if s.restoreCatch != nil {
		s.restoreCatch()
	}
}

// returnElection is what the catch-up of a node back from a silence
// (catchUpOnReturn) allows, beyond ForwardTimeout, for the JetStream
// leaders its return deposed to be elected again. Stopped longer than a
// Raft election timeout (nats-server raft.go: 4 to 9 s), the node
// campaigns in its groups as it resumes, before it hears their leaders:
// its higher term makes a leader step down, and where its log is behind
// (the others held for it meanwhile, in the partition stream of its held
// subject; the meta group, which they wrote) it cannot win, so the group
// has no leader until another member's election timeout, up to 9 s later.
// Its follower can neither read its held subject nor make its consumer
// meanwhile, and tries again up to 2 s apart (followBackoff). Cut at
// ForwardTimeout, the catch-up sent the forwards that came since the
// return before what was held (TestReproPausedNodeHeldOrder, 3 runs in 20
// on main: n3's ROOST_SESS_6 without a leader for 5.5 and 5.8 s after its
// return; on session 23's code the meta group for 7.8 s;
// TestReproReturnLeaderless). An upper bound: a follower that reads
// sooner ends the catch-up then.
const returnElection = 9*time.Second + 2*time.Second

// catchUpOnReturn has the persistent sessions here catch up (catchup.go)
// as the node comes back from a silence long enough for the others to
// have dropped it (announceLoop: a pause): they held for it meanwhile,
// and once they hear it again they forward to it at once, while what
// they held reaches the sessions here only through this node's own
// follower, later: newer messages of a publisher came before older ones
// (test/jepsen TestClusterFull seed 41, 2026-12-06: ps0 on n3, paused
// 10 s, got pub1#431 and pub2#451 forwarded at once before pub2#408-#450
// held for n3; TestReproPausedNodeHeldOrder). Begun before the heartbeat
// that makes them forward again, so that nothing they forward passes what
// they held; the follower ends it once it read this node's held subject
// to its end (followOwnHeldOnce), at most ForwardTimeout. The sessions
// are watched (a message both held and forwarded reaches them once) and
// release requests for them wait for it, as after a settle (onSettled).
// Not while restored sessions are unsettled: the settle's catch-up
// covers them. from is the last heartbeat before the silence, back now:
// until the follower read what was held, this node's ops count as made
// at from (silence.go). Bounded by ForwardTimeout and returnElection.
func (s *sessions) catchUpOnReturn(from, back time.Time) {
	s.silence.begin(from, back)
	s.n.fault.returned(back)
	if s.gate.unsettledAny() {
		return
	}
	ids := s.persistentHere()
	if len(ids) == 0 {
		// Nothing here was held for; a session that comes here reads
		// the held subjects itself (adoptHeld).
		s.silence.caughtUp(back)
		return
	}
	until := time.Now().Add(s.n.heldWatch())
	s.n.gate.Lock()
	done := s.n.catchUpAll(ids, s.n.cfg.ForwardTimeout+returnElection)
	if done != nil && s.n.own != nil {
		caught, released := done, s.n.own.holdRelease(ids)
		done = func() {
			caught()
			released()
		}
	}
	for _, id := range ids {
		s.n.watch.watch(id, until)
	}
	s.n.gate.Unlock()
	if done == nil {
		return
	}
	s.n.log.Info("cluster: back from a silence: persistent sessions catch up with what was held for this node", "sessions", len(ids))
	// Before returnCatch: the follower takes both when it takes that.
	s.returnEnds.Store(s.n.askHeldEnds(back, s.n.cfg.ForwardTimeout+returnElection))
	if old := s.returnCatch.Swap(&done); old != nil {
		(*old)() // not taken yet: this one covers it
	}
}

// watchArrival watches id, just put in the server by a live move (under
// the gate's write side), while this node has hold keys out (its restored
// sessions', persistent.go): the others both forward to this node what id
// matches, by its persistent key, and hold it for this node by the hold
// keys of the same filter, and the follower of this node's held subject
// applies the held copy to the sessions here when it was held, id too (it
// needs it if the publisher did not see its key yet). Watched, id gets
// one of the two copies (originWatch). Seen in TestClusterFull: a session
// moved live to a restarted node while a restored session claimed
// elsewhere kept its hold keys (t/#, the same filter), 24 QoS 2
// duplicates.
func (s *sessions) watchArrival(id string) {
	s.liveArrival(id)
	if !s.persist.holdingAny() {
		return
	}
	s.n.watch.watch(id, time.Now().Add(s.n.heldWatch()+s.persist.cover))
}

// fenceHold keeps id's filters as hold keys for a while (persistent.go
// fenceKeepHeld): id's session is fenced here, and may end here without a
// handover. Every persistent session here is watched meanwhile: a hold
// key makes the others hold for this node what its filters match, and
// this node's own follower applies the held copies to the sessions here
// (followOwnHeld), which also get the message forwarded; watched, each
// gets one of the two (originWatch).
func (s *sessions) fenceHold(id string) {
	if s == nil {
		return
	}
	ids := s.persistentHere()
	if !s.persist.fenceKeepHeld(id) {
		return
	}
	until := time.Now().Add(s.n.heldWatch() + s.persist.cover)
	s.n.gate.Lock()
	for _, c := range ids {
		s.n.watch.watch(c, until)
	}
	s.n.gate.Unlock()
	s.n.log.Info("cluster: a fenced session's filters held for this node a while", "client_id", id, "for", s.persist.cover)
}

// unfenceHold ends id's hold keys of a fence: its session was handed over
// after all, with what it got meanwhile, and its new owner confirmed it.
// (Not at the handover itself: a claimer that gave up waiting for the
// answer never adopts it, and the session ends here when no confirmation
// comes; seen in TestClusterFull seed 42: a release request answered 4 s
// after it was sent, its claimer gone to the stream, ps2's hold keys gone
// with the answer: 214 acknowledged messages lost.)
func (s *sessions) unfenceHold(id string) {
	if s != nil && !s.gate.unsettled(id) {
		s.persist.unfence(id)
	}
}

// skipUnsettled wraps a forwarded message's Pick so that it leaves out the
// restored sessions not settled yet: their copies may be stale, and what
// they match is held for them (persistent.go, hold keys).
func (s *sessions) skipUnsettled(pick func(string) bool) func(string) bool {
	if s == nil || !s.gate.unsettledAny() {
		return pick
	}
	return func(id string) bool { return !s.gate.unsettled(id) && (pick == nil || pick(id)) }
}

// errUnsettled: a CONNECT for a restored session came before the node
// settled and did not settle within the claim's bound.
var errUnsettled = errors.New("cluster: the restored session is not settled yet")

// awaitRestored waits, for a CONNECT with client id id, until the node
// settled if id is a restored session not settled yet (its copy may be
// stale); other ids go on at once.
func (n *Node) awaitRestored(ctx context.Context, id string) error {
	if n.sess == nil || !n.sess.gate.unsettled(id) {
		return nil
	}
	select {
	case <-n.sess.gate.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errUnsettled, ctx.Err())
	}
}

// heldFrom notes, for a claim of id, where node's held subject is to be
// read from (its reply to the claim).
func (s *sessions) heldFrom(node, id string, seq uint64) {
	if seq == 0 {
		return
	}
	s.gate.mu.Lock()
	defer s.gate.mu.Unlock()
	if s.gate.from == nil {
		s.gate.from = map[string]uint64{}
	}
	s.gate.from[node+"\x00"+id] = seq
}

// takeHeldFrom returns and forgets what heldFrom noted.
func (s *sessions) takeHeldFrom(node, id string) uint64 {
	s.gate.mu.Lock()
	defer s.gate.mu.Unlock()
	k := node + "\x00" + id
	seq := s.gate.from[k]
	delete(s.gate.from, k)
	return seq
}

// heldReadConfig is the consumer that reads what was held for node: from
// stream sequence from when known, else from since, else from the start.
func (s *sessions) heldReadConfig(node string, from uint64, since time.Time) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{FilterSubject: s.heldSubject(node)}
	switch {
	case from > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	case !since.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	return cfg
}
