package cluster

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
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
// A node that dies (its routes close) or falls silent for deadAfter is
// dropped from the routing, but its persistent sessions live on in the
// partition streams: until a survivor adopts them (janitor.go, after
// Config.AdoptAfter), a client resumes one elsewhere (owner.go) or the
// node comes back, nobody queues for them. A QoS 1/2 message acknowledged
// to its publisher in that window would be lost for them. So every node
// keeps the interest of a node it dropped as the node's orphan interest,
// and a QoS 1/2 message matching it is appended to the node's held subject
// (sessPrefix.<partition>.held.<node key>) in a partition stream; the
// publisher's PUBACK/PUBREC waits for that append as for a forward. A
// forward that was out when its node's routes closed is held the same way
// instead of counting as done: the node may have died before its copy was
// replicated. Held messages are applied
//
//   - by the node itself when it comes back (restarted, or resumed from a
//     pause): a durable consumer follows its held subject all the time,
//     and each message goes to its persistent sessions (clean ones are
//     new since, and must not get old messages out of order);
//   - by a node that takes one of its sessions from the stream (a claim
//     the dead node did not answer, or an adoption): the held messages
//     matching the session go to it before its CONNACK, and it keeps
//     following the held subject for heldWatch, since publishers go on
//     holding until they drop the orphan interest.
//
// A message can then arrive twice at a session: held, and forwarded to
// the session's new node once its publisher sees that node's interest.
// Forwards and held messages carry their origin (node, incarnation,
// message id), and a session taken from the stream remembers the origins
// it got for heldWatch: the second copy is dropped (originWatch).
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
)

// heldWatch is how long a session taken from the stream follows its
// previous node's held subject, and remembers the origins it got: the
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
// their sessions live elsewhere or they are back. Only plain filters:
// a shared group is served by its members on live nodes (plan), and is
// not held for (docs/cluster.md).
type orphanInterest struct {
	mu    sync.Mutex
	tree  *topic.Tree[string, struct{}]
	keys  map[string][]ikey
	count atomic.Int32 // nodes kept, for Forward's fast path
}

func newOrphanInterest() *orphanInterest {
	return &orphanInterest{tree: topic.NewTree[string, struct{}](), keys: map[string][]ikey{}}
}

// keep makes node's plain keys its orphan interest (replacing any).
func (o *orphanInterest) keep(node string, keys map[ikey]struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropLocked(node)
	var kept []ikey
	for k := range keys {
		if k.group == "" {
			o.tree.Subscribe(k.filter, "", node, struct{}{})
			kept = append(kept, k)
		}
	}
	if len(kept) > 0 {
		o.keys[node] = kept
		o.count.Add(1)
	}
}

// drop forgets node's orphan interest.
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
		o.tree.Unsubscribe(k.filter, "", node)
	}
	delete(o.keys, node)
	o.count.Add(-1)
}

// has reports whether node has orphan interest here.
func (o *orphanInterest) has(node string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.keys[node]
	return ok
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

// hold appends msg (pub: its PUBLISH) to node's held subject and returns
// the append's future; nil, nil when sessions are not replicated here.
func (n *Node) hold(node string, msg *broker.Message, pub []byte) (jetstream.PubAckFuture, error) {
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
	m.Data = encodeHeld(k, encodeForward(msg, nil, pub))
	// The same id for the same message and node: a repeat is dropped.
	m.Header.Set(jetstream.MsgIDHeader, "h."+n.inc+"."+strconv.FormatUint(msg.ID, 36)+"."+node)
	f, err := js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("held for %s: %w", node, err)
	}
	return f, nil
}

// holdNow holds msg for node and waits for the append; nil at once when
// sessions are not replicated here (a dead node's clean sessions went
// with it).
func (n *Node) holdNow(ctx context.Context, node string, msg *broker.Message, pub []byte) error {
	f, err := n.hold(node, msg, pub)
	if err != nil || f == nil {
		return err
	}
	return settleHeld(ctx, node, f)
}

// settleHeld waits for a hold's append.
func settleHeld(ctx context.Context, node string, f jetstream.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("held for %s: %w", node, err)
	case <-ctx.Done():
		return fmt.Errorf("held for %s: %w", node, ctx.Err())
	}
}

// deliverHeld delivers one held message to the sessions pick allows, with
// its Message Expiry counted from when it was held. It returns the store
// ticket of the copies.
func (n *Node) deliverHeld(m jetstream.Msg, pick func(string) bool) (broker.Ticket, error) {
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
	rm.Groups = []string{} // groups are served on live nodes (plan)
	rm.Pick = n.dedupPick(k, pick)
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

// heldStart returns the first stream sequence of node's held subject that
// node has not applied itself (its consumer's acknowledgement floor): what
// it applied went into its sessions' ops, so a session taken from the
// stream has it already.
func (s *sessions) heldStart(ctx context.Context, js jetstream.JetStream, node string) (uint64, error) {
	c, err := js.Consumer(ctx, streamName(s.partition(node)), s.heldConsumer(node))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.AckFloor.Stream + 1, nil
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
	for n.ctx.Err() == nil {
		err := s.followOwnHeldOnce(stream, name)
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

func (s *sessions) followOwnHeldOnce(stream, name string) error {
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
		var pick func(string) bool
		for m := range batch.Messages() {
			if pick == nil {
				pick = s.ownHeldPick()
			}
			t, err := n.deliverHeld(m, pick)
			if err != nil {
				n.log.Warn("cluster: held message unreadable; dropped", "err", err)
			} else if err := n.srv.WaitDurable(t); err != nil {
				return fmt.Errorf("store: %w", err) // not acknowledged: delivered again
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

// ownHeldPick: a message held for this node goes to its persistent
// sessions only; a clean session is newer than the message's hold. The
// set is read before the delivery: Pick runs under the subscription
// tree's lock, which must not wait for a session's.
func (s *sessions) ownHeldPick() func(string) bool {
	persistent := map[string]bool{}
	for _, c := range s.n.srv.Clients() {
		if c.SessionExpiry > 0 {
			persistent[c.ClientID] = true
		}
	}
	return func(id string) bool { return persistent[id] }
}

// heldFollower applies what was held for a dead node to the sessions of
// its that this node took from the stream, for heldWatch each.
type heldFollower struct {
	mu    sync.Mutex
	ids   map[string]time.Time
	from  uint64 // next stream sequence to read
	start uint64 // where a session that joins reads from
	again bool   // a session joined: read from start
}

// takeHeld delivers to id, just taken from the stream here with prev its
// owner (gone), what was held for prev, and keeps following prev's held
// subject for heldWatch. The first read is done before it returns (before
// the CONNACK), so the session gets the held messages first.
func (s *sessions) takeHeld(ctx context.Context, prev, id string) {
	n := s.n
	if prev == "" || prev == n.cfg.Node {
		return
	}
	until := time.Now().Add(n.heldWatch())
	n.watch.watch(id, until)
	only := func(c string) bool { return c == id }
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	start, err := s.heldStart(ctx, js, prev)
	next := start
	if err == nil {
		next, err = s.readHeld(ctx, prev, start, only)
	}
	if err != nil {
		n.log.Warn("cluster: messages held for the previous owner not read yet; following", "client_id", id, "peer", prev, "err", err)
		start, next = 1, 1 // from the start then: the watch drops what the session had
	}
	s.mu.Lock()
	if s.followers == nil {
		s.followers = map[string]*heldFollower{}
	}
	f := s.followers[prev]
	spawn := f == nil
	if spawn {
		f = &heldFollower{ids: map[string]time.Time{}, from: next, start: start}
		s.followers[prev] = f
	}
	s.mu.Unlock()
	f.mu.Lock()
	f.ids[id] = until
	if !spawn {
		// The follower has read on for the others: this session
		// reads again from start, the others' watches drop the copies.
		f.again, f.start = true, min(f.start, start)
	}
	f.mu.Unlock()
	if spawn {
		n.wg.Add(1)
		go s.follow(prev, f)
	}
}

// follow reads prev's held subject every heldPoll for the sessions f
// names, until their watches end.
func (s *sessions) follow(prev string, f *heldFollower) {
	defer s.n.wg.Done()
	t := time.NewTicker(heldPoll)
	defer t.Stop()
	for {
		select {
		case <-s.n.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		s.mu.Lock() // s.mu before f.mu: takeHeld finds f under s.mu
		f.mu.Lock()
		for id, u := range f.ids {
			if now.After(u) {
				delete(f.ids, id)
			}
		}
		if len(f.ids) == 0 {
			delete(s.followers, prev)
			f.mu.Unlock()
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		from := f.from
		if f.again {
			from, f.again = min(from, f.start), false
		}
		f.mu.Unlock()
		pick := func(c string) bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			u, ok := f.ids[c]
			return ok && now.Before(u)
		}
		ctx, cancel := context.WithTimeout(s.n.ctx, s.n.cfg.ForwardTimeout)
		next, err := s.readHeld(ctx, prev, from, pick)
		cancel()
		f.mu.Lock()
		if err != nil {
			s.n.log.Debug("cluster: reading messages held for a gone node", "peer", prev, "err", err)
			f.again, f.start = true, min(f.start, from) // read from there again
		}
		f.from = max(f.from, next)
		f.mu.Unlock()
	}
}

// readHeld delivers the messages held for prev from stream sequence from
// on to the sessions pick allows, and returns the sequence after the last
// one read.
func (s *sessions) readHeld(ctx context.Context, prev string, from uint64, pick func(string) bool) (uint64, error) {
	s.mu.Lock()
	js := s.js
	s.mu.Unlock()
	if js == nil {
		return from, errNotReady
	}
	next := from
	err := readAll(ctx, js, streamName(s.partition(prev)), jetstream.ConsumerConfig{FilterSubject: s.heldSubject(prev),
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}, func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		if _, err := s.n.deliverHeld(m, pick); err != nil {
			s.n.log.Warn("cluster: held message unreadable; skipped", "peer", prev, "err", err)
		}
		next = md.Sequence.Stream + 1
		return nil
	})
	return next, err
}
