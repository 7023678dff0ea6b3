package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// Publish sends m and returns when its QoS flow is complete: for QoS 0 once
// the PUBLISH is handed to the connection, for QoS 1 on PUBACK, for QoS 2
// on PUBCOMP. While offline, m waits in the offline queue (ErrQueueFull if
// full) and is sent once connected. A QoS 1/2 PUBLISH unacknowledged when
// the connection drops is sent again with DUP on the next connection, and
// Publish keeps waiting for the real acknowledgement.
//
// A failure reason code from the server is returned as a *ReasonError with
// the Ack. If ctx ends first Publish returns ctx.Err(): a message that was
// still queued is withdrawn, one already sent stays inflight until the
// server acknowledges it.
func (c *Client) Publish(ctx context.Context, m Message) (Ack, error) {
	if err := c.checkPublish(&m); err != nil {
		return Ack{}, err
	}
	o := &op{kind: opPublish, msg: &m}
	if err := c.submit(o); err != nil {
		return Ack{}, err
	}
	if err := c.wait(ctx, o); err != nil {
		return Ack{}, err
	}
	return o.ack, o.err
}

func (c *Client) checkPublish(m *Message) error {
	if m.QoS > 2 {
		return fmt.Errorf("client: publish: QoS %d", m.QoS)
	}
	if err := topic.ValidName(m.Topic, 0); err != nil {
		return fmt.Errorf("client: publish: %w", err)
	}
	return nil
}

// Subscribe subscribes to the filters, all in one SUBSCRIBE, and returns the
// granted QoS or failure code per filter, in order. Each handler is
// registered before the SUBSCRIBE is sent, so retained messages that follow
// the SUBACK reach it; a filter the server refuses is removed again and
// Subscribe returns a *ReasonError along with the codes. Subscribing to a
// filter already held replaces its handler and options.
//
// Called while offline, the SUBSCRIBE waits in the offline queue and is
// sent once connected. Subscriptions are remembered and sent again after a
// reconnect on which the server has no session. If ctx ends first,
// Subscribe returns ctx.Err(); a SUBSCRIBE still queued is withdrawn.
func (c *Client) Subscribe(ctx context.Context, subs ...Subscription) ([]packet.ReasonCode, error) {
	return c.SubscribeWithProperties(ctx, packet.Properties{}, subs...)
}

// SubscribeWithProperties is Subscribe with MQTT 5 SUBSCRIBE properties:
// a Subscription Identifier (props.SubscriptionIDs, at most one, 1 to
// 268,435,455) and User Properties. The server puts the identifier on
// every message it sends because of these subscriptions, in
// Message.Properties.SubscriptionIDs. The properties stay with the
// subscriptions and go with them when the client resubscribes. Other
// properties are an error, as is any property on a 3.1.1 client
// (ErrV5Only).
func (c *Client) SubscribeWithProperties(ctx context.Context, props packet.Properties, subs ...Subscription) ([]packet.ReasonCode, error) {
	if len(subs) == 0 {
		return nil, errors.New("client: subscribe: no filters")
	}
	if err := c.checkProps("subscribe", props, true); err != nil {
		return nil, err
	}
	for _, s := range subs {
		if err := topic.ValidFilter(s.Filter, 0); err != nil {
			return nil, fmt.Errorf("client: subscribe: %w", err)
		}
		if s.QoS > 2 {
			return nil, fmt.Errorf("client: subscribe: QoS %d", s.QoS)
		}
	}
	o := &op{kind: opSubscribe, subs: subs, props: props}
	c.mu.Lock()
	added := c.addSubs(subs, props)
	err := c.enqueue(o)
	if err != nil {
		for _, f := range added {
			c.removeSub(f)
		}
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := c.wait(ctx, o); err != nil {
		c.mu.Lock()
		if !o.sent {
			for _, f := range added {
				c.removeSub(f)
			}
		}
		c.mu.Unlock()
		return nil, err
	}
	return o.codes, o.err
}

// Unsubscribe unsubscribes from the filters and returns the reason code per
// filter (MQTT 5; none for 3.1.1). The handlers are removed when the
// UNSUBACK arrives. Offline and ctx behave as for Subscribe.
//
// A filter the client does not hold may be given too: with a resumed
// session the server may hold subscriptions from an earlier process.
func (c *Client) Unsubscribe(ctx context.Context, filters ...string) ([]packet.ReasonCode, error) {
	return c.UnsubscribeWithProperties(ctx, packet.Properties{}, filters...)
}

// UnsubscribeWithProperties is Unsubscribe with MQTT 5 UNSUBSCRIBE User
// Properties; other properties are an error, as is any property on a
// 3.1.1 client (ErrV5Only).
func (c *Client) UnsubscribeWithProperties(ctx context.Context, props packet.Properties, filters ...string) ([]packet.ReasonCode, error) {
	if len(filters) == 0 {
		return nil, errors.New("client: unsubscribe: no filters")
	}
	if err := c.checkProps("unsubscribe", props, false); err != nil {
		return nil, err
	}
	o := &op{kind: opUnsubscribe, filters: filters, props: props}
	if err := c.submit(o); err != nil {
		return nil, err
	}
	if err := c.wait(ctx, o); err != nil {
		return nil, err
	}
	return o.codes, o.err
}

func (c *Client) submit(o *op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enqueue(o)
}

// wait waits for o or ctx; on ctx it withdraws o if still queued.
func (c *Client) wait(ctx context.Context, o *op) error {
	c.mu.Lock()
	done := o.done
	c.mu.Unlock()
	if done == nil {
		return nil // already complete
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if o.done == nil {
			return nil // completed meanwhile
		}
		c.dequeue(o)
		return ctx.Err()
	}
}

// checkProps accepts User Properties and, if subID, one Subscription
// Identifier: all that a client may put in SUBSCRIBE or UNSUBSCRIBE
// [MQTT-3.8.2.1], [MQTT-3.10.2.1].
func (c *Client) checkProps(op string, p packet.Properties, subID bool) error {
	allowed, names := uint64(1)<<packet.PropUserProperty, "User Property"
	if subID {
		allowed |= 1 << packet.PropSubscriptionID
		names += " and Subscription Identifier"
	}
	empty := p.Present == 0 && len(p.User) == 0 && len(p.SubscriptionIDs) == 0
	switch {
	case empty:
		return nil
	case c.opts.Version != packet.V5:
		return fmt.Errorf("client: %s properties: %w", op, ErrV5Only)
	case p.Present&^allowed != 0 || (!subID && len(p.SubscriptionIDs) > 0):
		return fmt.Errorf("client: %s: only %s allowed", op, names)
	case len(p.SubscriptionIDs) > 1:
		return fmt.Errorf("client: %s: at most one Subscription Identifier", op)
	case len(p.SubscriptionIDs) == 1 && (p.SubscriptionIDs[0] == 0 || p.SubscriptionIDs[0] > packet.MaxVarint):
		return fmt.Errorf("client: %s: Subscription Identifier %d not in 1..%d", op, p.SubscriptionIDs[0], packet.MaxVarint)
	}
	return nil
}

// addSubs records subscriptions made with props and returns the filters
// that are new. c.mu is held.
func (c *Client) addSubs(subs []Subscription, props packet.Properties) (added []string) {
	for _, s := range subs {
		if e := c.sess.subs[s.Filter]; e != nil {
			e.sub, e.props = s, props
			continue
		}
		e := newSubEntry(s, props)
		c.sess.subs[s.Filter] = e
		c.sess.subOrder = append(c.sess.subOrder, e)
		added = append(added, s.Filter)
	}
	return added
}

func (c *Client) removeSub(filter string) {
	e := c.sess.subs[filter]
	if e == nil {
		return
	}
	delete(c.sess.subs, filter)
	c.sess.subOrder = slices.DeleteFunc(c.sess.subOrder, func(x *subEntry) bool { return x == e })
}
