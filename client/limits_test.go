package client

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// QoS 1 publishes made while the broker is down survive the process (a new
// Client with the same FileStore sends them) and arrive once it is up.
func TestFileStoreAcrossRestart(t *testing.T) {
	t.Parallel()
	tg := startRoost(t, broker.Options{})
	ctx := testCtx(t, 20*time.Second)
	var in inbox
	sub := newClient(t, tg.URL(), packet.V5, func(o *Options) { o.KeepSession = true; o.ClientID = "fs-sub" })
	if _, err := sub.Subscribe(ctx, Subscription{Filter: "fs/#", QoS: 1, Handler: in.handle}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	tg.Down(t)
	first, err := New(Options{Servers: []string{tg.URL()}, ClientID: "fs-pub", Store: st, Reconnect: fastReconnect})
	if err != nil {
		t.Fatal(err)
	}
	first.Start()
	shortCtx := testCtx(t, 300*time.Millisecond)
	for i := range 3 {
		go first.Publish(shortCtx, Message{Topic: "fs/" + strconv.Itoa(i), QoS: 1, Payload: []byte("kept")})
	}
	eventually(t, 5*time.Second, func() error {
		recs, _ := st.Load()
		if len(recs) != 3 {
			return fmt.Errorf("%d stored", len(recs))
		}
		return nil
	})
	first.Disconnect(ctx) // the "process" ends with the messages unsent
	<-first.Done()

	tg.Up(t)
	st2, _ := NewFileStore(dir)
	newClient(t, tg.URL(), packet.V5, func(o *Options) { o.ClientID = "fs-pub"; o.Store = st2 })
	var topics []string
	for _, m := range in.waitN(t, 3, 10*time.Second) {
		topics = append(topics, m.Topic+"="+string(m.Payload))
	}
	slices.Sort(topics)
	if got := strings.Join(topics, " "); got != "fs/0=kept fs/1=kept fs/2=kept" {
		t.Errorf("received %s", got)
	}
	eventually(t, 5*time.Second, func() error {
		if recs, _ := st2.Load(); len(recs) != 0 {
			return fmt.Errorf("%d records left after PUBACK", len(recs))
		}
		return nil
	})
}

// The server's Receive Maximum, Maximum Packet Size and Topic Alias Maximum
// are honoured: Roost disconnects a client that exceeds the first (0x93)
// or uses an alias above the last (0x94).
func TestServerLimits(t *testing.T) {
	t.Parallel()
	tg := startRoost(t, broker.Options{ReceiveMaximum: 3, MaxPacketSize: 2048, TopicAliasMaximum: 2})
	ctx := testCtx(t, 20*time.Second)
	var in inbox
	sub := newClient(t, tg.URL(), packet.V5, nil)
	if _, err := sub.Subscribe(ctx, Subscription{Filter: "lim/#", QoS: 2, Handler: in.handle}); err != nil {
		t.Fatal(err)
	}
	var downs sync.Map
	pub := newClient(t, tg.URL(), packet.V5, func(o *Options) {
		o.TopicAliases = true
		o.OnConnectionDown = func(_ *Client, err error) { downs.Store(fmt.Sprint(err), true) }
	})
	var wg sync.WaitGroup
	const n = 60
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp := "lim/" + strconv.Itoa(i%4) // 4 topics, 2 aliases
			if _, err := pub.Publish(ctx, Message{Topic: tp, QoS: 2, Payload: []byte(strconv.Itoa(i))}); err != nil {
				t.Errorf("publish %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if _, err := pub.Publish(ctx, Message{Topic: "lim/big", QoS: 1, Payload: make([]byte, 4096)}); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("big publish: %v, want ErrPacketTooLarge", err)
	}
	got := in.waitN(t, n, 10*time.Second)
	for _, m := range got {
		i, _ := strconv.Atoi(string(m.Payload))
		if m.Topic != "lim/"+strconv.Itoa(i%4) {
			t.Errorf("payload %s arrived on %s", m.Payload, m.Topic)
		}
	}
	downs.Range(func(k, _ any) bool { t.Errorf("connection went down: %v", k); return true })
}
