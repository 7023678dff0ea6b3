package broker

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A panic in the Authorizer while $SYS figures go out (a background loop,
// no connection to close) is logged and the broker goes on: the loop
// panics at every tick after the first and the subscriber's connection
// still serves.
func TestSysPanicRecovered(t *testing.T) {
	t.Parallel()
	var sysPanics atomic.Int32 // recovered in publishSys, the loop's own
	var armed atomic.Bool      // once the SUBSCRIBE has been handled whole
	authz := AuthorizerFunc(func(_ context.Context, _ *ClientInfo, act Action, topic string) bool {
		if armed.Load() && act == ActionReceive && strings.HasPrefix(topic, "$SYS/") {
			panic("authorizer bug")
		}
		return true
	})
	s, err := New(Options{Authorizer: authz, SysInterval: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.onPanic = func(any) {
		// Other recovered panics (a queued figure's check as it leaves
		// the queue, recovered in allowReceive) do not show that the
		// loop survived its own.
		if strings.Contains(string(debug.Stack()), ").publishSys(") {
			sysPanics.Add(1)
		}
	}
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	c := dial(t, ln.Addr().String(), packet.V311)
	defer c.NC.Close() // before Shutdown, which would wait for it to go
	c.Connect(&packet.Connect{ClientID: "sys", CleanStart: true})
	// Armed only after the connection has handled the SUBSCRIBE whole:
	// its retained figures are offered in the connection's goroutine,
	// where a panic rightly closes the connection (conn.run), and a tick
	// may deliver a figure before them, even before the SUBACK (section
	// 3.8.4 permits it). Packets are handled in order, so the PINGRESP
	// to a PINGREQ sent after the SUBSCRIBE says it has been.
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "$SYS/#"}}})
	c.Send(&packet.Pingreq{})
	readUntil[*packet.Suback](t, c)
	readUntil[*packet.Pingresp](t, c)
	armed.Store(true)
	// Two ticks: the loop went on after its first panic. The bound is
	// 500 ticks, for a machine so busy that the ticker lags.
	mqtttest.Eventually(t, 10*time.Second, func() bool { return sysPanics.Load() >= 2 })
	// Still serving.
	c.Send(&packet.Pingreq{})
	readUntil[*packet.Pingresp](t, c)
}

// readUntil reads c's packets until one of type P, which it returns; only
// PUBLISH packets (figures) may come before it.
func readUntil[P packet.Packet](t *testing.T, c *mqtttest.Client) P {
	t.Helper()
	for {
		switch p := c.Next(5 * time.Second).(type) {
		case P:
			return p
		case *packet.Publish:
		default:
			var want P
			t.Fatalf("want %T, got %v", want, p)
		}
	}
}
