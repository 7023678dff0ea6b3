package broker

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// Two clients fighting over one client id, each reconnecting as soon as it
// is thrown out (the seed's warning), must not crash, deadlock or leak.
func TestTakeoverFight(t *testing.T) {
	// Serial: it counts the goroutines of the whole process.
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			s, addr := startServer(t, Options{})
			before := runtime.NumGoroutine()
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 50; i++ {
						c := dial(t, addr, v)
						c.Send(&packet.Connect{ProtocolVersion: v, ClientID: "car", CleanStart: i%2 == 0, KeepAlive: 30,
							WillFlag: true, WillTopic: "car/status", WillPayload: []byte("gone")})
						c.Read(time.Second) // CONNACK, or nothing if kicked first
						c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "car/#"}}})
						c.Read(50 * time.Millisecond)
						c.NC.Close()
					}
				}()
			}
			wg.Wait()
			mqtttest.Eventually(t, 5*time.Second, func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return len(s.conns) == 0 && s.stats.connected.Load() == 0
			})
			mqtttest.Eventually(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= before+2 })
			if n := s.router.tree.Len(); n > 1 {
				t.Errorf("%d subscriptions left for one client id", n)
			}
		})
	}
}

// Takeover sends MQTT 5 clients DISCONNECT 0x8E [MQTT-3.1.4-3] and the new
// connection inherits the persistent session.
func TestTakeoverInheritsSession(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{})
	a := dial(t, addr, packet.V5)
	conn := &packet.Connect{ClientID: "phone", KeepAlive: 30}
	conn.Properties.SessionExpiry = 300
	conn.Properties.Set(packet.PropSessionExpiry)
	a.Connect(conn)
	a.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "cmd/+", Options: packet.SubOptions{QoS: 1}}}})
	if _, ok := a.Next(time.Second).(*packet.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	b := dial(t, addr, packet.V5)
	ack := b.Connect(conn)
	if !ack.SessionPresent {
		t.Error("session present = 0 after takeover of a persistent session")
	}
	got := a.ExpectClosed(2 * time.Second)
	if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.SessionTakenOver {
		t.Errorf("old connection got %v, want one DISCONNECT 0x8E", got)
	}
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "ctl", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "cmd/go", QoS: 1, PacketID: 7, Payload: []byte("fwd")})
	if m, ok := b.Next(2 * time.Second).(*packet.Publish); !ok || string(m.Payload) != "fwd" || m.QoS != 1 {
		t.Errorf("new connection got %+v, want the QoS 1 publish", m)
	}
}

// Shutdown sends MQTT 5 clients DISCONNECT 0x8B, closes every connection
// and makes Serve return ErrServerClosed.
func TestShutdownDisconnectsClients(t *testing.T) {
	t.Parallel()
	s, err := New(Options{SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := serveOn(t, s)
	c5 := dial(t, addr, packet.V5)
	c5.Connect(&packet.Connect{ClientID: "five", CleanStart: true})
	c4 := dial(t, addr, packet.V311)
	c4.Connect(&packet.Connect{ClientID: "four", CleanStart: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	got := c5.ExpectClosed(time.Second)
	if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.ServerShuttingDown {
		t.Errorf("v5 client got %v, want DISCONNECT 0x8B", got)
	}
	if got := c4.ExpectClosed(time.Second); len(got) != 0 {
		t.Errorf("3.1.1 client got %v, want a plain close", got)
	}
}

func serveOn(t *testing.T, s *Server) (chan error, string) {
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() { ch <- s.Serve(ln) }()
	return ch, ln.Addr().String()
}

// A session with expiry 0 ends when its connection is taken over, so the
// new connection does not resume it even without clean start.
func TestTakeoverOfExpiryZeroSession(t *testing.T) {
	t.Parallel()
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			_, addr := startServer(t, Options{})
			a := dial(t, addr, v)
			a.Connect(&packet.Connect{ClientID: "x", CleanStart: true})
			a.Subscribe("t", 1)
			b := dial(t, addr, v)
			cp := &packet.Connect{ClientID: "x", CleanStart: false}
			if v == packet.V5 {
				cp.Properties.SessionExpiry = 60
				cp.Properties.Set(packet.PropSessionExpiry)
			}
			if ack := b.Connect(cp); ack.SessionPresent {
				t.Error("session present after taking over a session with expiry 0")
			}
		})
	}
}

// A takeover of a client that sent nothing more (it is alive, or vanished
// without a word) still publishes its will once, parked or not, and still
// sends it DISCONNECT 0x8E; with a Will Delay and a session that goes on,
// the new connection cancels the will [MQTT-3.1.3-9]. (The old connection
// now settles before attach decides: settleTakeover.)
func TestTakeoverOfSilentClientPublishesWill(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{})
	w := dial(t, addr, packet.V5)
	w.Connect(&packet.Connect{ClientID: "watch", CleanStart: true})
	w.Subscribe("car/#", 1)
	parked := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		ss := s.sessions["car"]
		if ss == nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.conn != nil && ss.conn.state.Load() == readerParked
	}
	withWill := func(delay uint32) *packet.Connect {
		cp := &packet.Connect{ClientID: "car", KeepAlive: 30, WillFlag: true, WillTopic: "car/status", WillPayload: []byte("gone")}
		cp.Properties.SessionExpiry = 300
		cp.Properties.Set(packet.PropSessionExpiry)
		if delay > 0 {
			cp.WillProperties.WillDelay = delay
			cp.WillProperties.Set(packet.PropWillDelay)
		}
		return cp
	}
	for i := range 6 {
		a := dial(t, addr, packet.V5)
		a.Connect(withWill(0))
		if i%2 == 1 && parkingSupported { // (the fallback never parks)
			mqtttest.Eventually(t, 2*time.Second, parked) // the kick must wake it
		}
		b := dial(t, addr, packet.V5)
		b.Connect(withWill(0))
		got := a.ExpectClosed(2 * time.Second)
		if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.SessionTakenOver {
			t.Fatalf("round %d: old connection got %v, want one DISCONNECT 0x8E", i, got)
		}
		p := w.Next(2 * time.Second)
		m, ok := p.(*packet.Publish)
		if !ok || string(m.Payload) != "gone" {
			t.Fatalf("round %d: watcher got %#v, want the will", i, p)
		}
		b.Send(&packet.Disconnect{})
		b.ExpectClosed(2 * time.Second)
	}
	if extra := w.Collect(300 * time.Millisecond); len(extra) != 0 {
		t.Fatalf("watcher got %v after the takeovers, want nothing", extra)
	}

	a := dial(t, addr, packet.V5)
	a.Connect(withWill(60))
	b := dial(t, addr, packet.V5)
	if ack := b.Connect(withWill(60)); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	a.ExpectClosed(2 * time.Second)
	if extra := w.Collect(300 * time.Millisecond); len(extra) != 0 {
		t.Fatalf("a delayed will was published although the session went on: %v", extra)
	}
}
