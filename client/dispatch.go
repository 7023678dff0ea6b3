package client

import (
	"sync"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// dispatcher runs handlers and status callbacks one at a time, in the order
// the events happened, on its own goroutine, so that nothing an application
// callback does can stop the reader, the writer or the keep alive.
//
// The queue is unbounded but counted: QoS 1/2 messages are bounded by the
// Receive Maximum because their acknowledgement waits for the handler;
// QoS 0 messages beyond Options.MaxPendingMessages are dropped and counted.
type dispatcher struct {
	c      *Client
	mu     sync.Mutex
	q      []item
	nmsg   int // messages in q
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

type item struct {
	msg  *Message
	ack  func() // sends PUBACK/PUBREC once the handlers returned
	st   *Status
	up   *packet.Connack // call OnConnectionUp
	down bool            // call OnConnectionDown with err
	err  error
}

func newDispatcher(c *Client) *dispatcher {
	return &dispatcher{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (d *dispatcher) push(it item) bool {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	if it.msg != nil {
		if it.msg.QoS == 0 && d.nmsg >= d.c.opts.MaxPendingMessages {
			d.mu.Unlock()
			d.c.dropped.Add(1)
			return false
		}
		d.nmsg++
	}
	d.q = append(d.q, it)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

func (d *dispatcher) message(m *Message, ack func()) { d.push(item{msg: m, ack: ack}) }
func (d *dispatcher) status(st Status)               { d.push(item{st: &st}) }
func (d *dispatcher) connUp(ca *packet.Connack)      { d.push(item{up: ca}) }
func (d *dispatcher) connDown(err error)             { d.push(item{down: true, err: err}) }

// close makes run exit once the items queued so far are handled; messages
// among them are skipped (not acknowledged, so the server may send them
// again) but status events are delivered.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.q)
}

func (d *dispatcher) run() {
	defer close(d.done)
	for {
		d.mu.Lock()
		for len(d.q) == 0 {
			if d.closed {
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
			<-d.wake
			d.mu.Lock()
		}
		it := d.q[0]
		d.q[0] = item{}
		d.q = d.q[1:]
		if it.msg != nil {
			d.nmsg--
		}
		closed := d.closed
		d.mu.Unlock()
		if it.msg != nil && closed {
			continue
		}
		d.handle(it)
	}
}

func (d *dispatcher) handle(it item) {
	o := &d.c.opts
	switch {
	case it.msg != nil:
		if it.ack != nil && o.ManualAck {
			it.msg.ack, it.msg.acks = d.c.acks.add(it.ack), &d.c.acks
		}
		if n := d.c.route(it.msg); it.ack != nil && (!o.ManualAck || n == 0) {
			it.msg.Ack()
			if !o.ManualAck {
				it.ack()
			}
		}
	case it.st != nil:
		if o.OnStatus != nil {
			o.OnStatus(*it.st)
		}
	case it.up != nil:
		if o.OnConnectionUp != nil {
			o.OnConnectionUp(d.c, it.up)
		}
	case it.down:
		if o.OnConnectionDown != nil {
			o.OnConnectionDown(d.c, it.err)
		}
	}
}

// route calls every handler whose filter matches m's topic, in the order
// the subscriptions were made, or the default handler when none does, and
// returns how many it called.
func (c *Client) route(m *Message) int {
	c.mu.Lock()
	var hs []MessageHandler
	for _, e := range c.sess.subOrder {
		if e.sub.Handler != nil && e.match(m.Topic) {
			hs = append(hs, e.sub.Handler)
		}
	}
	c.mu.Unlock()
	if len(hs) == 0 && c.opts.DefaultHandler != nil {
		hs = append(hs, c.opts.DefaultHandler)
	}
	for _, h := range hs {
		h(m)
	}
	return len(hs)
}

// subEntry is one subscription the client holds.
type subEntry struct {
	sub    Subscription
	props  packet.Properties // of the SUBSCRIBE that made it, for resubscribing
	filter string            // without the $share/group/ prefix
	acked  bool              // the server granted it at least once
}

func newSubEntry(s Subscription, props packet.Properties) *subEntry {
	e := &subEntry{sub: s, props: props, filter: s.Filter}
	if _, rest, shared, err := topic.ParseShare(s.Filter); shared && err == nil {
		e.filter = rest
	}
	return e
}

func (e *subEntry) match(name string) bool { return topic.Match(e.filter, name) }
