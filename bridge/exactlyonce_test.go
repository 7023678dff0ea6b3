package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// scripted is a remote broker driven by the test, one packet at a time,
// over MQTT 5: it keeps the bridge's session (CONNACK Session Present
// after the first connection), so the bridge must resend what it had in
// flight with the same packet identifiers.
type scripted struct {
	t     *testing.T
	ln    net.Listener
	conns int
}

func newScripted(t *testing.T) *scripted {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &scripted{t: t, ln: ln}
}

func (s *scripted) url() string { return "mqtt://" + s.ln.Addr().String() }

// accept takes the bridge's next connection and answers its CONNECT.
func (s *scripted) accept() *mqtttest.Client {
	s.t.Helper()
	s.ln.(*net.TCPListener).SetDeadline(time.Now().Add(15 * time.Second))
	nc, err := s.ln.Accept()
	if err != nil {
		s.t.Fatalf("no connection from the bridge: %v", err)
	}
	s.t.Cleanup(func() { nc.Close() })
	c := &mqtttest.Client{T: s.t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V5}
	if _, ok := c.Next(10 * time.Second).(*packet.Connect); !ok {
		s.t.Fatal("first packet is not CONNECT")
	}
	c.Send(&packet.Connack{SessionPresent: s.conns > 0})
	s.conns++
	return c
}

// next reads the next packet other than PINGREQ, SUBSCRIBE and
// UNSUBSCRIBE, which it answers.
func next(c *mqtttest.Client) packet.Packet {
	c.T.Helper()
	for {
		switch p := c.Next(10 * time.Second).(type) {
		case *packet.Pingreq:
			c.Send(&packet.Pingresp{})
		case *packet.Subscribe:
			codes := make([]packet.ReasonCode, len(p.Subscriptions))
			for i, s := range p.Subscriptions {
				codes[i] = packet.ReasonCode(s.Options.QoS)
			}
			c.Send(&packet.Suback{PacketID: p.PacketID, ReasonCodes: codes})
		case *packet.Unsubscribe:
			c.Send(&packet.Unsuback{PacketID: p.PacketID, ReasonCodes: make([]packet.ReasonCode, len(p.Filters))})
		default:
			return p
		}
	}
}

func expect[P packet.Packet](c *mqtttest.Client) P {
	c.T.Helper()
	p := next(c)
	got, ok := p.(P)
	if !ok {
		c.T.Fatalf("got %v %+v, want %T", p.Type(), p, got)
	}
	return got
}

// steppedBridge starts a bridge on srv to the scripted remote whose
// forwarders stop at step: when they reach it, the bridge is closed there
// (as by a crash at that point) and stopped is closed.
func steppedBridge(t *testing.T, srv *broker.Server, remote string, st *State, rule Rule, step string) (b *Bridge, stopped chan struct{}) {
	t.Helper()
	b, err := New(srv, Config{Name: "x1", ClientID: "x1", Addresses: []string{remote}, State: st, Topics: []Rule{rule},
		Logger:    slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		KeepAlive: time.Minute, Backoff: client.Backoff{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	stopped = make(chan struct{})
	if step != "" {
		b.testStep = func(s string) {
			if s == step {
				b.cancel() // the forwarders stop at once, acknowledging nothing more
				go func() { b.Close(context.Background()); close(stopped) }()
			}
		}
	}
	if err := b.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b, stopped
}

// A QoS 2 message forwarded out is delivered once by the remote when the
// bridge stops at each step of the flow and a new bridge takes over with
// the State read again from its files: after the remote got the PUBLISH;
// after it answered PUBREC (PUBREL pending); after PUBCOMP, before the
// local broker had the bridge's acknowledgement. The remote here counts a PUBLISH whose packet
// identifier it is not holding for a PUBREL as a delivery, as brokers do.
func TestQoS2OutExactlyOnceAcrossRestart(t *testing.T) {
	for _, step := range []string{"publish", "pubrec", "pubcomp"} {
		t.Run(step, func(t *testing.T) {
			srv, roostURL := startRoost(t)
			remote := newScripted(t)
			dir := t.TempDir()
			st := openState(t, dir)
			rule := Rule{Pattern: "q/#", Direction: Out, QoS: 2}
			hook := ""
			if step == "pubcomp" {
				hook = "out completed q/1"
			}
			b1, stopped := steppedBridge(t, srv, remote.url(), st, rule, hook)
			c1 := remote.accept()
			pub := newClient(t, roostURL, packet.V5, nil)
			// A first message, completed, so that q/1 does not have the
			// packet identifier a new client would give it: a
			// republished copy must not pass for a resent one.
			if _, err := pub.Publish(testCtx(t, 10*time.Second), client.Message{Topic: "q/warm", QoS: 2}); err != nil {
				t.Fatal(err)
			}
			w := expect[*packet.Publish](c1)
			c1.Send(&packet.Pubrec{PacketID: w.PacketID})
			expect[*packet.Pubrel](c1)
			c1.Send(&packet.Pubcomp{PacketID: w.PacketID})
			if _, err := pub.Publish(testCtx(t, 10*time.Second), client.Message{Topic: "q/1", Payload: []byte("once"), QoS: 2}); err != nil {
				t.Fatal(err)
			}
			p := expect[*packet.Publish](c1)
			if p.QoS != 2 || p.Topic != "q/1" {
				t.Fatalf("remote got %+v", p)
			}
			id := p.PacketID
			delivered := 1
			switch step {
			case "publish":
				b1.Close(testCtx(t, 10*time.Second))
			case "pubrec":
				c1.Send(&packet.Pubrec{PacketID: id})
				expect[*packet.Pubrel](c1)
				b1.Close(testCtx(t, 10*time.Second))
			case "pubcomp":
				c1.Send(&packet.Pubrec{PacketID: id})
				expect[*packet.Pubrel](c1)
				c1.Send(&packet.Pubcomp{PacketID: id})
				select {
				case <-stopped:
				case <-time.After(10 * time.Second):
					t.Fatal("the bridge did not reach the step")
				}
				id = 0 // released: a PUBLISH now is a new delivery
			}
			c1.NC.Close()

			// The state as a new process finds it: the log read again.
			st.Close()
			startBridgeWith(t, srv, remote.url(), openState(t, dir), rule)
			c2 := remote.accept()
			// Behind q/1 in the local session: when it arrives, anything
			// of q/1 has come first.
			if _, err := pub.Publish(testCtx(t, 10*time.Second), client.Message{Topic: "q/marker", QoS: 2}); err != nil {
				t.Fatal(err)
			}
			var marker uint16
			for {
				switch p := next(c2).(type) {
				case *packet.Publish:
					if p.Topic == "q/marker" {
						if delivered != 1 {
							t.Fatalf("q/1 delivered %d times on the remote", delivered)
						}
						marker = p.PacketID
					} else if p.PacketID != id {
						delivered++
					}
					c2.Send(&packet.Pubrec{PacketID: p.PacketID})
				case *packet.Pubrel:
					c2.Send(&packet.Pubcomp{PacketID: p.PacketID})
					if p.PacketID == id {
						id = 0
					}
					if p.PacketID == marker {
						waitDrained(t, srv, "local.x1")
						return
					}
				default:
					t.Fatalf("remote got %v", p.Type())
				}
			}
		})
	}
}

// startBridgeWith starts the bridge that takes over after a stop.
func startBridgeWith(t *testing.T, srv *broker.Server, remote string, st *State, rule Rule) *Bridge {
	b, _ := steppedBridge(t, srv, remote, st, rule, "")
	return b
}

// waitDrained waits until the local session id holds nothing.
func waitDrained(t *testing.T, srv *broker.Server, id string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		cs, _, ok := srv.Client(id)
		if ok && cs.Queued+cs.Inflight > 0 {
			return fmt.Errorf("local session: %d queued, %d inflight", cs.Queued, cs.Inflight)
		}
		return nil
	})
}

// A QoS 2 message from the remote is delivered once on this broker when
// the bridge stops at each step and a new bridge takes over with the
// State read again from its files: once the local copy is sent; once this
// broker completed it, before the remote had the PUBREC; once the remote
// had the PUBREC, before its PUBREL. The remote resends what the protocol says it must: the
// PUBLISH with DUP until it has a PUBREC, then the PUBREL.
func TestQoS2InExactlyOnceAcrossRestart(t *testing.T) {
	for _, step := range []string{"in published q/1", "in completed q/1", "pubrec"} {
		t.Run(step, func(t *testing.T) {
			srv, roostURL := startRoost(t)
			remote := newScripted(t)
			dir := t.TempDir()
			st := openState(t, dir)
			rule := Rule{Pattern: "q/#", Direction: In, QoS: 2}
			var got inbox
			sub := newClient(t, roostURL, packet.V5, nil)
			if _, err := sub.Subscribe(testCtx(t, 10*time.Second), client.Subscription{Filter: "q/#", QoS: 2, Handler: got.handle}); err != nil {
				t.Fatal(err)
			}
			hook := step
			if step == "pubrec" {
				hook = ""
			}
			b1, stopped := steppedBridge(t, srv, remote.url(), st, rule, hook)
			c1 := remote.accept()
			if p := c1.Next(10 * time.Second); p.Type() != packet.SUBSCRIBE {
				t.Fatalf("remote got %v, want SUBSCRIBE", p.Type())
			} else {
				c1.Send(&packet.Suback{PacketID: p.(*packet.Subscribe).PacketID, ReasonCodes: []packet.ReasonCode{2}})
			}
			// A first message, completed, so that the bridge's local copy
			// of q/1 does not have the packet identifier a new client
			// would give it.
			c1.Send(&packet.Publish{Topic: "q/warm", QoS: 2, PacketID: 1})
			expect[*packet.Pubrec](c1)
			c1.Send(&packet.Pubrel{PacketID: 1})
			expect[*packet.Pubcomp](c1)
			got.waitFor(t, "q/warm")
			const id = 7
			c1.Send(&packet.Publish{Topic: "q/1", Payload: []byte("once"), QoS: 2, PacketID: id})
			released := false
			if step == "pubrec" {
				expect[*packet.Pubrec](c1)
				released = true
				b1.Close(testCtx(t, 10*time.Second))
			} else {
				select {
				case <-stopped:
				case <-time.After(10 * time.Second):
					t.Fatal("the bridge did not reach the step")
				}
			}
			c1.NC.Close()

			// The state as a new process finds it: the log read again.
			st.Close()
			startBridgeWith(t, srv, remote.url(), openState(t, dir), rule)
			c2 := remote.accept()
			if released {
				c2.Send(&packet.Pubrel{PacketID: id})
			} else {
				c2.Send(&packet.Publish{Topic: "q/1", Payload: []byte("once"), QoS: 2, PacketID: id, Dup: true})
				expect[*packet.Pubrec](c2)
				c2.Send(&packet.Pubrel{PacketID: id})
			}
			expect[*packet.Pubcomp](c2)
			// The same packet identifier, now free, for the next message.
			c2.Send(&packet.Publish{Topic: "q/marker", QoS: 2, PacketID: id})
			expect[*packet.Pubrec](c2)
			c2.Send(&packet.Pubrel{PacketID: id})
			expect[*packet.Pubcomp](c2)
			got.waitFor(t, "q/marker")
			if n := got.count("q/1"); n != 1 {
				t.Fatalf("q/1 delivered %d times here; got %v", n, got.topics())
			}
		})
	}
}

type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) { l.t.Log(string(p)); return len(p), nil }

// A record kept for a QoS 2 message matches only a redelivery (DUP 1): a
// first delivery with the same packet identifier — the record went stale,
// say its release was not written before a power loss — is forwarded, not
// taken for the old message.
func TestQoS2StaleRecordDoesNotEatANewMessage(t *testing.T) {
	srv, roostURL := startRoost(t)
	remote := newScripted(t)
	st := MemoryState()
	rule := Rule{Pattern: "q/#", Direction: In, QoS: 2}
	var got inbox
	sub := newClient(t, roostURL, packet.V5, nil)
	if _, err := sub.Subscribe(testCtx(t, 10*time.Second), client.Subscription{Filter: "q/#", QoS: 2, Handler: got.handle}); err != nil {
		t.Fatal(err)
	}
	_, stopped := steppedBridge(t, srv, remote.url(), st, rule, "in completed q/1")
	c1 := remote.accept()
	if p := c1.Next(10 * time.Second); p.Type() != packet.SUBSCRIBE {
		t.Fatalf("remote got %v, want SUBSCRIBE", p.Type())
	} else {
		c1.Send(&packet.Suback{PacketID: p.(*packet.Subscribe).PacketID, ReasonCodes: []packet.ReasonCode{2}})
	}
	c1.Send(&packet.Publish{Topic: "q/1", QoS: 2, PacketID: 7})
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not reach the step")
	}
	c1.NC.Close()
	startBridgeWith(t, srv, remote.url(), st, rule)
	c2 := remote.accept()
	c2.Send(&packet.Publish{Topic: "q/new", QoS: 2, PacketID: 7}) // DUP 0: not the old one
	expect[*packet.Pubrec](c2)
	c2.Send(&packet.Pubrel{PacketID: 7})
	expect[*packet.Pubcomp](c2)
	got.waitFor(t, "q/new")
	if n := got.count("q/1"); n != 1 {
		t.Fatalf("q/1 delivered %d times", n)
	}
}

// openState opens the FileState in dir, closed with the test.
func openState(t *testing.T, dir string) *State {
	t.Helper()
	st, err := FileState(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
