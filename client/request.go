package client

import (
	"context"
	"crypto/rand"
	"sync"

	"github.com/roost-mqtt/roost/packet"
)

// requester holds the state of Request: one response topic per client,
// subscribed on first use, and the requests waiting for a response.
type requester struct {
	subMu   sync.Mutex // held while subscribing the response topic
	mu      sync.Mutex
	topic   string                   // the response topic, set before subscribing
	ok      bool                     // topic is subscribed
	waiting map[string]chan *Message // by correlation data
}

// Request publishes req (MQTT 5 only) with a Response Topic unique to this
// client and fresh Correlation Data, and returns the first message
// published to that topic with the same Correlation Data: the MQTT 5
// request/response pattern (MQTT 5.0 section 4.10). The response topic,
// "roost-response/<client id>/<random>", is subscribed at QoS 1 on the
// first call. Responses are matched on the reader goroutine, not the
// dispatcher, so Request may be called from a message handler. Request
// returns ctx.Err() if ctx ends first; errors of Publish and Subscribe are
// returned as they are.
func (c *Client) Request(ctx context.Context, req Message) (*Message, error) {
	if c.opts.Version != packet.V5 {
		return nil, ErrV5Only
	}
	rt, err := c.responseTopic(ctx)
	if err != nil {
		return nil, err
	}
	corr := make([]byte, 16)
	rand.Read(corr)
	ch := make(chan *Message, 1)
	c.req.mu.Lock()
	if c.req.waiting == nil {
		c.req.waiting = map[string]chan *Message{}
	}
	c.req.waiting[string(corr)] = ch
	c.req.mu.Unlock()
	defer func() {
		c.req.mu.Lock()
		delete(c.req.waiting, string(corr))
		c.req.mu.Unlock()
	}()
	req.Properties.Set(packet.PropResponseTopic)
	req.Properties.ResponseTopic = rt
	req.Properties.Set(packet.PropCorrelationData)
	req.Properties.CorrelationData = corr
	if _, err := c.Publish(ctx, req); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) responseTopic(ctx context.Context) (string, error) {
	c.req.subMu.Lock() // one subscription at a time
	defer c.req.subMu.Unlock()
	c.req.mu.Lock()
	rt := c.req.topic
	if rt != "" && c.req.ok {
		c.req.mu.Unlock()
		return rt, nil
	}
	if rt == "" {
		rt = "roost-response/" + c.opts.ClientID + "/" + randomHex(4)
		c.req.topic = rt
	}
	c.req.mu.Unlock()
	if _, err := c.Subscribe(ctx, Subscription{Filter: rt, QoS: 1, Handler: c.onResponse}); err != nil {
		return "", err
	}
	c.req.mu.Lock()
	c.req.ok = true
	c.req.mu.Unlock()
	return rt, nil
}

// onResponse is the response topic's handler, for responses that were
// not taken by takeResponse (none, normally).
func (c *Client) onResponse(m *Message) { c.takeResponse(m) }

// takeResponse hands m to the Request waiting for it and reports whether
// m was a response. Called by the reader goroutine.
func (c *Client) takeResponse(m *Message) bool {
	c.req.mu.Lock()
	if m.Topic != c.req.topic || c.req.topic == "" {
		c.req.mu.Unlock()
		return false
	}
	ch := c.req.waiting[string(m.Properties.CorrelationData)]
	c.req.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default: // a second response: the first one won
		}
	}
	return true
}

// Respond publishes resp as the response to req: to req's Response Topic
// with req's Correlation Data. It returns an error without publishing if
// req has no Response Topic.
func (c *Client) Respond(ctx context.Context, req *Message, resp Message) (Ack, error) {
	if !req.Properties.Has(packet.PropResponseTopic) || req.Properties.ResponseTopic == "" {
		return Ack{}, errNoResponseTopic
	}
	resp.Topic = req.Properties.ResponseTopic
	if req.Properties.Has(packet.PropCorrelationData) {
		resp.Properties.Set(packet.PropCorrelationData)
		resp.Properties.CorrelationData = req.Properties.CorrelationData
	}
	return c.Publish(ctx, resp)
}
