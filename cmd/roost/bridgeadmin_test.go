package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/bridgeset"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/packet"
)

// served is a roost serve run by a test.
type served struct {
	t      *testing.T
	base   string // http://addr of the admin API
	mqtt   string // mqtt://addr
	token  string
	stderr *syncBuffer
	stop   func() int
}

// serveFor runs roost serve with args plus an MQTT and an HTTP listener on
// free ports and the token "tok", until stop (or the test's end).
func serveFor(t *testing.T, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{t: t, token: "tok", stderr: new(syncBuffer)}
	exit := make(chan int, 1)
	args = append([]string{"serve", "--listen", "mqtt://127.0.0.1:0", "--http", "127.0.0.1:0", "--http-token", s.token}, args...)
	go func() { exit <- run(ctx, args, stdio{out: io.Discard, err: s.stderr}) }()
	var once sync.Once
	code := 0
	s.stop = func() int {
		once.Do(func() { cancel(); code = <-exit })
		return code
	}
	t.Cleanup(func() { s.stop() })
	if !eventually(t, 15*time.Second, func() bool {
		return httpReadyLine.MatchString(s.stderr.String()) && readyLine.MatchString(s.stderr.String())
	}) {
		t.Fatalf("roost serve not ready; log:\n%s", s.stderr.String())
	}
	s.base = "http://" + httpReadyLine.FindStringSubmatch(s.stderr.String())[1]
	s.mqtt = "mqtt://" + readyLine.FindStringSubmatch(s.stderr.String())[1]
	return s
}

// do sends an admin API request (with the token unless noAuth) and returns
// the status and body.
func (s *served) do(method, path, body string) (int, string) {
	return s.request(method, path, body, true)
}

func (s *served) request(method, path, body string, auth bool) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// bridges returns GET /api/bridges by name.
func (s *served) bridges() map[string]map[string]any {
	s.t.Helper()
	code, body := s.do("GET", "/api/bridges", "")
	var list []map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil {
		s.t.Fatalf("GET /api/bridges: %d %s", code, body)
	}
	out := map[string]map[string]any{}
	for _, b := range list {
		out[b["name"].(string)] = b
	}
	return out
}

// forwards publishes a QoS 1 message on topic at from and reports whether
// the subscriber in got receives it within 15 s.
func forwards(t *testing.T, from string, topic string, got *msgLog) bool {
	t.Helper()
	c, err := client.New(client.Options{Servers: []string{from}, ClientID: "pub-" + topic})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	if _, err := c.Publish(ctx, client.Message{Topic: topic, Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	return eventually(t, 15*time.Second, func() bool { return got.has(topic) })
}

// msgLog records the topics a subscriber received.
type msgLog struct {
	mu     sync.Mutex
	topics []string
}

func (l *msgLog) add(m *client.Message) {
	l.mu.Lock()
	l.topics = append(l.topics, m.Topic)
	l.mu.Unlock()
}

func (l *msgLog) has(topic string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tp := range l.topics {
		if tp == topic {
			return true
		}
	}
	return false
}

// subscribeAll subscribes a client of url to # and logs what it receives.
func subscribeAll(t *testing.T, url string, v packet.Version) *msgLog {
	t.Helper()
	l := new(msgLog)
	c, err := client.New(client.Options{Servers: []string{url}, Version: v, DefaultHandler: l.add})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	if _, err := c.Subscribe(ctx, client.Subscription{Filter: "#", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	return l
}

// Bridges added, changed and removed through the admin API, with a real
// mosquitto and then a second Roost as the remote: each change applies at
// once, bad requests get a 4xx naming the problem, a bridge of the
// configuration file cannot be changed there, and the API's bridges are
// kept across a restart (in the store's directory), the removal too.
func TestServeBridgesAdminAPI(t *testing.T) {
	t.Parallel()
	m := mosquittotest.Start(t)
	_, roost2 := brokertest.Start(t, broker.Options{})
	atMosq := subscribeAll(t, "mqtt://"+m.Addr, packet.V311)
	atRoost2 := subscribeAll(t, "mqtt://"+roost2, packet.V5)
	data := t.TempDir()
	cfg := writeConfig(t, fmt.Sprintf("bridges:\n  - {name: fromfile, addresses: ['mqtt://%s'], client_id: ff, backoff: {min: 50ms, max: 200ms}, topics: ['f/# out 1']}\n", roost2))
	s := serveFor(t, "--config", cfg, "--data", data)

	entry := func(addr, topic string) string {
		return fmt.Sprintf(`{"name": "cloud", "addresses": ["mqtt://%s"], "protocol": "3.1.1", "client_id": "edge", "username": "edge", "password": "pw",
			"backoff": {"min": "50ms", "max": "200ms"}, "topics": [%q]}`, addr, topic)
	}
	for _, c := range []struct {
		method, path, body string
		noAuth             bool
		code               int
		want               string
	}{
		{"POST", "/api/bridges", entry(m.Addr, "a/# out 1"), true, 401, "unauthorized"},
		{"POST", "/api/bridges", `{"name": "cloud", "addresses": ["mqtt://` + m.Addr + `"]}`, false, 400, "topics: at least one topic is required"},
		{"POST", "/api/bridges", `{"name": "cloud", "addresses": ["mqtt://x:1"], "topics": ["a/# sideways 1"]}`, false, 400, `direction \"sideways\"`},
		{"POST", "/api/bridges", `{"name": "cloud", "addresses": ["mqtt://x:1"], "topics": ["#"], "tls": {"ca": "ca.pem"}}`, false, 400, "give an absolute path"},
		{"POST", "/api/bridges", `{"name": "cloud", "addresses": ["mqtt://x:1"], "topics": ["#"], "client_id": "ff"}`, false, 400, `client id \"ff\" used twice`},
		{"POST", "/api/bridges", `{"name": "cloud", "bogus": 1}`, false, 400, `unknown key \"bogus\"`},
		{"POST", "/api/bridges", `{"name": "cloud", "addresses": ["mqtt://x:1"], "topics": ["#"], "protocol": "3.1.1", "password": "p"}`, false, 400, "no password without a username"},
		{"POST", "/api/bridges", `{"name": "cloud",`, false, 400, "not valid JSON"},
		{"POST", "/api/bridges", entry(m.Addr, "a/# out 1"), false, 201, `"name":"cloud"`},
		{"POST", "/api/bridges", entry(m.Addr, "a/# out 1"), false, 409, "exists"},
		{"PUT", "/api/bridges/fromfile", entry(m.Addr, "a/# out 1"), false, 409, "configuration file"},
		{"DELETE", "/api/bridges/fromfile", "", false, 409, "configuration file"},
		{"DELETE", "/api/bridges/nope", "", false, 404, "no such bridge"},
		{"PUT", "/api/bridges/other", entry(m.Addr, "a/# out 1"), false, 400, `name \"cloud\" in the body`},
	} {
		code, body := s.request(c.method, c.path, c.body, !c.noAuth)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s %.60s: %d %s, want %d and %q", c.method, c.path, c.body, code, body, c.code, c.want)
		}
	}
	if !forwards(t, s.mqtt, "a/1", atMosq) {
		t.Fatalf("a/1 not forwarded to mosquitto; log:\n%s", s.stderr.String())
	}
	if !forwards(t, s.mqtt, "f/1", atRoost2) {
		t.Fatalf("the file's bridge did not forward f/1; log:\n%s", s.stderr.String())
	}
	var detail struct {
		Source      string         `json:"source"`
		HasPassword bool           `json:"has_password"`
		Config      map[string]any `json:"config"`
	}
	code, body := s.do("GET", "/api/bridges/cloud", "")
	if code != 200 || json.Unmarshal([]byte(body), &detail) != nil || detail.Source != "api" || !detail.HasPassword ||
		detail.Config["password"] != nil || detail.Config["client_id"] != "edge" {
		t.Fatalf("GET /api/bridges/cloud: %d %s", code, body)
	}
	if b := s.bridges(); b["cloud"]["source"] != "api" || b["fromfile"]["source"] != "file" {
		t.Errorf("sources in /api/bridges: %v", b)
	}

	// Changed: another remote (the second Roost) and topic, password kept.
	if code, body := s.do("PUT", "/api/bridges/cloud", strings.Replace(entry(roost2, "b/# out 1"), `"password": "pw",`, "", 1)); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if !forwards(t, s.mqtt, "b/1", atRoost2) {
		t.Fatalf("b/1 not forwarded to the second Roost; log:\n%s", s.stderr.String())
	}
	saved, err := os.ReadFile(filepath.Join(data, bridgeset.APIBridgesFile))
	var file struct{ Bridges []map[string]any }
	if err != nil || json.Unmarshal(saved, &file) != nil || len(file.Bridges) != 1 || file.Bridges[0]["password"] != "pw" ||
		!strings.Contains(string(saved), "b/# out 1") {
		t.Fatalf("saved bridges: %v\n%s", err, saved)
	}
	if fi, err := os.Stat(filepath.Join(data, bridgeset.APIBridgesFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("saved bridges file mode: %v %v", fi.Mode(), err)
	}

	// A restart keeps the API's bridge.
	if code := s.stop(); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, s.stderr.String())
	}
	s = serveFor(t, "--config", cfg, "--data", data)
	if !eventually(t, 15*time.Second, func() bool { return s.bridges()["cloud"]["connected"] == true }) {
		t.Fatalf("bridge cloud not back after the restart: %v; log:\n%s", s.bridges(), s.stderr.String())
	}
	if !forwards(t, s.mqtt, "b/2", atRoost2) {
		t.Fatalf("b/2 not forwarded after the restart; log:\n%s", s.stderr.String())
	}

	// Removed: gone now and after the next restart, its session too.
	if code, body := s.do("DELETE", "/api/bridges/cloud", ""); code != 204 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if _, ok := s.bridges()["cloud"]; ok {
		t.Fatal("bridge cloud still listed after DELETE")
	}
	// The bridge's local connection is closed by the time DELETE answers;
	// its session ends when the broker has detached that connection.
	if !eventually(t, 10*time.Second, func() bool {
		code, _ := s.do("GET", "/api/clients/local.edge", "")
		return code == 404
	}) {
		code, body := s.do("GET", "/api/clients/local.edge", "")
		t.Errorf("local session of the removed bridge: %d %s", code, body)
	}
	s.stop()
	s = serveFor(t, "--config", cfg, "--data", data)
	if b := s.bridges(); len(b) != 1 || b["fromfile"] == nil {
		t.Fatalf("bridges after the restart: %v", b)
	}
}

// A bridge changed with "reload": "lazy" (mosquitto's bridge_reload_type
// lazy) keeps its old settings while its connection is up and takes the
// new ones when it drops (here: the remote Roost hands its session to
// another client of the same id).
func TestServeBridgeReloadLazy(t *testing.T) {
	t.Parallel()
	_, remote := brokertest.Start(t, broker.Options{})
	atRemote := subscribeAll(t, "mqtt://"+remote, packet.V5)
	s := serveFor(t, "--memory")
	entry := func(topic string) string {
		return fmt.Sprintf(`{"name": "lz", "addresses": ["mqtt://%s"], "client_id": "lz", "reload": "lazy",
			"backoff": {"min": "50ms", "max": "200ms"}, "topics": [%q]}`, remote, topic)
	}
	if code, body := s.do("POST", "/api/bridges", entry("a/# out 1")); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if !eventually(t, 15*time.Second, func() bool { return s.bridges()["lz"]["connected"] == true }) {
		t.Fatalf("not connected; log:\n%s", s.stderr.String())
	}
	if code, body := s.do("PUT", "/api/bridges/lz", entry("b/# out 1")); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if !strings.Contains(s.stderr.String(), "the change applies when its connection drops") {
		t.Fatalf("no lazy reload; log:\n%s", s.stderr.String())
	}
	if !forwards(t, s.mqtt, "a/1", atRemote) {
		t.Fatalf("the old settings stopped before the connection dropped; log:\n%s", s.stderr.String())
	}
	// The connection drops: a client with the bridge's id takes its session.
	c, err := client.New(client.Options{Servers: []string{"mqtt://" + remote}, ClientID: "lz", Reconnect: client.Backoff{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	c.Disconnect(ctx)
	if !eventually(t, 15*time.Second, func() bool {
		return strings.Count(s.stderr.String(), `msg="bridge started" bridge=lz`) == 2 && s.bridges()["lz"]["connected"] == true
	}) {
		t.Fatalf("not restarted after the drop; log:\n%s", s.stderr.String())
	}
	if !forwards(t, s.mqtt, "b/1", atRemote) {
		t.Fatalf("the new settings do not forward b/1; log:\n%s", s.stderr.String())
	}
}

// A bridge with start: lazy (mosquitto's start_type lazy) stays away from
// mosquitto while fewer than threshold messages wait for it, connects and
// forwards them all once threshold do, and disconnects after idle_timeout
// without traffic.
func TestServeBridgeStartLazy(t *testing.T) {
	t.Parallel()
	m := mosquittotest.Start(t)
	atMosq := subscribeAll(t, "mqtt://"+m.Addr, packet.V5)
	cfg := writeConfig(t, fmt.Sprintf(`bridges:
  - {name: lz, addresses: ['mqtt://%s'], client_id: lazy-edge, start: lazy, threshold: 3, idle_timeout: 1s,
     backoff: {min: 50ms, max: 200ms}, topics: ['z/# out 1']}
`, m.Addr))
	s := serveFor(t, "--config", cfg, "--memory")
	if !eventually(t, 10*time.Second, func() bool {
		return strings.Contains(s.stderr.String(), `msg="bridge dormant until messages wait for it (start lazy)" bridge=lz`)
	}) {
		t.Fatalf("no dormant bridge; log:\n%s", s.stderr.String())
	}
	pub, err := client.New(client.Options{Servers: []string{s.mqtt}, ClientID: "lazy-pub"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(ctx)
	send := func(topic string) {
		if _, err := pub.Publish(ctx, client.Message{Topic: topic, QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	send("z/1")
	send("z/2")
	if !eventually(t, 10*time.Second, func() bool { return s.bridges()["lz"]["queued"] == float64(2) }) {
		t.Fatalf("bridges: %v", s.bridges())
	}
	if b := s.bridges()["lz"]; b["connected"] != false || strings.Contains(m.Log.String(), "lazy-edge") {
		t.Fatalf("connected below the threshold: %v\n%s", b, m.Log.String())
	}
	send("z/3")
	if !eventually(t, 15*time.Second, func() bool { return atMosq.has("z/1") && atMosq.has("z/2") && atMosq.has("z/3") }) {
		t.Fatalf("not forwarded at the threshold; log:\n%s", s.stderr.String())
	}
	if !eventually(t, 15*time.Second, func() bool {
		return strings.Contains(s.stderr.String(), `msg="bridge idle; stopped until messages wait for it (start lazy)" bridge=lz`) &&
			s.bridges()["lz"]["connected"] == false
	}) {
		t.Fatalf("not stopped when idle; log:\n%s", s.stderr.String())
	}
}
