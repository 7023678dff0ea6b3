package broker

import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// persistentClients connects n clients with persistent sessions, every
// other one MQTT 5 (Session Expiry 1 hour) and the rest 3.1.1 (Clean
// Session 0), each with a subscription.
func persistentClients(t *testing.T, addr string, n int) []*mqtttest.Client {
	t.Helper()
	cs := make([]*mqtttest.Client, n)
	for i := range cs {
		v := packet.V311
		cp := &packet.Connect{ClientID: fmt.Sprintf("c%d", i)}
		if i%2 == 0 {
			v = packet.V5
			cp.Properties.SessionExpiry = 3600
			cp.Properties.Set(packet.PropSessionExpiry)
		}
		cs[i] = dial(t, addr, v)
		cs[i].Connect(cp)
		cs[i].Subscribe(fmt.Sprintf("t/%d", i), 1)
	}
	return cs
}

// shutdownPeak runs s.Shutdown and returns its error, the most goroutines
// the process had meanwhile, and the stacks of every goroutine the first
// time there were more than bound (empty if never): a count alone does not
// say what ran.
func shutdownPeak(t *testing.T, s *Server, bound int) (error, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var peak int
	var stacks string
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := runtime.NumGoroutine(); n > peak {
				peak = n
				if n > bound && stacks == "" {
					var b strings.Builder
					pprof.Lookup("goroutine").WriteTo(&b, 1)
					stacks = b.String()
				}
			}
			select {
			case <-stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	err := s.Shutdown(ctx)
	close(stop)
	<-sampled
	return err, peak, stacks
}

// Shutdown ends parked connections from its own goroutine (shutdown.go):
// no reader goroutine per connection, even while every client keeps its
// socket open past the linger; each MQTT 5 client still gets DISCONNECT
// 0x8B before the end of the stream, 3.1.1 clients a plain close, and
// every session is recorded offline in the store.
func TestShutdownEndsParkedConnections(t *testing.T) {
	// Serial: it counts the goroutines of the whole process.
	if !parkingSupported {
		t.Skip("nothing parks in this build (-tags roost_portable or not Linux)")
	}
	const n = 200
	log := &opLog{}
	s, addr := startServer(t, Options{Store: log})
	cs := persistentClients(t, addr, n)
	waitParked(t, s, n)
	g0 := runtime.NumGoroutine()

	// The clients read nothing until Shutdown returned: none hangs up, so
	// every connection lingers until lingerTimeout.
	// A reader per connection would be n more; allow the poller, the
	// store and timers.
	bound := g0 + n/10
	err, peak, stacks := shutdownPeak(t, s, bound)
	if err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if peak > bound {
		t.Errorf("%d goroutines during Shutdown, %d before: parked connections were woken; the goroutines then:\n%s", peak, g0, stacks)
	}
	for i, c := range cs {
		got := c.ExpectClosed(5 * time.Second)
		if i%2 == 1 {
			if len(got) != 0 {
				t.Errorf("3.1.1 client %d got %v, want a plain close", i, got)
			}
			continue
		}
		if d, ok := lone[*packet.Disconnect](got); !ok || d.ReasonCode != packet.ServerShuttingDown {
			t.Errorf("MQTT 5 client %d got %v, want DISCONNECT 0x8B", i, got)
		}
	}
	offline := map[string]bool{}
	log.mu.Lock()
	for _, op := range log.ops {
		if op.Kind == OpSessionPut {
			offline[op.Session.ClientID] = !op.Session.DisconnectedAt.IsZero()
		}
	}
	log.mu.Unlock()
	for i := range n {
		if id := fmt.Sprintf("c%d", i); !offline[id] {
			t.Errorf("session %s not recorded offline in the store", id)
		}
	}
}

// A client that sends more after Shutdown began still reads the whole
// DISCONNECT and a clean end of stream: what it sent is read and dropped
// (by the poller for a parked connection, by closeGracefully for a woken
// one) instead of making the close a reset; and clients that hang up at
// once let Shutdown return before the linger bound would have.
func TestShutdownParkedClientsTalkingBack(t *testing.T) {
	t.Parallel()
	if !parkingSupported {
		t.Skip("nothing parks in this build (-tags roost_portable or not Linux)")
	}
	const n = 40
	s, addr := startServer(t, Options{})
	cs := persistentClients(t, addr, n)
	waitParked(t, s, n)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	for _, c := range cs {
		c.Send(&packet.Pingreq{})
	}
	for i, c := range cs {
		got := c.ExpectClosed(5 * time.Second)
		var want []packet.Type
		if i%2 == 0 {
			want = []packet.Type{packet.DISCONNECT}
		}
		// A PINGRESP may come first, from a reader woken by the PINGREQ
		// before Shutdown took the connection over.
		if len(got) > 0 && got[0].Type() == packet.PINGRESP {
			got = got[1:]
		}
		if len(got) != len(want) || len(want) == 1 && got[0].(*packet.Disconnect).ReasonCode != packet.ServerShuttingDown {
			t.Errorf("client %d got %v, want %v", i, got, want)
		}
		c.NC.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// lone returns the only packet of got as a T.
func lone[T packet.Packet](got []packet.Packet) (T, bool) {
	var zero T
	if len(got) != 1 {
		return zero, false
	}
	p, ok := got[0].(T)
	return p, ok
}

// A parked connection with output still waiting (its client stopped
// reading) is ended the slow way, by a flusher and closeAfterOutput; what
// its client sends meanwhile must not make the poller end it a second time
// (a negative WaitGroup count before the fix).
func TestShutdownParkedWithOutputWaiting(t *testing.T) {
	t.Parallel()
	if !parkingSupported {
		t.Skip("nothing parks in this build (-tags roost_portable or not Linux)")
	}
	s, addr := startServer(t, Options{})
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("big", 0)
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	payload := make([]byte, 64<<10)
	// The subscriber reads nothing: the socket buffers fill, and the rest
	// waits in the broker (or is dropped past maxOutBuffered).
	for range 200 {
		pub.Send(&packet.Publish{Topic: "big", Payload: payload})
	}
	mqtttest.Eventually(t, 10*time.Second, func() bool {
		c := connOf(s, "sub")
		if c == nil || c.state.Load() != readerParked {
			return false
		}
		c.outMu.Lock()
		defer c.outMu.Unlock()
		return c.pending() > 0
	})
	pub.NC.Close()
	waitParked(t, s, 1)
	c := connOf(s, "sub")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	mqtttest.Eventually(t, 5*time.Second, func() bool { return c.state.Load() != readerParked })
	// The poller hears this while the flusher still waits.
	sub.Send(&packet.Pingreq{})
	sub.NC.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}
