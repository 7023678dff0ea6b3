package broker

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// flood publishes n QoS 0 messages of payloads unlike any other test
// payload on topic, then a QoS 1 one and waits for its PUBACK: the reader
// has then read over whatever its read buffer held before (borrowable).
func flood(t *testing.T, pub *mqtttest.Client, topic string, n int) {
	t.Helper()
	for i := range n {
		pub.Send(&packet.Publish{Topic: topic, Payload: []byte(strings.Repeat("#", 40+i%7))})
	}
	pub.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte("fence")})
	if _, ok := pub.Next(mqtttest.AckBound).(*packet.Puback); !ok {
		t.Fatal("no PUBACK for the fence")
	}
}

// receiveLater answers a receive check only once release is closed, so
// that a QoS 0 delivery waits in the session's queue (authq.go).
type receiveLater struct{ release chan struct{} }

func (a receiveLater) Allow(ctx context.Context, c *ClientInfo, act Action, topic string) bool {
	if act == ActionReceive {
		select {
		case <-a.release:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (a receiveLater) Cached(c *ClientInfo, act Action, topic string) (bool, bool) {
	return true, act != ActionReceive
}

// A QoS 0 message that something keeps past its routing (a retained one,
// one queued for an offline session with QueueQoS0, one waiting for its
// receive check) must not borrow the publisher's read buffer: it reaches
// its subscriber intact after the publisher's reader has read over that
// buffer. Each case fails if borrowable lets its message borrow.
func TestKeptQoS0PayloadSurvivesReadBufferReuse(t *testing.T) {
	t.Parallel()
	const want = "kept: the payload read before the flood"
	online := func(id string, clean bool) func(*testing.T, *Server, string) *mqtttest.Client {
		return func(t *testing.T, _ *Server, addr string) *mqtttest.Client {
			sub := dial(t, addr, packet.V311)
			sub.Connect(&packet.Connect{ClientID: id, CleanStart: clean})
			sub.Subscribe("k/#", 0)
			return sub
		}
	}
	cases := []struct {
		name string
		opts Options
		// before runs before the publisher publishes want on "k/1"
		// (and returns the subscriber, if it stays connected); after
		// returns the subscriber that gets it.
		before func(t *testing.T, s *Server, addr string) *mqtttest.Client
		after  func(t *testing.T, s *Server, addr string, sub *mqtttest.Client) *mqtttest.Client
		retain bool
	}{
		{
			name:   "retained",
			before: func(*testing.T, *Server, string) *mqtttest.Client { return nil },
			after: func(t *testing.T, s *Server, addr string, _ *mqtttest.Client) *mqtttest.Client {
				return online("sub", true)(t, s, addr)
			},
			retain: true,
		},
		{
			name: "queued offline (QueueQoS0)",
			opts: Options{QueueQoS0: true},
			before: func(t *testing.T, s *Server, addr string) *mqtttest.Client {
				online("sub", false)(t, s, addr).NC.Close() // a persistent session
				s.mu.Lock()
				ss := s.sessions["sub"]
				s.mu.Unlock()
				mqtttest.Eventually(t, mqtttest.AckBound, func() bool {
					ss.mu.Lock()
					defer ss.mu.Unlock()
					return ss.conn == nil
				})
				return nil
			},
			after: func(t *testing.T, s *Server, addr string, _ *mqtttest.Client) *mqtttest.Client {
				sub := dial(t, addr, packet.V311)
				sub.Connect(&packet.Connect{ClientID: "sub"})
				return sub
			},
		},
		{
			name:   "receive check pending",
			opts:   Options{Authorizer: receiveLater{release: make(chan struct{})}},
			before: online("sub", true),
			after: func(t *testing.T, s *Server, addr string, sub *mqtttest.Client) *mqtttest.Client {
				close(s.opts.Authorizer.(receiveLater).release)
				return sub
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := startServer(t, tc.opts)
			sub := tc.before(t, s, addr)
			pub := dial(t, addr, packet.V311)
			pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
			pub.Send(&packet.Publish{Topic: "k/1", Retain: tc.retain, Payload: []byte(want)})
			flood(t, pub, "flood", 200)
			sub = tc.after(t, s, addr, sub)
			p, ok := sub.Next(mqtttest.AckBound).(*packet.Publish)
			if !ok || p.Topic != "k/1" || string(p.Payload) != want {
				t.Fatalf("got %+v, want %q on k/1", p, want)
			}
		})
	}
}

// Borrowed payloads go out intact to online subscribers, one of them and
// many (more than inlineMaxTargets: written by flusher goroutines, from
// wire forms the reader's message encodes into again for every message,
// one per protocol version), with many PUBLISHes per read of the
// publisher, of lengths that go up and down.
func TestBorrowedPayloadsDelivered(t *testing.T) {
	t.Parallel()
	for _, nsubs := range []int{1, inlineMaxTargets + 2} {
		t.Run(fmt.Sprint(nsubs, " subscribers"), func(t *testing.T) {
			s, addr := startServer(t, Options{})
			if !s.borrowable(packet.FixedHeader{Type: packet.PUBLISH}) {
				t.Fatal("a QoS 0 PUBLISH does not borrow with default options")
			}
			var clients []*mqtttest.Client
			for i := range nsubs {
				c := dial(t, addr, []packet.Version{packet.V311, packet.V5}[i%2])
				c.Connect(&packet.Connect{ClientID: fmt.Sprint("sub", i), CleanStart: true})
				c.Subscribe("b/#", 0)
				clients = append(clients, c)
			}
			pub := dial(t, addr, packet.V311)
			pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
			const n = 300
			var wire []byte
			for i := range n {
				p := &packet.Publish{Topic: fmt.Sprint("b/", i%3), Payload: []byte(fmt.Sprintf("message %d %s", i, strings.Repeat("z", i%50)))}
				wire, _ = p.Encode(wire, packet.V311)
			}
			if _, err := pub.NC.Write(wire); err != nil {
				t.Fatal(err)
			}
			for ci, c := range clients {
				for i := range n {
					p, ok := c.Next(mqtttest.AckBound).(*packet.Publish)
					wantPayload := fmt.Sprintf("message %d %s", i, strings.Repeat("z", i%50))
					if !ok || p.Topic != fmt.Sprint("b/", i%3) || string(p.Payload) != wantPayload {
						t.Fatalf("subscriber %d, message %d: got %+v, want %q", ci, i, p, wantPayload)
					}
				}
			}
		})
	}
}
