package cluster_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// received is one message as any client tool reports it.
type received struct {
	topic, payload string
	qos            byte
	retain         bool
}

// sink collects what one subscribing client receives; probes are counted
// and left out.
type sink struct {
	name   string
	ch     chan received
	probes atomic.Int64
}

func newSink(name string) *sink { return &sink{name: name, ch: make(chan received, 1000)} }

func (s *sink) put(r received) {
	if r.payload == "probe" {
		s.probes.Add(1)
		return
	}
	s.ch <- r
}

// take returns the next n messages, within d.
func (s *sink) take(t *testing.T, n int, d time.Duration) []received {
	t.Helper()
	out := make([]received, 0, n)
	deadline := time.After(d)
	for len(out) < n {
		select {
		case r := <-s.ch:
			out = append(out, r)
		case <-deadline:
			t.Fatalf("%s: %d of %d messages within %v: %+v", s.name, len(out), n, d, out)
		}
	}
	return out
}

// pahoSink forwards a paho client's messages to a sink.
func pahoSink(c *harness.Client) *sink {
	s := newSink("paho " + c.ID)
	go func() {
		for p := range c.In {
			s.put(received{p.Topic, string(p.Payload), p.QoS, p.Retain})
		}
	}()
	return s
}

// mosquittoSub runs mosquitto_sub (MQTT 5) on nd with filters at qos until
// the test ends; its messages go to the returned sink.
func mosquittoSub(t *testing.T, nd *harness.Node, id string, qos int, filters ...string) *sink {
	t.Helper()
	h, p, _ := net.SplitHostPort(nd.MQTT)
	return mosquittoSubArgs(t, []string{"-h", h, "-p", p, "-V", "mqttv5"}, id, qos, filters...)
}

// mosquittoSubArgs is mosquittoSub with the arguments that say where and
// how it connects (-h, -p, --cafile, -V, -c, --will-topic ...).
func mosquittoSubArgs(t *testing.T, conn []string, id string, qos int, filters ...string) *sink {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Fatalf("mosquitto_sub: %v (Debian package mosquitto-clients)", err)
	}
	args := append(slices.Clone(conn), "-q", strconv.Itoa(qos), "-i", id, "-F", "%t\t%q\t%r\t%p")
	for _, f := range filters {
		args = append(args, "-t", f)
	}
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := newSink("mosquitto_sub " + id)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), "\t", 4)
			if len(f) != 4 {
				continue
			}
			q, _ := strconv.Atoi(f[1])
			s.put(received{f[0], f[3], byte(q), f[2] == "1"})
		}
	}()
	return s
}

// jsClient is mqtt.js (test/interop/js/client.js under node) connected to
// a node.
type jsClient struct {
	id     string
	in     io.WriteCloser
	sink   *sink
	ids    int         // publishes sent
	waited int         // publishes confirmed
	done   chan string // "published" ids, in order
	// events gets what happens to the connection once the client is
	// ready: connect (again), disconnect (a server DISCONNECT), close,
	// reconnect, error. It holds 1000; more are dropped.
	events chan jsEvent
	// connack is the first connect event (CONNACK code, Session
	// Present), set before startJSWith returns.
	connack jsEvent
}

// jsEvent is one line client.js prints.
type jsEvent struct {
	Event, Topic, Payload, Where, Message string
	QoS                                   byte
	Retain                                bool
	ID                                    int
	ReasonCode                            int
	SessionPresent                        bool
	// At is when the test read the line (not in client.js's JSON).
	At time.Time `json:"-"`
}

func (e jsEvent) String() string {
	switch e.Event {
	case "connect":
		return fmt.Sprintf("connect (CONNACK 0x%02X, session present %v)", e.ReasonCode, e.SessionPresent)
	case "disconnect":
		return fmt.Sprintf("DISCONNECT 0x%02X", e.ReasonCode)
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s %s", e.Event, e.Where, e.Message))
}

// startJS starts mqtt.js with MQTT 5 on nd, subscribed to subs (filter to
// QoS), and waits for its SUBACK.
func startJS(t *testing.T, nd *harness.Node, id string, subs map[string]int) *jsClient {
	t.Helper()
	return startJSWith(t, id, map[string]any{"url": "mqtt://" + nd.MQTT, "protocolVersion": 5}, subs)
}

// startJSWith starts mqtt.js with the client.js options o (url,
// protocolVersion, caFile, clean, keepalive, reconnectPeriod, servers,
// ...), clientId id, subscribed to subs after its first connect, and
// waits for that SUBACK (for its CONNACK if subs is empty).
func startJSWith(t *testing.T, id string, o map[string]any, subs map[string]int) *jsClient {
	t.Helper()
	return startJSLiving(t, t, id, o, subs)
}

// startJSLiving is startJSWith for a client that outlives t: it is ended
// when life (t's parent) ends; t still gets the failures.
func startJSLiving(t, life *testing.T, id string, o map[string]any, subs map[string]int) *jsClient {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	if _, err := os.Stat("../test/interop/node_modules/mqtt/package.json"); err != nil {
		t.Fatalf("mqtt.js missing: npm ci --prefix test/interop --no-audit --no-fund (%v)", err)
	}
	type sub struct {
		Topic string `json:"topic"`
		QoS   int    `json:"qos"`
	}
	o = maps.Clone(o)
	o["clientId"] = id
	if o["lifetimeMs"] == nil {
		o["lifetimeMs"] = 180000
	}
	if o["connectTimeout"] == nil && o["reconnectPeriod"] == nil {
		// mqtt.js's 4 s (a WeChat mini program's) is shorter than a
		// node's own wait for the client id's ownership record before
		// it answers (forward_timeout, 5 s by default): "mqtt.js
		// five-js: error client connack timeout" at a load of 80
		// (TestClusterFiveNodesRealClients). A client that reconnects
		// by itself keeps the program's setting.
		o["connectTimeout"] = clustertest.ConnectBound.Milliseconds()
	}
	var ss []sub
	for f, q := range subs {
		ss = append(ss, sub{f, q})
	}
	o["subscribe"] = ss
	b, _ := json.Marshal(o)
	cmd := exec.Command(node, "../test/interop/js/client.js", string(b))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	life.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	c := &jsClient{id: id, in: stdin, sink: newSink("mqtt.js " + id), done: make(chan string, 1000), events: make(chan jsEvent, 1000)}
	readyOn := "suback"
	if len(subs) == 0 {
		readyOn = "connect"
	}
	ready := make(chan string, 1)
	go func() {
		isReady := false
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev jsEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			ev.At = time.Now()
			switch {
			case ev.Event == "message":
				c.sink.put(received{ev.Topic, ev.Payload, ev.QoS, ev.Retain})
			case ev.Event == "published":
				c.done <- strconv.Itoa(ev.ID)
			case !isReady && ev.Event == "connect" && readyOn != "connect":
				c.connack = ev
			case !isReady && ev.Event == readyOn:
				if ev.Event == "connect" {
					c.connack = ev
				}
				isReady = true
				ready <- ""
			case !isReady && (ev.Event == "error" || ev.Event == "close" || ev.Event == "disconnect"):
				isReady = true // the test fails; nothing more is awaited
				ready <- ev.String()
			case isReady:
				select {
				case c.events <- ev:
				default:
				}
			}
		}
	}()
	select {
	case msg := <-ready:
		if msg != "" {
			t.Fatalf("mqtt.js %s: %s", id, msg)
		}
	case <-time.After(clustertest.SubBound):
		// A node answers a new cluster's first SUBSCRIBE only once its
		// retained messages caught up, up to its forward_timeout, as Sub
		// waits for (clustertest.SubBound): 15 s here failed
		// TestClusterTransports/Routing at a load of 50 ("mqtt.js
		// txr-sub-wss5: no SUBACK", the SUBSCRIBE read 1.5 s after the
		// start).
		t.Fatalf("mqtt.js %s: no %s within %v", id, strings.ToUpper(readyOn), clustertest.SubBound)
	}
	return c
}

// publish sends a publish command; mqtt.js sends its messages in order.
func (c *jsClient) publish(t *testing.T, topic, payload string, qos int, retain bool) {
	t.Helper()
	c.ids++
	b, _ := json.Marshal(map[string]any{"cmd": "publish", "id": c.ids, "topic": topic, "payload": payload, "qos": qos, "retain": retain})
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// awaitPublished waits until mqtt.js confirmed every publish so far.
func (c *jsClient) awaitPublished(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for ; c.waited < c.ids; c.waited++ {
		select {
		case <-c.done:
		case <-deadline:
			t.Fatalf("mqtt.js confirmed %d of %d publishes", c.waited, c.ids)
		}
	}
}

// mosquittoPub publishes the lines (one message each, in order) with
// mosquitto_pub on nd.
func mosquittoPub(t *testing.T, nd *harness.Node, args ...string) {
	t.Helper()
	h, p, _ := net.SplitHostPort(nd.MQTT)
	mosquittoPubArgs(t, "", append([]string{"-h", h, "-p", p, "-V", "mqttv5"}, args...)...)
}

// mosquittoPubArgs runs mosquitto_pub with args (where it connects
// included) and stdin on its standard input (for -l: one message a
// line).
func mosquittoPubArgs(t *testing.T, stdin string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Fatalf("mosquitto_pub: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %v: %v\n%s", args, err, out)
	}
}

// awaitProbes publishes QoS 1 probes on topic through c until every sink
// has seen one: the publishing node knows every subscriber's node.
func awaitProbes(t *testing.T, c *harness.Client, topic string, sinks ...*sink) {
	t.Helper()
	start := make([]int64, len(sinks))
	for i, s := range sinks {
		start[i] = s.probes.Load()
	}
	harness.Eventually(t, 20*time.Second, func() error {
		c.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("probe")})
		for i, s := range sinks {
			if s.probes.Load() == start[i] {
				return fmt.Errorf("%s has seen no probe from %s yet", s.name, c.ID)
			}
		}
		return nil
	})
}

// TestClusterFiveNodesRealClients runs five nodes with mqtt.js, mosquitto
// and paho.golang clients on different nodes: every subscriber gets every
// publisher's messages, QoS 0, 1 and 2, at the QoS it asked for at most,
// in each publisher's order; a shared group with a member of each tool on
// three nodes gets each message once; a retained message published on one
// node is served by another and cleared from a third.
func TestClusterFiveNodesRealClients(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartCluster(t, 5)
	n1, n2, n3, n4, n5 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2], tc.Nodes[3], tc.Nodes[4]

	// Subscribers: mqtt.js on n1, mosquitto_sub on n2, paho on n3, each
	// to five/# and as a member of the shared group g.
	js := startJS(t, n1, "five-js", map[string]int{"five/#": 2, "$share/g/shared/#": 1})
	mosq := mosquittoSub(t, n2, "five-mosq", 2, "five/#")
	mosqShared := mosquittoSub(t, n2, "five-mosq-shared", 1, "$share/g/shared/#")
	pc := harness.Connect(t, n3, "five-paho")
	pc.Sub(t, paho.SubscribeOptions{Topic: "five/#", QoS: 2}, paho.SubscribeOptions{Topic: "$share/g/shared/#", QoS: 1})
	pahoIn := pahoSink(pc)
	// paho's sink gets both subscriptions' messages; split them.
	pahoFive, pahoShared := newSink("paho five-paho five/#"), newSink("paho five-paho shared")
	go func() {
		for r := range pahoIn.ch {
			if strings.HasPrefix(r.topic, "shared/") {
				pahoShared.put(r)
			} else {
				pahoFive.put(r)
			}
		}
	}()
	jsFive, jsShared := newSink("mqtt.js five/#"), newSink("mqtt.js shared")
	go func() {
		for r := range js.sink.ch {
			if strings.HasPrefix(r.topic, "shared/") {
				jsShared.put(r)
			} else {
				jsFive.put(r)
			}
		}
	}()
	// Probes go through the splitters' put, which counts them on the
	// sinks the splitters feed only if forwarded: count on the inputs.
	subs := []*sink{js.sink, mosq, pahoIn}

	// Publishers: paho on n4 (QoS 0, 1, 2), mosquitto_pub on n5 (QoS 1),
	// mqtt.js on n1 (QoS 2).
	pub := harness.Connect(t, n4, "five-pub")
	awaitProbes(t, pub, "five/probe", subs...)
	probe5 := harness.Connect(t, n5, "five-probe5")
	awaitProbes(t, probe5, "five/probe", subs...)
	const per = 10
	var want []string
	for q := range 3 {
		for i := range per {
			payload := fmt.Sprintf("paho-q%d-%d", q, i)
			if rc := pub.Pub(t, &paho.Publish{Topic: fmt.Sprintf("five/paho/q%d", q), QoS: byte(q), Payload: []byte(payload)}); rc >= 0x80 {
				t.Fatalf("paho publish %s: 0x%02X", payload, rc)
			}
			want = append(want, payload)
		}
	}
	var lines []string
	for i := range per {
		lines = append(lines, fmt.Sprintf("mosq-%d", i))
	}
	want = append(want, lines...)
	bin, _ := exec.LookPath("mosquitto_pub")
	h5, p5, _ := net.SplitHostPort(n5.MQTT)
	mp := exec.Command(bin, "-h", h5, "-p", p5, "-V", "mqttv5", "-q", "1", "-t", "five/mosq", "-l", "-i", "five-mosq-pub")
	mp.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := mp.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub -l: %v\n%s", err, out)
	}
	for i := range per {
		payload := fmt.Sprintf("js-%d", i)
		js.publish(t, "five/js", payload, 2, false)
		want = append(want, payload)
	}
	js.awaitPublished(t, 20*time.Second)

	for _, s := range []*sink{jsFive, mosq, pahoFive} {
		got := s.take(t, len(want), 20*time.Second)
		byPub := map[string][]string{}
		for _, r := range got {
			prefix := r.payload[:strings.LastIndexByte(r.payload, '-')]
			byPub[prefix] = append(byPub[prefix], r.payload)
			// The QoS is the publisher's (paho's qN, mosquitto 1,
			// mqtt.js 2), at most the subscription's 2.
			wantQoS := byte(2)
			switch {
			case strings.HasPrefix(r.payload, "paho-q"):
				wantQoS = r.payload[6] - '0'
			case strings.HasPrefix(r.payload, "mosq-"):
				wantQoS = 1
			}
			if r.qos != wantQoS || r.retain {
				t.Errorf("%s: %q at QoS %d retain %v, want QoS %d, not retained", s.name, r.payload, r.qos, r.retain, wantQoS)
			}
		}
		for prefix, ps := range byPub {
			for i, p := range ps {
				if p != fmt.Sprintf("%s-%d", prefix, i) {
					t.Errorf("%s: from %s in the order %q", s.name, prefix, ps)
					break
				}
			}
		}
		if len(byPub) != 5 {
			t.Errorf("%s: messages of %d publishers (QoS), want 5: %v", s.name, len(byPub), byPub)
		}
	}

	// The shared group: one member of each tool on n1, n2, n3; 30
	// messages from n4 are delivered once each in the whole cluster.
	members := []*sink{js.sink, mosqShared, pahoIn}
	awaitProbes(t, pub, "shared/probe", members...)
	const jobs = 30
	for i := range jobs {
		pub.Pub(t, &paho.Publish{Topic: "shared/job", QoS: 1, Payload: fmt.Appendf(nil, "job-%d", i)})
	}
	var all []string
	counts := map[string]int{}
	deadline := time.After(20 * time.Second)
	for len(all) < jobs {
		select {
		case r := <-jsShared.ch:
			all, counts["mqtt.js"] = append(all, r.payload), counts["mqtt.js"]+1
		case r := <-mosqShared.ch:
			all, counts["mosquitto"] = append(all, r.payload), counts["mosquitto"]+1
		case r := <-pahoShared.ch:
			all, counts["paho"] = append(all, r.payload), counts["paho"]+1
		case <-deadline:
			t.Fatalf("shared group got %d of %d messages: %v", len(all), jobs, counts)
		}
	}
	slices.Sort(all)
	if len(slices.Compact(all)) != jobs {
		t.Errorf("shared group: a message delivered twice: %v", all)
	}
	for _, s := range []*sink{jsShared, mosqShared, pahoShared} {
		select {
		case r := <-s.ch:
			t.Errorf("shared group: %s got %q beyond the %d", s.name, r.payload, jobs)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if len(counts) < 2 {
		t.Errorf("shared group: every message went to one member (%v): members on other nodes take turns", counts)
	}

	// Retained: mqtt.js publishes on n1, a new mosquitto_sub on n5 gets
	// it, mosquitto_pub clears it on n2, and a new paho subscriber on n3
	// gets nothing.
	js.publish(t, "ret5/x", "kept", 1, true)
	js.awaitPublished(t, 10*time.Second)
	harness.Eventually(t, 10*time.Second, func() error {
		rs := mosquittoSub(t, n5, "ret5-check", 1, "ret5/#")
		select {
		case r := <-rs.ch:
			if r.payload != "kept" || !r.retain {
				return fmt.Errorf("mosquitto_sub on n5 got %+v", r)
			}
			return nil
		case <-time.After(time.Second):
			return fmt.Errorf("mosquitto_sub on n5 got no retained message")
		}
	})
	mosquittoPub(t, n2, "-q", "1", "-r", "-n", "-t", "ret5/x")
	harness.Eventually(t, 10*time.Second, func() error {
		if got := retainedOn(t, n3, "ret5-paho", "ret5/#", 300*time.Millisecond); len(got) > 0 {
			return fmt.Errorf("n3 still has %q after the clearing on n2", got)
		}
		return nil
	})
}
