package client

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A client with Options.Bridge connects to Roost and to mosquitto with
// protocol level 0x84, and both treat it as a bridge: it does not get its
// own publishes back (No Local), and a retained message published while
// it is subscribed reaches it with RETAIN set (Retain As Published),
// where a plain 3.1.1 subscriber gets RETAIN 0 [MQTT-3.3.1-9 (3.1.1)].
func TestBridgeFlagAcceptedAsBridge(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"roost", "mosquitto"} {
		t.Run(name, func(t *testing.T) {
			var url string
			if name == "roost" {
				url = startRoost(t, broker.Options{}).URL()
			} else {
				url = startMosquitto(t).URL()
			}
			var in inbox
			br := newClient(t, url, packet.V311, func(o *Options) { o.Bridge = true; o.ClientID = "bridge-1" })
			ctx := testCtx(t, 20*time.Second)
			if _, err := br.Subscribe(ctx, Subscription{Filter: "t/#", QoS: 1, Handler: in.handle}); err != nil {
				t.Fatal(err)
			}
			if _, err := br.Publish(ctx, Message{Topic: "t/own", Payload: []byte("echo?"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			other := newClient(t, url, packet.V311, nil)
			if _, err := other.Publish(ctx, Message{Topic: "t/other", Payload: []byte("r"), QoS: 1, Retain: true}); err != nil {
				t.Fatal(err)
			}
			got := in.waitN(t, 1, 10*time.Second)
			// A marker published after both: once it is in, an echo of
			// t/own would have come before it (one session, in order).
			if _, err := other.Publish(ctx, Message{Topic: "t/marker", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			got = in.waitN(t, 2, 10*time.Second)
			if len(got) != 2 || got[0].Topic != "t/other" || got[1].Topic != "t/marker" {
				for _, m := range got {
					t.Logf("got %s retain=%v", m.Topic, m.Retain)
				}
				t.Fatal("want t/other then t/marker and no echo of t/own")
			}
			if !got[0].Retain {
				t.Error("t/other arrived with RETAIN 0; a bridge gets Retain As Published")
			}
			other.Publish(ctx, Message{Topic: "t/other", QoS: 1, Retain: true}) // clear it
		})
	}
}

// A server that refuses protocol level 0x84 (as brokers without bridge
// support do, CONNACK 1) is asked again at once with level 4, and later
// connections stay without the bit: mosquitto's try_private fallback.
func TestBridgeFlagFallback(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t)
	c, err := New(Options{Servers: []string{srv.URL()}, Version: packet.V311, Bridge: true, ClientID: "b",
		Reconnect: Backoff{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond, Jitter: -1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	connected := make(chan error, 1)
	go func() { connected <- c.Connect(ctx) }()
	t.Cleanup(func() { c.Disconnect(context.Background()) })

	conn1, cp := accept311(srv, &packet.Connack{ReasonCode: packet.Connack311BadProtocolVersion})
	if !cp.Bridge || cp.ProtocolVersion != packet.V311 {
		t.Fatalf("first CONNECT: bridge %v level %d, want the bridge bit on 4", cp.Bridge, cp.ProtocolVersion)
	}
	conn1.NC.Close()
	conn2, cp := accept311(srv, &packet.Connack{})
	if cp.Bridge {
		t.Fatal("second CONNECT still has the bridge bit")
	}
	if err := <-connected; err != nil {
		t.Fatalf("Connect: %v", err)
	}
	conn2.NC.Close() // a reconnect must not try the bit again
	_, cp = accept311(srv, &packet.Connack{})
	if cp.Bridge {
		t.Fatal("CONNECT after a reconnect has the bridge bit again")
	}
}

// accept311 is fakeServer.accept for a 3.1.1 client.
func accept311(s *fakeServer, ca *packet.Connack) (*mqtttest.Client, *packet.Connect) {
	s.t.Helper()
	s.ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	nc, err := s.ln.Accept()
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { nc.Close() })
	c := &mqtttest.Client{T: s.t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V311}
	cp, ok := c.Next(5 * time.Second).(*packet.Connect)
	if !ok {
		s.t.Fatal("first packet is not CONNECT")
	}
	c.Send(ca)
	return c, cp
}
