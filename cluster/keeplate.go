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
// id. A local publisher's acknowledgement waits for its QueuePut, not for
// the kept copy's append (lateKept is a forward's).
//
// Ops that landed before the disown. An op can also land after the
// claimer read the stream and before this node learns of the claim: back
// from a pause, the node gives a message to its copy, the op lands behind
// the claimer's rollup (or a later owner's ops), and its fence comes
// after. Nothing is pending at the disown then, and every reader skips
// the op as an older epoch's: acknowledged and lost (test/jepsen
// TestClusterFull long faults, seed 1152, session 30: n1, paused while
// n3 claimed g0m1 at e5, read it and moved it to n2 at e6, gave g0's turn
// of pub1#139 to its copy at 16:01:02.1; the QueuePut landed at 02.391 at
// e4, n1 fenced the copy at 02.436; bench/jepsen/RESULTS.md "long30",
// "s1152"). So a disown whose id had QueuePuts acknowledged lately
// (putAcked) also reads the id's subject back (keepLanded) and keeps, as
// it keeps the pending ones, the messages of the QueuePuts of this
// node's claim stored after an op of a newer epoch (landedStale): exactly
// the ops a reader skips, not completed by a later op of the claim. Not
// covered: an op that landed between the claimer's read and its rollup
// (the rollup purged it: nothing tells this node whether the claimer read
// it), an op purged by a later rollup before the disown's read, and a
// node killed before its disown (its restart drops the restored copy
// without reading back).
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

// keepLate keeps, at id's disown, the messages of its copy's ops still
// on their way (late: keepPending) and, when landed, those whose ops
// landed stale before (keepLanded), at this node's claim epoch. Each
// names the session's share groups its topic matches (pendingGroups: its
// subscriptions here now, at the disown, before the fence ends it). It
// returns at once; the appends settle in the background.
func (n *Node) keepLate(id string, late []pendingCopy, landed bool, epoch uint64) {
	_, subs, _ := n.srv.Client(id)
	if len(late) > 0 {
		n.keepPending(id, late, subs)
	}
	if !landed {
		return
	}
	skip := make([]uint64, 0, len(late))
	for _, c := range late {
		skip = append(skip, c.seq)
	}
	n.goTracked(func() { n.keepLanded(id, epoch, skip, subs) })
}

// keepPending keeps cs, the messages of id's ops still on their way when
// this node lost it (pendingCopiesLocked), as a disowned copy keeps what
// it takes: appended to this node's held subject, marked for id, each
// naming the share groups of subs its topic matches.
func (n *Node) keepPending(id string, cs []pendingCopy, subs []broker.SubscriptionSnapshot) {
	k := &lateKeep{done: make(chan struct{}), at: time.Now()}
	for i, c := range cs {
		k.copies = append(k.copies, c.k.copy())
		cs[i].groups = pendingGroups(subs, c.topic)
	}
	n.sess.late.add(k, 2*n.cfg.ForwardTimeout)
	if !n.goTracked(func() { n.settlePending(id, cs, k, "their ops not in the stream yet") }) {
		k.err = errors.New("the node closes")
		close(k.done)
	}
}

// keepLanded reads id's subject back and keeps the messages of the
// QueuePuts of this node's claim at epoch stored behind a newer owner's
// ops (landedStale), but the delivery sequences of skip (kept as pending
// already), each naming the share groups of subs its topic matches. Their
// forwards were confirmed when the ops landed: nothing waits for these
// appends.
func (n *Node) keepLanded(id string, epoch uint64, skip []uint64, subs []broker.SubscriptionSnapshot) {
	js, err := n.sess.openJS()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	st := landedStale{epoch: epoch}
	err = readAll(ctx, js, streamName(n.sess.partition(id)), jetstream.ConsumerConfig{FilterSubject: n.sess.subject(id)}, func(m jetstream.Msg) error {
		h := m.Headers()
		return st.add(m.Data(), h != nil && h.Get(jetstream.MsgRollup) == jetstream.MsgRollupSubject)
	})
	if err != nil {
		n.log.Warn("cluster: a disowned copy's ops stored behind a newer owner's not read back", "client_id", id, "epoch", epoch, "err", err)
		return
	}
	cs, unkept := st.copies(skip)
	if unkept > 0 {
		n.log.Warn("cluster: messages a copy took before its disown, their ops stored behind a newer owner's, not kept: routed by another node without a place, or published here",
			"client_id", id, "messages", unkept)
	}
	if len(cs) == 0 {
		return
	}
	for i := range cs {
		cs[i].groups = pendingGroups(subs, cs[i].topic)
	}
	n.settlePending(id, cs, &lateKeep{done: make(chan struct{})}, "their ops stored behind a newer owner's")
}

// settlePending appends and settles the copies keepPending or keepLanded
// keep; how says which.
func (n *Node) settlePending(id string, cs []pendingCopy, k *lateKeep, how string) {
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
		n.log.Warn("cluster: messages a copy took before its disown, "+how+", not kept", "client_id", id, "messages", len(cs), "err", k.err)
		return
	}
	grouped := 0
	for _, c := range cs {
		if len(c.groups) > 0 {
			grouped++
		}
	}
	n.log.Info("cluster: messages a copy took before its disown, "+how+", kept in the held subject", "client_id", id, "messages", len(cs),
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

// landedStale collects, from a session subject's stream messages in
// order (add), the QueuePut ops of one claim (epoch) that every reader
// skips: stored after an op of a newer epoch (replay's rule), and not
// completed since by a QueueDel of that claim, nor ended by its
// SessionDel. A rollup begins the subject anew, as replay's does.
type landedStale struct {
	epoch, max uint64
	puts       [][]byte // their bodies, in order
}

// add takes one stream message's bytes (an op, or a pack of ops).
func (l *landedStale) add(b []byte, rollup bool) error {
	if rollup {
		l.max, l.puts = 0, nil
	}
	if len(b) < 2 || b[0] != wireVersion || b[1] != opPack {
		return l.addOp(b)
	}
	rd := reader{b: b[2:]}
	for n := rd.uvarint(); n > 0 && rd.err == nil; n-- {
		size := rd.uvarint()
		if rd.err != nil || size > uint64(len(rd.b)) {
			return errWire
		}
		if err := l.addOp(rd.b[:size]); err != nil {
			return err
		}
		rd.b = rd.b[size:]
	}
	if rd.err != nil {
		return errWire
	}
	return nil
}

// addOp takes one op's bytes.
func (l *landedStale) addOp(b []byte) error {
	kind, epoch, rd, err := readOpHead(b)
	if err != nil {
		return err
	}
	if epoch >= l.max {
		l.max = epoch
		return nil
	}
	if epoch != l.epoch {
		return nil // another stale writer's: its own disown reads it
	}
	switch kind {
	case broker.OpQueuePut:
		l.puts = append(l.puts, rd.b)
	case broker.OpQueueDel:
		seq := rd.uvarint()
		l.puts = slices.DeleteFunc(l.puts, func(p []byte) bool {
			r := reader{b: p}
			return r.uvarint() == seq
		})
	case broker.OpSessionDel:
		l.puts = nil
	}
	return nil
}

// copies returns the collected messages as kept copies (queuedCopy), but
// those sent to a client and those of the delivery sequences of skip,
// and counts those it cannot name (no place: the key this node gave a
// message published here is not in the op).
func (l *landedStale) copies(skip []uint64) (out []pendingCopy, unkept int) {
	for _, b := range l.puts {
		c, sent, ok := queuedCopy(b, originKey{})
		out = slices.DeleteFunc(out, func(p pendingCopy) bool { return p.seq == c.seq })
		switch {
		case sent || slices.Contains(skip, c.seq):
		case ok:
			out = append(out, c)
		default:
			unkept++
		}
	}
	return out, unkept
}

// recentIDs are the client ids noted within the last one to two windows:
// two sets, the older dropped as a window passes. Under sessions.mu.
type recentIDs struct {
	cur, old map[string]struct{}
	since    time.Time
}

// note notes the ids of the QueuePut ops among ops, at now; window is
// how long one set gathers.
func (r *recentIDs) note(ops []repOp, now time.Time, window time.Duration) {
	if now.Sub(r.since) > window {
		r.old, r.cur, r.since = r.cur, nil, now
	}
	for i := range ops {
		if ops[i].kind != broker.OpQueuePut {
			continue
		}
		if r.cur == nil {
			r.cur = map[string]struct{}{}
		}
		r.cur[ops[i].id] = struct{}{}
	}
}

// has reports whether id was noted within the last one to two windows.
func (r *recentIDs) has(id string) bool {
	_, cur := r.cur[id]
	_, old := r.old[id]
	return cur || old
}
