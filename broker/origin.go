package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A QoS 2 message of a persistent session in a cluster is routed under an
// Origin that outlives the publisher's node: the client id, the packet id
// and a nonce drawn when the id was first taken, journalled with the id
// (OpInboundPut with Op.Nonce) before the message goes anywhere. Should the
// node fail mid-exchange, the session (wherever it goes on) still knows the
// id and its nonce but not whether every node took the message; the
// client's DUP resend [MQTT-4.3.3-10 keeps the id's meaning] is then routed
// again under the same Origin, and every node routes an Origin once per
// session and share group (originSeen), so the resend reaches what the
// first routing missed and nothing twice. Once every node confirmed, the
// id is journalled again with nonce 0 (routed), and a resend after that is
// answered PUBREC without routing, as on a single node (method A of
// [MQTT-4.3.3]).
//
// Why not the publishing node's message id (package cluster's forward
// origin): the resend arrives on another node, under another id.

// Origin names one QoS 2 message of one publisher across the nodes of a
// cluster; the zero Origin names none.
type Origin struct {
	ClientID string
	PacketID uint16
	Nonce    uint64
}

// Hash is o in 8 bytes, as sessions remember it (originRing).
func (o Origin) Hash() uint64 {
	h := fnv.New64a()
	h.Write([]byte(o.ClientID))
	h.Write([]byte{0, byte(o.PacketID >> 8), byte(o.PacketID)})
	h.Write(binary.BigEndian.AppendUint64(nil, o.Nonce))
	return h.Sum64() | 1 // never 0 (none)
}

// copyOrigin is the Origin a session remembers a clean publisher's QoS 2
// message by (RemoteMessage.Copy): no client id, so it names no
// publisher's packet and is never routed under (groupOnce, ClaimResend
// and the cluster's claims read RemoteMessage.Origin, which stays zero).
// Kept on the session's copy of the message, it goes wherever the copy
// goes (the store, the replicated ops, a handover) and stays among the
// Origins the session got once the copy is completed
// (StoredSession.Seen): a QoS 2 message the client completed is never
// delivered to it again [MQTT-4.3.3], whichever copy comes later.
func copyOrigin(name uint64) Origin { return Origin{Nonce: name} }

// CopyNamer is implemented by a Cluster that names the copies it makes
// of a QoS 2 message with no Origin (RemoteMessage.Copy). A message
// published here is given to the sessions here under the same name
// (copyOrigin), so that a copy the cluster brings back here later (held
// for this node while it had restored sessions, or for the node a
// session was on) does not reach them again.
type CopyNamer interface {
	// LocalCopy returns the name msg's copies carry, for msg published
	// here; 0 for none. It is called while msg is routed: it must not
	// block.
	LocalCopy(msg *Message) uint64
}

// IsZero reports whether o names no message.
func (o Origin) IsZero() bool { return o.Nonce == 0 }

// Key is o as one string (a map key, a message id).
func (o Origin) Key() string {
	return o.ClientID + "\x00" + strconv.FormatUint(uint64(o.PacketID), 36) + "." + strconv.FormatUint(o.Nonce, 36)
}

// OriginForwarder is implemented by a Cluster that carries an Origin with
// a forwarded message, so that the receiving nodes route it once per
// session and share group however often it comes (DeliverRemote with
// RemoteMessage.Origin). The Server then takes the inbound QoS 2 publishes
// of persistent sessions as above: the id and its nonce are durable
// before the message is routed, and the id is marked routed only once the
// wait returned nil. Its contract is Forward's otherwise.
type OriginForwarder interface {
	ForwardOrigin(msg *Message, o Origin) (targets int, wait func() error)
}

// OwnerChecker is implemented by an OriginForwarder whose node may still
// serve a connection for a client id another node has claimed: a node
// paused (SIGSTOP, a VM freeze) or cut off while its client resumed the
// session elsewhere learns of the claim milliseconds to seconds after it
// runs again (the owner records' watcher, a release request on its way),
// and meanwhile its connection reads what the client had sent before it
// left, or the takeover's settle applies it (takeover.go). A QoS 2 PUBLISH
// among that was sent again (DUP) on the new node and routed there; the new
// owner read the session from the cluster's replicated record, without the
// nonce this node draws for the id, so a routing here is a second routing
// under another Origin, which no session or group can tell from the first
// (bench/jepsen/RESULTS.md, "stalepub": TestClusterFull seed 46). So the
// first routing of a persistent session's QoS 2 id waits, once the id and
// its nonce are durable, until the cluster says the id is still this
// node's. Read then, that is enough: a claim records its owner before it
// reads the session, so a claim the read did not see reads the nonce, and
// the client's resend there is routed under it, once per session.
type OwnerChecker interface {
	// CheckOwner returns nil if the cluster's record of clientID's
	// owner, as of now, names this node; ErrOwnedElsewhere if it names
	// another; another error if it cannot tell in time. It may block
	// (bounded), and is called with no lock held.
	CheckOwner(clientID string) error
}

// ErrOwnedElsewhere: the client id is owned by another node of the
// cluster (OwnerChecker).
var ErrOwnedElsewhere = errors.New("broker: client id owned by another node")

// InboundIntent is an inbound QoS 2 packet id whose message's routing was
// not confirmed yet: a resend is routed again under Nonce (see Origin).
type InboundIntent struct {
	PacketID uint16
	Nonce    uint64
}

// newNonce draws a nonce for an Origin; never 0 (no Origin).
func newNonce() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}

const (
	// originTTL: how long a node remembers where it routed an Origin. A
	// resend comes once the publisher reconnected (seconds); a publisher
	// back after longer may get a copy twice (docs/cluster.md).
	originTTL = 10 * time.Minute
	// originMax bounds the Origins remembered (the oldest go first).
	originMax = 1 << 16
)

// originSeen remembers, per Origin, the share groups ("group\x00filter")
// this node routed it to (sessions remember their own: originRing, so
// that it moves with them). Its lock is a leaf.
type originSeen struct {
	mu    sync.Mutex
	m     map[string]*originEntry
	order []string // keys, oldest first, from head on
	head  int
}

type originEntry struct {
	at  time.Time
	got map[string]struct{}
}

// first reports whether who has not got the message o yet, and notes that
// it has now.
func (t *originSeen) first(o string, who string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[o]
	if e == nil {
		t.expire(time.Now())
		if t.m == nil {
			t.m = map[string]*originEntry{}
		}
		e = &originEntry{at: time.Now(), got: map[string]struct{}{}}
		t.m[o] = e
		t.order = append(t.order, o)
	}
	if _, dup := e.got[who]; dup {
		return false
	}
	e.got[who] = struct{}{}
	return true
}

// originMarks remembers, per Origin routed here, the router's count of
// subscriptions made (router.made) at its first routing here
// (onceCheck.since), for the last originMax Origins. Every Origin routed
// here has one, share group or not, so it is kept lean: a hash of the
// Origin's key (maphash: 64 bits, a collision that costs a resend its
// order once in 2^64) to a count, in a map with no pointers for the
// collector to scan, and a ring of the hashes for the oldest to go
// first; nothing allocated per Origin once the map has grown
// (BenchmarkRouteOriginPlain: one map of string keys and entries
// instead cost 10-20 µs an Origin at 200,000 Origins). An Origin
// forgotten has its resend routed as a first routing: to every
// subscription, as a first routing is. Its lock is a leaf.
type originMarks struct {
	mu    sync.Mutex
	seed  maphash.Seed
	since hashRing[uint64]
}

// routed notes that the Origin of key o is being routed here, made being
// router.made read before the match, and returns router.made as of the
// Origin's first routing here: made itself when this is the first.
func (t *originMarks) routed(o string, made uint64) (since uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.since.m == nil {
		t.seed = maphash.MakeSeed()
	}
	h := maphash.String(t.seed, o)
	if since, ok := t.since.m[h]; ok {
		return since
	}
	t.since.put(h, made, originMax)
	return made
}

// expire forgets the Origins older than originTTL, and the oldest beyond
// originMax. t.mu is held. The keys left are moved to the front only once
// half of order is spent: moved at every expiry, a node routing more than
// originMax Origins within originTTL copied originMax keys for each new
// one (50-100 µs a message, BenchmarkRouteShared/origin=true at 200,000
// messages).
func (t *originSeen) expire(now time.Time) {
	for ; t.head < len(t.order); t.head++ {
		e := t.m[t.order[t.head]]
		if len(t.order)-t.head < originMax && now.Sub(e.at) < originTTL {
			break
		}
		delete(t.m, t.order[t.head])
		t.order[t.head] = ""
	}
	if t.head > 0 && t.head >= len(t.order)/2 {
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
}

// peek reports whether who has not got the message o yet, noting
// nothing.
func (t *originSeen) peek(o string, who string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[o]
	if e == nil {
		return true
	}
	_, dup := e.got[who]
	return !dup
}

// onceCheck routes a message under an Origin once per share group on
// this node (matchOnce).
type onceCheck struct {
	seen *originSeen
	key  string // the Origin's Key
	// chosen: for a resend, the member each share group here was
	// claimed for ahead of the routing (claimAhead); "" leaves the group
	// out (another node or reader delivered it, or the claim failed).
	// nil for a first routing.
	chosen map[string]string
	// again: the message is a resend (Message.Resent,
	// RemoteMessage.Resent) routed here before under the Origin, first
	// when the router had made since subscriptions; matchOnce then
	// leaves out the plain subscriptions made after (subscription.made).
	// MQTT owes a message to the subscriptions that match when the
	// server receives it, and those given it only by the resend got it
	// after the publisher's newer messages the first routing's
	// subscribers had before them: a reorder [MQTT-4.6.0-5]
	// (test/jepsen TestClusterFull short faults, seed 3059: pub0's #39
	// first routed on n2, clean cs0 and cs1 subscribed there, #40 routed
	// to them, then #39's DUP resend reached them;
	// TestResendLeavesOutNewerSubs, TestReproResendNewerSub). A
	// subscription read from the store or handed over (made 0) is never
	// left out: its session may have missed the first routing on the
	// node it was on.
	again bool
	since uint64
}

// mark records, before the match, that msg under the check's Origin is
// routed by s now (originMarks), and for a resend (resent) routed here
// before sets again and since.
func (c *onceCheck) mark(s *Server, resent bool) {
	made := s.router.made.Load()
	since := s.marks.routed(c.key, made)
	c.again = resent && since != made
	c.since = since
}

// first reports whether group has not got the message here yet; with
// note, it has now.
func (c *onceCheck) first(group string, note bool) bool {
	if note {
		return c.seen.first(c.key, group)
	}
	return c.seen.peek(c.key, group)
}

// groupOnce returns the check that routes o once per share group on this
// node; nil for no Origin.
func (s *Server) groupOnce(o Origin) *onceCheck {
	if o.IsZero() {
		return nil
	}
	return &onceCheck{seen: &s.origins, key: o.Key()}
}

// ResendClaimer is implemented by an OriginForwarder whose nodes keep a
// share group's QoS 2 message for a reader that delivers it later
// (package cluster: a copy kept for a disowned member, a message held for
// a dead node), the reader claiming the group under the message's Origin
// first. A publisher's resend routed again under the same Origin may
// reach a live member elsewhere meanwhile, and nothing there remembers
// the kept copy: so before a resend's share group goes to a live member
// here, the Server claims it the same way (ClaimGroup), and leaves the
// group out when the claim was made already. A group whose member here
// is an away copy (AwayCopies) is claimed too, and left out when claimed
// for another member; a claim that fails leaves it to the copy's reader
// (its next owner's claim), as before. An away copy may have no reader:
// a restored copy not settled yet that settles as its session's owner
// delivers what it took, and a resend's group it took unclaimed reached
// a second member (test/jepsen TestClusterFull short faults, seed 539:
// g1 claimed for g1m1 on n2, pub0's resend on the restarted n1 given to
// its restored g1m0 2 s later; TestReproResendRestoredCopy). First
// routings claim nothing.
type ResendClaimer interface {
	// ClaimGroup claims group ("group\x00filter") for the message under
	// o, for member (the client id it is to go to), others being the
	// group's other members here. It returns the member the group is
	// claimed for: member if this is the first claim or one made for
	// member before; one of others if the claim was made for that
	// member's copy (a resend routed to it, elsewhere, before its session
	// moved here), which then gets it, once by the Origin; "" if a reader
	// or another resend claimed it for a session not here. It may block
	// (a replicated append), and is called with no lock held.
	ClaimGroup(o Origin, group, member string, others []string) (string, error)
}

// ErrGroupClaim wraps a ResendClaimer failure: the resend's group was
// left out, and the message is not confirmed (the publisher sends it
// again).
var ErrGroupClaim = errors.New("broker: share group of a QoS 2 resend not claimed")

// claimAhead claims, for a resend of msg under o, the share groups this
// node is to serve (groups: nil for every group, as matchOnce) before a
// member here gets one, and returns the member each is for ("": left
// out), for matchOnce (onceCheck.chosen). It is called with no lock held:
// a claim may wait for a stream's election.
func (s *Server) claimAhead(msg *Message, o Origin, groups []string) (map[string]string, error) {
	rc, ok := s.opts.Cluster.(ResendClaimer)
	if !ok {
		return nil, nil
	}
	picks := s.router.pickAhead(msg, groups, s.groupOnce(o))
	if len(picks) == 0 {
		return nil, nil
	}
	chosen := make(map[string]string, len(picks))
	var errs []error
	for _, p := range picks {
		// A claim found made for another member here goes to that one:
		// the claim stands for it, and left out here the group had no
		// copy (test/jepsen TestClusterFull short faults, seed 2027:
		// pub0's resend claimed g0 on n2 for g0m1's copy there, which
		// moved out live to n1 before the routing; n1, routing the
		// group there, picked g0m0, found the claim g0m1's and left the
		// group out, while g0m1 never got it; TestResendClaimsOther).
		by, err := rc.ClaimGroup(o, p.group, p.id, p.others)
		switch {
		case p.away && err != nil:
			chosen[p.group] = p.id // kept for its session: its reader claims (again)
		case err != nil:
			errs = append(errs, err)
			chosen[p.group] = ""
		case by == "":
			s.log.Info("share group of a QoS 2 resend left out: another copy claimed it", "client_id", o.ClientID, "packet_id", o.PacketID, "group", strings.ReplaceAll(p.group, "\x00", " "))
			chosen[p.group] = ""
		default:
			// p.id, or another member here; an away copy is kept for
			// its session, whose reader claims (again).
			chosen[p.group] = by
		}
	}
	if len(errs) > 0 {
		return chosen, fmt.Errorf("%w: %w", ErrGroupClaim, errors.Join(errs...))
	}
	return chosen, nil
}

// msgExt holds the fields of a Message that few messages have.
type msgExt struct {
	// src is the publisher of a retained message when
	// Options.CheckRetainSource is set (a restored one's, from the store:
	// SetPublisher), nil otherwise and for the server's own messages.
	src *ClientInfo
	// origin names a persistent publisher's QoS 2 message in a cluster.
	origin Origin
	// place and late order a message for a session catching up
	// (catchup.go; RemoteMessage.Place and Late).
	place Place
	late  bool
	// away: the share groups whose copy went to an away copy here
	// (AwayCopies); set by routeOrigin before m is shared.
	away []AwayMember
	// resent: a QoS 2 resend routed again under origin (ResendClaimer).
	resent bool
	// passed: the share groups the Cluster serves on another node
	// (GroupPasser, PassedGroups); set by routeOrigin before m is
	// shared.
	passed []string
	// served: the share groups that went to a live member here under
	// origin (ServedGroups), servedTo their members (ServedMembers);
	// set by routeOrigin before m is shared.
	served, servedTo []string
}

// Resent reports whether m is a publisher's QoS 2 resend routed again
// under its Origin: the first routing was not confirmed by every node.
func (m *Message) Resent() bool { return m.ext != nil && m.ext.resent }

// markResent marks m as a resend; before m is shared.
func (m *Message) markResent() {
	if m.ext == nil {
		m.ext = &msgExt{}
	}
	m.ext.resent = true
}

func (m *Message) place() Place {
	if m.ext == nil {
		return Place{}
	}
	return m.ext.place
}

func (m *Message) late() bool { return m.ext != nil && m.ext.late }

// setPlace sets p and late; before m is shared.
func (m *Message) setPlace(p Place, late bool) {
	if p == (Place{}) && !late && m.ext == nil {
		return
	}
	if m.ext == nil {
		m.ext = &msgExt{}
	}
	m.ext.place, m.ext.late = p, late
}

func (m *Message) source() *ClientInfo {
	if m.ext == nil {
		return nil
	}
	return m.ext.src
}

// setSource sets src; before m is shared.
func (m *Message) setSource(src *ClientInfo) {
	if src == nil && m.ext == nil {
		return
	}
	if m.ext == nil {
		m.ext = &msgExt{}
	}
	m.ext.src = src
}

// Origin returns the Origin m was routed under (origin.go); zero for none.
func (m *Message) Origin() Origin {
	if m.ext == nil {
		return Origin{}
	}
	return m.ext.origin
}

// SetOrigin records o as m's Origin: for a cluster reading back a
// replicated session's queued message, before it is routed or adopted,
// so that the session is not given the message again under o.
func (m *Message) SetOrigin(o Origin) {
	if o.IsZero() && m.ext == nil {
		return
	}
	if m.ext == nil {
		m.ext = &msgExt{}
	}
	m.ext.origin = o
}

// seenMax bounds the Origins a session remembers having got.
const seenMax = 1024

// originRing is the Origins (hashes) a session got lately, the oldest
// dropped first, each with the store ticket of its copy (0: durable
// already, or not known: a copy read back or handed over); guarded by the
// session's lock.
type originRing struct{ hashRing[Ticket] }

// add notes h and reports whether it is new.
func (r *originRing) add(h uint64) bool { return r.put(h, 0, seenMax) }

// hashRing maps the last hashes put (at most the put's max) to a value
// each, the oldest forgotten first: a map with no pointers for the
// collector to scan, and a ring of its keys (originRing, originMarks).
type hashRing[V any] struct {
	keys []uint64
	next int
	m    map[uint64]V
}

// put adds h with v unless h is there, forgetting the oldest hash when
// there are max, and reports whether h is new.
func (r *hashRing[V]) put(h uint64, v V, max int) bool {
	if r.m == nil {
		r.m = map[uint64]V{}
	}
	if _, ok := r.m[h]; ok {
		return false
	}
	if len(r.keys) < max {
		r.keys = append(r.keys, h)
	} else {
		delete(r.m, r.keys[r.next])
		r.keys[r.next] = h
		r.next = (r.next + 1) % max
	}
	r.m[h] = v
	return true
}

// list returns the hashes, oldest first.
func (r *hashRing[V]) list() []uint64 {
	if len(r.keys) == 0 {
		return nil
	}
	return append(append([]uint64(nil), r.keys[r.next:]...), r.keys[:r.next]...)
}

// firstOrigin reports whether ss has not got a message under the Origin
// of hash h yet, and notes that it has now; if it had, it returns the
// store ticket of that copy, which a confirmation of the message must
// wait for as for a new copy: the routing that made it may not have
// waited (its publisher's node failed).
func (ss *session) firstOrigin(h uint64) (bool, Ticket) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.noteOrigin(h) {
		return true, 0
	}
	return false, ss.in2.seen.m[h]
}

// originTicket records t as the store ticket of ss's copy of the message
// under the Origin of hash h.
func (ss *session) originTicket(h uint64, t Ticket) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.in2 == nil {
		return
	}
	if _, ok := ss.in2.seen.m[h]; ok {
		ss.in2.seen.m[h] = t
	}
}

// noteOrigin is firstOrigin with ss.mu held.
func (ss *session) noteOrigin(h uint64) bool {
	if ss.in2 == nil {
		ss.in2 = &inbound2{}
	}
	return ss.in2.seen.add(h)
}

// inbound2 is what a session keeps of the QoS 2 messages it exchanged:
// the inbound ids awaiting PUBREL (session.inQoS2) and the Origins it
// got; and, here because few sessions ever have one either, the state of
// a catch-up (catchup.go).
type inbound2 struct {
	ids   map[uint16]uint64
	seen  originRing
	catch *catchUp
}

// inQoS2 returns the session's inbound QoS 2 ids awaiting PUBREL, each
// with the nonce of a routing not confirmed yet (0: routed); nil for
// none. ss.mu must be held.
func (ss *session) inQoS2() map[uint16]uint64 {
	if ss.in2 == nil {
		return nil
	}
	return ss.in2.ids
}

// seenList returns the Origins the session got lately, oldest first.
// ss.mu must be held.
func (ss *session) seenList() []uint64 {
	if ss.in2 == nil {
		return nil
	}
	return ss.in2.seen.list()
}

// hasOrigin reports whether ss got a message under the Origin of hash h.
func (ss *session) hasOrigin(h uint64) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.in2 == nil {
		return false
	}
	_, ok := ss.in2.seen.m[h]
	return ok
}

// membersGot reports whether a share group member of cands got a message
// under the Origin of hash h.
func membersGot(cands []sharedCand, h uint64) bool {
	for _, c := range cands {
		if c.sess.hasOrigin(h) {
			return true
		}
	}
	return false
}

// Place returns where m stands among its publisher's messages (catchup.go;
// RemoteMessage.Place): zero when unknown. A cluster keeps it with a
// queued copy of m, so that a session adopted elsewhere still orders the
// messages held for it against its queue.
func (m *Message) Place() Place { return m.place() }

// RoutedHere reports whether this server routed m (a client's PUBLISH, a
// will, the server's own message), as against a message a cluster
// delivered (DeliverRemote) or a store or record gave back. Such a
// message carries no Place: a cluster that writes a queued copy of it
// names its place from m.ID, the id its forwards and holds of m carry,
// so that a node adopting the queue orders what was held for the session
// against it (CatchUp's anchors; bench/jepsen/RESULTS.md, ord31: seed
// 1123's moved queue of its old owner's local publishes, without places,
// put after older held ones of the same publisher).
func (m *Message) RoutedHere() bool { return m.routedHere }

// SetPlace records p as m's place: for a cluster reading back a queued
// message (a replicated record, a handover), before it is routed or
// adopted. It does not mark m Late.
func (m *Message) SetPlace(p Place) { m.setPlace(p, m.late()) }
