package security

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
)

// mosquitto_pub gets its PUBACK and exits while the HTTP hook has not yet
// answered whether the mosquitto_sub subscribers may receive the message;
// they get it when it answers. Before, the publisher's connection asked
// the hook for each subscriber in turn before acknowledging.
func TestSlowHookDoesNotHoldMosquittoPub(t *testing.T) {
	pub, sub := need(t, "mosquitto_pub"), need(t, "mosquitto_sub")
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	var mu sync.Mutex
	asked := map[string]int{}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Action string }
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		asked[req.Action]++
		mu.Unlock()
		if req.Action == "receive" {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Write([]byte(`{"allow":true}`))
	}))
	t.Cleanup(func() { open(); svc.Close() })
	count := func(action string) int {
		mu.Lock()
		defer mu.Unlock()
		return asked[action]
	}
	hook := auth.NewHTTPHook(auth.HTTPHookOptions{URL: svc.URL, Timeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	s, addr := brokertest.Start(t, broker.Options{Authorizer: hook, Logger: slog.New(slog.DiscardHandler)})
	host, port, _ := net.SplitHostPort(addr)

	const subs = 3
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outs := make([]*strings.Builder, subs)
	cmds := make([]*exec.Cmd, subs)
	for i := range subs {
		outs[i] = &strings.Builder{}
		cmds[i] = exec.CommandContext(ctx, sub, "-h", host, "-p", port, "-V", "mqttv5", "-i", fmt.Sprintf("sub%d", i),
			"-t", "n/#", "-q", "1", "-C", "1")
		cmds[i].Stdout = outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	mqtttest.Eventually(t, 5*time.Second, func() bool { return s.Stats().Subscriptions == subs })

	pubCtx, pubCancel := context.WithTimeout(ctx, 5*time.Second)
	defer pubCancel()
	out, err := exec.CommandContext(pubCtx, pub, "-h", host, "-p", port, "-V", "mqttv5", "-i", "pub",
		"-t", "n/x", "-q", "1", "-m", "hello").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub did not finish while the hook held the receive checks: %v %s", err, out)
	}
	mqtttest.Eventually(t, 5*time.Second, func() bool { return count("receive") == subs })
	open()
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("mosquitto_sub %d: %v", i, err)
		}
		if got := strings.TrimSpace(outs[i].String()); got != "hello" {
			t.Errorf("mosquitto_sub %d printed %q, want hello", i, got)
		}
	}
}
