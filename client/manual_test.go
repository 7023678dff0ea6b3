package client

import (
	"fmt"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// With ManualAck, a QoS 1 message stays unacknowledged after its handler
// returned: with Receive Maximum 2 the server sends a third message only
// once the first is acknowledged, and acknowledging the second first
// sends nothing (PUBACKs go in arrival order [MQTT-4.6.0-2]). After a
// connection loss the unacknowledged message comes again.
func TestManualAck(t *testing.T) {
	t.Parallel()
	forTargets(t, func(t *testing.T, tg target, v packet.Version) {
		if v != packet.V5 {
			t.Skip("Receive Maximum is MQTT 5")
		}
		got := make(chan *Message, 10)
		c := newClient(t, tg.URL(), v, func(o *Options) {
			o.ManualAck, o.ReceiveMaximum, o.KeepSession, o.ClientID = true, 2, true, "manual"
		})
		ctx := testCtx(t, 30*time.Second)
		if _, err := c.Subscribe(ctx, Subscription{Filter: "m/#", QoS: 1, Handler: func(m *Message) { got <- m }}); err != nil {
			t.Fatal(err)
		}
		pub := newClient(t, tg.URL(), v, nil)
		for i := range 3 {
			if _, err := pub.Publish(ctx, Message{Topic: fmt.Sprintf("m/%d", i), QoS: 1}); err != nil {
				t.Fatal(err)
			}
		}
		next := func(want string) *Message {
			t.Helper()
			select {
			case m := <-got:
				if m.Topic != want {
					t.Fatalf("got %s, want %s", m.Topic, want)
				}
				return m
			case <-time.After(10 * time.Second):
				t.Fatalf("no %s", want)
			}
			return nil
		}
		quiet := func() {
			t.Helper()
			select {
			case m := <-got:
				t.Fatalf("%s arrived while the window was full", m.Topic)
			case <-time.After(300 * time.Millisecond):
			}
		}
		m0, m1 := next("m/0"), next("m/1")
		quiet()
		m1.Ack()
		quiet() // m/1's PUBACK waits for m/0's
		tg.Kill(t)
		// Both unacknowledged messages come again on the new connection.
		r0, r1 := next("m/0"), next("m/1")
		m0.Ack() // acks of the old connection go nowhere
		r0.Ack()
		r1.Ack()
		next("m/2").Ack()
	})
}

// PublishAsync keeps call order on the wire (one QoS: across QoS levels
// brokers may reorder), and its tokens complete.
func TestPublishAsyncOrder(t *testing.T) {
	t.Parallel()
	forTargets(t, func(t *testing.T, tg target, v packet.Version) {
		var in inbox
		sub := newClient(t, tg.URL(), v, nil)
		ctx := testCtx(t, 30*time.Second)
		if _, err := sub.Subscribe(ctx, Subscription{Filter: "a/#", QoS: 1, Handler: in.handle}); err != nil {
			t.Fatal(err)
		}
		pub := newClient(t, tg.URL(), v, nil)
		const n = 300
		toks := make([]*PublishToken, n)
		for i := range n {
			tok, err := pub.PublishAsync(Message{Topic: "a/x", Payload: []byte(fmt.Sprint(i)), QoS: 1})
			if err != nil {
				t.Fatal(err)
			}
			toks[i] = tok
		}
		for i, tok := range toks {
			if _, err := tok.Wait(ctx); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			select {
			case <-tok.Done():
			default:
				t.Fatal("Done open after Wait")
			}
		}
		msgs := in.waitN(t, n, 20*time.Second)
		for i, m := range msgs[:n] {
			if string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("message %d is %q: order lost", i, m.Payload)
			}
		}
	})
}
