package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// Messages taken before the disown whose ops land after it.
//
// A disowned copy keeps what it takes from the disown on (keep.go): its
// ops stay here, and the session's next owner reads the kept copies in
// this node's held subject. What the copy took before the disown is in
// its QueuePut ops, sent to the partition stream, and a claimer that reads
// the stream finds it there. Not when the op is still on its way: queued
// while the partition stream had no quorum for this node (back from a
// pause, its stream's leader deposed), it lands after the claimer read
// the record, behind the claimer's rollup, and every later reader skips
// it as an older epoch's. The forward it carried was confirmed when it
// landed: acknowledged and lost (TestReproPausedOwnerMovesLive, session
// 28 at load 25: n3, back from an 11 s pause, took n1's live forward of
// q2-19 at 37.20; n2 claimed pm-sub at 37.82; n3's records fenced its
// copy at 38.03; n3 told n2 to read the stream at 39.99, n2 read it at
// 40.01, and n3's QueuePut landed at 41.82; TestReproLateOpsKept).
//
// So the disown keeps, as the copy's own takes are kept, the messages of
// the id's QueuePut ops still waiting in its partition queue then
// (pendingCopies): a reader of this node's held subject gets each as a
// kept copy, once, against its record (recordHas) and the copy names its
// QoS 2 exchanges by (originKey.copy). The forward's confirmation waits
// for these appends too (lateKept), as a kept copy's does. Only messages
// whose origin the kept copy can name: by their place (forwarded or held
// here: place.go), or published here, by this node's key for them
// (queuedCopy); and only queued ones not sent to a client (no packet id):
// a client that had the PUBLISH would get a second one under a new packet
// id. Not covered: an op that lands after the claimer's read but before
// this node learns of the claim (the release request answered late, its
// fence not read yet). A local publisher's acknowledgement waits for its
// QueuePut, not for the kept copy's append (lateKept is a forward's).
//
// Share groups. A kept copy names the groups its reader is to give it
// to the session for (keep); one naming none goes through plain
// subscriptions only. The QueuePut does not say which group's turn the
// copy got, so a pending copy names every share group of the session
// whose filter matches its topic (pendingGroups): the session's next
// owner's reader claims each for the session (claimFor) and gives the
// message for those it wins. One whose turn went to another member is
// claimed for that member already, or that member's QoS 2 copy waits for
// its claim (broker ServedGate) and is dropped when the reader's came
// first: the group gets it once either way. Named none, the group's turn
// this copy took had no deliverer: acknowledged and lost
// (TestReproLateOpsKept's m1 and m2, session 29: the claimer read the
// kept copies and gave them to the session's plain subscriptions only;
// bench/jepsen/RESULTS.md "lg29"). Still open: a QoS 2 turn given to a
// clean member here while the session had a plain subscription matching
// too; that member's claim follows its PUBLISH (claimServed), and a
// reader whose claim came first gives the group a second copy.

// pendingCopy is a message queued for a session here whose QueuePut op
// was not acknowledged by the partition stream when the id was lost.
type pendingCopy struct {
	seq   uint64 // its delivery's store sequence
	k     originKey
	o     broker.Origin
	topic string
	fwd   []byte // its forwarded form (version 1: forwardWithGroups)
	// groups: the share groups its kept copy names (pendingGroups).
	groups []string
}

// pendingCopiesLocked returns the messages queued for id whose QueuePut
// ops wait in its partition queue (unacknowledged), but those completed
// (a QueueDel after) or sent (a packet id), and none when the session
// ended after them (its SessionDel); unkept counts the others it leaves
// out: without a place and not published here (queuedCopy). s.mu is
// held.
func (s *sessions) pendingCopiesLocked(id string) (out []pendingCopy, unkept int) {
	var skipped []uint64
	for _, op := range s.parts[s.partition(id)].ops {
		if op.id != id {
			continue
		}
		switch op.kind {
		case broker.OpQueuePut:
			var local originKey
			if op.local != 0 {
				local = originKey{s.n.cfg.Node, s.n.inc, op.local}
			}
			c, sent, ok := queuedCopy(op.body, local)
			out = slices.DeleteFunc(out, func(p pendingCopy) bool { return ok && p.seq == c.seq })
			switch {
			case ok && !sent:
				out = append(out, c)
			case !ok && !sent:
				skipped = append(skipped, c.seq)
			}
		case broker.OpQueueDel:
			r := reader{b: op.body}
			seq := r.uvarint()
			out = slices.DeleteFunc(out, func(p pendingCopy) bool { return p.seq == seq })
			skipped = slices.DeleteFunc(skipped, func(p uint64) bool { return p == seq })
		case broker.OpSessionDel:
			out, skipped = out[:0], skipped[:0]
		}
	}
	return out, len(skipped)
}

// queuedCopy reads a QueuePut op's body (encodeOpBody): the delivery's
// message as a kept copy would carry it, and whether it was sent to a
// client. ok is false for a malformed body, and for a message without a
// place unless local, its origin key if it was published here, names it
// (repOp.local). A message published here has no place (place.go), and
// every other copy of it (forwarded, held, kept by a disowned copy:
// forward) is named by that key. Left out, a first routing's turn of a
// share group given to a member here was lost when its op landed after
// the claimer's read (test/jepsen TestClusterFull long faults, seed 968
// run 2, session 29: j1280 published on n2 for g1m1 there, n2 cut off
// before the op landed; TestReproLateOpsKept's m3 and m4;
// bench/jepsen/RESULTS.md "gl29", "gl30"). A clean publisher's QoS 2
// message whose copy name is not local's came here in a session another
// node handed over or the stream held: its copies' key is not known
// here, so it is left out (unkept). Another such message (a persistent
// publisher's QoS 2, under its Origin, or a QoS 1) is kept under this
// node's key: its reader dedupes by the Origin, and QoS 1 may come twice.
func queuedCopy(body []byte, local originKey) (c pendingCopy, sent, ok bool) {
	r := reader{b: body}
	c.seq = r.uvarint()
	r.byte() // QoS
	r.byte() // retain
	r.byte() // released
	sent = r.uvarint() != 0
	for n := r.uvarint(); n > 0 && r.err == nil; n-- {
		r.uvarint() // subscription ids
	}
	m := readMessage(&r)
	if r.err != nil || m == nil {
		return c, sent, false
	}
	p := m.Place()
	node, inc, found := strings.Cut(p.Source, "\x00")
	switch {
	case found && p.Seq != 0:
		c.k = originKey{node, inc, p.Seq}
	case local.id != 0:
		c.k = local
		if o := m.Origin(); o.ClientID == "" && o.Nonce != 0 && o.Nonce != local.copy() {
			return c, sent, false
		}
	default:
		return c, sent, false
	}
	pub, err := encodePublish(m)
	if err != nil {
		return c, sent, false
	}
	c.o, c.topic = m.Origin(), m.Topic
	if c.o.ClientID == "" && c.o.Nonce == c.k.copy() {
		// A copy's name (broker copyOrigin: a clean publisher's QoS 2
		// message) is the origin key's: kept without it, as every held
		// copy is, its reader claims the group under the copy name
		// (copyClaimMsg), where this node's ClaimServed did, not under
		// an Origin nobody else claims by.
		c.o = broker.Origin{}
	}
	c.fwd = encodeForwardOrigin(m, nil, pub, c.o)
	return c, sent, true
}

// pendingGroups returns, for each share subscription of subs
// ("$share/group/filter") whose filter matches name, its group
// ("group\x00filter"): the groups a kept copy of a queued message names
// (above).
func pendingGroups(subs []broker.SubscriptionSnapshot, name string) []string {
	var gks []string
	for _, sub := range subs {
		group, filter, shared, err := topic.ParseShare(sub.Filter)
		if err == nil && shared && topic.Match(filter, name) {
			gks = append(gks, group+"\x00"+filter)
		}
	}
	return gks
}

// lateKeep is one disown's appends of pendingCopies, named by their copy
// names (originKey.copy, a forward's pendingAck.copy): done is closed
// once they are in the stream or failed (err).
type lateKeep struct {
	copies []uint64
	done   chan struct{}
	err    error
	at     time.Time
}

// lateKeeps are the disowns' appends a forward's confirmation may wait
// for (lateKept). n counts them, so that ackLoop looks only when there are
// some; one settled keepFor ago is dropped.
type lateKeeps struct {
	mu      sync.Mutex
	all     []*lateKeep
	n       atomic.Int32
	keepFor time.Duration
}

// add registers k.
func (l *lateKeeps) add(k *lateKeep, keepFor time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keepFor = keepFor
	l.all = append(l.all, k)
	l.pruneLocked()
}

// pruneLocked drops the appends settled keepFor ago: no confirmation
// waits for them any more. l.mu is held.
func (l *lateKeeps) pruneLocked() {
	l.all = slices.DeleteFunc(l.all, func(o *lateKeep) bool {
		select {
		case <-o.done:
			return time.Since(o.at) > l.keepFor
		default:
			return false
		}
	})
	l.n.Store(int32(len(l.all)))
}

// of returns the registered appends of the message of copy name c.
func (l *lateKeeps) of(c uint64) []*lateKeep {
	if l.n.Load() == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked()
	var out []*lateKeep
	for _, k := range l.all {
		if slices.Contains(k.copies, c) {
			out = append(out, k)
		}
	}
	return out
}

// keepPending keeps cs, the messages of id's ops still on their way when
// this node lost it (pendingCopiesLocked), as a disowned copy keeps what
// it takes: appended to this node's held subject, marked for id, each
// naming the session's share groups its topic matches (pendingGroups:
// its subscriptions here now, none when the session is not in the server
// any more). It returns at once; the appends settle in the background.
func (n *Node) keepPending(id string, cs []pendingCopy) {
	k := &lateKeep{done: make(chan struct{}), at: time.Now()}
	_, subs, _ := n.srv.Client(id)
	for i, c := range cs {
		k.copies = append(k.copies, c.k.copy())
		cs[i].groups = pendingGroups(subs, c.topic)
	}
	n.sess.late.add(k, 2*n.cfg.ForwardTimeout)
	if !n.goTracked(func() { n.settlePending(id, cs, k) }) {
		k.err = errors.New("the node closes")
		close(k.done)
	}
}

// settlePending appends and settles keepPending's copies.
func (n *Node) settlePending(id string, cs []pendingCopy, k *lateKeep) {
	defer close(k.done)
	var fs []jetstream.PubAckFuture
	for _, c := range cs {
		f, err := n.keep(c.k, c.o, c.fwd, []keptCopy{{id: id, groups: c.groups}})
		fs = append(fs, f...)
		if err != nil {
			k.err = err
			break
		}
	}
	if err := n.settleKept(fs); err != nil && k.err == nil {
		k.err = err
	}
	if k.err != nil {
		n.log.Warn("cluster: messages a copy took before its disown, their ops not in the stream yet, not kept", "client_id", id, "messages", len(cs), "err", k.err)
		return
	}
	grouped := 0
	for _, c := range cs {
		if len(c.groups) > 0 {
			grouped++
		}
	}
	n.log.Info("cluster: messages a copy took before its disown, their ops not in the stream yet, kept in the held subject", "client_id", id, "messages", len(cs),
		"for_groups", grouped)
}

// lateKept waits, up to ForwardTimeout, for the appends of the disowns
// that kept the message of copy name c (keepPending): a forward is
// confirmed once its copies are in the stream, or kept.
func (n *Node) lateKept(c uint64) error {
	if c == 0 || n.sess == nil {
		return nil
	}
	ks := n.sess.late.of(c)
	if len(ks) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	for _, k := range ks {
		select {
		case <-k.done:
			if k.err != nil {
				return fmt.Errorf("kept after its disown: %w", k.err)
			}
		case <-ctx.Done():
			return fmt.Errorf("kept after its disown: %w", ctx.Err())
		}
	}
	return nil
}
