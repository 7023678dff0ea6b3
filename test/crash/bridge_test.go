package crash

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	rclient "github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
	"github.com/roost-mqtt/roost/packet"
)

// Roost bridges "load/#" to a mosquitto that is down. A publisher sends
// QoS 1 messages, which Roost acknowledges and queues in the bridge's
// session; Roost is then killed with SIGKILL, started again on its data
// directory, and mosquitto is started: every acknowledged message reaches
// the subscriber on mosquitto.
func TestBridgeQueueSurvivesKill(t *testing.T) {
	m := mosquittotest.Start(t, "persistence true", "max_queued_messages 100000")
	mURL := "mqtt://" + m.Addr
	var mu sync.Mutex
	seen := map[string]int{}
	sink, err := rclient.New(rclient.Options{Servers: []string{mURL}, ClientID: "sink", KeepSession: true,
		Reconnect: rclient.Backoff{Min: 50 * time.Millisecond, Max: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sink.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer sink.Disconnect(context.Background())
	if _, err := sink.Subscribe(ctx, rclient.Subscription{Filter: "site/#", QoS: 1, Handler: func(msg *rclient.Message) {
		mu.Lock()
		seen[msg.Topic]++
		mu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	m.Stop(syscall.SIGTERM) // the sink's session stays in mosquitto's persistence file

	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	conf := brokerConfig() + fmt.Sprintf(`bridges:
  - name: up
    addresses: [%s]
    client_id: crash-bridge
    backoff: {min: 100ms, max: 500ms}
    topics: ['load/# out 1 "" site/']
`, mURL)
	if err := os.WriteFile(cfg+".tmp", []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cfg+".tmp", cfg); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	b := start(t, cfg, data, rc.TCP)
	pub, _ := mustDial(t, b.addr, &packet.Connect{ClientID: "pub", CleanStart: true})
	const n = 300
	for i := range n {
		if err := pub.send(&packet.Publish{Topic: fmt.Sprintf("load/%d", i), QoS: 1, PacketID: uint16(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	for acked := 0; acked < n; {
		pub.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		p, err := pub.r.ReadPacket(pub.v)
		if err != nil {
			t.Fatalf("after %d PUBACKs: %v\n%s", acked, err, b.output())
		}
		if ack, ok := p.(*packet.Puback); ok && ack.ReasonCode < 0x80 {
			acked++
		}
	}
	b.kill(t) // every message acknowledged, none forwarded: the remote is down
	b = start(t, cfg, data, rc.TCP)
	defer b.stop(t)
	m.Restart(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := -1
		for i := range n {
			if seen[fmt.Sprintf("site/load/%d", i)] == 0 {
				missing = i
				break
			}
		}
		got := len(seen)
		mu.Unlock()
		if missing < 0 {
			t.Logf("all %d acknowledged messages arrived after the kill", n)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages arrived; site/load/%d missing\nroost:\n%s", got, n, missing, b.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
