package broker

import (
	"errors"
	"strings"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// maxQoS is the highest QoS the broker grants.
const maxQoS packet.QoS = 2

// handleSubscribe adds or replaces each filter's subscription and answers
// with one SUBACK code per filter, in order [MQTT-3.8.4-5/6]. Retained
// messages follow the SUBACK, as the subscription's Retain Handling says.
func (c *conn) handleSubscribe(p *packet.Subscribe) error {
	for _, req := range p.Subscriptions {
		if err := malformedFilter("SUBSCRIBE", req.Filter); err != nil {
			return err // before any filter of the packet takes effect
		}
	}
	ss := c.sess
	var subID uint32
	if c.version == packet.V5 && p.Properties.Has(packet.PropSubscriptionID) && len(p.Properties.SubscriptionIDs) > 0 {
		subID = p.Properties.SubscriptionIDs[0]
	}
	codes := make([]packet.ReasonCode, len(p.Subscriptions))
	type retainedReq struct {
		filter string
		sub    subscription
	}
	var wantRetained []retainedReq
	// In a cluster, the retained messages this node applied may lag
	// behind writes already acknowledged elsewhere: they are read once
	// brought up to date (once per SUBSCRIBE, with no lock held), or not
	// at all, and then the subscriptions that would read them are refused
	// (0x80) rather than answered with an older value.
	var syncErr error
	synced := false
	for i, req := range p.Subscriptions {
		// A copy: the session and the tree keep the filter (and views
		// into it) for as long as the subscription lasts, and req.Filter
		// is a view into the whole SUBSCRIBE, properties included.
		req.Filter = c.mounted(strings.Clone(req.Filter))
		group, rest, shared, err := topic.ParseShare(req.Filter)
		if err == nil {
			err = topic.ValidFilter(rest, c.srv.opts.MaxTopicLevels)
		}
		if err != nil {
			c.logger().Debug("refusing subscription", "filter", req.Filter, "err", err)
			codes[i] = packet.TopicFilterInvalid
			continue
		}
		if !c.allowed(ActionSubscribe, req.Filter) {
			c.logger().Debug("subscription denied", "filter", req.Filter)
			codes[i] = packet.NotAuthorized
			continue
		}
		if shared && req.Options.NoLocal && c.version == packet.V5 {
			return protoErr(packet.ProtocolError, "MQTT-3.8.3-4", "No Local on shared subscription %q", req.Filter)
		}
		opts := bridgeSubOptions(ss.info.Load(), req.Options, shared)
		opts.QoS = min(opts.QoS, c.maxQoS)
		sub := subscription{filter: req.Filter, opts: opts, id: subID}
		mayRead := !shared && !c.srv.opts.DisableRetain && opts.RetainHandling != 2
		// $SYS retained messages are each node's own, never the
		// cluster's: a filter that matches only them needs no sync.
		if mayRead && !synced && !isSys(rest) {
			c.flushReplies() // the sync may wait
			synced, syncErr = true, c.srv.syncRetained()
			if syncErr != nil {
				c.logger().Warn("refusing subscriptions that read retained messages", "err", syncErr)
			}
		}
		ss.mu.Lock()
		if ss.ended {
			ss.mu.Unlock()
			codes[i] = packet.UnspecifiedError
			continue
		}
		old, existed := ss.subs[req.Filter]
		if mayRead && syncErr != nil && (opts.RetainHandling == 0 || !existed) {
			ss.mu.Unlock()
			codes[i] = packet.UnspecifiedError
			continue
		}
		if !existed && len(ss.subs) >= c.srv.opts.MaxSubscriptions {
			ss.mu.Unlock()
			c.logger().Warn("subscription limit reached", "limit", c.srv.opts.MaxSubscriptions, "filter", req.Filter)
			codes[i] = packet.QuotaExceeded
			continue
		}
		// One that replaces a subscription keeps its made mark: the
		// flow of publications is not interrupted [MQTT-3.8.4-3], so
		// what the first was owed the second is (a resend routed
		// again under its Origin: onceCheck.since).
		sub.made = old.made
		if !existed {
			sub.made = c.srv.router.newSub()
		}
		ss.setSub(req.Filter, sub)
		c.srv.router.subscribe(rest, group, ss, sub)
		if ss.persisted() {
			ss.record(Op{Kind: OpSubPut, Sub: StoredSub{Filter: req.Filter, Opts: opts, ID: subID}})
		}
		ss.mu.Unlock()
		codes[i] = packet.ReasonCode(opts.QoS)
		// Retained messages are not sent for shared subscriptions
		// (section 4.8.2, not a numbered statement); Retain Handling 1
		// sends them only for a new subscription, 2 never
		// [MQTT-3.3.1-9..11].
		if !shared && !c.srv.opts.DisableRetain && (opts.RetainHandling == 0 || opts.RetainHandling == 1 && !existed) {
			wantRetained = append(wantRetained, retainedReq{rest, sub})
		}
	}
	if len(wantRetained) > 0 {
		// The SUBACK waits for the retained changes made so far too: a
		// reader told nothing is retained just after a clearing must
		// not find the old message again after a crash.
		c.needDurable(c.srv.ret.lastTicket())
	}
	// The retained messages are the ones there when the subscription was
	// made: collected before the SUBACK leaves (retainer.matching takes no
	// wait). Collected after, a message the client's next publish (or
	// anyone's, once the SUBACK told it the subscription is in place)
	// made retained came twice: live, and again as retained
	// (TestAdminAPI, 1 run in 20, once the reader wrote the SUBACK
	// before the lookup).
	found := make([][]*Message, len(wantRetained))
	for i, w := range wantRetained {
		found[i] = c.srv.ret.matching(w.filter)
		if len(found[i]) > 0 {
			c.needDurable(c.srv.ret.lastTicket())
		}
	}
	c.reply(&packet.Suback{PacketID: p.PacketID, ReasonCodes: codes})
	if len(wantRetained) > 0 {
		// Out before the retained messages are authorized, which may
		// wait (retainSourceAllowed), and delivered, each once its
		// change is durable.
		c.flushReplies()
	}
	for i, w := range wantRetained {
		for _, m := range found[i] {
			if !c.srv.retainSourceAllowed(m) {
				c.logger().Debug("retained message not sent: its publisher may no longer publish there", "topic", m.Topic)
				continue
			}
			var ids []uint32
			if w.sub.id != 0 {
				ids = []uint32{w.sub.id}
			}
			// Retained messages keep RETAIN=1 when sent for a new
			// subscription [MQTT-3.3.1-8 (3.1.1)].
			c.srv.offer(ss, m, min(m.QoS, w.sub.opts.QoS), true, ids)
		}
	}
	return nil
}

// malformedFilter returns the protocol error for a filter that breaks the
// rules of its form: zero length [MQTT-4.7.3-1], or a wildcard that is not
// a whole level ('#' only as the last one) [MQTT-4.7.1-2/3]. That is a
// malformed packet, not a filter the server may refuse with a SUBACK or
// UNSUBACK code: MQTT 5 clients get DISCONNECT 0x81, 3.1.x ones a close
// [MQTT-4.8.0-1 (3.1.1), section 4.13 (5.0)]. Other faults (too many
// levels, a bad ShareName) are refusals, left to the caller.
func malformedFilter(what, f string) error {
	err := topic.ValidFilter(f, 0)
	switch {
	case errors.Is(err, topic.ErrEmpty):
		return protoErr(packet.MalformedPacket, "MQTT-4.7.3-1", "%s with a zero-length topic filter", what)
	case errors.Is(err, topic.ErrBadWildcard):
		return protoErr(packet.MalformedPacket, "MQTT-4.7.1-2", "%s filter %s: %v", what, clipQuote(f), err)
	}
	return nil
}

// handleUnsubscribe removes each filter and answers UNSUBACK with one code
// per filter (MQTT 5) [MQTT-3.10.4-4/5].
func (c *conn) handleUnsubscribe(p *packet.Unsubscribe) error {
	for _, f := range p.Filters {
		if err := malformedFilter("UNSUBSCRIBE", f); err != nil {
			return err
		}
	}
	ss := c.sess
	codes := make([]packet.ReasonCode, len(p.Filters))
	ss.mu.Lock()
	for i, f := range p.Filters {
		f = c.mounted(f)
		sub, ok := ss.subs[f]
		if !ok {
			codes[i] = packet.NoSubscriptionExisted
			continue
		}
		delete(ss.subs, f)
		group, rest, _, _ := topic.ParseShare(sub.filter)
		c.srv.router.unsubscribe(rest, group, ss)
		if ss.persisted() {
			ss.record(Op{Kind: OpSubDel, Sub: StoredSub{Filter: f}})
		}
	}
	ss.mu.Unlock()
	c.reply(&packet.Unsuback{PacketID: p.PacketID, ReasonCodes: codes})
	return nil
}

func parseShare(filter string) (group, rest string, shared bool, err error) {
	return topic.ParseShare(filter)
}
