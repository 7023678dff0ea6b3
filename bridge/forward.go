package bridge

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

// window is how many messages a bridge has in flight per direction:
// received from one side and not yet acknowledged by the other. Both
// clients acknowledge by hand (client.Options.ManualAck), so a message is
// acknowledged to the side it came from only once the other side has
// acknowledged the forwarded copy, while up to window others follow it.
const window = 256

// forwarder publishes, in arrival order, the messages one client receives
// on the other client, and acknowledges each where it came from once the
// other side acknowledged it (or refused it for good).
type forwarder struct {
	b      *Bridge
	forget func(tag uint64) // drops a completed record from the receiving client's store
	dir    string           // "out" or "in", for logs
	to     *client.Client
	count  *atomic.Uint64
	q      chan pending // in arrival order; the worker waits on each in turn
	done   chan struct{}
}

type pending struct {
	m     *client.Message
	topic string
	tok   *client.PublishToken
}

func (b *Bridge) newForwarder(dir string, to *client.Client, count *atomic.Uint64) *forwarder {
	f := &forwarder{b: b, dir: dir, to: to, count: count, q: make(chan pending, window), done: make(chan struct{})}
	go f.run()
	return f
}

// handle runs on the receiving client's dispatcher: it queues the copy on
// the other client (PublishAsync keeps the order) and hands the wait to
// the worker. It blocks only while window messages are in flight, which
// the sender's Receive Maximum mostly prevents.
//
// A QoS 2 message is published tagged with the packet identifier it came
// with (client.PublishAsyncTagged), which keeps its flow in the bridge's
// State. If done holds that tag, the message was forwarded before a
// restart: it is not published again, but acknowledged once that earlier
// copy completed (at once if it had).
func (f *forwarder) handle(m *client.Message, topic string, done *restoredSet) {
	tag := uint64(m.PacketID)
	if m.QoS == 2 {
		r, ok := done.take(tag)
		if ok && !m.Dup {
			// A first delivery cannot be one forwarded before: the
			// record is stale (its identifier was released, and that was
			// not written down before a power loss, or the session was
			// lost) [MQTT-3.3.1-1].
			f.b.log.Warn("stale QoS 2 record for a new message; forwarding it", "direction", f.dir, "topic", topic, "packet_id", tag)
			if r.Completed {
				f.forget(tag)
			}
			ok = false
		}
		if ok {
			f.b.log.Debug("QoS 2 message forwarded before the restart; not again", "direction", f.dir, "topic", topic, "completed", r.Completed)
			if r.Completed {
				m.Ack()
				return
			}
			select {
			case f.q <- pending{m: m, topic: topic, tok: r.Token}:
			case <-f.b.ctx.Done():
			}
			return
		}
	}
	msg := client.Message{Topic: topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Properties: m.Properties}
	msg.Properties.Clear(packet.PropSubscriptionID)
	msg.Properties.SubscriptionIDs = nil
	for {
		var tok *client.PublishToken
		var err error
		if m.QoS == 2 {
			tok, err = f.to.PublishAsyncTagged(msg, tag)
		} else {
			tok, err = f.to.PublishAsync(msg)
		}
		switch {
		case err == nil:
			f.b.step(f.dir + " published " + topic)
			select {
			case f.q <- pending{m: m, topic: topic, tok: tok}:
			case <-f.b.ctx.Done():
			}
			return
		case errors.Is(err, client.ErrQueueFull):
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-f.b.ctx.Done():
				return
			}
		case errors.Is(err, client.ErrClosed):
			return // stopping: unacknowledged, it comes again
		default:
			f.refused(m, topic, err) // not a valid message for the other side
			return
		}
	}
}

// run completes the forwarded messages in order. It stops at Close
// without acknowledging what is still in flight.
func (f *forwarder) run() {
	defer close(f.done)
	for {
		var p pending
		select {
		case p = <-f.q:
		case <-f.b.ctx.Done():
			return
		}
		_, err := p.tok.Wait(f.b.ctx)
		var re *client.ReasonError
		switch {
		case err == nil:
			if f.b.step(f.dir + " completed " + p.topic); f.b.ctx.Err() != nil {
				return // closing: not acknowledged, as at a crash here
			}
			f.count.Add(1)
			p.m.Ack()
		case errors.As(err, &re), errors.Is(err, client.ErrPacketTooLarge):
			// Refused for good (not authorized, quota, too large):
			// holding it would stop everything behind it.
			f.refused(p.m, p.topic, err)
		default:
			return // Close, or the client stopped: not acknowledged
		}
	}
}

func (f *forwarder) refused(m *client.Message, topic string, err error) {
	f.b.dropped.Add(1)
	f.b.noteErr(err)
	f.b.log.Warn("message refused; dropped", "direction", f.dir, "topic", topic, "err", err)
	m.Ack()
}
