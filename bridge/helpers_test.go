package bridge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/packet"
)

// testCtx is a context bounded for one test.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually retries fn until it returns nil or d passes.
func eventually(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startRoost runs a Roost broker for the test and returns it with its URL.
func startRoost(t *testing.T) (*broker.Server, string) {
	srv, addr := brokertest.Start(t, broker.Options{MaxQueued: 100000})
	return srv, "mqtt://" + addr
}

// newClient connects a client lib client, disconnected at cleanup.
func newClient(t *testing.T, url string, v packet.Version, mod func(*client.Options)) *client.Client {
	t.Helper()
	o := client.Options{Servers: []string{url}, Version: v, ConnectTimeout: 5 * time.Second,
		Reconnect: client.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}}
	if mod != nil {
		mod(&o)
	}
	c, err := client.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Connect %s: %v", url, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// startBridge runs a bridge on srv, closed at cleanup.
func startBridge(t *testing.T, srv *broker.Server, cfg Config) *Bridge {
	t.Helper()
	if cfg.Backoff.Min == 0 {
		cfg.Backoff = client.Backoff{Min: 50 * time.Millisecond, Max: 300 * time.Millisecond}
	}
	b, err := New(srv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(testCtx(t, 10*time.Second)); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// inbox collects received messages.
type inbox struct {
	mu   sync.Mutex
	msgs []client.Message
}

func (in *inbox) handle(m *client.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, *m)
	in.mu.Unlock()
}

func (in *inbox) all() []client.Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.msgs)
}

// topics returns the topics received, in order.
func (in *inbox) topics() []string {
	var out []string
	for _, m := range in.all() {
		out = append(out, m.Topic)
	}
	return out
}

// waitFor waits until a message on topic has arrived.
func (in *inbox) waitFor(t *testing.T, topic string) client.Message {
	t.Helper()
	var got client.Message
	eventually(t, 15*time.Second, func() error {
		for _, m := range in.all() {
			if m.Topic == topic {
				got = m
				return nil
			}
		}
		return fmt.Errorf("no message on %s yet; have %v", topic, in.topics())
	})
	return got
}

// count returns how many messages arrived on topic.
func (in *inbox) count(topic string) int {
	n := 0
	for _, m := range in.all() {
		if m.Topic == topic {
			n++
		}
	}
	return n
}

func subscribe(t *testing.T, c *client.Client, filter string, in *inbox) {
	t.Helper()
	if _, err := c.Subscribe(testCtx(t, 10*time.Second), client.Subscription{Filter: filter, QoS: 1, Handler: in.handle}); err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, c *client.Client, topic, payload string, retain bool) {
	t.Helper()
	if _, err := c.Publish(testCtx(t, 10*time.Second), client.Message{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: retain}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// hasSub reports whether srv holds a subscription to filter.
func hasSub(srv *broker.Server, filter string) error {
	for _, s := range srv.Subscriptions() {
		if s.Filter == filter {
			return nil
		}
	}
	return fmt.Errorf("no subscription to %q yet", filter)
}
