package cluster

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// Share groups whose members here are restored sessions only.
//
// A restarted node announces its restored sessions' share group
// memberships as routing interest at once (the broker subscribes them
// when it restores them), so a publisher may choose the node to serve
// such a group, and then holds nothing for it: the group is served. Until
// the node has read the owner records it cannot know whether the copy is
// still its session's (restoredGate), and once it finds the session owned
// elsewhere it drops the copy. What the copy took while unsettled is kept
// in the node's held subject for the session (keep.go, Away), and what a
// forward brings after the drop, while the session's hold keys stay, is
// held there for the group (holdHere). Both are read only by a node that
// takes the session from the stream and follows this node's held subject;
// an owner that had the session by a live move reads neither, and the
// message is acknowledged and lost for the group (test/jepsen
// TestClusterFull seed 45 on main 2026-12-06 07:28, g1 pub1#153: n2
// restarted at 33.250, dropped its restored g1m0 at 33.366, owned by n3
// since a live move from n1 at 32.872; n1's forward for g1 reached n2 at
// 33.369 and was held there for nobody who reads it;
// TestReproGroupPassOn).
//
// So a forwarded message's share groups whose only members here are such
// sessions (restored and not settled, or dropped with their hold keys
// kept) go on to a node with a member of the group, as a moved session's
// groups do (handover_live.go, reforward): the group is served there, by
// a member that is its session's. The confirmation to the publishing node
// waits for that node's. A group with no member elsewhere is left as
// before (kept or held here): the session's next claimer reads it. A
// message passed on is not passed on again (a reforward names its groups
// only), so two restarted nodes do not hand it back and forth.
//
// A forward that comes before this node has the other nodes' interest
// (catchUpLoop) finds no member elsewhere: the others route by this
// node's restored interest from its first announcement, this node knows
// theirs only once it has their snapshots. Kept for the copy then, the
// message was lost as above when the session's owner had it by a live
// move (TestReproGroupPassOn before it waited for "cluster interest
// caught up": 1 of 4 runs lost one message; TestReproGroupPassOnEarly).
// So such a forward waits for the catch-up (awaitInterest) before it
// looks for a member elsewhere. Waiting stalls this peer's later forwards
// too (one subscription, in order): the catch-up takes well under a
// second once routes are up, and its bound, catchUpBound, is that of
// every CONNECT here meanwhile; only a restarted node's first moments,
// and only a forward for such a group, pay it.
//
// A message published on the restarted node itself went to the restored
// copy there (Forward kept it, keptLocal), with the same end when the
// session's owner had it since before the restart: it never reads what
// is kept here (test/jepsen TestClusterFull short faults, seed 838: n2's
// restored g1m0, fenced late for n1, which had owned it since 16.4 s, a
// live move; pub2#142, published on n2 at 22.548, 2 ms before the
// owners were read, kept for g1m0 with g1's only copy and read by
// nobody; TestReproGroupPassOn's publisher on n1). So the broker asks
// before it routes such a message (broker.GroupPasser, PassGroups) and
// gives those groups to no member here, and Forward plans them as groups
// with no member here (passed): to a node with a member, or, should that
// member have left in between, held here for this node (heldHere), as
// before the restored copy had any.

// PassGroups implements broker.GroupPasser: the share groups of a QoS 1/2
// message on topic, published here, whose members here are all restored
// sessions not settled yet and that a member on another node matches
// (above). The common case (no hold key here) costs one atomic load; a
// node that has not caught up with the others' interest passes nothing
// (Forward refuses the message then: catch.ready).
func (n *Node) PassGroups(topic string) []string {
	s := n.sess
	if s == nil || !s.persist.holdingAny() || !s.gate.unsettledAny() || n.catch.ready() != nil {
		return nil
	}
	var restored []string
	for _, m := range s.persist.holdMatches(topic) {
		// Fenced too: a restored copy fenced before the settle (the
		// owner's newer claim seen first) is as undeliverable.
		if m.group != "" && s.gate.unsettled(m.id) && !slices.Contains(restored, m.group) {
			restored = append(restored, m.group)
		}
	}
	if len(restored) == 0 {
		return nil
	}
	alone := n.srv.GroupsOnlyOf(topic, restored, s.gate.unsettled)
	none := n.srv.GroupsOnlyOf(topic, alone, nil) // no member here: planned as such already
	alone = slices.DeleteFunc(alone, func(g string) bool { return slices.Contains(none, g) })
	if len(alone) == 0 {
		return nil
	}
	to := n.remote.groupNodes(topic, alone, 0)
	delete(to, n.cfg.Node)
	var passed []string
	for _, gks := range to {
		passed = append(passed, gks...)
	}
	if len(passed) > 0 {
		// One line per message, so at debug, as passRestored's.
		n.log.Debug("cluster: share groups whose members here are restored sessions only left to a node with a member",
			"topic", topic, "groups", groupKeys(passed))
	}
	return passed
}

// passRestored takes from rm.Groups the share groups whose members here
// are all restored sessions not settled yet, or that have no member here
// and a restored session's hold key (one dropped before it settled,
// persist.leaveKeepHeld), and that a member on another node matches, and
// returns them by node, to be passed on to it (reforward). pick takes
// turns between such nodes, as plan does. nil for none: rm is unchanged.
func (n *Node) passRestored(rm *broker.RemoteMessage, pick uint64) map[string][]string {
	s := n.sess
	if s == nil || rm.GroupsOnly || len(rm.Groups) == 0 || !s.persist.holdingAny() {
		return nil
	}
	var restored []string
	for _, m := range s.persist.holdMatches(rm.Topic) {
		if !m.fenced && m.group != "" && slices.Contains(rm.Groups, m.group) && !slices.Contains(restored, m.group) {
			restored = append(restored, m.group)
		}
	}
	if len(restored) == 0 {
		return nil
	}
	alone := n.srv.GroupsOnlyOf(rm.Topic, restored, s.gate.unsettled)
	if len(alone) == 0 {
		return nil
	}
	if rm.QoS > 0 && n.catch.ready() != nil {
		n.awaitInterest(rm.Topic)
	}
	to := n.remote.groupNodes(rm.Topic, alone, pick)
	delete(to, n.cfg.Node)
	if len(to) == 0 {
		return nil
	}
	var passed []string
	for node, gks := range to {
		passed = append(passed, gks...)
		// One line per message, so at debug: the window is a restart's
		// first seconds, and a busy topic sends thousands a second.
		n.log.Debug("cluster: share groups whose members here are restored sessions only passed on to a node with a member",
			"peer", node, "topic", rm.Topic, "qos", rm.QoS, "groups", groupKeys(gks))
	}
	rm.Groups = slices.DeleteFunc(slices.Clone(rm.Groups), func(g string) bool { return slices.Contains(passed, g) })
	return to
}

// groupKeys logs share group keys (group NUL filter) as group/filter,
// built only when the line is written: passOn's line is at debug, and
// its message rate is a busy topic's.
type groupKeys []string

func (g groupKeys) LogValue() slog.Value {
	return slog.StringValue(strings.ReplaceAll(strings.Join(g, " "), "\x00", "/"))
}

// awaitInterest waits until this node has caught up with the other
// nodes' interest, or ForwardTimeout passed (the forward's sender gives
// up on its confirmation by then: an unknown outcome for its publisher,
// not a loss), or the node stops. A forward that still finds no member
// elsewhere is kept for the restored copy as before.
func (n *Node) awaitInterest(topic string) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ForwardTimeout)
	defer cancel()
	err := n.catch.wait(ctx)
	n.log.Debug("cluster: a share group whose members here are restored sessions only waited for the other nodes' interest",
		"topic", topic, "took", time.Since(start).Round(time.Millisecond), "caught_up", err == nil)
}

var _ broker.GroupPasser = (*Node)(nil)
