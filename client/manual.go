package client

import (
	"context"
	"sync"
)

// Manual acknowledgement (Options.ManualAck) lets an application finish
// with a QoS 1 or 2 message after its handler returned — a bridge
// acknowledges a message only once another broker has it — while later
// messages keep arriving. Acknowledgements still leave in the order the
// messages arrived, as the protocol requires of PUBACK [MQTT-4.6.0-2]:
// one acknowledged early waits for those before it.

// ackQueue holds the acknowledgements of delivered messages in arrival
// order until they are due.
type ackQueue struct {
	mu sync.Mutex
	q  []*pendingAck
}

type pendingAck struct {
	send func() // PUBACK on the connection it came by, or PUBREC
	done bool
}

// add queues send, to be sent once Ack was called for it and for every
// message before it.
func (aq *ackQueue) add(send func()) *pendingAck {
	p := &pendingAck{send: send}
	aq.mu.Lock()
	aq.q = append(aq.q, p)
	aq.mu.Unlock()
	return p
}

// ack marks p done and sends every acknowledgement now due. aq.mu is
// taken before c.mu (qos2Handled) and never the other way round.
func (aq *ackQueue) ack(p *pendingAck) {
	aq.mu.Lock()
	defer aq.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	n := 0
	for n < len(aq.q) && aq.q[n].done {
		aq.q[n].send()
		aq.q[n] = nil
		n++
	}
	aq.q = aq.q[n:]
}

// Ack acknowledges a message received by a Client with Options.ManualAck:
// PUBACK for QoS 1, PUBREC for QoS 2, sent once every message that
// arrived before it was acknowledged too. Until then the server counts
// the message against the client's Receive Maximum and sends it again on
// a new connection. Ack may be called from any goroutine, once or more;
// it does nothing for QoS 0 messages and without ManualAck.
func (m *Message) Ack() {
	if m.ack != nil {
		m.acks.ack(m.ack)
	}
}

// PublishToken is a publish handed to the client by PublishAsync.
type PublishToken struct {
	c    *Client
	o    *op
	done <-chan struct{}
}

// PublishAsync queues m like Publish and returns at once: the call order
// of PublishAsync (and Publish) is the order of the PUBLISHes on the wire.
// It fails as Publish does when m is invalid or the queue is full.
// Wait or Done tell when the QoS flow completes.
func (c *Client) PublishAsync(m Message) (*PublishToken, error) {
	if err := c.checkPublish(&m); err != nil {
		return nil, err
	}
	o := &op{kind: opPublish, msg: &m}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enqueue(o); err != nil {
		return nil, err
	}
	t := &PublishToken{c: c, o: o, done: o.done}
	if t.done == nil {
		closed := make(chan struct{})
		close(closed)
		t.done = closed
	}
	return t, nil
}

// Done is closed when the publish completed (see Publish for when).
func (t *PublishToken) Done() <-chan struct{} { return t.done }

// Wait returns the publish's outcome as Publish does, or ctx.Err() if ctx
// ends first (a message still queued is then withdrawn).
func (t *PublishToken) Wait(ctx context.Context) (Ack, error) {
	if err := t.c.wait(ctx, t.o); err != nil {
		return Ack{}, err
	}
	return t.o.ack, t.o.err
}
