package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/internal/roostbin"
	"github.com/roost-mqtt/roost/packet"
)

var (
	soakDuration = flag.Duration("soak.duration", 30*time.Second, "how long the clients stay connected")
	// A keep alive of 4 s (the broker's limit 6 s) and a connect timeout
	// of 5 s: the 30 s short form still outlasts the connect timeout and
	// five keep-alive periods, and a client starved of CPU for a second
	// on a loaded machine is not mistaken for a dead one (with 2 s, whose
	// limit leaves a margin of 1 s, that happened at a load average of 20).
	soakKeepAlive  = flag.Int("soak.keepalive", 4, "the clients' keep alive, seconds (the broker ends a client after 1.5x)")
	connectTimeout = flag.Duration("soak.connect-timeout", 5*time.Second, "the broker's limits.connect_timeout")
	soakInterval   = flag.Duration("soak.interval", 200*time.Millisecond, "how often a busy client publishes")
	soakResults    = flag.String("soak.results", "", "write a Markdown summary to this file")
)

var roostBin string

func TestMain(m *testing.M) {
	flag.Parse()
	bin, err := roostbin.Path(raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roostBin = bin
	code := m.Run()
	roostbin.Cleanup()
	os.Exit(code)
}

// jsClient is one entry of js/soak.js's client list.
type jsClient struct {
	ID              string `json:"id"`
	URL             string `json:"url"`
	Role            string `json:"role"`
	ProtocolVersion int    `json:"protocolVersion"`
	Keepalive       int    `json:"keepalive"`
	IntervalMs      int    `json:"intervalMs"`
	transport       string
}

// TestSoak holds real clients of every kind on every transport for
// -soak.duration; see the package doc.
func TestSoak(t *testing.T) {
	for _, tool := range []string{"node", "mosquitto_sub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run ./scripts/test.sh, which installs it", tool)
		}
	}
	jsDir, err := filepath.Abs("../interop/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(jsDir, "mqtt")); err != nil {
		t.Fatalf("mqtt.js is missing in test/interop: run ./scripts/test.sh (npm ci): %v", err)
	}

	b := startRoost(t, *connectTimeout)
	ka := *soakKeepAlive
	interval := *soakInterval
	logStart := len(b.logs.String())

	// The watcher sees every will: each one is a client the broker dropped.
	var willMu sync.Mutex
	var wills []string
	watcher, err := client.New(client.Options{
		Servers: []string{b.transports[0].url("")}, ClientID: "soak-watcher", KeepAlive: time.Duration(ka) * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx0, cancel0 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel0()
	if err := watcher.Connect(ctx0); err != nil {
		t.Fatal(err)
	}
	defer watcher.Disconnect(context.Background())
	if _, err := watcher.Subscribe(ctx0, client.Subscription{Filter: "soak/will/#", QoS: 1, Handler: func(m *client.Message) {
		willMu.Lock()
		wills = append(wills, m.Topic)
		willMu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	rssStart := b.rssKiB()

	// The test ends the run itself (stop), after reading the broker's log
	// for drops: the clients' own goodbyes must not count as drops.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	runEnd := time.After(*soakDuration)
	var mu sync.Mutex
	var results []result
	add := func(r result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}
	var wg sync.WaitGroup

	// mqtt.js: one process for the ordinary transports, one per client for
	// the mini program transport (it holds one socket per process).
	var js []jsClient
	for _, tr := range b.transports {
		for _, role := range []string{"busy", "idle"} {
			v := 5
			if role == "idle" {
				v = 4
			}
			js = append(js, jsClient{ID: "js-" + role + "-" + tr.name, URL: tr.url(""), Role: role,
				ProtocolVersion: v, Keepalive: ka, IntervalMs: int(interval / time.Millisecond), transport: tr.name})
		}
	}
	runJS(t, &wg, add, b, jsDir, "mqtt.js", false, js)
	for _, tr := range b.transports[2:4] { // ws and wss, as wx and wxs
		scheme := map[string]string{"ws": "wx", "wss": "wxs"}[tr.scheme]
		for _, role := range []string{"busy", "idle"} {
			c := jsClient{ID: "wx-" + role + "-" + scheme, URL: tr.url(scheme), Role: role, ProtocolVersion: 4,
				Keepalive: ka, IntervalMs: int(interval / time.Millisecond), transport: scheme}
			runJS(t, &wg, add, b, jsDir, "mqtt.js wx", true, []jsClient{c})
		}
	}

	// Go clients: paho.golang (MQTT 5) and Roost's client (busy 5.0, idle
	// 3.1.1) on every transport.
	var goClients []goClient
	for _, tr := range b.transports {
		for _, role := range []string{"busy", "idle"} {
			goClients = append(goClients, pahoClient{tr: tr, caFile: b.caFile, id: "paho-" + role + "-" + tr.name,
				role: role, keepAlive: uint16(ka), interval: interval})
			v := packet.V5
			if role == "idle" {
				v = packet.V311
			}
			goClients = append(goClients, roostClient{tr: tr, caFile: b.caFile, id: "roost-" + role + "-" + tr.name,
				role: role, version: v, keepAlive: time.Duration(ka) * time.Second, interval: interval})
		}
	}
	for _, c := range goClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			add(c.run(ctx))
		}()
	}

	// mosquitto_sub on TCP and TLS, directly and behind the PROXY protocol,
	// each fed by a publisher so it is busy receiving.
	for _, tr := range b.transports {
		if strings.HasPrefix(tr.scheme, "ws") {
			continue // mosquitto_sub has no WebSocket client
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			add(runMosquittoSub(ctx, b, tr, ka, interval))
		}()
	}

	<-runEnd
	logEnd := len(b.logs.String())
	rssEnd := b.rssKiB()
	stop()
	wg.Wait()

	willMu.Lock()
	gotWills := append([]string(nil), wills...)
	willMu.Unlock()
	drops := b.dropLines(logStart, logEnd)

	sort.Slice(results, func(i, j int) bool {
		if results[i].Peer != results[j].Peer {
			return results[i].Peer < results[j].Peer
		}
		return results[i].ID < results[j].ID
	})
	wantClients := len(js) + 4 + len(goClients) + 4
	if len(results) != wantClients {
		t.Errorf("%d client results, want %d", len(results), wantClients)
	}
	minSent := int(*soakDuration / interval / 2)
	for _, r := range results {
		var bad []string
		if r.Connects != 1 {
			bad = append(bad, fmt.Sprintf("%d connects", r.Connects))
		}
		if r.Closes != 0 {
			bad = append(bad, fmt.Sprintf("%d connections lost", r.Closes))
		}
		if len(r.ServerDis) != 0 {
			bad = append(bad, fmt.Sprintf("server DISCONNECT %v", r.ServerDis))
		}
		if len(r.Errors) != 0 {
			bad = append(bad, fmt.Sprintf("errors %q", r.Errors))
		}
		if r.Missing != 0 || r.Dups != 0 {
			bad = append(bad, fmt.Sprintf("%d of %d messages missing, %d duplicates", r.Missing, r.Sent, r.Dups))
		}
		if r.Role == "busy" && r.Sent < minSent {
			bad = append(bad, fmt.Sprintf("only %d messages sent (want at least %d)", r.Sent, minSent))
		}
		if len(bad) > 0 {
			t.Errorf("%s %s (%s): %s", r.Peer, r.ID, r.Transport, strings.Join(bad, "; "))
		}
	}
	if len(gotWills) > 0 {
		t.Errorf("wills published (clients dropped by the broker): %q", gotWills)
	}
	if len(drops) > 0 {
		t.Errorf("the broker dropped clients during the run:\n%s", strings.Join(drops, "\n"))
	}
	summary := summarize(results, gotWills, drops, rssStart, rssEnd, wantClients)
	t.Log("\n" + summary)
	if *soakResults != "" {
		writeFile(t, *soakResults, []byte(summary))
	}
}

// runJS starts js/soak.js with clients and adds their results when it
// ends.
func runJS(t *testing.T, wg *sync.WaitGroup, add func(result), b *roostProc, jsDir, peer string, wx bool, clients []jsClient) {
	t.Helper()
	cfg, _ := json.Marshal(map[string]any{"durationMs": int(*soakDuration / time.Millisecond), "clients": clients, "wx": wx})
	cmd := exec.Command("node", "js/soak.js", string(cfg))
	cmd.Env = append(os.Environ(), "NODE_PATH="+jsDir, "NODE_EXTRA_CA_CERTS="+b.caFile)
	stderr := new(mqtttest.LogBuffer)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	transports := map[string]string{}
	for _, c := range clients {
		transports[c.ID] = c.transport
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := map[string]bool{}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r result
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				continue
			}
			r.Peer, r.Transport = peer, transports[r.ID]
			seen[r.ID] = true
			add(r)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var werr error
		select {
		case werr = <-done:
		case <-time.After(*soakDuration + 60*time.Second):
			cmd.Process.Kill()
			werr = fmt.Errorf("node did not exit")
		}
		for _, c := range clients {
			if !seen[c.ID] {
				add(result{Peer: peer, ID: c.ID, Transport: c.transport, Role: c.Role,
					Errors: []string{fmt.Sprintf("no result from node (%v): %s", werr, stderr)}})
			}
		}
	}()
}

// runMosquittoSub runs mosquitto_sub on tr, subscribed to a topic a Roost
// client publishes a numbered QoS 1 message to every interval, and checks
// that it printed every number from its first on, once and in order.
func runMosquittoSub(ctx context.Context, b *roostProc, tr transport, ka int, interval time.Duration) result {
	id := "mosq-sub-" + tr.name
	v := "mqttv311"
	if tr.tls() {
		v = "mqttv5"
	}
	t := newTally("mosquitto_sub", id, tr, "busy")
	host, port, _ := strings.Cut(tr.addr, ":")
	topic := "soak/mosq/" + id
	// mosquitto_sub takes no keep alive under 5 s. It ends after count
	// messages with a plain DISCONNECT; ended by a signal instead, an MQTT
	// 5 mosquitto_sub disconnects with 0x04 and so asks for its will.
	count := int(*soakDuration/interval) + 20
	args := []string{"-h", host, "-p", port, "-t", topic, "-q", "1", "-k", strconv.Itoa(max(ka, 5)), "-i", id, "-V", v,
		"-C", strconv.Itoa(count), "-d", // -d: the test sees the SUBACK
		"--will-topic", "soak/will/" + id, "--will-payload", "dropped", "--will-qos", "1"}
	if tr.tls() {
		args = append(args, "--cafile", b.caFile)
	}
	// stdbuf: mosquitto_sub's -d lines go through stdio, which a pipe
	// would buffer until exit.
	cmd := exec.Command("stdbuf", append([]string{"-oL", "mosquitto_sub"}, args...)...)
	stderr := new(mqtttest.LogBuffer)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.note(func(*result) { t.errorf("%v", err) })
		return t.result()
	}
	if err := cmd.Start(); err != nil {
		t.note(func(*result) { t.errorf("%v", err) })
		return t.result()
	}
	var lmu sync.Mutex
	var lines []int
	readDone := make(chan struct{})
	subscribed := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		var once sync.Once
		for sc.Scan() {
			l := sc.Text()
			if strings.Contains(l, "received SUBACK") {
				once.Do(func() { close(subscribed) })
			}
			n, err := strconv.Atoi(l)
			if err != nil {
				continue // -d's lines about packets
			}
			lmu.Lock()
			lines = append(lines, n)
			lmu.Unlock()
		}
	}()
	feeder, err := client.New(client.Options{Servers: []string{b.transports[0].url("")}, ClientID: "mosq-feed-" + tr.name,
		KeepAlive: time.Duration(ka) * time.Second})
	last := -1
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = feeder.Connect(cctx)
		cancel()
	}
	if err == nil {
		select {
		case <-subscribed:
		case <-readDone:
			err = fmt.Errorf("mosquitto_sub exited before subscribing: %s", stderr)
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("mosquitto_sub did not subscribe within 30 s")
		}
	}
	if err != nil {
		t.note(func(*result) { t.errorf("feeder: %v", err) })
	} else {
		// Exactly count messages: at the interval for the run, the rest
		// as fast as acknowledged. (More would reach a mosquitto_sub that
		// has closed its socket.)
		tick := time.NewTicker(interval)
		ended := false
	feed:
		for seq := 0; seq < count; seq++ {
			if !ended {
				select {
				case <-ctx.Done():
					ended = true
				case <-tick.C:
				}
			}
			select {
			case <-readDone:
				break feed
			default:
			}
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := feeder.Publish(pctx, client.Message{Topic: topic, Payload: []byte(strconv.Itoa(seq)), QoS: 1})
			cancel()
			if err != nil {
				t.note(func(*result) { t.errorf("feeder publish: %v", err) })
				break
			}
			last = seq
		}
		tick.Stop()
		feeder.Disconnect(context.Background())
	}
	exited := make(chan error, 1)
	go func() { <-readDone; exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.note(func(*result) { t.errorf("mosquitto_sub: %v: %s", err, stderr) })
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.note(func(*result) { t.errorf("mosquitto_sub did not exit after %d messages", count) })
	}
	lmu.Lock()
	defer lmu.Unlock()
	t.note(func(r *result) {
		r.Connects = 1 // a reconnect shows in the broker's log and as a gap or repeat
		if len(lines) == 0 {
			t.errorf("received nothing (last sent %d)", last)
			return
		}
		first := lines[0]
		r.Sent = len(lines)
		if n := lines[len(lines)-1] - first + 1; n > r.Sent {
			r.Sent = n
		}
		for i, n := range lines {
			if n != first+i {
				t.errorf("message %d is %d, want %d (out of order, repeated or lost)", i, n, first+i)
				break
			}
		}
		r.Received = len(lines)
		if first != 0 || len(lines) != count {
			t.errorf("received %d messages from %d, want %d from 0", len(lines), first, count)
		}
	})
	return t.result()
}

// summarize is the Markdown summary of a run.
func summarize(results []result, wills, drops []string, rssStart, rssEnd, want int) string {
	var s strings.Builder
	fmt.Fprintf(&s, "# Soak run %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&s, "- duration %s, keep alive %d s (broker ends a client after %.1f s), connect timeout %s, busy clients publish QoS 1 every %s\n",
		*soakDuration, *soakKeepAlive, 1.5*float64(*soakKeepAlive), *connectTimeout, *soakInterval)
	fmt.Fprintf(&s, "- broker: `roost serve` (race detector %v), %s, %d CPUs\n", raceEnabled, runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(&s, "- command: `go test ./test/soak -run TestSoak -timeout 3h -soak.duration %s -soak.results FILE`\n\n", *soakDuration)
	held, reconnects, sent, lost, dups := 0, 0, 0, 0, 0
	for _, r := range results {
		if r.Connects == 1 && r.Closes == 0 && len(r.Errors) == 0 {
			held++
		}
		if r.Connects > 1 {
			reconnects += r.Connects - 1
		}
		sent += r.Sent
		lost += r.Missing
		dups += r.Dups
	}
	fmt.Fprintf(&s, "| connections held to the end | reconnects | wills | broker drops logged | messages sent | lost | duplicated | broker RSS start | end |\n")
	fmt.Fprintf(&s, "|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&s, "| %d of %d | %d | %d | %d | %d | %d | %d | %.1f MiB | %.1f MiB |\n\n",
		held, want, reconnects, len(wills), len(drops), sent, lost, dups, float64(rssStart)/1024, float64(rssEnd)/1024)
	fmt.Fprintf(&s, "| peer | client | transport | connects | lost | sent | received | missing | dups | errors |\n")
	fmt.Fprintf(&s, "|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&s, "| %s | %s | %s | %d | %d | %d | %d | %d | %d | %s |\n",
			r.Peer, r.ID, r.Transport, r.Connects, r.Closes, r.Sent, r.Received, r.Missing, r.Dups, strings.Join(r.Errors, "; "))
	}
	return s.String()
}
