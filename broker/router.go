package broker

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// subscription is one filter of one session, as stored in the tree.
type subscription struct {
	filter string // as the client sent it, "$share/g/..." included
	opts   packet.SubOptions
	id     uint32 // MQTT 5 Subscription Identifier, 0 if none
	// made is when the subscription was made on this node, as the
	// router's count of subscriptions made (router.made); 0 for one
	// read from the store or handed over (loadSessionState): made
	// elsewhere or before this node's start, at a time this node cannot
	// compare. A resend routed again under its Origin leaves out the
	// plain subscriptions made after the Origin's first routing here
	// (onceCheck.since).
	made uint64
}

// target is one session a message goes to, after merging overlapping
// subscriptions of that session.
type target struct {
	sess   *session
	qos    packet.QoS
	retain bool
	subIDs []uint32
}

// router finds the sessions a published message goes to. It is the seam a
// cluster transport can plug into later: everything it needs is the topic
// and the publisher.
type router struct {
	tree    *topic.Tree[*session, subscription]
	scrach  sync.Pool // *routeScratch
	cluster Cluster   // nil on a single node
	away    AwayCopies
	// made counts the subscriptions made here (subscription.made).
	made atomic.Uint64
}

type routeScratch struct {
	targets []target
	index   map[*session]int
	shared  map[string][]sharedCand
	// away: the away copies (AwayCopies) a QoS 1/2 message went to
	// through a plain subscription (Group ""), and the share groups
	// whose message went to one because the group has no other member
	// here.
	away []AwayMember
	// missed: the share groups a message from another node was to be
	// served here for that had no member here when the tree matched it.
	missed []string
	// served: the share groups a message under an Origin went to a live
	// (not away) member of here; servedTo: each one's member.
	served, servedTo []string
	// servedSess: each served group's member session; gates: the
	// served groups held for their claims (servedgate.go), taken out of
	// served.
	servedSess []*session
	gates      []servedGate
}

type sharedCand struct {
	sess *session
	sub  subscription
	// away: the session was an away copy when the tree matched it
	// (AwayCopies). Asked under the tree's lock: a copy that ends
	// leaves the tree before it stops being away (endSessionLocked),
	// so a match that finds it finds it still away.
	away bool
}

func newRouter(c Cluster) *router {
	r := &router{tree: topic.NewTree[*session, subscription](), cluster: c}
	r.away, _ = c.(AwayCopies)
	r.scrach.New = func() any {
		return &routeScratch{index: make(map[*session]int)}
	}
	return r
}

// match finds every session msg must be delivered to, with the effective
// QoS (min of the message's and the subscription's [MQTT-3.8.4-8]), the
// RETAIN flag to send and the subscription identifiers. A session with
// several matching subscriptions gets one copy at the highest QoS carrying
// every identifier [MQTT-3.3.4-3..5]. Each shared subscription group gets
// the message once (see pickShared). The caller delivers to sc.targets after the tree lock is released,
// then hands sc back with release.
func (r *router) match(msg *Message) *routeScratch {
	return r.matchGroups(msg, nil, nil)
}

// matchGroups is matchOnce with no Origin.
func (r *router) matchGroups(msg *Message, groups []string, pick func(clientID string) bool) *routeScratch {
	return r.matchOnce(msg, groups, pick, matchMode{}, nil)
}

// matchMode is how matchOnce applies its pick: to shared group members
// as well as plain subscriptions (pickGroups), and whether plain
// subscriptions are left out whatever pick says (groupsOnly).
type matchMode struct {
	pickGroups, groupsOnly bool
	// members: RemoteMessage.Members.
	members map[string]string
	// served notes the groups given to a live member here
	// (routeScratch.served) with no Origin too: RemoteMessage.Served for
	// a QoS 2 message named by its Copy.
	served bool
}

// matchOnce is match for a message from another node of a cluster: of
// the shared groups, only those in groups ("group\x00filter") get it here,
// the node that published it having chosen where each group is served.
// groups is nil for a message published on this node: all groups, but
// those the cluster serves on another node (Message.PassedGroups). pick,
// when not nil, leaves out the plain (not shared) subscriptions of the
// sessions it returns false for (a cluster moving a session between nodes
// decides which node's copy of it gets a message); mode says whether it
// applies to shared group members too, and whether plain subscriptions
// get the message at all (RemoteMessage.GroupsOnly). once, when not nil,
// leaves out the share groups ("group\x00filter") that got the message
// before under its Origin (origin.go), and those with a member here that
// did; it is asked after the tree's lock is released. For a resend
// (once.again) it also leaves out the plain subscriptions made after the
// Origin's first routing here (onceCheck.since). A group whose member is an away copy is
// not noted as served: the copy's take is kept for its session, whose
// next reader (here too) delivers it once its claim says so (package
// cluster); noted, a reader here left the kept copy and the group lost
// the message. mode.members gives a group to the member named there or
// to nobody (RemoteMessage.Members).
func (r *router) matchOnce(msg *Message, groups []string, pick func(clientID string) bool, mode matchMode, once *onceCheck) *routeScratch {
	sc := r.scrach.Get().(*routeScratch)
	remote := groups != nil
	r.tree.Match(msg.Topic, func(filter, group string, s *session, sub subscription) {
		if group != "" {
			if remote && !slices.Contains(groups, group+"\x00"+filter) {
				return
			}
			if !remote && msg.passes(group+"\x00"+filter) {
				return // served on another node (GroupPasser)
			}
			if mode.pickGroups && pick != nil && !pick(s.id) {
				return
			}
			if sc.shared == nil {
				sc.shared = make(map[string][]sharedCand)
			}
			key := group + "\x00" + filter
			sc.shared[key] = append(sc.shared[key], sharedCand{s, sub, r.isAway(s)})
			return
		}
		if mode.groupsOnly {
			return
		}
		if sub.opts.NoLocal && msg.From != "" && s.id == msg.From {
			return // [MQTT-3.8.3-3]
		}
		if pick != nil && !pick(s.id) {
			return
		}
		if once != nil && once.again && sub.made > once.since {
			return // made after the first routing here (onceCheck.since)
		}
		if msg.QoS > 0 && r.isAway(s) {
			sc.awayPlain(s.id)
		}
		sc.add(s, sub, msg)
	})
	if remote {
		for _, g := range groups {
			if _, ok := sc.shared[g]; !ok {
				sc.missed = append(sc.missed, g)
			}
		}
	}
	var h uint64
	if once != nil {
		h = msg.Origin().Hash()
	}
	for key, cands := range sc.shared {
		delete(sc.shared, key)
		// A member here that got it (before this node restarted, or
		// before its session moved here) counts as the group's copy.
		if once != nil && membersGot(cands, h) {
			continue
		}
		var c sharedCand
		var away, ok bool
		if id, named := mode.members[key]; named {
			// Claimed for that member: it or nobody here (its next
			// reader elsewhere takes the claim over).
			i := slices.IndexFunc(cands, func(c sharedCand) bool { return c.sess.id == id })
			if i < 0 {
				sc.missed = append(sc.missed, key)
				continue
			}
			c, away, ok = cands[i], cands[i].away, true
		} else {
			c, away, ok = r.pickOnce(msg, key, cands, once)
		}
		if !ok || once != nil && !once.first(key, !away) {
			continue
		}
		sc.add(c.sess, c.sub, msg)
		if away {
			sc.away = append(sc.away, AwayMember{ClientID: c.sess.id, Group: key})
		} else if once != nil || mode.served {
			sc.served = append(sc.served, key)
			sc.servedTo = append(sc.servedTo, c.sess.id)
			sc.servedSess = append(sc.servedSess, c.sess)
		}
	}
	return sc
}

// pickOnce is pickMember honouring a resend's claims (onceCheck.chosen):
// a group claimed for a member here goes to that member while it is
// still one, and a group claimed elsewhere (or not claimed) is left out
// (ok false).
func (r *router) pickOnce(msg *Message, key string, cands []sharedCand, once *onceCheck) (c sharedCand, away, ok bool) {
	if once != nil && once.chosen != nil {
		if id, decided := once.chosen[key]; decided {
			if id == "" {
				return c, false, false
			}
			if i := slices.IndexFunc(cands, func(c sharedCand) bool { return c.sess.id == id }); i >= 0 {
				return cands[i], cands[i].away, true
			}
			// It left in between (milliseconds): another member
			// rather than none.
		}
	}
	c, away = r.pickMember(msg, cands)
	return c, away, true
}

// groupPick is the member a share group would get a message here
// (pickAhead).
type groupPick struct {
	group string // "group\x00filter"
	id    string
	away  bool
	// others: the group's other members here, to whom the group goes
	// when its claim was made for one of them (claimAhead).
	others []string
}

// pickAhead returns the member each share group matching msg would get
// here, as matchOnce would choose it, leaving out the groups msg reached
// here before under its Origin (once); groups as matchOnce's. Nothing is
// delivered or noted: a resend's claims come first (claimAhead).
func (r *router) pickAhead(msg *Message, groups []string, once *onceCheck) []groupPick {
	var shared map[string][]sharedCand
	remote := groups != nil
	r.tree.Match(msg.Topic, func(filter, group string, s *session, sub subscription) {
		if group == "" {
			return
		}
		key := group + "\x00" + filter
		if remote && !slices.Contains(groups, key) || !remote && msg.passes(key) {
			return
		}
		if shared == nil {
			shared = make(map[string][]sharedCand)
		}
		shared[key] = append(shared[key], sharedCand{s, sub, r.isAway(s)})
	})
	h := msg.Origin().Hash()
	var out []groupPick
	for key, cands := range shared {
		if membersGot(cands, h) || once != nil && !once.first(key, false) {
			continue
		}
		c, away := r.pickMember(msg, cands)
		p := groupPick{group: key, id: c.sess.id, away: away}
		for _, o := range cands {
			if o.sess != c.sess {
				p.others = append(p.others, o.sess.id)
			}
		}
		out = append(out, p)
	}
	return out
}

// groupsOnlyOf is Server.GroupsOnlyOf.
func (r *router) groupsOnlyOf(topic string, groups []string, of func(clientID string) bool) []string {
	live := make(map[string]bool, len(groups))
	r.tree.Match(topic, func(filter, group string, s *session, _ subscription) {
		if group == "" {
			return
		}
		if key := group + "\x00" + filter; slices.Contains(groups, key) && (of == nil || !of(s.id)) {
			live[key] = true
		}
	})
	var out []string
	for _, g := range groups {
		if !live[g] {
			out = append(out, g)
		}
	}
	return out
}

// newSub returns the made mark of a subscription made now
// (subscription.made); never 0.
func (r *router) newSub() uint64 { return r.made.Add(1) }

// isAway asks the cluster whether s is an away copy (AwayCopies); the
// caller holds the tree's lock.
func (r *router) isAway(s *session) bool { return r.away != nil && r.away.Away(s.id) }

// awayPlain notes that the away copy id took the message through a plain
// subscription, once per session.
func (sc *routeScratch) awayPlain(id string) {
	if !slices.Contains(sc.away, AwayMember{ClientID: id}) {
		sc.away = append(sc.away, AwayMember{ClientID: id})
	}
}

// pickMember is pickShared leaving out the away copies (AwayCopies) while
// the group has another member here; away says the one chosen is such a
// copy.
func (r *router) pickMember(msg *Message, cands []sharedCand) (c sharedCand, away bool) {
	if !slices.ContainsFunc(cands, func(c sharedCand) bool { return c.away }) {
		return pickShared(msg, cands), false
	}
	live := make([]sharedCand, 0, len(cands)-1)
	for _, c := range cands {
		if !c.away {
			live = append(live, c)
		}
	}
	if len(live) > 0 {
		return pickShared(msg, live), false
	}
	c = pickShared(msg, cands)
	return c, c.away
}

func (r *router) release(sc *routeScratch) {
	clear(sc.targets)
	sc.targets = sc.targets[:0]
	clear(sc.index)
	clear(sc.away)
	sc.away = sc.away[:0]
	clear(sc.missed)
	sc.missed = sc.missed[:0]
	clear(sc.served)
	sc.served = sc.served[:0]
	clear(sc.servedTo)
	sc.servedTo = sc.servedTo[:0]
	clear(sc.servedSess)
	sc.servedSess = sc.servedSess[:0]
	clear(sc.gates)
	sc.gates = sc.gates[:0]
	r.scrach.Put(sc)
}

func (sc *routeScratch) add(s *session, sub subscription, msg *Message) {
	qos := min(msg.QoS, sub.opts.QoS)
	retain := sub.opts.RetainAsPublished && msg.Retain // [MQTT-3.3.1-12/13]
	i, ok := sc.index[s]
	if !ok {
		t := target{sess: s, qos: qos, retain: retain}
		if sub.id != 0 {
			t.subIDs = []uint32{sub.id}
		}
		sc.index[s] = len(sc.targets)
		sc.targets = append(sc.targets, t)
		return
	}
	t := &sc.targets[i]
	t.qos = max(t.qos, qos)
	t.retain = t.retain || retain
	if sub.id != 0 {
		t.subIDs = append(t.subIDs, sub.id)
	}
}

// pickShared chooses the group member for one message. Members take turns
// by message id, which needs no per-group state; offline members with
// persistent sessions keep getting their share, queued until they return
// (section 4.8.2 leaves it open; [MQTT-4.8.2-4] only requires finishing
// deliveries already started), as in mosquitto.
func pickShared(msg *Message, cands []sharedCand) sharedCand {
	return cands[msg.ID%uint64(len(cands))]
}
