package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roost-mqtt/roost/broker"
)

// Subjects between nodes. Node names are NATS tokens (Config.Check).
const (
	subjPrefix = "roost"
	// ctlSubject.<node>: heartbeats and interest deltas from node; one
	// subscription for both keeps them in the order they were sent.
	ctlSubject = subjPrefix + ".ctl"
	// snapSubject.<node>: request node's interest snapshot.
	snapSubject = subjPrefix + ".snap"
	// pubSubject.<node>: messages forwarded to node; QoS 1/2 ones are
	// requests, answered once the node has taken them.
	pubSubject = subjPrefix + ".pub"
)

// Timing of the interest protocol.
const (
	heartbeatEvery = time.Second
	// deadAfter without a heartbeat a node's interest is dropped: a
	// forward to it would only wait for a node that does not answer.
	deadAfter = 4 * time.Second
	// snapshotTimeout bounds one snapshot fetch; the next heartbeat
	// retries a failed one.
	snapshotTimeout = 2 * time.Second
	// routeCheckEvery: how often the routes are checked for nodes that
	// went away.
	routeCheckEvery = 250 * time.Millisecond
)

// Node is one node of a Roost cluster: the embedded NATS engine, the
// interest tables and the forwarding of messages. It implements
// broker.Cluster. Create it with Start, give it to broker.New as
// Options.Cluster, then Attach the Server; Close after the Server's
// Shutdown.
type Node struct {
	cfg Config
	log *slog.Logger
	eng *engine
	inc string // this process's incarnation
	// places names the peers' place sources (place.go).
	places placeSources
	// interestMax, when set (tests), is interestLimit instead of the
	// engine's max_payload.
	interestMax int
	local       *localInterest
	remote      *remoteInterest
	own         *owners
	sess        *sessions // nil until Sessions
	ret         *retained
	// replies matches forward answers to their requests.
	replies replies
	// holdOutMu orders the holds of forwards out to a dropped node
	// (holdOut) before the holds a routing makes for it after.
	holdOutMu sync.Mutex
	// heldOutAt: per node, its dropsOf when holdOut last looked
	// through every forward in flight for it. Guarded by holdOutMu.
	heldOutAt map[string]uint64
	// catch says whether the other nodes' interest is known yet
	// (interest_catchup.go).
	catch catchUp

	srv    *broker.Server
	subs   []*nats.Subscription
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	acks   chan pendingAck
	// senders batch the forwards to each node (batch.go).
	sendersMu     sync.Mutex
	senders       map[string]*sender
	sendersClosed bool // Close has begun: no new sender goroutines
	// counters are the figures the forward path and claims keep
	// (stats.go).
	counters counters
	// gate orders this node's publishes (read side: a publish's local
	// delivery and its forwards; a forwarded message's delivery here)
	// against the steps of a session moving between live nodes (write
	// side); mv are those moves (handover_live.go).
	gate sync.RWMutex
	mv   *liveMoves
	// watch: origins of what sessions taken from the stream lately got
	// (held.go).
	watch originWatch
	// away: whether the other nodes may have dropped this node lately,
	// and held for it (held.go withOwnBehind).
	away awayMarks
	// catching counts the sessions here catching up after their
	// adoption (heldahead.go): while any does, held messages are Late
	// (their place they carry always: place.go).
	catching atomic.Int32
	// fault: faults a process test injected (fault.go); nil for none.
	fault *faults
	// full: forwards held here while the store's disk is full
	// (diskhold.go).
	full fullHolds
	// lanes order this node's appends to each held subject
	// (heldlane.go).
	lanes holdLanes
}

// Start checks cfg and starts the node's engine: the embedded NATS server
// with its cluster listener and routes to the peers. maxPacket is the
// broker's Options.MaxPacketSize. Messages flow once Attach is called.
func Start(cfg Config, maxPacket uint32, log *slog.Logger) (*Node, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	log = log.With("node", cfg.Node)
	fault, err := parseFaults(os.Getenv(faultEnv), cfg.Node)
	if err != nil {
		return nil, err
	}
	if fault != nil {
		log.Warn("cluster: faults injected for a test", "faults", os.Getenv(faultEnv))
	}
	eng, err := startEngine(&cfg, maxPacket, log)
	if err != nil {
		return nil, err
	}
	var b [8]byte
	rand.Read(b[:])
	n := &Node{cfg: cfg, log: log, eng: eng, inc: hex.EncodeToString(b[:]),
		local: newLocalInterest(), remote: newRemoteInterest(), acks: make(chan pendingAck, 1024), fault: fault}
	n.own = &owners{n: n, releaseSlots: make(chan struct{}, releaseHandlers), epochs: make(map[string]epochAt), unread: make(map[string]bool), wills: make(map[uint64]uint64),
		dropped: make(map[string]time.Time), superseded: make(map[uint64]time.Time)}
	// A session handed over and never confirmed ends here without a
	// handover after all: as a fenced one, its filters are held for this
	// node while its next claimer reads it (fenceHold).
	n.own.pending.expired = func(id string) { n.sess.fenceHold(id) }
	n.own.pending.claimedAgain = func(id string, epoch uint64) bool {
		if !n.own.newerHere(id, epoch) {
			return false
		}
		n.log.Info("cluster: a handover unconfirmed by its claim, the id claimed here again since: the copy left to that claim",
			"client_id", id, "epoch", epoch)
		return true
	}
	n.ret = &retained{n: n}
	n.mv = newLiveMoves(n)
	n.replies.prefix = ackSubject + "." + cfg.Node
	n.replies.m = make(map[uint64]*pendingReply)
	n.senders = make(map[string]*sender)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.watch.self = originKey{node: cfg.Node, inc: n.inc}
	log.Info("cluster engine started", "cluster", cfg.Name, "listen", cfg.Listen, "peers", cfg.Peers,
		"replicas", cfg.Replicas, "sync_always", cfg.SyncInterval == 0)
	return n, nil
}

// Subscribed implements broker.Cluster.
func (n *Node) Subscribed(filter, group string) { n.local.add(ikey{filter, group}) }

// Unsubscribed implements broker.Cluster.
func (n *Node) Unsubscribed(filter, group string) { n.local.remove(ikey{filter, group}) }

// Attach starts serving srv to the cluster: messages forwarded here are
// delivered to it, and its interest is announced.
func (n *Node) Attach(srv *broker.Server) error {
	n.srv = srv
	n.sess.catchRestored() // before anything is forwarded here
	nc := n.eng.nc
	for _, s := range []struct {
		subj string
		h    nats.MsgHandler
	}{
		{pubSubject + "." + n.cfg.Node, n.onForward},
		{snapSubject + "." + n.cfg.Node, n.onSnapshotRequest},
		{ctlSubject + ".*", n.onControl},
		{ownSubject + "." + n.cfg.Node, func(m *nats.Msg) { n.counters.takenOver.Add(1); n.own.onRelease(m) }},
		{ownOKSubject + "." + n.cfg.Node, n.own.onConfirm},
		{barrierSubject + "." + n.cfg.Node, n.onBarrierRequest},
		{finishSubject + "." + n.cfg.Node, n.onFinish},
		{heldEndSubject + "." + n.cfg.Node, n.onHeldEndRequest},
		{n.replies.prefix, n.replies.onAcks},
	} {
		sub, err := nc.Subscribe(s.subj, s.h)
		if err != nil {
			return fmt.Errorf("cluster: subscribing %s: %w", s.subj, err)
		}
		// Forwarded messages must not be dropped by NATS's default
		// pending limits while a burst is delivered; the broker's own
		// queue limits apply behind.
		sub.SetPendingLimits(-1, -1)
		n.subs = append(n.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.wg.Add(6)
	go n.catchUpLoop()
	go n.placeLoop()
	go n.openAssets()
	go n.announceLoop()
	go n.expireLoop()
	go n.ackLoop()
	return nil
}

// Close stops the node: its loops, then the engine. Call it after the
// broker's Shutdown.
func (n *Node) Close() error {
	n.cancel()
	// No sender goroutine may start once Wait below has begun.
	n.sendersMu.Lock()
	n.sendersClosed = true
	n.sendersMu.Unlock()
	for _, s := range n.subs {
		s.Unsubscribe()
	}
	n.wg.Wait()
	n.eng.close()
	n.log.Info("cluster engine stopped")
	return nil
}

// Claim implements broker.Cluster: see owners.claim. It is bounded by
// Config.ForwardTimeout. Until the node has caught up with the other
// nodes' interest (catchUpLoop) it waits, within that bound, and then
// refuses, so the CONNECT is closed without a CONNACK and the client tries
// again or elsewhere.
func (n *Node) Claim(clientID string) error { return n.ClaimUnless(clientID, nil) }

// ClaimUnless implements broker.GoneClaimer: Claim, giving up before the
// claim when gone (if not nil) reports, after the waits for the catch-up,
// a restored session's settle and another claim of the id here
// (owners.claimWill), that the CONNECT's client closed its connection.
// Those waits may last up to ForwardTimeout, longer than a client waits
// for its CONNACK (seed 113: a claim 1 s after the client left disowned
// its live copy elsewhere; seed 50: a CONNECT nobody waited for took the
// session over from the client's next one on this node; seed 196).
func (n *Node) ClaimUnless(clientID string, gone func() bool) error {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	if err := n.catch.wait(ctx); err != nil {
		n.counters.claimsFailed.Add(1)
		return err
	}
	if err := n.awaitRestored(ctx, clientID); err != nil {
		n.counters.claimsFailed.Add(1)
		return err
	}
	if gone != nil && gone() {
		n.log.Debug("cluster: claim not made: the CONNECT's client closed its connection while the claim waited", "client_id", clientID)
		return fmt.Errorf("cluster: claim for %q: %w", clientID, broker.ErrClientGone)
	}
	if err := n.own.claim(ctx, clientID, gone); err != nil {
		if !errors.Is(err, broker.ErrClientGone) {
			n.counters.claimsFailed.Add(1)
		}
		return err
	}
	n.sess.watchClaimed(clientID) // claimhold.go
	n.counters.claims.Add(1)
	return nil
}

// Peers returns the names of the other nodes this node hears from.
func (n *Node) Peers() []string { return n.remote.nodes() }

// announceLoop publishes interest changes as they happen and a heartbeat
// every heartbeatEvery; both go on one connection, in order, so a node that
// sees a heartbeat has seen every delta before it.
func (n *Node) announceLoop() {
	defer n.wg.Done()
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	subj := ctlSubject + "." + n.cfg.Node
	var last time.Time // the last heartbeat's
	beatErr := false
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.local.wake:
			if n.fault.muted() {
				continue // the next tick after the fault sends them
			}
			ds, _ := n.local.take()
			for _, b := range encodeDeltasLimited(n.cfg.Node, n.inc, ds, n.interestLimit()) {
				n.publish(subj, b)
			}
		case <-t.C:
			if n.fault.muted() {
				continue
			}
			// Silent this long (paused), this node was dropped and held
			// for: its sessions catch up before this heartbeat brings
			// the others' forwards back (catchUpOnReturn). Now, not the
			// tick's time: a tick sent before a pause comes after it.
			now := time.Now()
			if !last.IsZero() && now.Sub(last) > deadAfter && n.sess != nil {
				n.sess.catchUpOnReturn(last, now)
			}
			last = now
			if n.sess != nil {
				// After catchUpOnReturn: an op appended in between
				// counts from the silence's start either way.
				n.sess.silence.beating(now)
			}
			if err := noteBeat(n.cfg.Data, now); err != nil && !beatErr {
				beatErr = true // once: a read-only or full disk says so elsewhere too
				n.log.Warn("cluster: noting the heartbeat's time in the data directory", "err", err)
			}
			ds, seq := n.local.take()
			for _, b := range encodeDeltasLimited(n.cfg.Node, n.inc, ds, n.interestLimit()) {
				n.publish(subj, b)
			}
			n.publish(subj, encodeHeartbeat(n.cfg.Node, n.inc, seq))
		}
	}
}

func (n *Node) publish(subj string, data []byte) {
	if err := n.eng.nc.Publish(subj, data); err != nil {
		// Lost deltas are found by the next heartbeat's version.
		n.log.Warn("cluster: publishing interest", "err", err)
	}
}

// expireLoop forgets nodes that died (their routes closed) or fell silent
// (no heartbeat for deadAfter: paused, cut off).
func (n *Node) expireLoop() {
	defer n.wg.Done()
	t := time.NewTicker(routeCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-t.C:
			at := time.Now()
			if gap := n.away.ticked(at); gap > 0 {
				n.log.Info("cluster: this node did not run for a while: the others may have dropped it and held for it", "for", gap)
				n.fault.foundStall(at)
				// Its peers were not silent for it: it was
				// (excuseStall, TestReproPausedNodeHeldOrder).
				// Long enough to have dropped one, it fences as
				// it did after that drop (owners.stalled).
				if n.remote.excuseStall(gap, at) {
					n.own.lostContact.Store(true)
					n.own.stalled.Store(true)
				}
			}
			for _, name := range n.remote.expire(now.Add(-deadAfter)) {
				n.log.Warn("cluster node gone: no heartbeat", "peer", name, "after", deadAfter)
				n.own.lostContact.Store(true)
				n.away.lost(time.Now())
				n.holdOut(name) // as at a route close (peer.gone)
			}
			n.replies.sweep(now)
			n.own.sweep(now)
			n.watch.sweep(now)
			if routed, err := n.eng.routedNodes(); err == nil {
				n.dropLate(routed, now)
				for _, name := range n.remote.forgetUnrouted(routed) {
					n.log.Warn("cluster node gone: no route", "peer", name)
					n.own.lostContact.Store(true)
					if n.fault.electsFor(name, time.Now()) {
						n.log.Info("cluster: test fault: the holds for a dropped node find its held stream electing", "peer", name, "for", n.fault.holdElect)
					}
					n.holdOut(name)
				}
			}
		}
	}
}

// dropLate keeps gone-late's peer in routed, and heard from, while the
// fault says so (fault.go).
func (n *Node) dropLate(routed map[string]bool, now time.Time) {
	p := n.fault.goneLateOf()
	if p == "" {
		return
	}
	keep, first := n.fault.dropsLate(p, routed[p], now, n.catching.Load())
	if first {
		n.log.Info("cluster: test fault: a node whose routes closed is dropped late", "peer", p, "max", goneLateMax)
	}
	if keep {
		routed[p] = true
		n.remote.keepAlive(p, now) // not dropped for silence either
	}
}

// onControl handles other nodes' heartbeats and interest deltas.
func (n *Node) onControl(m *nats.Msg) {
	c, err := decodeControl(m.Data)
	if err != nil {
		n.log.Warn("cluster: bad control message", "subject", m.Subject, "err", err)
		return
	}
	if c.node == n.cfg.Node {
		if c.inc != n.inc {
			n.log.Error("cluster: another node has this node's name", "node", c.node)
		}
		return
	}
	if n.fault.delaysControl(c.node) {
		n.lateControl(m.Data)
		return
	}
	n.fault.awaitBacklog(n.ctx, c.node, func() bool { return n.away.behind(time.Now()) })
	n.handleControl(c)
}

// handleControl applies a control message of another node.
func (n *Node) handleControl(c control) {
	now := time.Now()
	var fetch, isNew bool
	if c.kind == 'H' {
		fetch, isNew = n.remote.heartbeat(c.node, c.inc, c.seq, now)
	} else {
		fetch, isNew = n.remote.applyDeltas(c.node, c.inc, c.deltas, now)
	}
	if isNew {
		n.log.Info("cluster node joined", "peer", c.node)
		n.fault.joined(c.node)
	}
	if stalled := n.own.stalled.Load() && n.own.stalled.CompareAndSwap(true, false); (isNew || stalled) && n.own.lostContact.CompareAndSwap(true, false) {
		n.fault.heardAgain()
		n.wg.Add(1)
		go n.own.fence()
	}
	if fetch {
		n.wg.Add(1)
		go n.fetchSnapshot(c.node)
	}
}

// lateControl queues a control message for interest-late (fault.go),
// handled in order interestLate after it came.
func (n *Node) lateControl(data []byte) {
	f := n.fault
	f.lateOnce.Do(func() {
		n.log.Info("cluster: test fault: a peer's interest is handled late", "peer", f.interestLate, "by", interestLate)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			for {
				select {
				case <-n.ctx.Done():
					return
				case lc := <-f.lateCtl:
					select {
					case <-n.ctx.Done():
						return
					case <-time.After(time.Until(lc.came.Add(interestLate))):
					}
					if c, err := decodeControl(lc.data); err == nil {
						n.handleControl(c)
					}
				}
			}
		}()
	})
	select {
	case f.lateCtl <- lateControl{data: slices.Clone(data), came: time.Now()}:
	case <-n.ctx.Done():
	}
}

// fetchSnapshot asks node for its full interest until it is current.
func (n *Node) fetchSnapshot(node string) {
	defer n.wg.Done()
	for again := true; again && n.ctx.Err() == nil; {
		inc, seq, keys, err := n.requestSnapshot(node)
		if err != nil {
			n.log.Debug("cluster: interest snapshot failed; retrying on the next heartbeat", "peer", node, "err", err)
		}
		again = n.remote.applySnapshot(node, inc, seq, keys, err == nil)
	}
}

// requestSnapshot fetches node's interest: one 'S' answer, or the 'P'
// parts of a snapshot too large for one NATS message, each within
// snapshotTimeout of the one before.
func (n *Node) requestSnapshot(node string) (inc string, seq uint64, keys []ikey, err error) {
	nc := n.eng.nc
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return "", 0, nil, err
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1) // parts may come faster than they are read
	if err := nc.PublishRequest(snapSubject+"."+node, inbox, nil); err != nil {
		return "", 0, nil, err
	}
	var parts, got uint64
	for {
		ctx, cancel := context.WithTimeout(n.ctx, snapshotTimeout)
		m, err := sub.NextMsgWithContext(ctx)
		cancel()
		if err != nil {
			return "", 0, nil, err
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" { // nats.go's no-responders status
			return "", 0, nil, nats.ErrNoResponders
		}
		if len(m.Data) < 2 || m.Data[1] != 'P' {
			if parts > 0 {
				return "", 0, nil, errWire
			}
			return decodeSnapshot(m.Data)
		}
		p, err := decodeSnapshotPart(m.Data)
		if err != nil {
			return "", 0, nil, err
		}
		if parts == 0 {
			inc, seq, parts = p.inc, p.seq, p.parts
		}
		// Parts come in order on one connection: anything else is not
		// this answer.
		if p.inc != inc || p.seq != seq || p.parts != parts || p.part != got {
			return "", 0, nil, errWire
		}
		keys = append(keys, p.keys...)
		if got++; got == parts {
			return inc, seq, keys, nil
		}
	}
}

func (n *Node) onSnapshotRequest(m *nats.Msg) {
	keys, seq := n.local.snapshot()
	limit := n.interestLimit()
	if b := encodeSnapshot(n.inc, seq, keys); len(b) <= limit {
		if err := m.Respond(b); err != nil {
			n.log.Warn("cluster: answering snapshot request", "err", err)
		}
		return
	}
	parts := encodeSnapshotParts(n.inc, seq, keys, limit)
	n.log.Debug("cluster: interest snapshot sent in parts", "keys", len(keys), "parts", len(parts))
	for _, b := range parts {
		if err := n.eng.nc.Publish(m.Reply, b); err != nil {
			n.log.Warn("cluster: answering snapshot request", "err", err)
			return
		}
	}
}

// interestLimit is the largest interest message this node sends: the
// engine's max_payload, less room for the NATS headers.
func (n *Node) interestLimit() int {
	if n.interestMax > 0 {
		return n.interestMax
	}
	return int(n.eng.nc.MaxPayload()) - 4096
}

// errNotTaken is a node's answer when it could not take a message.
var errNotTaken = errors.New("cluster: peer could not take the message")

// Forward implements broker.Cluster: the message goes to each node that
// wants it, in that node's next batch (batch.go), QoS 1/2 ones with a
// sequence that the node confirms once it has delivered or queued the
// message (after its store kept any persistent copies; ack.go). The
// forwards are queued now, in publish order, and the returned wait collects
// the confirmations, so a publisher's next message need not wait for the
// previous one's round trip. A node whose routes close while a forward is
// out fails it at once, outcome unknown (ack.go: it may have recorded the
// message for a persistent session or not); one only silent is waited for
// until the deadline. Later messages are planned without the node. A
// retained message is also appended to the retained stream. A message held
// here for a session moving to this node counts as one more target, and
// its wait includes the session's having it durably (handover_live.go).
func (n *Node) Forward(msg *broker.Message) (int, func() error) {
	return n.forward(msg, broker.Origin{})
}

var _ broker.OriginForwarder = (*Node)(nil)

// LocalCopy implements broker.CopyNamer: msg, published here, is named
// as its forwarded and held copies are (originKey.copy).
func (n *Node) LocalCopy(msg *broker.Message) uint64 {
	return originKey{n.cfg.Node, n.inc, msg.ID}.copy()
}

// ForwardOrigin implements broker.OriginForwarder: Forward for a QoS 2
// message under origin o, which travels with each forward and hold, so
// that the nodes route it once per session and share group even when the
// publisher's resend (after its node failed) routes it again from another
// node. Which node serves a share group is chosen by o rather than by the
// message's id here, so that a resend finds the group on the same node
// (which remembers that it served it) while that node lives.
func (n *Node) ForwardOrigin(msg *broker.Message, o broker.Origin) (int, func() error) {
	return n.forward(msg, o)
}

func (n *Node) forward(msg *broker.Message, o broker.Origin) (int, func() error) {
	n.watch.noteLocal(msg.ID) // held.go, originWatch.first
	if msg.QoS > 0 {
		// Only a client the server named (never claimed) can publish
		// before the node caught up: its message is not acknowledged
		// as delivered, since it might match subscribers not known yet.
		if err := n.catch.ready(); err != nil {
			return 0, func() error { return err }
		}
	}
	if !msg.Resent() {
		n.claimServed(originKey{}, o, msg.ServedGroups(), msg.ServedMembers()) // a resend claimed its own (claimAhead)
	}
	held, heldWait := n.mv.local(msg)
	if msg.QoS > 0 && n.fault.straddles(msg.Topic) {
		n.log.Info("cluster: test fault: a publish waits for a move in between its looks at the moves", "topic", msg.Topic)
		n.fault.awaitMove()
	}
	pick := msg.ID
	if !o.IsZero() {
		pick = originHash(o)
	}
	passed := msg.PassedGroups() // no member here took them (passon.go)
	targets, left := n.remote.planHeld(msg.Topic, pick, n.local, passed)
	for _, l := range left {
		// One line per message, so at debug: the window is a restart's
		// first seconds, or a fenced copy's cover.
		node, gk, _ := strings.Cut(l, " ")
		n.log.Debug("cluster: share group left to a node with a live member, not to one holding for it",
			"peer", node, "topic", msg.Topic, "group", groupKeys{gk})
	}
	var orphans []orphanMatch
	if msg.QoS > 0 && n.sess != nil {
		orphans = n.heldTargets(msg.Topic, targets, passed)
		if self, ok := n.heldHere(msg.Topic, targets, orphans, passed); ok {
			orphans = append(orphans, self)
		}
	}
	// Copies here whose ops stay local that msg reached (keep.go).
	kept := n.keptLocal(msg)
	if len(targets) == 0 && len(orphans) == 0 && len(kept) == 0 && !msg.Retain {
		if heldWait == nil {
			return held, nil
		}
		return held, func() error {
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
			defer cancel()
			return heldWait(ctx)
		}
	}
	pub, perr := encodePublish(msg)
	if perr != nil {
		err := fmt.Errorf("cluster: encoding %q: %w", msg.Topic, perr)
		n.log.Error("cluster: message not forwarded", "err", err)
		return 0, func() error { return err }
	}
	if msg.QoS == 0 {
		n.forwardQoS0(targets, msg, pub)
		return len(targets) + held, nil
	}
	w := &publishOut{n: n, msg: msg, pub: pub, o: o, targets: targets,
		deadline: time.Now().Add(n.cfg.ForwardTimeout), heldWait: heldWait}
	w.reqs = make([]*pendingReply, 0, len(targets))
	for i, t := range targets {
		// Out until held if t.node goes away first (awaitOut).
		heldPlain := slices.ContainsFunc(orphans, func(om orphanMatch) bool { return om.node == t.node && om.plain })
		pr := n.replies.registerOut(w.deadline, t.node, n.remote.goneCh(t.node), msg.QoS, msg.Topic, w, i, heldPlain)
		n.senderFor(t.node).addID(pr.seq, msg.ID, encodeForwardOrigin(msg, t.groups, pub, o))
		n.counters.sent[msg.QoS].Add(1)
		w.reqs = append(w.reqs, pr)
	}
	// Held for the persistent sessions of dropped nodes (held.go).
	if len(kept) > 0 {
		fs, err := n.keep(originKey{n.cfg.Node, n.inc, msg.ID}, o, encodeForwardOrigin(msg, nil, pub, o), kept)
		if err != nil {
			w.errs = append(w.errs, err)
		}
		for _, f := range fs {
			w.holds = append(w.holds, heldAppend{f, n.cfg.Node})
		}
	}
	for _, om := range orphans {
		n.log.Debug("cluster: holding a message for a dropped node's persistent sessions", "peer", om.node, "topic", msg.Topic, "origin", !o.IsZero(), "groups", len(om.groups))
		n.holdOut(om.node) // the earlier forwards out to it first
		fs, err := n.hold(om.node, msg, pub, o, om.groups, !om.plain)
		if err != nil {
			w.errs = append(w.errs, err)
		}
		for _, f := range fs {
			w.holds = append(w.holds, heldAppend{f, om.node})
		}
	}
	w.unconfirmed = n.fault.unconfirms(msg.Topic)
	if len(w.reqs) > 0 {
		n.fault.forwardedTo(msg.Topic) // before its own publish can be wait-late's
		w.late = n.fault.waitsLate(msg.Payload, msg.Topic)
	}
	if msg.Retain {
		var err error
		if w.ret, err = n.ret.appendAsync(msg, pub, true); err != nil {
			w.errs = append(w.errs, fmt.Errorf("retained stream: %w", err))
		}
	}
	return len(targets) + held + len(orphans), w.wait
}

// publishOut is a QoS 1/2 publish's forwards, holds and appends, from
// Forward to its publisher's wait. Its forwards' requests point to it
// (pendingReply.out): what one holds for its node gone before answering
// (holdOut) is the publish's message and its target's groups, kept once
// per publish here rather than copied into each request. 256 bytes, a
// size class.
type publishOut struct {
	n        *Node
	msg      *broker.Message
	pub      []byte
	o        broker.Origin
	targets  []target
	deadline time.Time
	reqs     []*pendingReply // per target
	holds    []heldAppend
	heldWait func(context.Context) error
	ret      jetstream.PubAckFuture
	errs     []error
	// unconfirmed, late: test faults (unconfirmed, wait-late).
	unconfirmed, late bool
	// gone: per target, the hold holdOut made for its node gone (made
	// with the first; guarded by Node.holdOutMu).
	gone []goneHold
}

// heldAppend is a hold's or kept copy's append for node, waited for by
// its publisher (settleHeld).
type heldAppend struct {
	f    jetstream.PubAckFuture
	node string
}

// wait is the publisher's wait (Forward's): the forwards' answers, then
// the holds and appends.
func (w *publishOut) wait() error {
	n := w.n
	if w.late {
		n.log.Info("cluster: test fault: a publish's confirmation begins once a later one to its topic was forwarded", "topic", w.msg.Topic)
		if !n.fault.awaitForwardedLater(w.deadline.Add(-time.Second)) {
			n.log.Info("cluster: test fault: wait-late's bound passed", "topic", w.msg.Topic)
		}
	}
	ctx, cancel := context.WithDeadline(n.ctx, w.deadline)
	defer cancel()
	errs := w.errs
	for _, pr := range w.reqs {
		err := n.await(ctx, pr)
		if errors.Is(err, errGone) {
			err = n.settleGone(ctx, pr)
		}
		n.replies.settledOut(pr)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range w.holds {
		if err := n.settleHeld(ctx, h.node, h.f); err != nil {
			errs = append(errs, err)
		}
	}
	if w.heldWait != nil {
		if err := w.heldWait(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if w.ret != nil {
		if err := n.ret.settle(ctx, w.ret); err != nil {
			errs = append(errs, fmt.Errorf("retained stream: %w", err))
		}
	}
	if w.unconfirmed {
		errs = append(errs, errFaultUnconfirmed)
	}
	return errors.Join(errs...)
}

// originHash spreads Origins over share groups' nodes (plan).
func originHash(o broker.Origin) uint64 {
	h := fnv.New64a()
	h.Write([]byte(o.ClientID))
	h.Write([]byte{byte(o.PacketID >> 8), byte(o.PacketID)})
	return h.Sum64() ^ o.Nonce
}

// forwardQoS0 publishes msg to each target, best effort.
func (n *Node) forwardQoS0(targets []target, msg *broker.Message, pub []byte) {
	for _, t := range targets {
		n.senderFor(t.node).add(0, encodeForward(msg, t.groups, pub))
		n.counters.sent[0].Add(1)
	}
	if msg.Retain {
		if _, err := n.ret.appendAsync(msg, pub, false); err != nil {
			n.log.Warn("cluster: QoS 0 retained message not replicated", "topic", msg.Topic, "err", err)
		}
	}
}

// onForward delivers a batch of messages another node forwarded (batch.go).
// Messages are handled one at a time in arrival order, which keeps each
// publisher's order; the confirmation of a QoS 1/2 message, which may wait
// for the store, is left to ackLoop so the next message need not wait.
func (n *Node) onForward(m *nats.Msg) {
	ok := forEachForward(m.Data, n.deliverForward)
	if !ok {
		// What was read before the fault was delivered; the rest of
		// the batch times out at its sender.
		n.log.Warn("cluster: malformed batch of forwarded messages", "subject", m.Subject, "bytes", len(m.Data))
	}
}

// deliverForward delivers one forwarded message (or notes a barrier) from
// origin; seq is its sequence there, 0 for QoS 0.
func (n *Node) deliverForward(src originKey, seq uint64, fwd []byte) {
	origin := src.node
	if len(fwd) > 0 && fwd[0] == barrierMark {
		n.gate.RLock()
		n.mv.onBarrier(origin, fwd)
		n.gate.RUnlock()
		return
	}
	rm, err := decodeForward(fwd)
	if err != nil {
		n.log.Warn("cluster: bad forwarded message", "peer", origin, "err", err)
		if seq != 0 {
			n.queueAck(pendingAck{origin: origin, seq: seq})
		}
		return
	}
	n.counters.received[rm.QoS].Add(1)
	// key names the message across its copies (its place, copy name and
	// watched sessions' dedup): src, but for a held message passed on,
	// whose own origin comes with it (place.go).
	key := src
	if k, ok := heldPassedOn(rm); ok {
		key = k
		rm.Late = n.catching.Load() > 0 // as deliverHeldTo's
	} else if src.id != 0 {
		// Kept with its queued copies, those a moving session holds
		// too (place.go).
		rm.Place, rm.Late = n.places.of(src), false
	}
	rm.Copy = key.copy() // before a moving session may hold it (mv.pick)
	// Groups whose members here are restored sessions only go on
	// (passon.go), before a resend's claims: they are claimed where
	// they are served.
	pick := src.id
	if !rm.Origin.IsZero() {
		pick = originHash(rm.Origin)
	}
	passOn := n.passRestored(rm, pick)
	var unkept error
	if seq != 0 && src.id != 0 {
		unkept = n.leaveUnkeptGroups(rm)
	}
	// A QoS 2 resend's share groups are claimed first (held.go
	// ClaimGroup), out of the gate: a claim may wait for a stream's
	// election. Only resends pay for it.
	var claimErr error
	if seq != 0 && rm.Resent {
		claimErr = n.srv.ClaimResend(rm)
	}
	// Under the gate: a moving session's last step here must see each
	// forwarded message delivered wholly before or after it.
	n.gate.RLock()
	var (
		held     *heldAck
		movingIn error
	)
	rm.Pick, held, movingIn = n.mv.pick(src, rm, seq != 0)
	if movingIn != nil {
		n.log.Info("cluster: a QoS 2 resend's share group has only sessions moving in here: not held for them, not confirmed",
			"client_id", rm.Origin.ClientID, "packet_id", rm.Origin.PacketID, "topic", rm.Topic, "peer", origin)
	}
	rm.Pick = n.sess.skipUnsettled(rm.Pick) // held for them (held.go)
	if key.id != 0 {
		rm.Pick = n.dedupPick(key, rm.Pick)
	}
	// Share groups of a session that moved from here, with no member
	// left here, go on to its new owner.
	to, gk := n.mv.redirect(rm, origin)
	if to != "" && seq != 0 {
		if held == nil {
			held = &heldAck{}
		}
		n.mv.mu.Lock()
		held.left++
		n.mv.mu.Unlock()
	}
	if len(passOn) > 0 && seq != 0 {
		if held == nil {
			held = &heldAck{}
		}
		n.mv.mu.Lock()
		held.left += len(passOn)
		n.mv.mu.Unlock()
	}
	// A first routing's groups are claimed before their members' QoS 2
	// PUBLISH (ClaimServed); the rest after, below (claimServed). A
	// resend's were claimed ahead (ClaimResend), but for a member that
	// joined after: held for its claim too (broker gateServed; seed
	// 1002's shape, forwarded).
	rm.ClaimFirst = seq != 0
	c, ticket := n.srv.DeliverRemote(rm)
	a := pendingAck{origin: origin, seq: seq, taken: true, n: c, ticket: ticket, copy: rm.Copy, keepErr: errors.Join(unkept, claimErr, movingIn)}
	// Copies here whose ops stay local (keep.go): what they took is
	// kept in the held subject too.
	var kept []keptCopy
	if seq != 0 && src.id != 0 {
		kept = withAway(nil, rm.Away)
	}
	if len(kept) > 0 {
		// Joined: the errors above still leave the message unconfirmed.
		var err error
		a.keeps, err = n.keep(src, rm.Origin, fwd, kept)
		a.keepErr = errors.Join(a.keepErr, err)
	}
	if seq != 0 && src.id != 0 {
		// A copy that ended here just before (keep.go, the copy's end).
		fs, err := n.holdHere(src, rm, fwd)
		a.keeps = append(a.keeps, fs...)
		a.keepErr = errors.Join(a.keepErr, err)
	}
	if seq != 0 {
		// Held here should the store be full (diskhold.go).
		n.noteFull(&a, src, rm, fwd, ticket)
	}
	if held != nil {
		// Confirmed once every session that holds it has it durably
		// and the new owner took what went on (handover_live.go);
		// set under the gate, so before any of them can have
		// delivered what it holds.
		held.a = a
	}
	n.gate.RUnlock()
	if seq != 0 && !rm.Resent {
		n.claimServed(src, rm.Origin, rm.Served, rm.ServedTo) // a resend claimed before (ClaimResend)
	}
	if to != "" {
		n.reforward(to, rm, gk, held)
	}
	for node, gks := range passOn {
		n.passOn(node, rm, gks, held)
	}
	if seq != 0 && held == nil {
		if n.fault.withholds(rm.Topic, rm.QoS) {
			n.log.Info("cluster: test fault: a forwarded message's confirmation withheld", "topic", rm.Topic, "peer", origin)
			return
		}
		n.queueAck(a)
	}
}

// passOn sends rm on to node for the share groups gks (passRestored),
// once passon-late's test delay, if any, is over.
func (n *Node) passOn(node string, rm *broker.RemoteMessage, gks []string, held *heldAck) {
	d := n.fault.passOnDelay()
	if d == 0 {
		n.reforward(node, rm, gks, held)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-time.After(d):
			n.reforward(node, rm, gks, held)
		case <-n.ctx.Done():
		}
	}()
}

func (n *Node) queueAck(a pendingAck) {
	select {
	case n.acks <- a:
	case <-n.ctx.Done():
	}
}
