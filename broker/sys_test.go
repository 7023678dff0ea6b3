package broker

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A panic in the Authorizer while $SYS figures go out (a background loop,
// no connection to close) is logged and the broker goes on.
func TestSysPanicRecovered(t *testing.T) {
	var panics atomic.Int32
	var armed atomic.Bool // after the retained figures reached the subscriber
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
	s.onPanic = func(any) { panics.Add(1) }
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	c := dial(t, ln.Addr().String(), packet.V311)
	c.Connect(&packet.Connect{ClientID: "sys", CleanStart: true})
	c.Subscribe("$SYS/#", 0)
	c.Next(5 * time.Second) // a retained figure
	armed.Store(true)
	mqtttest.Eventually(t, 5*time.Second, func() bool { return panics.Load() >= 2 })
	// Still serving.
	c.Send(&packet.Pingreq{})
	for {
		p := c.Next(5 * time.Second) // figures sent before the panics first
		if _, ok := p.(*packet.Pingresp); ok {
			break
		}
		if _, ok := p.(*packet.Publish); !ok {
			t.Fatalf("want PINGRESP, got %v", p)
		}
	}
}
