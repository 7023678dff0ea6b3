package cluster

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
// node's routes closed is held the same way instead of counting as done:
// the node may have died before its copy was replicated. (A node dropped
// for silence, paused or cut off, is not held for: it may be alive on the
// minority side of a partition, where holding would make its side wait
// for a quorum even for clean subscribers; docs/cluster.md says what a
// long pause loses.) Held messages are applied
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
// A session that holds a message already (a forward its node journalled
// before it died, unconfirmed) does not get the held copy
// (broker.Server.HasMessage). A message can also come both held and
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

// orphanInterest is the interest of nodes this node dropped, kept until
// their sessions live elsewhere or they are back. Only the plain filters
// of their persistent sessions (persistent.go): a clean session died with
// its node, and a shared group is served by its members on live nodes
// (plan), and is not held for (docs/cluster.md).
//
// A node forgotten for silence first (paused, cut off) and whose routes
// close later (killed while paused) died as surely as one whose routes
// closed first: its persistent filter keys are kept aside (silent) and
// become its orphan interest when its routes close (died). Which of the
// two a node meets first is a race of the heartbeat timeout and the
// kill: without this, a message published between the routes' close and
// the adoption of the node's sessions was acknowledged and lost for them
// (cluster/qos2origin_test.go: a node paused, then killed deadAfter
// later).
type orphanInterest struct {
	mu     sync.Mutex
	tree   *topic.Tree[string, struct{}]
	keys   map[string][]ikey
	silent map[string][]ikey // nodes forgotten for silence, routes still open
	count  atomic.Int32      // nodes kept, for Forward's fast path
}

func newOrphanInterest() *orphanInterest {
	return &orphanInterest{tree: topic.NewTree[string, struct{}](), keys: map[string][]ikey{},
		silent: map[string][]ikey{}}
}

// keepSilent sets node's persistent filter keys aside: node was forgotten
// for silence, and is held for only if its routes close (died).
func (o *orphanInterest) keepSilent(node string, keys map[ikey]struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var kept []ikey
	for k := range keys {
		if k.isPersist() {
			kept = append(kept, k)
		}
	}
	delete(o.silent, node)
	if len(kept) > 0 {
		o.silent[node] = kept
	}
}

// died makes the keys set aside for the silent nodes that routed does not
// name (their routes closed: the process died) their orphan interest, and
// returns those nodes.
func (o *orphanInterest) died(routed map[string]bool) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var nodes []string
	for node, ks := range o.silent {
		if routed[node] {
			continue
		}
		delete(o.silent, node)
		o.dropLocked(node)
		for _, k := range ks {
			o.tree.Subscribe(k.filter, "", node, struct{}{})
		}
		o.keys[node] = ks
		o.count.Add(1)
		nodes = append(nodes, node)
	}
	return nodes
}

// keep makes node's persistent filter keys its orphan interest
// (replacing any).
func (o *orphanInterest) keep(node string, keys map[ikey]struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(node)
	delete(o.silent, node)
	var kept []ikey
	for k := range keys {
		if k.isPersist() {
			o.tree.Subscribe(k.filter, "", node, struct{}{})
			kept = append(kept, k)
		}
	}
	if len(kept) > 0 {
		o.keys[node] = kept
		o.count.Add(1)
	}
}

// drop forgets node's orphan interest, and the keys set aside should it
// be silent (it is back, or its sessions were adopted).
func (o *orphanInterest) drop(node string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(node)
	delete(o.silent, node)
}

func (o *orphanInterest) dropLocked(node string) {
	ks, ok := o.keys[node]
	if !ok {
		return
	}
	for _, k := range ks {
		o.tree.Unsubscribe(k.filter, "", node)
	}
	delete(o.keys, node)
	o.count.Add(-1)
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

// matchNode reports whether dropped node has orphan interest in topic
// name.
func (o *orphanInterest) matchNode(node, name string) bool {
	if o.count.Load() == 0 {
		return false
	}
	found := false
	o.tree.Match(name, func(_, _ string, n string, _ struct{}) {
		found = found || n == node
	})
	return found
}

// match returns the dropped nodes with interest in topic name.
func (o *orphanInterest) match(name string) []string {
	if o.count.Load() == 0 {
		return nil
	}
	var nodes []string
	o.tree.Match(name, func(_, _ string, node string, _ struct{}) {
		for _, m := range nodes {
			if m == node {
				return
			}
		}
		nodes = append(nodes, node)
	})
	return nodes
}

// originWatch remembers, for sessions taken from the stream lately, the
// origins of the messages they got, so that a copy held for their
// previous node and a forwarded copy are delivered once.
type originWatch struct {
	mu    sync.Mutex
	n     atomic.Int32
	until map[string]time.Time
	seen  map[string]map[originKey]struct{}
}

// watch starts (or extends) id's watch until then.
func (w *originWatch) watch(id string, until time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.until == nil {
		w.until, w.seen = map[string]time.Time{}, map[string]map[originKey]struct{}{}
	}
	if _, ok := w.until[id]; !ok {
		w.n.Add(1)
		w.seen[id] = map[originKey]struct{}{}
	}
	w.until[id] = until
}

// first reports whether id has not got the message k yet, and notes it.
// Ids not watched always get it.
func (w *originWatch) first(id string, k originKey) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen, ok := w.seen[id]
	if !ok {
		return true
	}
	if _, dup := seen[k]; dup {
		return false
	}
	seen[k] = struct{}{}
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
			w.n.Add(-1)
		}
	}
}

// dedupPick wraps a forwarded message's Pick so that a watched session
// gets a message once, whether held or forwarded. The decision is made
// once per session per message (a session may match with several
// subscriptions).
func (n *Node) dedupPick(k originKey, inner func(string) bool) func(string) bool {
	if n.watch.n.Load() == 0 {
		return inner
	}
	decided := map[string]bool{}
	return func(id string) bool {
		if v, ok := decided[id]; ok {
			return v
		}
		v := (inner == nil || inner(id)) && n.watch.first(id, k)
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
	return k, rm, err
}

// hold appends msg (pub: its PUBLISH; o: its Origin, if any) to node's
// held subject and returns the append's future; nil, nil when sessions are
// not replicated here.
func (n *Node) hold(node string, msg *broker.Message, pub []byte, o broker.Origin) (jetstream.PubAckFuture, error) {
	s := n.sess
	if s == nil {
		return nil, nil
	}
	s.mu.Lock()
	js, ready := s.js, s.ready
	s.mu.Unlock()
	if !ready {
		return nil, fmt.Errorf("held for %s: %w", node, errNotReady)
	}
	k := originKey{n.cfg.Node, n.inc, msg.ID}
	m := nats.NewMsg(s.heldSubject(node))
	m.Data = encodeHeld(k, encodeForwardOrigin(msg, nil, pub, o))
	// The same id for the same message and node: a repeat is dropped,
	// also a resend's routing under the same Origin from another node.
	id := "h." + n.inc + "." + strconv.FormatUint(msg.ID, 36) + "." + node
	if !o.IsZero() {
		id = "h.o." + strconv.FormatUint(o.Hash(), 36) + "." + node
	}
	m.Header.Set(jetstream.MsgIDHeader, id)
	if f := n.fault.unanswers(m); f != nil {
		return f, nil
	}
	f, err := js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("held for %s: %w", node, err)
	}
	return f, nil
}

// holdForGone decides a forward to node that died before it confirmed
// (errGone). The node may have died before its persistent sessions'
// copies were replicated: if one of them has a matching filter, msg is
// held for them instead. Otherwise only clean sessions there wanted it,
// and they died with the node: nothing is lost by acknowledging msg (a
// clean session is not kept across its node's loss, docs/cluster.md).
func (n *Node) holdForGone(ctx context.Context, node string, msg *broker.Message, pub []byte, o broker.Origin) error {
	if !n.remote.orphans.matchNode(node, msg.Topic) {
		return nil
	}
	return n.holdNow(ctx, node, msg, pub, o)
}

// holdNow holds msg for node and waits for the append; nil at once when
// sessions are not replicated here (a dead node's clean sessions went
// with it).
func (n *Node) holdNow(ctx context.Context, node string, msg *broker.Message, pub []byte, o broker.Origin) error {
	f, err := n.hold(node, msg, pub, o)
	if err != nil || f == nil {
		return err
	}
	return n.settleHeld(ctx, node, f)
}

// settleHeld waits for a hold's append.
//
// A partition stream electing a leader answers nobody: nats.go gives up
// after two retries (about 500 ms, "no response from stream"), far within
// the caller's bound (forward_timeout), and the publisher was then told
// the outcome is unknown although the hold would succeed a moment later.
// The hold is published again until ctx ends; its Msg-Id keeps it once in
// the stream.
func (n *Node) settleHeld(ctx context.Context, node string, f jetstream.PubAckFuture) error {
	for {
		select {
		case ack := <-f.Ok():
			if ack != nil && ack.Duplicate {
				// The same message held for node before (a repeat, or a
				// resend's routing under the same Origin).
				n.log.Debug("cluster: message held for a node already", "peer", node, "seq", ack.Sequence)
			}
			return nil
		case err := <-f.Err():
			if !errors.Is(err, jetstream.ErrNoStreamResponse) {
				return fmt.Errorf("held for %s: %w", node, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("held for %s: %w (%w)", node, ctx.Err(), err)
			case <-time.After(heldRetryWait):
			}
			n.sess.mu.Lock()
			js := n.sess.js
			n.sess.mu.Unlock()
			again, perr := js.PublishMsgAsync(f.Msg())
			if perr != nil {
				return fmt.Errorf("held for %s: %w", node, perr)
			}
			n.log.Debug("cluster: holding again: its partition stream did not answer", "peer", node)
			f = again
		case <-ctx.Done():
			return fmt.Errorf("held for %s: %w", node, ctx.Err())
		}
	}
}

// heldRetryWait is the pause before a hold is published again after its
// partition stream did not answer (settleHeld).
const heldRetryWait = 250 * time.Millisecond

// deliverHeld delivers one held message to those of the sessions ids
// names that match it and do not hold it already (a forward their node
// took and journalled before it died, whose confirmation died with it,
// is held too), with its Message Expiry counted from when it was held.
// It returns the store ticket of the copies.
func (n *Node) deliverHeld(m jetstream.Msg, ids func(string) bool, candidates []string) (broker.Ticket, error) {
	k, rm, err := decodeHeld(m.Data())
	if err != nil {
		return 0, err
	}
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
	has := map[string]bool{}
	for _, id := range candidates {
		if ids(id) && n.srv.HasMessage(id, rm.From, rm.Topic, rm.Payload) {
			has[id] = true
		}
	}
	rm.Groups = []string{} // groups are served on live nodes (plan)
	rm.Pick = n.dedupPick(k, func(id string) bool { return ids(id) && !has[id] })
	n.gate.RLock()
	_, t := n.srv.DeliverRemote(rm)
	n.gate.RUnlock()
	return t, nil
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
	backoff := 100 * time.Millisecond
	// applied: stream sequences applied by this process, whose
	// acknowledgement may not have reached the consumer (it delivers them
	// again): applied twice, a message the session completed meanwhile
	// would reach it twice.
	applied := map[uint64]bool{}
	for n.ctx.Err() == nil {
		err := s.followOwnHeldOnce(stream, name, applied)
		if n.ctx.Err() != nil {
			return
		}
		n.log.Warn("cluster: following messages held for this node; again soon", "err", err, "backoff", backoff)
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (s *sessions) followOwnHeldOnce(stream, name string, applied map[uint64]bool) error {
	n := s.n
	ctx, cancel := context.WithTimeout(n.ctx, followAttempt)
	cons, err := s.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: s.heldSubject(n.cfg.Node), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 2 * n.cfg.ForwardTimeout, MaxAckPending: fetchMax,
	})
	cancel()
	if err != nil {
		return err
	}
	for n.ctx.Err() == nil {
		batch, err := cons.Fetch(fetchMax, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		var persistent []string
		var in map[string]bool
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if seq := md.Sequence.Stream; !applied[seq] {
				if persistent == nil {
					persistent = s.persistentHere()
					in = make(map[string]bool, len(persistent))
					for _, id := range persistent {
						in[id] = true
					}
				}
				t, err := n.deliverHeld(m, func(id string) bool { return in[id] }, persistent)
				if err != nil {
					n.log.Warn("cluster: held message unreadable; dropped", "err", err)
				} else if err := n.srv.WaitDurable(t); err != nil {
					return fmt.Errorf("store: %w", err) // not acknowledged: delivered again
				}
				applied[seq] = true
				if len(applied) > maxApplied {
					for old := range applied {
						if old+maxApplied < seq {
							delete(applied, old)
						}
					}
				}
			}
			if err := m.DoubleAck(n.ctx); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
	}
	return nil
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
	mu    sync.Mutex
	ids   map[string]time.Time
	from  uint64    // next stream sequence to read; 0: from since on
	since time.Time // where a read by time starts
	gen   uint64    // counts resets (a session's first read failed)
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
}

// newHeldWait returns a wait for one read (add for more) that calls done
// once all are finished.
func newHeldWait(done func()) *heldWait {
	w := &heldWait{done: done}
	w.left.Store(1)
	return w
}

func (w *heldWait) add() { w.left.Add(1) }

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
	n.watch.watch(id, until)
	nodes := append(append(n.remote.heardNodes(), n.remote.orphans.nodes()...), n.cfg.Node)
	nodes = append(nodes, prev...)
	slices.Sort(nodes)
	for _, node := range slices.Compact(nodes) {
		if node == "" {
			continue
		}
		next, err := s.readHeld(ctx, node, 0, last, func(c string) bool { return c == id }, []string{id})
		n.log.Debug("cluster: messages held for a node read for a session taken from the stream", "client_id", id, "peer", node, "since", last, "next", next)
		if err != nil {
			n.log.Warn("cluster: messages held for a node not read yet; following", "client_id", id, "peer", node, "err", err)
		}
		s.joinFollower(node, id, until, next, last, err != nil, w)
	}
}

// joinFollower adds id to node's follower, starting one if needed. next
// is where id's first read ended (0: nothing read); again says it failed,
// so the follower reads from last on again (the watch drops the copies
// the others had), and w (if not nil) is finished after its next
// complete read.
func (s *sessions) joinFollower(node, id string, until time.Time, next uint64, last time.Time, again bool, w *heldWait) {
	s.mu.Lock()
	if s.followers == nil {
		s.followers = map[string]*heldFollower{}
	}
	f := s.followers[node]
	spawn := f == nil
	if spawn {
		f = &heldFollower{ids: map[string]time.Time{}, from: next, since: last}
		s.followers[node] = f
	}
	s.mu.Unlock()
	f.mu.Lock()
	f.ids[id] = until
	if again {
		f.from, f.since, f.gen = 0, minTime(f.since, last), f.gen+1
		if w != nil {
			if f.waits == nil {
				f.waits = map[*heldWait]uint64{}
			}
			w.add()
			f.waits[w] = f.gen
		}
	}
	// Otherwise nothing: id's first read went to the end of the subject
	// as it was then, and the follower reads on from its own position;
	// the watch drops what id gets twice.
	f.mu.Unlock()
	if spawn {
		s.n.wg.Add(1)
		go s.follow(node, f)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// follow reads node's held subject every heldPoll for the sessions f
// names, until their watches end.
func (s *sessions) follow(node string, f *heldFollower) {
	defer s.n.wg.Done()
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
		}
		now := time.Now()
		s.mu.Lock() // s.mu before f.mu: joinFollower finds f under s.mu
		f.mu.Lock()
		ids := make([]string, 0, len(f.ids))
		for id, u := range f.ids {
			if now.After(u) {
				delete(f.ids, id)
			} else {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			delete(s.followers, node)
			done := f.takeWaits(^uint64(0))
			f.mu.Unlock()
			s.mu.Unlock()
			finishAll(done)
			return
		}
		s.mu.Unlock()
		from, since, gen := f.from, f.since, f.gen
		f.mu.Unlock()
		in := func(c string) bool { return slices.Contains(ids, c) }
		ctx, cancel := context.WithTimeout(s.n.ctx, s.n.cfg.ForwardTimeout)
		next, err := s.readHeld(ctx, node, from, since, in, ids)
		cancel()
		if err != nil {
			s.n.log.Debug("cluster: reading messages held for a node", "peer", node, "err", err)
		}
		f.mu.Lock()
		if f.gen == gen && next > f.from {
			f.from = next
		}
		var done []*heldWait
		if err == nil {
			// The read began after the resets up to gen: the
			// sessions that asked for them have what was held.
			done = f.takeWaits(gen)
		}
		f.mu.Unlock()
		finishAll(done)
	}
}

// takeWaits removes and returns the waits asked at gen or before; f.mu
// held (they are finished after, outside the locks).
func (f *heldFollower) takeWaits(gen uint64) []*heldWait {
	var out []*heldWait
	for w, g := range f.waits {
		if g <= gen {
			delete(f.waits, w)
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
// match them, and returns the sequence after the last one read (from
// when none was).
func (s *sessions) readHeld(ctx context.Context, node string, from uint64, since time.Time, in func(string) bool, ids []string) (uint64, error) {
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return from, errNotReady
	}
	cfg := jetstream.ConsumerConfig{FilterSubject: s.heldSubject(node)}
	switch {
	case from > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	case !since.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	next := from
	err := readAll(ctx, js, streamName(s.partition(node)), cfg, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		if _, err := s.n.deliverHeld(m, in, ids); err != nil {
			s.n.log.Warn("cluster: held message unreadable; skipped", "peer", node, "err", err)
		} else {
			s.n.log.Debug("cluster: message held for a node read", "peer", node, "seq", md.Sequence.Stream, "ids", len(ids))
		}
		next = md.Sequence.Stream + 1
		return nil
	})
	return next, err
}
