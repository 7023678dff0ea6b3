package consoletest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/cluster"
	"github.com/roost-mqtt/roost/httpapi"
	"github.com/roost-mqtt/roost/internal/bridgeset"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/config"
	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

const chromiumPath = "/usr/bin/chromium"

// event is one JSON line js/drive.js printed.
type event struct {
	Event   string `json:"event"`
	Message string `json:"message"`
	Text    string `json:"text"`
	Row     string `json:"row"`
	URL     string `json:"url"`
	Payload string `json:"payload"`
	Status  string `json:"status"`
}

func TestConsoleInBrowser(t *testing.T) {
	node := requirePeers(t)
	b := startBroker(t)

	// What the browser should find: a connected client and a retained
	// message; and a Go subscriber for what it publishes.
	b.client(t, "go-test-client", packet.V5)
	pub := b.client(t, "go-publisher", packet.V311)
	pub.Send(&packet.Publish{Topic: "home/kitchen/temperature", Retain: true, Payload: []byte(`{"celsius": 21.5}`)})
	sub := b.client(t, "go-subscriber", packet.V5)
	sub.Subscribe("console/test/#", 1)
	b.traffic(t)

	shots := os.Getenv("ROOST_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	cfg, _ := json.Marshal(map[string]any{
		"url": b.web, "token": b.token, "client": "go-test-client",
		"pubTopic": "console/test/from-browser", "payload": "hello from Chromium",
		"retainedTopic": "home/kitchen/temperature", "shots": shots, "dashboardWait": 12000,
		"bridgeRemote": b.remote,
	})
	events, stderr, err := runNode(t, node, "js/drive.js", string(cfg))
	byName := make(map[string]event)
	for _, ev := range events {
		byName[ev.Event] = ev
		if ev.Event == "pageerror" || ev.Event == "console" && strings.Contains(ev.Text, "rror") {
			t.Errorf("page: %+v", ev)
		}
	}
	if err != nil || byName["done"].Event == "" {
		t.Fatalf("drive.js: %v; error %q\nevents: %+v\nstderr: %s", err, byName["error"].Message, events, stderr)
	}
	if row := byName["client"].Row; !strings.Contains(row, "go-test-client") || !strings.Contains(row, "5.0") {
		t.Errorf("client row %q", row)
	}
	if u := byName["connected"].URL; u != b.ws {
		t.Errorf("MQTT page connected to %q, want %q", u, b.ws)
	}
	if p := byName["retained"].Payload; p != `{"celsius": 21.5}` {
		t.Errorf("retained payload %q", p)
	}
	if txt := byName["live"].Text; !strings.HasPrefix(txt, "sensors/") {
		t.Errorf("live view showed %q, want a sensors/ topic", txt)
	}
	if row := byName["bridge"].Row; !strings.Contains(row, "cloud") || !strings.Contains(row, "connected") || !strings.Contains(row, "from file") {
		t.Errorf("bridge row %q", row)
	}
	// The page added a bridge through the admin API (after the server
	// refused a first try, which the page showed), changed and removed it.
	if msg := byName["bridge-refused"].Message; !strings.Contains(msg, "topics: at least one topic is required") {
		t.Errorf("refused bridge: page showed %q", msg)
	}
	if row := byName["bridge-added"].Row; !strings.Contains(row, "edge") || !strings.Contains(row, "connected") {
		t.Errorf("added bridge row %q", row)
	}
	if txt := byName["bridge-edited"].Text; !strings.Contains(txt, "up2/#") {
		t.Errorf("edited bridge config %q", txt)
	}
	if byName["bridge-removed"].Event == "" {
		t.Error("the added bridge was not removed")
	}
	if row := byName["cluster"].Row; !strings.Contains(row, "console-1") || !strings.Contains(row, "up") {
		t.Errorf("cluster page's row of this node %q", row)
	}
	if row := byName["cluster-peer"].Row; !strings.Contains(row, "console-2") || !strings.Contains(row, "reachable") {
		t.Errorf("cluster page's row of the other node %q", row)
	}
	// innerText is as shown: the card labels in capitals.
	if txt := strings.ToLower(byName["cluster"].Text); !strings.Contains(txt, "meta leader\nconsole-") || !strings.Contains(txt, "reachable\n2 of 2") {
		t.Errorf("cluster page's cards %q: want 2 of 2 nodes reachable and a meta leader", txt)
	}

	// The Go subscriber got the browser's publish.
	for {
		p := sub.Next(5 * time.Second)
		if m, ok := p.(*packet.Publish); ok {
			if m.Topic != "console/test/from-browser" || string(m.Payload) != "hello from Chromium" || m.QoS != 1 {
				t.Fatalf("Go subscriber got %s %q QoS %d", m.Topic, m.Payload, m.QoS)
			}
			break
		}
	}
	for _, name := range []string{"console-dashboard.png", "console-client.png"} {
		if fi, err := os.Stat(filepath.Join(shots, name)); err != nil || fi.Size() < 10000 {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
}

// requirePeers fails (not skips) without node, the npm packages or
// Chromium: scripts/test.sh installs them.
func requirePeers(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: run ./scripts/test.sh, which installs the test peers (%v)", err)
	}
	if _, err := os.Stat("node_modules/playwright-core/package.json"); err != nil {
		t.Fatalf("playwright-core missing: run ./scripts/test.sh (npm ci --prefix test/console): %v", err)
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s missing: run ./scripts/test.sh, which installs Chromium (%v)", chromiumPath, err)
	}
	return node
}

// runNode runs a node script for at most 90 s and returns its events.
func runNode(t *testing.T, node string, args ...string) ([]event, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var events []event
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			ev = event{Event: "garbage", Text: sc.Text()}
		}
		events = append(events, ev)
	}
	return events, stderr.String(), err
}

// testBroker is a broker with a TCP and a ws:// listener and the HTTP
// handler, all on 127.0.0.1:0.
type testBroker struct {
	srv    *broker.Server
	tcp    string // host:port
	ws     string // ws://host:port/mqtt
	web    string // http://host:port/
	token  string
	remote string // mqtt:// URL of the bridges' remote broker
}

func startBroker(t *testing.T) *testBroker {
	t.Helper()
	logs := &mqtttest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// A real cluster for the Cluster page: this broker and a second one,
	// in this process, each with its engine (NATS needs a route for
	// JetStream's meta group; two nodes, hence unsafe: one replica).
	ports := []string{net.JoinHostPort("127.0.0.1", freePort(t)), net.JoinHostPort("127.0.0.1", freePort(t))}
	node := startNode(t, "console-1", ports[0], ports[1], log)
	srv, err := broker.New(broker.Options{Logger: log, SysInterval: -1, Cluster: node})
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	if err := node.Attach(srv); err != nil {
		t.Fatal(err)
	}
	node2 := startNode(t, "console-2", ports[1], ports[0], log)
	srv2, err := broker.New(broker.Options{Logger: log, SysInterval: -1, Cluster: node2})
	if err != nil {
		node2.Close()
		t.Fatal(err)
	}
	if err := node2.Attach(srv2); err != nil {
		t.Fatal(err)
	}
	// Clients with an id connect once the owner records are ready.
	eventually.True(t, 60*time.Second, func() bool {
		st := node.Stats()
		return st.Ownership.Ready && st.Retained.Ready
	}, "the cluster's owner records and retained stream are not ready")
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	tcp := listen()
	go srv.Serve(tcp)
	ws := listener.WebSocket(listen(), listener.WSOptions{Paths: []string{"/mqtt"}, Logger: log,
		MaxMessageSize: listener.WSMessageLimit(256 << 10)})
	go srv.Serve(ws)
	b := &testBroker{srv: srv, tcp: tcp.Addr().String(), ws: "ws://" + ws.Addr().String() + "/mqtt", token: "console-test-token"}

	// A bridge to a second broker, for the Bridges page, from a
	// configuration file's text; the page adds a second one through the
	// admin API (the same bridge set as roost serve's).
	_, remote := brokertest.Start(t, broker.Options{})
	b.remote = "mqtt://" + remote
	cfg, err := config.Parse("roost.yaml", []byte("bridges:\n  - {name: cloud, addresses: ['"+b.remote+"'], topics: ['sensors/# out 1']}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store.Data = t.TempDir()
	br, err := bridgeset.Start(context.Background(), cfg, srv, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(srv, httpapi.Options{Token: b.token, WebSockets: []string{b.ws}, Logger: log,
		Bridges: br.Stats, BridgeAdmin: br, Cluster: node.Stats})
	webLn := listen()
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(webLn)
	b.web = "http://" + webLn.Addr().String() + "/"
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		br.Close(ctx)
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := srv2.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		node.Close()
		node2.Close()
		if t.Failed() {
			t.Logf("broker logs:\n%s", logs.String())
		}
	})
	return b
}

func (b *testBroker) client(t *testing.T, id string, v packet.Version) *mqtttest.Client {
	t.Helper()
	c := mqtttest.Dial(t, b.tcp, v)
	c.Connect(&packet.Connect{ProtocolName: "MQTT", CleanStart: true, KeepAlive: 60, ClientID: id})
	return c
}

// traffic gives the dashboard something to draw: sensors joining one by
// one, each publishing a few QoS 0 messages a second, and a subscriber for
// them, until the test ends.
func (b *testBroker) traffic(t *testing.T) {
	sink := b.client(t, "dashboard-sink", packet.V5)
	sink.Subscribe("sensors/#", 0)
	go io.Copy(io.Discard, sink.NC)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(i) * 1500 * time.Millisecond):
			}
			// Raw writes: t.Fatal is for the test's goroutine only.
			nc, err := net.Dial("tcp", b.tcp)
			if err != nil {
				return
			}
			defer nc.Close()
			go io.Copy(io.Discard, nc) // CONNACK
			conn := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, KeepAlive: 60,
				ClientID: fmt.Sprintf("sensor-%d", i+1)}
			tick := time.NewTicker(time.Duration(60+40*i) * time.Millisecond)
			defer tick.Stop()
			var p packet.Packet = conn
			for n := 0; ; n++ {
				buf, _ := p.Encode(nil, packet.V311)
				if _, err := nc.Write(buf); err != nil {
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				p = &packet.Publish{Topic: fmt.Sprintf("sensors/%d/temperature", i+1), Payload: fmt.Appendf(nil, "%d", 20+n%5)}
			}
		}()
	}
}

// freePort returns a port the OS considers free on 127.0.0.1, for the
// cluster engine's route listener (which needs a fixed port).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// startNode starts the cluster engine of a node named name on listen, with
// peer as its one peer.
func startNode(t *testing.T, name, listen, peer string, log *slog.Logger) *cluster.Node {
	t.Helper()
	node, err := cluster.Start(cluster.Config{Node: name, Listen: listen, Peers: []string{peer},
		Replicas: 1, Unsafe: true, Data: t.TempDir()}, 1<<20, log)
	if err != nil {
		t.Fatal(err)
	}
	return node
}
