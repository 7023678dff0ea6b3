package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/brokertest"
)

// roost serve starts the bridges of its configuration, reports them in
// /api/bridges and /metrics, and stops them at exit.
func TestServeBridges(t *testing.T) {
	t.Parallel()
	_, remote := brokertest.Start(t, broker.Options{})
	cfg := writeConfig(t, fmt.Sprintf(`bridges:
  - name: up
    addresses: [mqtt://%s]
    backoff: {min: 50ms, max: 200ms}
    topics: ['x/# both 1']
`, remote))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--config", cfg, "--memory", "--listen", "mqtt://127.0.0.1:0",
			"--http", "127.0.0.1:0", "--http-token", "tok"}, stdio{out: io.Discard, err: &stderr})
	}()
	var base string
	if !eventually(t, 10*time.Second, func() bool {
		m := httpReadyLine.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil && strings.Contains(stderr.String(), `msg="bridge started" bridge=up`)
	}) {
		t.Fatalf("no bridge started; log:\n%s", stderr.String())
	}
	get := func(path string) string {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	if !eventually(t, 10*time.Second, func() bool { return strings.Contains(get("/api/bridges"), `"connected":true`) }) {
		t.Fatalf("/api/bridges: %s\nlog:\n%s", get("/api/bridges"), stderr.String())
	}
	if m := get("/metrics"); !strings.Contains(m, `roost_bridge_connected{bridge="up"} 1`) {
		t.Errorf("no bridge metric in /metrics")
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("exit %d; log:\n%s", code, stderr.String())
	}
}

// A bridge whose TLS CA file is missing stops roost serve from starting,
// with an error naming the bridge and the file.
func TestServeBridgeBadTLS(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "bridges:\n  - {name: up, addresses: ['mqtts://127.0.0.1:1'], topics: ['#'], tls: {ca: nope.pem}}\n")
	code, _, stderr := runCmd(t, "serve", "--config", cfg, "--memory", "--listen", "mqtt://127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, "bridge up: tls.ca") || !strings.Contains(stderr, "nope.pem") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

// SIGHUP applies the bridges of the edited file: an added bridge starts,
// a changed one restarts with its new topics, a removed one stops and its
// local session ends; a file that does not parse changes nothing.
func TestServeBridgesReload(t *testing.T) {
	// Serial: it sends SIGHUP to the test process, which would reload every
	// serve running beside it.
	_, remote := brokertest.Start(t, broker.Options{})
	entry := func(name, topic string) string {
		return fmt.Sprintf("  - {name: %s, addresses: ['mqtt://%s'], client_id: %s, backoff: {min: 50ms, max: 200ms}, topics: ['%s']}\n", name, remote, name, topic)
	}
	cfg := writeConfig(t, "bridges:\n"+entry("keep", "k/# out 1")+entry("change", "c1/# out 1")+entry("drop", "d/# out 1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--config", cfg, "--memory", "--listen", "mqtt://127.0.0.1:0", "--http", "127.0.0.1:0"},
			stdio{out: io.Discard, err: &stderr})
	}()
	if !eventually(t, 10*time.Second, func() bool {
		return strings.Count(stderr.String(), `msg="bridge started"`) == 3 && httpReadyLine.MatchString(stderr.String())
	}) {
		t.Fatalf("bridges not started; log:\n%s", stderr.String())
	}
	base := "http://" + httpReadyLine.FindStringSubmatch(stderr.String())[1]
	hup := func() {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// A broken file first: nothing changes.
	rewrite(t, cfg, "bridges:\n  - {name: x}\n")
	hup()
	if !eventually(t, 10*time.Second, func() bool { return strings.Contains(stderr.String(), "bridges not reloaded") }) {
		t.Fatalf("no reload error; log:\n%s", stderr.String())
	}
	rewrite(t, cfg, "bridges:\n"+entry("keep", "k/# out 1")+entry("change", "c2/# out 1")+entry("new", "n/# out 1"))
	hup()
	if !eventually(t, 10*time.Second, func() bool { return strings.Contains(stderr.String(), "bridges reloaded") }) {
		t.Fatalf("no reload; log:\n%s", stderr.String())
	}
	log := stderr.String()
	for _, want := range []string{`msg="bridge stopped" bridge=change session_ended=false`, `msg="bridge stopped" bridge=drop session_ended=true`,
		`msg="bridge started" bridge=new`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(log, `msg="bridge stopped" bridge=keep`) {
		t.Error("an unchanged bridge was restarted")
	}
	// The local sessions: drop's is gone, change's subscribes to c2 only.
	var subs struct {
		Subscriptions []struct {
			ClientID string `json:"client_id"`
			Filter   string `json:"filter"`
		} `json:"subscriptions"`
	}
	eventually(t, 10*time.Second, func() bool {
		res, err := http.Get(base + "/api/subscriptions")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		subs.Subscriptions = nil
		return json.NewDecoder(res.Body).Decode(&subs) == nil && len(subs.Subscriptions) == 3
	})
	var got []string
	for _, sub := range subs.Subscriptions {
		got = append(got, sub.ClientID+" "+sub.Filter)
	}
	if want := []string{"local.change c2/#", "local.keep k/#", "local.new n/#"}; !reflect.DeepEqual(got, want) {
		t.Errorf("local subscriptions %v, want %v", got, want)
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("exit %d; log:\n%s", code, stderr.String())
	}
}

func rewrite(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// roost bridge forwards between two brokers with prefixes, both ways, and
// exits 0 when interrupted; missing flags are a usage error.
func TestBridgeCommand(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"311", "31"} {
		t.Run(v, func(t *testing.T) { bridgeCommand(t, v) })
	}
}

func bridgeCommand(t *testing.T, version string) {
	_, a := brokertest.Start(t, broker.Options{})
	srvB, b := brokertest.Start(t, broker.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"bridge", "--from", "mqtt://" + a, "--to", "mqtt://" + b, "-V", version,
			"--topic", "x/# both 1 a/ b/"}, stdio{out: io.Discard, err: &stderr})
	}()
	atA, atB := make(chan string, 100), make(chan string, 100)
	ca, cb := mqttClient(t, "mqtt://"+a, atA), mqttClient(t, "mqtt://"+b, atB)
	await := func(c *client.Client, pub string, ch chan string, want string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond) // until the bridge is up
		defer tick.Stop()
		for {
			c.Publish(ctx, client.Message{Topic: pub, QoS: 1})
			select {
			case got := <-ch:
				if got == want {
					return
				}
			case <-tick.C:
			case <-deadline:
				t.Fatalf("%s never arrived as %s; log:\n%s", pub, want, stderr.String())
			}
		}
	}
	await(ca, "a/x/1", atB, "b/x/1")
	await(cb, "b/x/2", atA, "a/x/2")
	want := map[string]string{"311": "3.1.1", "31": "3.1"}[version]
	var got []string
	for _, c := range srvB.Clients() {
		if strings.HasPrefix(c.ClientID, "roost-bridge-") {
			got = append(got, c.Protocol)
		}
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("the bridge's sessions on --to speak %v, want one %s", got, want)
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("exit %d; log:\n%s", code, stderr.String())
	}
	if code, _, stderr := runCmd(t, "bridge", "--from", "mqtt://"+a); code != 2 || !strings.Contains(stderr, "required") {
		t.Errorf("without --to: exit %d, %s", code, stderr)
	}
}

// mqttClient connects a client that sends every topic it receives to ch.
func mqttClient(t *testing.T, url string, ch chan string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Servers: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	if _, err := c.Subscribe(ctx, client.Subscription{Filter: "#", QoS: 1, Handler: func(m *client.Message) {
		select {
		case ch <- m.Topic:
		default:
		}
	}}); err != nil {
		t.Fatal(err)
	}
	return c
}
