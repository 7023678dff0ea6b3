package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// servedBroker is a `roost serve` run by a test.
type servedBroker struct {
	addr string // the first mqtt:// listener's address
	log  *syncBuffer
	stop func() int // ends it and returns its exit code; also run at cleanup
}

// startServe runs `roost serve args...` and waits for its first mqtt://
// listener to be ready.
func startServe(t *testing.T, args ...string) *servedBroker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &servedBroker{log: &syncBuffer{}}
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, append([]string{"serve"}, args...), stdio{out: io.Discard, err: b.log}) }()
	var once sync.Once
	code := 0
	b.stop = func() int {
		once.Do(func() { cancel(); code = <-exit })
		return code
	}
	t.Cleanup(func() { b.stop() })
	if !eventually(t, 10*time.Second, func() bool {
		m := readyLine.FindStringSubmatch(b.log.String())
		if m != nil {
			b.addr = m[1]
		}
		return m != nil
	}) {
		t.Fatalf("no listener ready line; log:\n%s", b.log.String())
	}
	return b
}

// writeAtomic replaces path's content through a temporary file and a
// rename, as an operator's editor or deployment tool would, with a new
// modification time even within one clock tick.
func writeAtomic(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// pahoClient connects a paho.mqtt.golang (MQTT 3.1.1) client; every
// message it receives, queued ones included, has its topic sent on got.
func pahoClient(t *testing.T, addr, id, user, pass string, clean bool, got chan<- string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second)
	if got != nil {
		opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() })
	}
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func waitToken(t *testing.T, what string, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

// Revoked access is revoked: QoS 1 messages queued for an offline
// persistent session while it could read them are not delivered once an
// ACL reload has taken read access away, the ones it may still read are,
// and the refused ones are gone from the store, not just skipped: with
// the old rules back after a restart they are still not delivered.
func TestServeRevokedReadDropsQueued(t *testing.T) {
	// Serial: it shortens authPollInterval, which every serve reads.
	// Restored after the brokers stop (cleanups run last in, first out):
	// their reload loops read it.
	saved := authPollInterval
	t.Cleanup(func() { authPollInterval = saved })
	authPollInterval = 20 * time.Millisecond
	cfg := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\nauth:\n  password_file: passwd\n  acl_file: acl\n")
	dir := filepath.Dir(cfg)
	writePasswords(t, filepath.Join(dir, "passwd"), "alice", "alice-pw", "bob", "bob-pw")
	acl := filepath.Join(dir, "acl")
	const both = "user alice\ntopic write #\n\nuser bob\ntopic read a/#\ntopic read b/#\n"
	writeAtomic(t, acl, both, time.Now())
	data := filepath.Join(dir, "data")
	b := startServe(t, "--config", cfg, "--data", data)

	bob := pahoClient(t, b.addr, "bob-1", "bob", "bob-pw", false, nil)
	waitToken(t, "subscribe", bob.SubscribeMultiple(map[string]byte{"a/#": 1, "b/#": 1}, nil))
	bob.Disconnect(100)

	alice := pahoClient(t, b.addr, "alice-1", "alice", "alice-pw", true, nil)
	for _, topic := range []string{"a/1", "b/1", "a/2", "b/2"} {
		waitToken(t, "publish "+topic, alice.Publish(topic, 1, false, "x"))
	}

	writeAtomic(t, acl, "user alice\ntopic write #\n\nuser bob\ntopic read a/#\n", time.Now().Add(time.Minute))
	if !eventually(t, 5*time.Second, func() bool { return strings.Contains(b.log.String(), "auth file reloaded") }) {
		t.Fatalf("no reload; log:\n%s", b.log.String())
	}

	got := make(chan string, 16)
	bob = pahoClient(t, b.addr, "bob-1", "bob", "bob-pw", false, got)
	// A message published now reaches bob after everything queued before
	// it: once it is in, whatever was going to be delivered has been.
	waitToken(t, "publish a/last", alice.Publish("a/last", 1, false, "x"))
	topics := receiveUntil(t, got, "a/last")
	if want := []string{"a/1", "a/2", "a/last"}; !slices.Equal(topics, want) {
		t.Errorf("bob received %q, want %q", topics, want)
	}
	if log := b.log.String(); !strings.Contains(log, `msg="dropping messages for session" client_id=bob-1 reason=not_authorized`) {
		t.Errorf("no drop logged for bob-1; log:\n%s", log)
	}
	bob.Disconnect(1000) // after acknowledging a/last
	if code := b.stop(); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, b.log.String())
	}

	// Restart with read access to b/# back: b/1 and b/2 must not return.
	writeAtomic(t, acl, both, time.Now().Add(2*time.Minute))
	b = startServe(t, "--config", cfg, "--data", data)
	got = make(chan string, 16)
	pahoClient(t, b.addr, "bob-1", "bob", "bob-pw", false, got)
	alice = pahoClient(t, b.addr, "alice-2", "alice", "alice-pw", true, nil)
	waitToken(t, "publish b/last", alice.Publish("b/last", 1, false, "x"))
	if topics := receiveUntil(t, got, "b/last"); slices.Contains(topics, "b/1") || slices.Contains(topics, "b/2") {
		t.Errorf("after the restart bob received %q: the refused b/1 and b/2 came back", topics)
	}
}

// receiveUntil collects topics from got up to and including last.
func receiveUntil(t *testing.T, got <-chan string, last string) []string {
	t.Helper()
	var topics []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case topic := <-got:
			topics = append(topics, topic)
			if topic == last {
				return topics
			}
		case <-timeout:
			t.Fatalf("%s not received; got %q", last, topics)
		}
	}
}
