package interop

import (
	"context"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
)

// The keep-alive cap (limits.max_keep_alive, broker.Options.MaxKeepAlive)
// as mosquitto_sub sees it, next to mosquitto's own max_keepalive. An MQTT
// 5 mosquitto_sub asking for more than the cap connects to both brokers
// (they answer with Server Keep Alive). An MQTT 3.1.1 one is refused by
// Roost with return code 2, which mosquitto_sub reports as "identifier
// rejected", as newer mosquitto releases refuse it; Debian's mosquitto
// 2.0.11 applies max_keepalive to MQTT 5 clients only and accepts it, which
// this test logs rather than requires (docs/config.md says so).
func TestMaxKeepAliveWithMosquittoSub(t *testing.T) {
	sub := requireTool(t, "mosquitto_sub")
	const limit = 30
	roost := startRoostCapped(t, limit)
	mosq := mosquittotest.Start(t, "max_keepalive "+strconv.Itoa(limit))
	for _, tc := range []struct {
		version string
		keep    int
		refused bool // by Roost
	}{
		{"mqttv5", 120, false},
		{"mqttv5", 20, false},
		{"mqttv311", 120, true},
		{"mqttv311", 20, false},
		{"mqttv31", 120, true},
	} {
		name := tc.version + "/k" + strconv.Itoa(tc.keep)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out := runSub(t, sub, roost, tc.version, tc.keep)
			connected := strings.Contains(out, "received CONNACK (0)")
			t.Logf("Roost: %s", strings.TrimSpace(out))
			switch {
			case tc.refused && (connected || !strings.Contains(strings.ToLower(out), "identifier rejected")):
				t.Fatalf("Roost: want the connection refused as identifier rejected, mosquitto_sub said:\n%s", out)
			case !tc.refused && !connected:
				t.Fatalf("Roost: want CONNACK (0), mosquitto_sub said:\n%s", out)
			}
			mout := runSub(t, sub, mosq.Addr, tc.version, tc.keep)
			t.Logf("mosquitto (max_keepalive %d) for %s: connected=%v", limit, name, strings.Contains(mout, "received CONNACK (0)"))
		})
	}
}

// startRoostCapped serves a Roost broker with MaxKeepAlive on 127.0.0.1:0
// for t and returns its address.
func startRoostCapped(t *testing.T, limit uint16) string {
	t.Helper()
	logs := newLogSink(t, "roost")
	srv, err := broker.New(broker.Options{MaxKeepAlive: limit, SysInterval: -1,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// runSub runs mosquitto_sub once against addr: it connects, subscribes and
// gives up after a second without messages. It returns its debug output.
func runSub(t *testing.T, sub, addr, version string, keep int) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-V", version, "-k", strconv.Itoa(keep),
		"-i", "ka-"+strconv.Itoa(keep)+"-"+version, "-t", "ka/x", "-d", "-W", "1").CombinedOutput()
	return string(out)
}
