package broker

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Cluster is the seam between one Server and the other nodes of a cluster
// (package cluster implements it on embedded NATS). Options.Cluster is nil
// for a single node, and then none of this file's code runs but three nil
// checks.
//
// The broker tells the cluster what its subscription tree holds, as
// (filter, group) pairs gaining their first or losing their last
// subscription, so other nodes forward only what someone here wants; and it
// hands the cluster every message published here, after local delivery.
// Messages from other nodes come back in through Server.DeliverRemote.
//
// Subscribed and Unsubscribed are called with session locks held: they must
// not block nor call back into the Server.
type Cluster interface {
	// Subscribed: the plain filter (no "$share/" prefix) within share group
	// ("" for none) has its first subscription on this node.
	Subscribed(filter, group string)
	// Unsubscribed: the last such subscription is gone.
	Unsubscribed(filter, group string)
	// Forward hands msg, published on this node, to the nodes with
	// matching subscriptions (and, for a retained message, to the
	// cluster's record of retained messages). It returns at once, with
	// the number of nodes msg was sent to and, for QoS 1 and 2, a wait
	// function that returns once every one of them has taken it, or the
	// error of one that did not confirm it in time (the publisher must
	// then not be told the message was delivered). wait is nil when there
	// is nothing to wait for; it is bounded by the cluster's forward
	// timeout, and must be called (from any goroutine, once) so that what
	// it waits for is released. Forward is called with no broker lock
	// held, and in the order messages were published.
	Forward(msg *Message) (targets int, wait func() error)
	// Claim makes this node the owner of clientID before its CONNECT is
	// accepted, so that one connection per client id holds in the whole
	// cluster: a connection with the id on another node is taken over
	// (that node calls TakenOver). An error means ownership could not be
	// recorded (no quorum, timeout): the connection is closed without a
	// CONNACK, so that clients try again (conn.closeUnclaimed). It may
	// block, bounded, with no lock held.
	Claim(clientID string) error
}

// ErrForward wraps a Cluster.Forward failure in the log.
var ErrForward = errors.New("broker: forward to cluster failed")

// clusterSubscribe and clusterUnsubscribe keep the tree and the cluster's
// view of it in step. They are called where the tree changes, with the
// session lock held, as Cluster requires.
func (r *router) subscribe(filter, group string, ss *session, sub subscription) {
	if !r.tree.Subscribe(filter, group, ss, sub) && r.cluster != nil {
		r.cluster.Subscribed(filter, group)
	}
}

func (r *router) unsubscribe(filter, group string, ss *session) {
	if r.tree.Unsubscribe(filter, group, ss) && r.cluster != nil {
		r.cluster.Unsubscribed(filter, group)
	}
}

// forward hands a locally published message to the cluster. $SYS topics are
// each node's own and stay on it. It returns how many nodes the message was
// sent to and what its confirmation waits for (see Cluster.Forward).
// A message with an Origin goes with it (OriginForwarder).
func (s *Server) forward(msg *Message, o Origin) (int, func() error) {
	c := s.opts.Cluster
	if c == nil || isSys(msg.Topic) {
		return 0, nil
	}
	var (
		n    int
		wait func() error
	)
	if of, ok := c.(OriginForwarder); ok && !o.IsZero() {
		n, wait = of.ForwardOrigin(msg, o)
	} else {
		n, wait = c.Forward(msg)
	}
	if wait == nil {
		return n, nil
	}
	return n, func() error {
		if err := wait(); err != nil {
			s.log.Warn("message not confirmed by every node", "topic", msg.Topic, "qos", msg.QoS, "err", err)
			return errors.Join(ErrForward, err)
		}
		return nil
	}
}

func isSys(name string) bool {
	return strings.HasPrefix(name, "$SYS") && (len(name) == 4 || name[4] == '/')
}

// RemoteMessage is a message another node of the cluster forwards here:
// the fields of Message the publisher's node set, with Message Expiry as the
// time left when it was sent (clocks of nodes may differ; durations travel
// better than instants).
type RemoteMessage struct {
	Topic   string
	Payload []byte
	Props   *packet.Properties // forwarded PUBLISH properties; nil for none
	From    string             // publishing client id, for No Local
	QoS     packet.QoS
	Retain  bool
	// ExpiresIn is the Message Expiry time left; 0 means none.
	ExpiresIn time.Duration
	// Groups are the shared subscription groups ("group\x00filter") this
	// node is to serve; other groups matching the topic are served
	// elsewhere.
	Groups []string
	// Pick, when not nil, says which sessions (by client id) may get the
	// message through a plain subscription (shared groups are left to
	// Groups); nil means all that match. A cluster moving a persistent
	// session between live nodes uses it so that each message reaches
	// the session through exactly one of the nodes (package cluster,
	// handover_live.go).
	Pick func(clientID string) bool
	// Origin, when not zero, names the message across the cluster: it
	// goes once to each session and share group here however often it
	// comes (origin.go).
	Origin Origin
	// PickShared applies Pick to shared group members as well: a
	// cluster delivering a message it held for a dead node's share
	// group gives it to one of the sessions that held the membership
	// (package cluster, held.go).
	PickShared bool
	// GroupsOnly says the message is for the share groups of Groups
	// only: no plain subscription here gets it, whatever Pick says. A
	// cluster passing a group message on to the node a member's session
	// moved to sets it (package cluster, handover_live.go): the plain
	// subscribers there had their copy from the publishing node, and a
	// clean publisher's message has no Origin to tell the two apart.
	GroupsOnly bool
	// Accepted says the message was already accepted for the sessions
	// Pick lets through, so their queue limits (Options.MaxQueued,
	// MaxQueuedBytes) do not drop it: the limits apply to new messages.
	// A cluster moving a persistent session here sets it for the
	// messages it held for the session meanwhile, whose publishers may
	// already have been told they were taken; a handed-over queue is
	// taken whole for the same reason (Adopt).
	Accepted bool
	// Away is set by DeliverRemote: the away copies here (AwayCopies)
	// a QoS 1/2 message went to through a plain subscription, and the
	// share groups of Groups whose message went to one, the group having
	// no other member here.
	Away []AwayMember
	// Members, when not nil, names the member a share group of Groups
	// goes to here ("group\x00filter" to client id): the one a held
	// message's claim named (package cluster). A group whose named member
	// is not among its members here is missed (Missed), never given to
	// another member: the claim keeps the message for the named session,
	// whose next reader on any node takes the claim over.
	Members map[string]string
	// Missed is set by DeliverRemote: the share groups of Groups that
	// had no member here when the message was matched (their member
	// left, or never was here), or whose member named in Members was not
	// here, which the message therefore did not reach here.
	Missed []string
	// Served is set by DeliverRemote for a message under an Origin, or
	// a QoS 2 one named by its Copy: the share groups of Groups it went
	// to a live member of here (not an away copy). A cluster claims them
	// for a first routing, so that a resend routed elsewhere leaves them
	// out (Message.ServedGroups), and so that a copy of the message held
	// for this node should it die before it confirmed does not reach a
	// second member (package cluster, claimServed).
	// ServedTo names the member each went to, in Served's order.
	// Groups held for their claims (ClaimFirst) are not among them.
	Served, ServedTo []string
	// ClaimFirst has a share group of Served whose QoS 2 copy goes to a
	// persistent member wait for the cluster's claim (ServedGate) before
	// its PUBLISH: a first routing's. Readers of held or kept copies
	// claim before they deliver. A resend claimed before (ClaimResend),
	// but only for the members it found: one set ClaimFirst holds a
	// group ClaimResend did not decide (a member that joined since).
	ClaimFirst bool
	// Place, when its Source is not empty, is the message's place among
	// its publisher's messages, and Late says it was held back for the
	// sessions it goes to while their interest here was not known: a
	// session catching up (CatchUp) puts a Late message ahead of what
	// was routed to it meanwhile, behind only its own publisher's older
	// messages. Others ignore both.
	Place Place
	Late  bool
	// Resent says the message is a publisher's QoS 2 resend routed
	// again under Origin (Message.Resent): ClaimResend claims its
	// groups before DeliverRemote.
	Resent bool
	// Copy, when not 0, names the message across the copies a cluster
	// makes of it (forwarded, held for a dead node, kept for a disowned
	// session), for a QoS 2 message with no Origin (a clean publisher's):
	// a session gets it once however many copies reach it, also after it
	// completed one, moved or was taken over (copyOrigin). Which member
	// of a share group gets a group's copy is still the cluster's
	// business (Groups, Pick): Copy routes nothing once per group.
	Copy uint64
	// chosen: ClaimResend's claims (onceCheck.chosen).
	chosen map[string]string
}

// DeliverRemote delivers a message forwarded by another node to this node's
// matching sessions, as Forward's counterpart: it is not forwarded again,
// its RETAIN flag does not make it retained here (only Retain As Published
// reads it), and shared
// groups other than m.Groups are left to the nodes serving them. It
// returns the number of sessions it was routed to and the store ticket
// their queued copies wait for (see Store.Wait); the cluster waits for it
// before confirming a QoS 1/2 message to the sending node.
func (s *Server) DeliverRemote(m *RemoteMessage) (int, Ticket) {
	now := time.Now().UnixNano()
	msg := &Message{ID: s.msgID.Add(1), Topic: m.Topic, Payload: m.Payload, Props: m.Props, From: m.From,
		QoS: m.QoS, Retain: m.Retain, created: now, accepted: m.Accepted}
	if m.ExpiresIn > 0 {
		msg.expires = now + int64(m.ExpiresIn)
	}
	groups := m.Groups
	if groups == nil {
		groups = []string{} // nil would mean "every group"
	}
	if !m.Origin.IsZero() {
		msg.SetOrigin(m.Origin)
	} else if m.Copy != 0 && m.QoS == 2 {
		msg.SetOrigin(copyOrigin(m.Copy))
	}
	msg.setPlace(m.Place, m.Late)
	once := s.groupOnce(m.Origin)
	if once != nil {
		once.chosen = m.chosen
		once.mark(s, m.Resent)
	}
	mode := matchMode{pickGroups: m.PickShared, groupsOnly: m.GroupsOnly, members: m.Members, served: m.Copy != 0 && m.QoS == 2}
	sc := s.router.matchOnce(msg, groups, m.Pick, mode, once)
	if m.ClaimFirst {
		s.gateServed(msg, sc, m.Resent, m.chosen)
	}
	msg.shareWire = len(sc.targets) > 1
	m.Away = append(m.Away[:0], sc.away...)
	m.Missed = append(m.Missed[:0], sc.missed...)
	m.Served = append(m.Served[:0], sc.served...)
	m.ServedTo = append(m.ServedTo[:0], sc.servedTo...)
	return s.deliverTargets(msg, sc)
}

// GroupsOnlyOf returns the share groups of groups ("group\x00filter")
// that no session here matching topic is a member of, other than those
// of reports true for (nil: none). A cluster asks it for a forwarded
// message's groups whose members here may all be copies that are to be
// dropped (package cluster, restored sessions not settled yet), to pass
// those groups on to a node with a live member instead.
func (s *Server) GroupsOnlyOf(topic string, groups []string, of func(clientID string) bool) []string {
	return s.router.groupsOnlyOf(topic, groups, of)
}

// ClaimResend claims, for m, a QoS 2 resend (m.Resent) forwarded here
// with an Origin, the share groups of m.Groups it is to serve, before
// DeliverRemote gives one to a member here (ResendClaimer, claimAhead):
// DeliverRemote then leaves out a group claimed before, and gives a
// claimed one to the member it was claimed for. It does nothing for
// other messages, or without a ResendClaimer. The cluster calls it with
// no lock held (a claim may block, bounded); an error says a claim
// failed and its group is left out: m is not to be confirmed.
func (s *Server) ClaimResend(m *RemoteMessage) error {
	if !m.Resent || m.Origin.IsZero() || len(m.Groups) == 0 {
		return nil
	}
	msg := &Message{ID: s.msgID.Add(1), Topic: m.Topic, QoS: m.QoS}
	msg.SetOrigin(m.Origin)
	var err error
	m.chosen, err = s.claimAhead(msg, m.Origin, m.Groups)
	return err
}

// ClaimedAhead reports whether ClaimResend decided, for m, which member
// here gets share group ("group\x00filter"): claimed for one, or left
// out. A group it found no member of in the server (one whose members
// here are sessions moving in, not adopted yet) is not decided: a member
// given m later would get it with no claim made for it.
func (m *RemoteMessage) ClaimedAhead(group string) bool {
	_, ok := m.chosen[group]
	return ok
}

// AwayCopies is implemented by a Cluster whose node may hold a copy of a
// persistent session that another node owns now (package cluster: a
// disowned copy, fenced or handed over and waiting for the new owner's
// confirmation), and that still takes what is routed here until it ends.
// A share group's message goes to such a copy only when the group has no
// other member on this node, and the broker says when one did, and when
// one took a QoS 1/2 message through a plain subscription:
// Message.AwayMembers for a message published here (the cluster reads it
// in Forward), RemoteMessage.Away for one DeliverRemote delivered, so the
// cluster can keep the message where the session's next owner finds it.
// Away is asked when the subscription tree matches the session, and an
// ending session leaves the tree before its OpSessionDel is appended: a
// cluster that stops calling a copy away at its OpSessionDel never has a
// message matched to the copy that it was not told of.
type AwayCopies interface {
	// Away reports whether the session of clientID here is such a copy.
	// It is asked while a message is routed, under the subscription
	// tree's lock: it must not block nor call back into the Server.
	Away(clientID string) bool
}

// GroupPasser is implemented by a Cluster whose node may have, as a share
// group's only members, copies of sessions it cannot yet know to be its
// own (package cluster: a restarted node's restored sessions, before it
// has read the owner records). Given a message published here, such a
// copy takes it as an away copy (AwayCopies), kept for its session's next
// owner; but when another node already owned the session before this
// node came back, that owner is not a next owner and reads nothing kept
// here, and the group lost the message (test/jepsen TestClusterFull short
// faults, seed 838: n2's restored g1m0, owned by n1 since before n2's
// kill, took g1's only copy of pub2#142; TestReproGroupPassOn's
// publisher on the restarted node). So the Server asks, before it routes
// a QoS 1/2 message published here, which of its share groups the
// cluster serves on another node instead; it gives them to no member
// here (Message.PassedGroups), and the cluster's Forward sends them to a
// node with a member, as it does a group with no member here. Any member
// may get a group's message (MQTT 5 section 4.8.2).
type GroupPasser interface {
	// PassGroups returns the share groups ("group\x00filter") of a
	// QoS 1/2 message on topic, published here, that go to a member on
	// another node rather than here; nil for none. Asked with no lock
	// held, before the message is routed here.
	PassGroups(topic string) []string
}

// PassedGroups returns the share groups ("group\x00filter") of m,
// published here, that went to no member here because the Cluster serves
// them on another node (GroupPasser); nil for none.
func (m *Message) PassedGroups() []string {
	if m.ext == nil {
		return nil
	}
	return m.ext.passed
}

// passes reports whether share group key is one of m's PassedGroups.
func (m *Message) passes(key string) bool {
	return m.ext != nil && len(m.ext.passed) > 0 && slices.Contains(m.ext.passed, key)
}

// passGroups asks the Cluster which share groups of msg, published here,
// it serves elsewhere (GroupPasser), and notes them on msg; before msg is
// shared. Not for QoS 0 (no copy is kept for an away copy) nor $SYS
// topics (not forwarded).
func (s *Server) passGroups(msg *Message) {
	gp, ok := s.opts.Cluster.(GroupPasser)
	if !ok || msg.QoS == 0 || isSys(msg.Topic) {
		return
	}
	if gs := gp.PassGroups(msg.Topic); len(gs) > 0 {
		if msg.ext == nil {
			msg.ext = &msgExt{}
		}
		msg.ext.passed = gs
	}
}

// AwayMember is one message given to an away copy (AwayCopies): as a
// share group's member, or through a plain subscription (Group "").
type AwayMember struct {
	ClientID string
	Group    string // "group\x00filter", as RemoteMessage.Groups names it; "" for plain
}

// AwayMembers returns the away copies (AwayCopies) that m, published
// here, went to, by share group or plain subscription; nil for none.
func (m *Message) AwayMembers() []AwayMember {
	if m.ext == nil {
		return nil
	}
	return m.ext.away
}

// ServedGroups returns the share groups ("group\x00filter") a message
// published here under an Origin went to a live member of on this node,
// set before the Cluster's Forward is called. A QoS 2 resend routed again
// from another node claims its groups before a member there gets one
// (ResendClaimer); a first routing claims nothing itself, so the cluster
// claims these for it (package cluster, claimServed), and the resend
// finds them claimed.
func (m *Message) ServedGroups() []string {
	if m.ext == nil {
		return nil
	}
	return m.ext.served
}

// ServedMembers returns the member (client id) each of ServedGroups went
// to, in the same order.
func (m *Message) ServedMembers() []string {
	if m.ext == nil {
		return nil
	}
	return m.ext.servedTo
}

// PublishGate is implemented by a Cluster that must order this node's
// publishes against its own steps: while a persistent session moves
// between live nodes, the cluster marks in each node's stream of
// forwarded messages the point from which the new node serves the
// session, and a message must fall wholly on one side of that mark (its
// local delivery and its forwards together). The Server calls
// LockPublish before it routes a message published here and UnlockPublish
// after its forwards are queued; both are cheap and never block for long.
type PublishGate interface {
	LockPublish()
	UnlockPublish()
}

// WaitDurable waits until store ticket t (from DeliverRemote) is durable;
// nil at once without a store.
func (s *Server) WaitDurable(t Ticket) error {
	if t == 0 || s.opts.Store == nil {
		return nil
	}
	return s.opts.Store.Wait(t)
}

// ErrClaim wraps a Cluster.Claim failure in the log.
var ErrClaim = errors.New("broker: client id ownership not recorded")

// CleanWillKeeper is implemented by a Cluster that keeps, for the other
// nodes, the will of a connection whose session ends with it (expiry 0:
// nothing of it is replicated), so that a surviving node publishes it
// should this node die with the connection [MQTT-3.1.2-8].
type CleanWillKeeper interface {
	// ClaimWill is Claim for such a connection with a will, which the
	// cluster records with the ownership. token identifies that record
	// for WillDone; it may be non-zero with an error (the record was
	// written, the claim then failed), and WillDone is called then too.
	ClaimWill(clientID string, will *Message) (token uint64, err error)
	// WillDone: the connection ended here; publish, if not nil,
	// publishes its will, which is due (nil: the will was dropped: a
	// normal DISCONNECT, or Shutdown). The cluster rewrites the record
	// without the will, unless it changed since (a new claim), and calls
	// publish only if its rewrite removed the will, or a new claim here
	// left the old will to this node: exactly one node removes a will
	// from the record, and that node publishes it. It may wait for one
	// replicated write (bounded), so that a Shutdown, which waits for its
	// connections, leaves no dropped will recorded for the other nodes.
	WillDone(clientID string, token uint64, publish func())
	// WillTakenOver: the connection was taken over (HandOver) for another
	// node, whose claim replaced the record and publishes the will as a
	// takeover does; the cluster forgets the token. It returns at once.
	WillTakenOver(clientID string, token uint64)
}

// claim asks the cluster for ownership of id; nil on a single node. A
// connection with a will whose session ends with it (expiry 0) has the
// will recorded too, if the cluster keeps such wills (CleanWillKeeper);
// its token goes to c for detach. Client ids the server assigned are
// random and never claimed elsewhere, unless a will must be recorded.
func (s *Server) claim(c *conn, id string, assigned bool, will *willMsg, expiry uint32) error {
	if s.opts.Cluster == nil {
		return nil
	}
	if wk, ok := s.opts.Cluster.(CleanWillKeeper); ok && will != nil && expiry == 0 {
		token, err := wk.ClaimWill(id, will.msg)
		if err != nil {
			wk.WillDone(id, token, nil)
			return errors.Join(ErrClaim, err)
		}
		c.willToken = token
		return nil
	}
	if assigned {
		return nil
	}
	var err error
	if gc, ok := s.opts.Cluster.(GoneClaimer); ok {
		err = gc.ClaimUnless(id, c.clientGone)
	} else {
		err = s.opts.Cluster.Claim(id)
	}
	if err != nil {
		return errors.Join(ErrClaim, err)
	}
	return nil
}

// willDone tells the cluster that c, whose will the cluster recorded
// (claim), ended here; with due, its will is due and the cluster has it
// published here unless another node took the record over (see
// CleanWillKeeper). It reports false when c has no recorded will: the
// caller publishes due itself.
func (s *Server) willDone(c *conn, due *willMsg) bool {
	wk, ok := s.opts.Cluster.(CleanWillKeeper)
	if c.willToken == 0 || !ok {
		return false
	}
	var publish func()
	if due != nil {
		publish = func() { s.publishWillLater(due) }
	}
	wk.WillDone(c.clientID, c.willToken, publish)
	return true
}

// publishWillLater publishes w on a goroutine of its own, tracked for
// Shutdown.
func (s *Server) publishWillLater(w *willMsg) {
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		s.publishWill(w)
	}()
}

// PublishOrphanWill publishes will, the will of a connection on another
// node that died with it, as that node would have: the cluster calls it
// once it made this node the client id's owner (CleanWillKeeper). It
// returns at once.
func (s *Server) PublishOrphanWill(will *Message) {
	s.publishWillLater(&willMsg{msg: will})
}

// ApplyRetained makes m this node's retained message for m.Topic (an empty
// payload clears it), within the retained limits, as the cluster's
// replicated record of retained messages says: the cluster calls it for
// every retained publish on any node, this one included, in one order on
// every node, so all nodes end with the same message per topic. It
// delivers nothing. It returns why m was not kept, if a limit refused it.
func (s *Server) ApplyRetained(m *RemoteMessage) error {
	if s.opts.DisableRetain {
		return nil
	}
	now := time.Now().UnixNano()
	msg := &Message{ID: s.msgID.Add(1), Topic: m.Topic, Payload: m.Payload, Props: m.Props, From: m.From,
		QoS: m.QoS, Retain: true, created: now}
	if m.ExpiresIn > 0 {
		msg.expires = now + int64(m.ExpiresIn)
	}
	_, err := s.ret.put(msg, s.retainLimits())
	if err != nil {
		s.noteRetainRefused(msg, err)
	}
	return err
}

// ClearRetainedIf clears the retained message of m.Topic if it is still m
// (as returned by RetainedMessages), and reports whether it did: the
// cluster clears, after catching up with its record of retained messages,
// those this node kept from before that the record no longer has, without
// clearing one that a publish replaced meanwhile.
func (s *Server) ClearRetainedIf(m *Message) bool {
	r := s.ret
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.msgs.Get(m.Topic); !ok || cur != m {
		return false
	}
	r.msgs.Delete(m.Topic)
	r.account(m, -1)
	if r.store != nil && !isSysTopic(m.Topic) {
		r.store.Append(Op{Kind: OpRetainDel, Topic: m.Topic})
	}
	return true
}

// RetainedClearer is implemented by a Cluster that keeps the cluster's
// retained messages: ClearRetained records the clearing of topic's
// retained message for every node, without delivering anything; it
// returns once recorded, or the error (bounded by the cluster's forward
// timeout).
type RetainedClearer interface {
	ClearRetained(topic string) error
}

// RetainedSyncer is implemented by a Cluster whose nodes follow the
// cluster's record of retained messages asynchronously: such a node's
// retained tree changes only as the record says (ApplyRetained,
// ClearRetainedIf), its own retained publishes included. SyncRetained
// returns once this node has applied every retained change the cluster
// acknowledged before the call, or the error (bounded by the cluster's
// forward timeout). A new subscription reads retained messages only after
// it, so that a read never returns a value older than one a publisher was
// already told is written: retained topics behave as linearizable
// registers across nodes.
type RetainedSyncer interface {
	SyncRetained() error
}

// retainPublished makes msg, published on this node, the retained
// message of its topic (or clears it) and returns the store ticket of the
// change, or why a retained limit refused it. In a cluster that keeps the
// retained messages (RetainedSyncer) the tree is left alone: the node
// applies its own write from the cluster's record, at its place in the
// record's order, like any other node's (ApplyRetained). Applying it here
// at once served it to new subscribers before the record had it, and a
// write whose outcome turned out unknown (the record's leader never
// confirmed it) was then taken back when the node read the record again:
// a reader saw a value, then an older one. The limit is still checked
// here, so that the publisher hears of a refusal (the record's copy meets
// the same limit on every node). $SYS topics are each node's own.
func (s *Server) retainPublished(msg *Message) (Ticket, error) {
	if _, ok := s.opts.Cluster.(RetainedSyncer); ok && !isSys(msg.Topic) {
		return 0, s.ret.admits(msg, s.retainLimits())
	}
	return s.ret.put(msg, s.retainLimits())
}

// syncRetained brings this node's retained messages up to date with the
// cluster before a subscription reads them; nil on a single node.
func (s *Server) syncRetained() error {
	rs, ok := s.opts.Cluster.(RetainedSyncer)
	if !ok {
		return nil
	}
	if err := rs.SyncRetained(); err != nil {
		return fmt.Errorf("retained messages not brought up to date with the cluster: %w", err)
	}
	return nil
}

// clearRetainedInCluster hands an administrative clearing to the cluster,
// if it keeps retained messages, and reports whether it does; $SYS topics
// are each node's own. The cluster applies the clearing on every node,
// this one included; one it did not confirm (no quorum) may still take
// effect later, so it is not applied here ahead of the record.
func (s *Server) clearRetainedInCluster(name string) bool {
	rc, ok := s.opts.Cluster.(RetainedClearer)
	if !ok || isSys(name) {
		return false
	}
	if err := rc.ClearRetained(name); err != nil {
		s.log.Error("retained message not cleared: the cluster did not confirm the clearing (it may still take effect)", "topic", name, "err", err)
	}
	return true
}

// WillGuard is implemented by a Cluster that replicates persistent
// sessions. The will of such a session goes with the session: the node
// that takes the client id over publishes it (Adopt). A node that lost the
// id without being asked in time (paused, cut off) may still see the old
// connection end, or a delayed will come due, before it learns so: it asks
// OwnsWill (with no lock held; it may block, bounded) before publishing
// the will of a session that outlives its connection, and does not when
// another node owns the id.
type WillGuard interface {
	OwnsWill(clientID string) bool
}

// ClusterFigures is implemented by a Cluster that has figures to publish
// under $SYS/broker/cluster/ with the broker's own (each node publishes its
// view: which nodes it reaches, the engine's health). Each figure is a
// topic suffix and its value.
type ClusterFigures interface {
	SysFigures() [][2]string
}

// HandOver takes clientID's session off this node because the client
// connected to another node: its connection, if any, gets DISCONNECT 0x8E
// Session taken over [MQTT-3.1.4-3]. A session that outlives its connection
// is returned whole (subscriptions, inflight and queued messages, inbound
// QoS 2 ids, a will still waiting for its delay) for the new node to Adopt;
// a session that does not (expiry 0) just ends and nil is returned. The
// connection's will is published unless the session goes on and the will
// has a delay [MQTT-3.1.3-9], as on a takeover within one node; with
// replicated, the will of a session that goes on is the new node's to
// publish or not (Adopt), since that node may also have read the session,
// will included, from the cluster's replicated record, should this answer
// not reach it: it is exported as a connection's will (WillAt zero).
//
// A returned session stays here, offline and with its timers stopped,
// until the caller calls done (once), which ends it here: with
// publishWill false when the new node has it (it adopted it, or read it
// from a replicated record), as the will moved with it; with publishWill
// true when no other node has it, as any session ending publishes its
// pending will [MQTT-3.1.2-8]. done does nothing if the client has come
// back to this node meanwhile.
func (s *Server) HandOver(clientID string, replicated bool) (rec *StoredSession, done func(publishWill bool)) {
	return s.HandOverBy(clientID, replicated, time.Now().Add(settleTimeout))
}

// HandOverBy is HandOver with the wait for the connected client's last
// packets (settleTimeout at most) ending by by: the cluster answers a
// request to let go within a bound of its own, which this wait must not
// outlast (the other node gives up and reads the session elsewhere). A by
// already past takes the connection over without waiting, as at the end of
// settleTimeout.
func (s *Server) HandOverBy(clientID string, replicated bool, by time.Time) (rec *StoredSession, done func(publishWill bool)) {
	// As for a takeover on one node: the old connection first applies
	// what its client already sent (a DISCONNECT in flight decides about
	// the will and the session) and detaches (takeover.go).
	s.settleTakeoverWithin(clientID, min(settleTimeout, time.Until(by)))
	var wills []*willMsg
	s.mu.Lock()
	ss := s.sessions[clientID]
	if ss == nil {
		s.mu.Unlock()
		return nil, nil
	}
	ss.mu.Lock()
	moves := !ss.ended && ss.expiry > 0
	if oc := ss.conn; oc != nil {
		ss.conn = nil
		ss.offlineAt = time.Now().UnixNano()
		s.stats.connected.Add(-1)
		if w := ss.will; w != nil && !(moves && replicated) {
			ss.will = nil
			if wk, ok := s.opts.Cluster.(CleanWillKeeper); ok && oc.willToken != 0 {
				// The cluster recorded this will: the node whose claim
				// replaced the record publishes it.
				wk.WillTakenOver(oc.clientID, oc.willToken)
			} else if !moves || w.delay == 0 {
				wills = append(wills, w)
			} else {
				w.at = time.Now().Add(w.delay).UnixNano()
				ss.will = w
			}
		}
		oc.kickOut(kickTakeover)
	}
	if moves {
		rec = ss.export()
		// Nothing fires here while the new node decides: its copy of
		// the will and of the expiry is the one that counts.
		ss.stopTimersLocked()
	}
	ss.mu.Unlock()
	if !moves {
		if w := s.endSessionLocked(ss); w != nil {
			wills = append(wills, w)
		}
	}
	s.mu.Unlock()
	for _, w := range wills {
		s.publishWill(w)
	}
	if !moves {
		return nil, nil
	}
	return rec, func(publishWill bool) { s.endHandedOver(ss, publishWill) }
}

// Export returns clientID's session here as a StoredSession (what Adopt
// takes) if it is offline and outlives its connection (a Session Expiry
// Interval); nil otherwise. The session is left as it is: the cluster
// adopts the copy anew (Adopt) when a claim here resumes a session this
// node had handed over to an older claim that nobody took, so that
// nothing that still holds the old one (the handover's done) ends the
// resumed session.
func (s *Server) Export(clientID string) *StoredSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[clientID]
	if ss == nil {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || ss.conn != nil || ss.expiry == 0 {
		return nil
	}
	return ss.export()
}

// Unroute takes the subscriptions of clientID's session, handed over and
// not ended yet (HandOver), off this node's subscription tree, so that no
// message is routed to it any more: the cluster calls it once the new node
// has the session as of now, when a message routed to this copy would be
// lost with it, and one for a share group must go to a member elsewhere
// (the cluster is told the subscriptions are gone, as for an
// unsubscribe). The session itself stays until done.
func (s *Server) Unroute(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[clientID]
	if ss == nil {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || ss.conn != nil {
		return // ended, or its client came back here
	}
	for _, sub := range ss.subs {
		group, rest, _, _ := parseShare(sub.filter)
		// Its end later unsubscribes again: the tree no longer has
		// it, so nothing happens then.
		s.router.unsubscribe(rest, group, ss)
	}
}

// endHandedOver ends ss, a session HandOver returned, unless its client
// came back here meanwhile; see HandOver.
func (s *Server) endHandedOver(ss *session, publishWill bool) {
	s.mu.Lock()
	ss.mu.Lock()
	live := s.sessions[ss.id] == ss && ss.conn == nil && !ss.ended
	if live && !publishWill {
		ss.will = nil // it went with the session
	}
	ss.mu.Unlock()
	var w *willMsg
	if live {
		w = s.endSessionLocked(ss)
		s.log.Info("session ended: its client id is owned by another node", "client_id", ss.id, "will", publishWill)
	}
	s.mu.Unlock()
	if w != nil {
		s.publishWill(w)
	}
}

// Fence takes clientID's connection off this node because the cluster
// recorded another node as the id's owner and this node was not asked to
// let go in time (it was paused or cut off while the other node claimed
// the id): the connection ends as on a takeover, DISCONNECT 0x8E
// [MQTT-3.1.4-3]. Its will follows the takeover rules (without a delay it
// is published now; a session with expiry 0 ends), except that with
// replicated true a session that outlives its connection leaves its will
// to the new owner, which read the session, will included, from the
// cluster's replicated record. A session that outlives the connection
// stays, offline, for a release request that may still come (HandOver) or
// for EndSession. It reports whether a session for the id is still here.
func (s *Server) Fence(clientID string, replicated bool) bool {
	if s.sessionState(clientID) == sessionConnected {
		if replicated {
			s.mu.Lock()
			if ss := s.sessions[clientID]; ss != nil {
				ss.mu.Lock()
				if ss.persisted() {
					ss.will = nil
				}
				ss.mu.Unlock()
			}
			s.mu.Unlock()
		}
		// Kicks the connection and waits (bounded) until it detached,
		// applying what its client had already sent.
		s.settleTakeover(clientID)
	}
	return s.sessionState(clientID) != sessionNone
}

type sessionPresence int

const (
	sessionNone sessionPresence = iota
	sessionOffline
	sessionConnected
)

func (s *Server) sessionState(id string) sessionPresence {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[id]
	if ss == nil {
		return sessionNone
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	switch {
	case ss.ended:
		return sessionNone
	case ss.conn != nil:
		return sessionConnected
	}
	return sessionOffline
}

// EndSession ends clientID's session on this node if it is offline: its
// state is dropped and, with publishWill, a will still waiting for its
// delay is published now, as when a session ends [MQTT-3.1.2-8]. The
// cluster calls it for a fenced session that another node owns (without
// publishWill when that node has the session's replicated record, will
// included). It reports whether there was one.
func (s *Server) EndSession(clientID string, publishWill bool) bool {
	s.mu.Lock()
	ss := s.sessions[clientID]
	live := false
	if ss != nil {
		ss.mu.Lock()
		live = ss.conn == nil && !ss.ended
		if live && !publishWill {
			ss.will = nil
		}
		ss.mu.Unlock()
	}
	var w *willMsg
	if live {
		w = s.endSessionLocked(ss)
		s.log.Info("session ended: its client id is owned by another node", "client_id", clientID, "will", publishWill)
	}
	s.mu.Unlock()
	if w != nil {
		s.publishWill(w)
	}
	return live
}

// export is the session's state as a StoredSession. ss.mu must be held.
func (ss *session) export() *StoredSession {
	rec := &StoredSession{ClientID: ss.id, Expiry: ss.expiry, DisconnectedAt: unixTime(ss.offlineAt), Seen: ss.seenList()}
	if ss.will != nil {
		rec.Will, rec.WillAt, rec.WillDelay = ss.will.msg, unixTime(ss.will.at), ss.will.delay
	}
	for _, sub := range ss.subs {
		rec.Subs = append(rec.Subs, StoredSub{Filter: sub.filter, Opts: sub.opts, ID: sub.id})
	}
	for _, ob := range ss.inflight {
		rec.Queue = append(rec.Queue, ob.stored())
	}
	for _, ob := range ss.queue[ss.qhead:] {
		if ob.claimDrop {
			continue // the group's copy is another member's (servedgate.go)
		}
		rec.Queue = append(rec.Queue, ob.stored())
	}
	for pid, nonce := range ss.inQoS2() {
		rec.Inbound = append(rec.Inbound, pid)
		if nonce != 0 {
			rec.Unrouted = append(rec.Unrouted, InboundIntent{pid, nonce})
		}
	}
	return rec
}

// Adopt makes rec, a session another node handed over (or that the
// cluster read from its replicated record of the session), this node's
// session for rec.ClientID, replacing any it had (whose will is not
// published: rec's is the current one), so that the client's CONNECT that
// follows resumes it: CONNACK Session Present, inflight messages sent
// again with DUP, queued ones delivered. It is journalled in this node's
// store like any persistent session.
//
// A will with no due time (rec.WillAt zero) is that of a connection that
// ended with its node, which could not publish it: as on a takeover
// [MQTT-3.1.4-3], it is published now if it has no delay, else it waits
// for its delay, which the client's CONNECT that follows cancels if it
// resumes the session [MQTT-3.1.3-9]. A will whose time passed while no
// node could publish it is published now.
func (s *Server) Adopt(rec *StoredSession) {
	now := time.Now()
	var wills []*willMsg
	s.mu.Lock()
	if old := s.sessions[rec.ClientID]; old != nil {
		old.mu.Lock()
		old.will = nil
		old.mu.Unlock()
		s.endSessionLocked(old)
	}
	ss := newSession(s, rec.ClientID)
	ss.expiry = rec.Expiry
	ss.offlineAt = now.UnixNano()
	ss.mu.Lock()
	if rec.Will != nil {
		w := &willMsg{msg: rec.Will, delay: rec.WillDelay, durable: true}
		at := rec.WillAt
		if at.IsZero() {
			at = now.Add(rec.WillDelay)
		}
		if at.After(now) {
			s.delayWill(ss, w, at.UnixNano())
		} else {
			wills = append(wills, w)
		}
	}
	s.loadSessionState(ss, rec, "handed-over", false)
	ss.recordSession() // first time: journals subscriptions and queue too
	if ss.expiry != neverExpires {
		// A session offline since before it moved (its node died) has
		// less of its expiry left; one moving with its connection has
		// all of it.
		left := time.Duration(ss.expiry) * time.Second
		if !rec.DisconnectedAt.IsZero() {
			left = max(left-now.Sub(rec.DisconnectedAt), time.Millisecond)
		}
		ss.expiryTimer = time.AfterFunc(left, func() { s.expireSession(ss) })
	}
	ss.mu.Unlock()
	s.sessions[ss.id] = ss
	s.mu.Unlock()
	if len(wills) == 0 {
		return
	}
	// Published by a goroutine of their own: the cluster may adopt with
	// its PublishGate held (a session moving between live nodes), and a
	// will is a publish like any other.
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		for _, w := range wills {
			s.publishWill(w)
		}
	}()
}

// HasMessage reports whether clientID's session holds, queued or
// inflight, a message from publisher from on topic with payload. A
// cluster asks it before delivering a copy that may have reached the
// session already by another way (package cluster, held.go); call it with
// no broker lock held.
func (s *Server) HasMessage(clientID, from, topic string, payload []byte) bool {
	has, _ := s.findMessage(clientID, from, topic, payload, false)
	return has
}

// RejournalMessage is HasMessage that also journals the session's copy
// again, returning the ticket of that op (0 when the session does not
// outlive its connection or the copy was never journalled). A cluster
// asks it before it takes a held copy of a message as delivered because
// the session has it (package cluster, held.go): the session's copy may
// be in this node's own store only. A node killed right after it
// journalled a forward loses that op's replication with the process;
// restarted, its restored session has the copy and the replicas do not,
// and the held copy, acknowledged once skipped, was the cluster's only
// other one. The op again, in order with the session's later ones, gives
// the replicas the copy where the session has it: ahead of its
// publisher's newer messages (test/jepsen TestClusterFull seed 43:
// pub2#250, reordered for ps0 after the claim that read the record).
func (s *Server) RejournalMessage(clientID, from, topic string, payload []byte) (bool, Ticket) {
	return s.findMessage(clientID, from, topic, payload, true)
}

// findMessage is HasMessage, and RejournalMessage when rejournal is set.
func (s *Server) findMessage(clientID, from, topic string, payload []byte, rejournal bool) (bool, Ticket) {
	s.mu.Lock()
	ss := s.sessions[clientID]
	s.mu.Unlock()
	if ss == nil {
		return false, 0
	}
	same := func(ob *outbound) bool {
		m := ob.msg
		return m != nil && m.From == from && m.Topic == topic && bytes.Equal(m.Payload, payload)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	i := slices.IndexFunc(ss.inflight, same)
	var ob *outbound
	if i >= 0 {
		ob = ss.inflight[i]
	} else if i = slices.IndexFunc(ss.queue[ss.qhead:], same); i >= 0 {
		ob = ss.queue[ss.qhead+i]
	}
	if ob == nil {
		return false, 0
	}
	if !rejournal || !ss.persisted() || ob.seq == 0 {
		return true, 0
	}
	return true, ss.journal(Op{Kind: OpQueuePut, Delivery: ob.stored()})
}
