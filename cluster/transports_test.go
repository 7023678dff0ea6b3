package cluster_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/devcert"
	eventuallypkg "github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/rawclient"
)

// Transports of a txCluster's listeners, as subtest and client names.
const (
	tcpT = rawclient.TCP
	tlsT = rawclient.TLS
	wsT  = rawclient.WS
	wssT = rawclient.WSS
)

// txCluster is three nodes that each serve MQTT over TCP, TLS, WebSocket
// and WebSocket over TLS (both on /mqtt), with one certificate for
// 127.0.0.2-4 signed by a test CA that every client trusts.
type txCluster struct {
	*harness.Cluster
	caFile string
	tls    *tls.Config
	// urls: node name, then transport, to the URL its clients use.
	urls map[string]map[rawclient.Transport]string
}

// startTxCluster starts the nodes with limits.connect_timeout 2 s (so
// that a connection outliving it is seen within a short test) and
// cluster.adopt_after 2 s (a dead node's wills come sooner; what it delays
// is the same either way).
func startTxCluster(t *testing.T) *txCluster {
	t.Helper()
	dir := t.TempDir()
	ca := newCA(t, "roost transports test CA")
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: "roost node", Hosts: []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "localhost"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tx := &txCluster{caFile: filepath.Join(dir, "ca.pem"), urls: map[string]map[rawclient.Transport]string{}}
	cert, keyFile, cfg := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node.key"), filepath.Join(dir, "roost.yaml")
	harness.WriteAtomic(t, tx.caFile, ca.CertPEM(), 0o600)
	harness.WriteAtomic(t, cert, chain, 0o600)
	harness.WriteAtomic(t, keyFile, key, 0o600)
	harness.WriteAtomic(t, cfg, []byte("limits:\n  connect_timeout: 2s\ncluster:\n  adopt_after: 2s\n"), 0o644)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tx.tls = &tls.Config{RootCAs: pool}
	c := clustertest.Start(t, clustertest.Options{Nodes: 3,
		Args: []string{"--config", cfg, "--tls-cert", cert, "--tls-key", keyFile},
		NodeArgs: func(name, ip string) []string {
			u := map[rawclient.Transport]string{}
			var args []string
			for _, tr := range []rawclient.Transport{tlsT, wsT, wssT} {
				u[tr] = tr.URL(net.JoinHostPort(ip, strconv.Itoa(clustertest.FreePort(t, ip))))
				args = append(args, "--listen", u[tr])
			}
			tx.urls[name] = u // Start calls NodeArgs in this goroutine
			return args
		}})
	tx.Cluster = harness.WrapCluster(t, c)
	for _, nd := range tx.Nodes {
		tx.urls[nd.Name][tcpT] = tcpT.URL(nd.MQTT)
		// Each node logs one "listener ready" per listener: all four
		// before a client comes.
		nd.WaitLog(t, "listener ready", 4, clustertest.StartBound)
	}
	return tx
}

// paho5 connects a paho.golang MQTT 5 client over tr to nd and fails t
// unless the CONNACK is a success.
func (tx *txCluster) paho5(t *testing.T, nd *harness.Node, tr rawclient.Transport, cp *paho.Connect) (*harness.Client, *paho.Connack) {
	t.Helper()
	c, ack, err := clustertest.DialOver(t, rawclient.Dialer{TLS: tx.tls}, tx.urls[nd.Name][tr], cp)
	if err != nil {
		t.Fatal(err)
	}
	if ack.ReasonCode != 0 {
		t.Fatalf("paho %s over %s to %s: CONNACK 0x%02X", cp.ClientID, tr, nd.Name, ack.ReasonCode)
	}
	return harness.WrapClient(c), ack
}

// clean5 is paho5 with Clean Start and no session expiry.
func (tx *txCluster) clean5(t *testing.T, nd *harness.Node, tr rawclient.Transport, id string) *harness.Client {
	t.Helper()
	c, _ := tx.paho5(t, nd, tr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	return c
}

// paho3 is a paho.mqtt.golang MQTT 3.1.1 client, connected by the
// library's own transport (its WebSocket dialer for ws://).
type paho3 struct {
	mqtt.Client
	id             string
	sink           *sink
	lost           chan error
	sessionPresent bool
}

// paho3 connects paho.mqtt.golang over tr to nd with clean session
// clean, no automatic reconnect; its messages go to its sink. It is
// disconnected when t ends.
func (tx *txCluster) paho3(t *testing.T, nd *harness.Node, tr rawclient.Transport, id string, clean bool, will *received) *paho3 {
	t.Helper()
	u := tx.urls[nd.Name][tr]
	if tr == tcpT || tr == tlsT { // paho.mqtt.golang's schemes
		u = strings.Replace(strings.Replace(u, "mqtts://", "ssl://", 1), "mqtt://", "tcp://", 1)
	}
	c := &paho3{id: id, sink: newSink("paho.mqtt.golang " + id), lost: make(chan error, 4)}
	o := mqtt.NewClientOptions().AddBroker(u).SetClientID(id).SetCleanSession(clean).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(clustertest.ConnectBound).
		SetKeepAlive(30 * time.Second).SetTLSConfig(tx.tls.Clone()).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			c.sink.put(received{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()})
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { c.lost <- err })
	if will != nil {
		o.SetWill(will.topic, will.payload, will.qos, will.retain)
	}
	c.Client = mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(clustertest.ConnectBound+time.Second) || tok.Error() != nil {
		t.Fatalf("paho.mqtt.golang %s over %s to %s: %v", id, tr, nd.Name, tok.Error())
	}
	c.sessionPresent = tok.(*mqtt.ConnectToken).SessionPresent()
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// sub subscribes filter at qos; the messages go to the client's sink.
func (c *paho3) sub(t *testing.T, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho.mqtt.golang %s: subscribe %q: %v", c.id, filter, tok.Error())
	}
	if got := tok.(*mqtt.SubscribeToken).Result()[filter]; got >= 0x80 {
		t.Fatalf("paho.mqtt.golang %s: SUBACK 0x%02X for %q", c.id, got, filter)
	}
}

// pub publishes and waits for its acknowledgement (QoS 1, 2) or its
// write (QoS 0).
func (c *paho3) pub(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho.mqtt.golang %s: publish %q: %v", c.id, topic, tok.Error())
	}
}

// mosq returns the arguments that connect mosquitto_sub/mosquitto_pub
// to nd over TLS, trusting the test CA, with MQTT 5.
func (tx *txCluster) mosq(nd *harness.Node) []string {
	u, _ := url.Parse(tx.urls[nd.Name][tlsT])
	return []string{"-h", u.Hostname(), "-p", u.Port(), "--cafile", tx.caFile, "-V", "mqttv5"}
}

// js starts mqtt.js over WSS on nd's /mqtt (a WeChat mini program's
// wxs://host/mqtt) with protocol version v and the client.js options o.
func (tx *txCluster) js(t *testing.T, nd *harness.Node, v int, id string, o map[string]any, subs map[string]int) *jsClient {
	t.Helper()
	return tx.jsLiving(t, t, nd, v, id, o, subs)
}

// jsLiving is js for a client that lives until life ends (the whole
// test), not only t (a subtest).
func (tx *txCluster) jsLiving(t, life *testing.T, nd *harness.Node, v int, id string, o map[string]any, subs map[string]int) *jsClient {
	t.Helper()
	all := map[string]any{"url": tx.urls[nd.Name][wssT], "caFile": tx.caFile, "protocolVersion": v}
	for k, val := range o {
		all[k] = val
	}
	return startJSLiving(t, life, id, all, subs)
}

// quiet fails t if mqtt.js reported anything about its connection (a
// close, a DISCONNECT, an error) since it was ready.
func (c *jsClient) quiet(t *testing.T) {
	t.Helper()
	for {
		select {
		case ev := <-c.events:
			t.Errorf("mqtt.js %s: %s, want the connection to stay", c.id, ev)
		default:
			return
		}
	}
}

// awaitEvent waits up to d for mqtt.js to report an event named name and
// returns it; the events before it are returned too.
func (c *jsClient) awaitEvent(t *testing.T, name string, d time.Duration) (jsEvent, []jsEvent) {
	t.Helper()
	var before []jsEvent
	deadline := time.After(d)
	for {
		select {
		case ev := <-c.events:
			if ev.Event == name {
				return ev, before
			}
			before = append(before, ev)
		case <-deadline:
			t.Fatalf("mqtt.js %s: no %s within %v (saw %v)", c.id, name, d, before)
			return jsEvent{}, nil
		}
	}
}

// checkDelivered checks that s got exactly want (payloads "<pub>-q<q>-<i>",
// each on a topic of its own per publisher and QoS), each at the QoS its
// publisher used (every subscription here is QoS 2), not retained, and
// each publisher's messages on a topic in their order.
func checkDelivered(t *testing.T, s *sink, want []string, d time.Duration) {
	t.Helper()
	got := s.take(t, len(want), d)
	byTopic := map[string][]string{}
	var payloads []string
	for _, r := range got {
		payloads = append(payloads, r.payload)
		byTopic[r.topic] = append(byTopic[r.topic], r.payload)
		q := strings.LastIndex(r.payload, "-q")
		if q < 0 || r.qos != r.payload[q+2]-'0' || r.retain {
			t.Errorf("%s: %q on %q at QoS %d retain %v, want its publisher's QoS, not retained", s.name, r.payload, r.topic, r.qos, r.retain)
		}
	}
	slices.Sort(payloads)
	w := slices.Sorted(slices.Values(want))
	if !slices.Equal(payloads, w) {
		t.Errorf("%s: got %q, want %q", s.name, payloads, w)
	}
	for topic, ps := range byTopic {
		for i, p := range ps {
			if !strings.HasSuffix(p, "-"+strconv.Itoa(i)) {
				t.Errorf("%s: on %q in the order %q; each publisher's order is kept [MQTT-4.6.0-6]", s.name, topic, ps)
				break
			}
		}
	}
	select {
	case r := <-s.ch:
		t.Errorf("%s: %q on %q beyond the %d messages", s.name, r.payload, r.topic, len(want))
	case <-time.After(300 * time.Millisecond):
	}
}

// TestClusterTransports runs three nodes that each serve TCP, TLS,
// WebSocket and WebSocket over TLS, with the clients Roost's users have
// on each: mqtt.js over wss /mqtt (a WeChat mini program: MQTT 3.1.1 and
// 5, clean session off, its own reconnect), paho.golang over TLS and TCP,
// mosquitto_sub/mosquitto_pub over TLS with --cafile, paho.mqtt.golang
// over WebSocket. Every transport is the subscriber's and the
// publisher's side of routes across nodes. The subtests share the nodes
// and run in order (each has topics and client ids of its own); the last
// one kills a node.
func TestClusterTransports(t *testing.T) {
	t.Parallel() // see harness_test.go
	tx := startTxCluster(t)
	var steady []*jsClient // mqtt.js clients whose connection must outlive everything before the kill
	t.Run("Routing", func(t *testing.T) { steady = append(steady, testTxRouting(t, tx)...) })
	t.Run("Takeover", func(t *testing.T) { testTxTakeover(t, tx) })
	t.Run("Retained", func(t *testing.T) { testTxRetained(t, tx) })
	t.Run("Shared", func(t *testing.T) { testTxShared(t, tx) })
	t.Run("WSSOutlivesKeepAlive", func(t *testing.T) { testTxKeepAlive(t, tx) })
	// Started in Routing, the mqtt.js clients have lived past the
	// listeners' handshake_timeout (10 s) and connect_timeout (2 s) and
	// many times their keep alive.
	for _, c := range steady {
		c.quiet(t)
	}
	t.Run("NodeKill", func(t *testing.T) { testTxNodeKill(t, tx) })
}

// testTxRouting: a subscriber of each kind on each node, a publisher of
// each kind on each node; every subscriber gets every publisher's QoS 0,
// 1 and 2 messages through a wildcard filter. It returns the mqtt.js
// subscribers, which stay connected.
func testTxRouting(t *testing.T, tx *txCluster) []*jsClient {
	n1, n2, n3 := tx.Nodes[0], tx.Nodes[1], tx.Nodes[2]
	const filter = "tx/+/r/#"
	// The mqtt.js clients live on after this subtest (TestClusterTransports
	// checks that they stay connected); ended with this subtest's t, they
	// were closed before that check, which saw nothing of them but, once,
	// the "close" of one that got it out before it was killed.
	js5 := tx.jsLiving(t, tx.T, n1, 5, "txr-sub-wss5", nil, map[string]int{filter: 2})
	js4 := tx.jsLiving(t, tx.T, n2, 4, "txr-sub-wss4", map[string]any{"clean": false}, map[string]int{filter: 2})
	tlsSub := tx.clean5(t, n3, tlsT, "txr-sub-tls")
	tlsSub.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 2})
	tcpSub := harness.Connect(t, n1, "txr-sub-tcp")
	tcpSub.Sub(t, paho.SubscribeOptions{Topic: filter, QoS: 2})
	mosq := mosquittoSubArgs(t, tx.mosq(n2), "txr-sub-mosq-tls", 2, filter)
	ws := tx.paho3(t, n3, wsT, "txr-sub-ws", true, nil)
	ws.sub(t, filter, 2)
	sinks := []*sink{js5.sink, js4.sink, pahoSink(tlsSub), pahoSink(tcpSub), mosq, ws.sink}
	// Every node knows every subscriber's node before a message counts.
	for _, nd := range tx.Nodes {
		awaitProbes(t, harness.Connect(t, nd, "txr-probe-"+nd.Name), "tx/probe/r/x", sinks...)
	}

	const per = 5
	var want []string
	lines := func(name string, q int) []string {
		var ps []string
		for i := range per {
			ps = append(ps, fmt.Sprintf("%s-q%d-%d", name, q, i))
		}
		want = append(want, ps...)
		return ps
	}
	topic := func(name string, q int) string { return fmt.Sprintf("tx/%s/r/q%d", name, q) }
	pubJS5 := tx.jsLiving(t, tx.T, n3, 5, "txr-pub-wss5", nil, nil)
	pubJS4 := tx.jsLiving(t, tx.T, n1, 4, "txr-pub-wss4", map[string]any{"clean": false}, nil)
	pubTLS := tx.clean5(t, n1, tlsT, "txr-pub-tls")
	pubTCP := harness.Connect(t, n2, "txr-pub-tcp")
	pubWS := tx.paho3(t, n3, wsT, "txr-pub-ws", true, nil)
	for q := range 3 {
		for _, js := range []*jsClient{pubJS5, pubJS4} {
			name := strings.TrimPrefix(js.id, "txr-pub-")
			for _, p := range lines(name, q) {
				js.publish(t, topic(name, q), p, q, false)
			}
		}
		for _, c := range []*harness.Client{pubTLS, pubTCP} {
			name := strings.TrimPrefix(c.ID, "txr-pub-")
			for _, p := range lines(name, q) {
				if rc := c.Pub(t, &paho.Publish{Topic: topic(name, q), QoS: byte(q), Payload: []byte(p)}); rc != 0 {
					t.Fatalf("%s: publish %s: reason 0x%02X", c.ID, p, rc)
				}
			}
		}
		for _, p := range lines("ws", q) {
			pubWS.pub(t, topic("ws", q), byte(q), false, p)
		}
		ps := lines("mosq-tls", q)
		mosquittoPubArgs(t, strings.Join(ps, "\n")+"\n", append(tx.mosq(n2),
			"-i", "txr-pub-mosq-tls", "-q", strconv.Itoa(q), "-t", topic("mosq-tls", q), "-l")...)
	}
	pubJS5.awaitPublished(t, 20*time.Second)
	pubJS4.awaitPublished(t, 20*time.Second)
	for _, s := range sinks {
		checkDelivered(t, s, want, 20*time.Second)
	}
	pubJS5.quiet(t)
	pubJS4.quiet(t)
	return []*jsClient{js5, js4, pubJS5, pubJS4}
}

// expect0x8E waits for the server's DISCONNECT 0x8E Session taken over
// on a paho.golang client.
func expect0x8E(t *testing.T, c *harness.Client, what string) {
	t.Helper()
	select {
	case d := <-c.Dis:
		if d.ReasonCode != 0x8E {
			t.Errorf("%s: DISCONNECT 0x%02X, want 0x8E Session taken over", what, d.ReasonCode)
		}
	case <-time.After(harness.Wait):
		t.Fatalf("%s: no DISCONNECT within %v", what, harness.Wait)
	}
}

// testTxTakeover moves one client id round the nodes, each takeover
// over another transport, and checks what the connection taken over sees
// (MQTT 5: DISCONNECT 0x8E [MQTT-3.1.4-3]; 3.1.1: the close) and that the
// session, with its subscription, came along (Session Present).
func testTxTakeover(t *testing.T, tx *txCluster) {
	n1, n2, n3 := tx.Nodes[0], tx.Nodes[1], tx.Nodes[2]
	const id, topic = "txt-roamer", "tx/roam/in"
	expiry := uint32(600)
	resume := &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	pub := harness.Connect(t, n2, "txt-pub")
	n := 0
	delivered := func(what string, s *sink) {
		t.Helper()
		n++
		p := fmt.Sprintf("m%d", n)
		harness.Eventually(t, 10*time.Second, func() error { // the new owner's interest reaches n2
			if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("probe")}); rc != 0 {
				return fmt.Errorf("probe: PUBACK 0x%02X", rc)
			}
			return nil
		})
		if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(p)}); rc != 0 {
			t.Fatalf("publish to %s: PUBACK 0x%02X", what, rc)
		}
		if got := s.take(t, 1, harness.Wait); got[0].payload != p {
			t.Fatalf("%s got %q, want %q", what, got[0].payload, p)
		}
	}

	// mqtt.js MQTT 5 over WSS on n1, the session's first connection.
	js5 := tx.js(t, n1, 5, id, map[string]any{"clean": false, "properties": map[string]any{"sessionExpiryInterval": expiry}},
		map[string]int{"tx/roam/#": 1})
	delivered("mqtt.js 5 over WSS on n1", js5.sink)
	// paho.golang over TLS on n2 takes it over: DISCONNECT 0x8E to the
	// WSS connection.
	viaTLS, ack := tx.paho5(t, n2, tlsT, resume)
	if !ack.SessionPresent {
		t.Fatalf("takeover over TLS on n2: Session Present 0")
	}
	if ev, before := js5.awaitEvent(t, "disconnect", harness.Wait); ev.ReasonCode != 0x8E || len(before) > 0 {
		t.Errorf("mqtt.js over WSS on n1 taken over from n2: %v after %v, want DISCONNECT 0x8E first", ev, before)
	}
	js5.awaitEvent(t, "close", harness.Wait)
	delivered("paho.golang over TLS on n2", pahoSink(viaTLS))
	// mqtt.js MQTT 3.1.1 over WSS on n3 takes it from TLS: DISCONNECT
	// 0x8E over TLS.
	js4 := tx.js(t, n3, 4, id, map[string]any{"clean": false}, nil)
	if !js4.connack.SessionPresent {
		t.Fatalf("takeover over WSS (3.1.1) on n3: Session Present 0")
	}
	expect0x8E(t, viaTLS, "paho.golang over TLS on n2 taken over from n3 over WSS")
	delivered("mqtt.js 3.1.1 over WSS on n3", js4.sink)
	// paho.mqtt.golang 3.1.1 over WebSocket on n1 takes it from there:
	// a 3.1.1 connection is closed without a DISCONNECT [MQTT-3.1.4-2].
	ws := tx.paho3(t, n1, wsT, id, false, nil)
	if !ws.sessionPresent {
		t.Fatalf("takeover over WS on n1: Session Present 0")
	}
	if ev, before := js4.awaitEvent(t, "close", harness.Wait); len(before) > 0 {
		t.Errorf("mqtt.js 3.1.1 over WSS on n3 taken over: %v after %v, want only the close", ev, before)
	}
	delivered("paho.mqtt.golang over WS on n1", ws.sink)
	// paho.golang over TCP on n3 takes it from WebSocket.
	viaTCP, ack := harness.ConnectWith(t, n3, resume)
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("takeover over TCP on n3: CONNACK 0x%02X, Session Present %v", ack.ReasonCode, ack.SessionPresent)
	}
	select {
	case <-ws.lost:
	case <-time.After(harness.Wait):
		t.Fatal("paho.mqtt.golang over WS on n1: connection not closed after the takeover from n3")
	}
	delivered("paho.golang over TCP on n3", pahoSink(viaTCP))
	// And back to WSS (mqtt.js 5 on n2) from TCP: 0x8E over TCP.
	back := tx.js(t, n2, 5, id, map[string]any{"clean": false, "properties": map[string]any{"sessionExpiryInterval": expiry}}, nil)
	if !back.connack.SessionPresent {
		t.Fatalf("takeover over WSS (5) on n2: Session Present 0")
	}
	expect0x8E(t, viaTCP, "paho.golang over TCP on n3 taken over from n2 over WSS")
	delivered("mqtt.js 5 over WSS on n2", back.sink)
}

// testTxRetained: retained messages set over TLS, TCP, WebSocket and WSS
// on different nodes are sent to new WSS subscribers on other nodes,
// retained; cleared over WSS and TLS, they are gone for the next one.
func testTxRetained(t *testing.T, tx *txCluster) {
	n1, n2, n3 := tx.Nodes[0], tx.Nodes[1], tx.Nodes[2]
	mosquittoPubArgs(t, "", append(tx.mosq(n2), "-i", "txret-mosq", "-q", "1", "-r", "-t", "tx/ret/tls-mosq", "-m", "by-mosq")...)
	tcp := harness.Connect(t, n3, "txret-tcp")
	if rc := tcp.Pub(t, &paho.Publish{Topic: "tx/ret/tcp", QoS: 2, Retain: true, Payload: []byte("by-tcp")}); rc != 0 {
		t.Fatalf("retained QoS 2 over TCP: 0x%02X", rc)
	}
	tx.paho3(t, n1, wsT, "txret-ws", true, nil).pub(t, "tx/ret/ws", 1, true, "by-ws")
	js := tx.js(t, n2, 5, "txret-wss", nil, nil)
	js.publish(t, "tx/ret/wss", "by-wss", 1, true)
	js.awaitPublished(t, 10*time.Second)
	want := []string{"tx/ret/tcp=by-tcp", "tx/ret/tls-mosq=by-mosq", "tx/ret/wss=by-wss", "tx/ret/ws=by-ws"}
	retainedOverWSS := func(nd *harness.Node, v int, id string, want []string) {
		t.Helper()
		want = slices.Sorted(slices.Values(want))
		// Acknowledged writes are read by any node's next subscription
		// (docs/cluster.md: reads are linearizable): no retry.
		s := tx.js(t, nd, v, id, nil, map[string]int{"tx/ret/#": 1}).sink
		var got []string
		for _, r := range s.take(t, len(want), harness.Wait) {
			if !r.retain {
				t.Errorf("%s: %q on %q without RETAIN [MQTT-3.3.1-8]", s.name, r.payload, r.topic)
			}
			got = append(got, r.topic+"="+r.payload)
		}
		select {
		case r := <-s.ch:
			got = append(got, r.topic+"="+r.payload)
		case <-time.After(500 * time.Millisecond):
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s on %s: retained %q, want %q", s.name, nd.Name, got, want)
		}
	}
	retainedOverWSS(n1, 5, "txret-read-n1", want)
	retainedOverWSS(n3, 4, "txret-read-n3", want)
	// Cleared over WSS on n3 and over TLS on n1 [MQTT-3.3.1-10].
	clr := tx.js(t, n3, 4, "txret-clear", nil, nil)
	clr.publish(t, "tx/ret/tls-mosq", "", 1, true)
	clr.awaitPublished(t, 10*time.Second)
	mosquittoPubArgs(t, "", append(tx.mosq(n1), "-i", "txret-mosq-clear", "-q", "1", "-r", "-n", "-t", "tx/ret/tcp")...)
	retainedOverWSS(n2, 5, "txret-read-n2", []string{"tx/ret/wss=by-wss", "tx/ret/ws=by-ws"})
}

// testTxShared: a shared group with members of every kind on n1 and n2,
// publishers over WSS and TCP on n3 (which has no member, so that the
// group is served across nodes): each message reaches one member, and
// members on both nodes and more than one transport get some.
func testTxShared(t *testing.T, tx *txCluster) {
	n1, n2, n3 := tx.Nodes[0], tx.Nodes[1], tx.Nodes[2]
	const group = "$share/txg/tx/job/#"
	js5 := tx.js(t, n1, 5, "txs-wss5", nil, map[string]int{group: 1})
	js4 := tx.js(t, n2, 4, "txs-wss4", nil, map[string]int{group: 1})
	tlsM := tx.clean5(t, n2, tlsT, "txs-tls")
	tlsM.Sub(t, paho.SubscribeOptions{Topic: group, QoS: 1})
	ws := tx.paho3(t, n1, wsT, "txs-ws", true, nil)
	ws.sub(t, group, 1)
	mosq := mosquittoSubArgs(t, tx.mosq(n1), "txs-mosq-tls", 1, group)
	members := map[string]*sink{"wss5@n1": js5.sink, "wss4@n2": js4.sink, "tls@n2": pahoSink(tlsM), "ws@n1": ws.sink, "mosq-tls@n1": mosq}
	probe := harness.Connect(t, n3, "txs-probe")
	awaitProbes(t, probe, "tx/job/probe", slices.Collect(maps.Values(members))...)
	pubJS := tx.js(t, n3, 5, "txs-pub-wss", nil, nil)
	const jobs = 60
	for i := range jobs {
		if i%2 == 0 {
			pubJS.publish(t, "tx/job/wss", fmt.Sprintf("job-%d", i), 1, false)
		} else if rc := probe.Pub(t, &paho.Publish{Topic: "tx/job/tcp", QoS: 1, Payload: fmt.Appendf(nil, "job-%d", i)}); rc != 0 {
			t.Fatalf("job %d: PUBACK 0x%02X", i, rc)
		}
	}
	pubJS.awaitPublished(t, 20*time.Second)
	got := map[string]int{}
	counts := map[string]int{}
	deadline := time.After(20 * time.Second)
	for n := 0; n < jobs; {
		select {
		case <-deadline:
			t.Fatalf("shared group got %d of %d messages: %v", n, jobs, counts)
		default:
		}
		for name, s := range members {
			select {
			case r := <-s.ch:
				got[r.payload]++
				counts[name]++
				n++
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	for p, c := range got {
		if c != 1 {
			t.Errorf("shared group: %s delivered %d times, want once", p, c)
		}
	}
	if len(got) != jobs {
		t.Errorf("shared group: %d distinct messages, want %d", len(got), jobs)
	}
	nodes := map[string]bool{}
	for name := range counts {
		nodes[name[strings.IndexByte(name, '@'):]] = true
	}
	if len(counts) < 3 || len(nodes) < 2 {
		t.Errorf("shared group: deliveries %v; want members on both nodes and at least three of them served", counts)
	}
	t.Logf("shared group deliveries per member: %v", counts)
}

// testTxKeepAlive: mqtt.js over WSS (3.1.1 and 5, keep alive 3 s) on
// cluster nodes stays connected while idle for two keep-alive periods and
// more than three connect timeouts, and while busy: receiving messages
// from another node and publishing.
func testTxKeepAlive(t *testing.T, tx *txCluster) {
	n1, n2, n3 := tx.Nodes[0], tx.Nodes[1], tx.Nodes[2]
	js5 := tx.js(t, n2, 5, "txk-wss5", map[string]any{"keepalive": 3}, map[string]int{"tx/ka/#": 1})
	js4 := tx.js(t, n3, 4, "txk-wss4", map[string]any{"keepalive": 3, "clean": false}, map[string]int{"tx/ka/#": 1})
	pub := harness.Connect(t, n1, "txk-pub")
	awaitProbes(t, pub, "tx/ka/probe", js5.sink, js4.sink)
	// Idle: nothing but PINGREQ/PINGRESP for 7 s.
	time.Sleep(7 * time.Second) // the time is what the test is about; no event may happen within it
	js5.quiet(t)
	js4.quiet(t)
	// Busy: for 7 s, a message from n1 every 50 ms (QoS 0 and 1 in
	// turn), and mqtt.js publishes every 500 ms.
	sent := 0
	end := time.Now().Add(7 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		if rc := pub.Pub(t, &paho.Publish{Topic: "tx/ka/busy", QoS: byte(i % 2), Payload: []byte(strconv.Itoa(i))}); rc != 0 {
			t.Fatalf("busy publish %d: 0x%02X", i, rc)
		}
		sent++
		if i%10 == 0 {
			js5.publish(t, "tx/ka/up5", strconv.Itoa(i), 1, false)
			js4.publish(t, "tx/ka/up4", strconv.Itoa(i), 1, false)
		}
		time.Sleep(50 * time.Millisecond) // the publishing rate
	}
	js5.awaitPublished(t, 10*time.Second)
	js4.awaitPublished(t, 10*time.Second)
	for _, js := range []*jsClient{js5, js4} {
		// Each gets the busy messages and both clients' own (QoS 1
		// over loopback: none lost while connected).
		got := js.sink.take(t, sent+js5.ids+js4.ids, 20*time.Second)
		busy := 0
		for _, r := range got {
			if r.topic == "tx/ka/busy" {
				busy++
			}
		}
		if busy != sent {
			t.Errorf("%s: %d of %d busy messages", js.sink.name, busy, sent)
		}
		js.quiet(t)
	}
}

// testTxNodeKill kills n3 (kill -9) while it holds, over WSS, two
// persistent mqtt.js sessions (3.1.1 clean session off, and 5 with a
// Session Expiry Interval: a WeChat mini program with reconnectPeriod and
// the cluster's nodes as its servers) and, over TLS, WSS and WS, clients
// with wills. The wills reach a WSS subscriber on n1; the mqtt.js
// clients reconnect by themselves to the next server, find their
// sessions (Session Present), and get every QoS 1 message acknowledged
// to its publisher on n1 for them, before the kill and after.
func testTxNodeKill(t *testing.T, tx *txCluster) {
	n1, n2, n3 := tx.Nodes[0], tx.Nodes[1], tx.Nodes[2]
	host := func(nd *harness.Node) map[string]any {
		u, _ := url.Parse(tx.urls[nd.Name][wssT])
		p, _ := strconv.Atoi(u.Port())
		return map[string]any{"host": u.Hostname(), "port": p}
	}
	wills := tx.js(t, n1, 4, "txn-wills", nil, map[string]int{"tx/will/#": 1})
	expiry := uint32(600)
	// Wills of persistent sessions on n3 (the cluster replicates the
	// sessions, wills included): MQTT 5 paho.golang over TLS and mqtt.js
	// over WSS, 3.1.1 paho.mqtt.golang over WS.
	tx.paho5(t, n3, tlsT, &paho.Connect{ClientID: "txn-will-tls", CleanStart: true, KeepAlive: 30,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage: &paho.WillMessage{Topic: "tx/will/tls", QoS: 1, Payload: []byte("tls")}})
	tx.js(t, n3, 5, "txn-will-wss", map[string]any{"clean": false, "properties": map[string]any{"sessionExpiryInterval": expiry},
		"will": map[string]any{"topic": "tx/will/wss", "payload": "wss", "qos": 1}}, nil)
	tx.paho3(t, n3, wsT, "txn-will-ws", false, &received{topic: "tx/will/ws", payload: "ws", qos: 1})
	// Wills of clean sessions on n3 (their owner records keep them,
	// cleanwill.go): MQTT 5 paho.golang with no session expiry over
	// TLS, mqtt.js 3.1.1 clean session over WSS (a WeChat mini program),
	// 3.1.1 paho.mqtt.golang clean over TCP; and one that DISCONNECTs
	// normally before the kill, whose will must never come.
	tx.paho5(t, n3, tlsT, &paho.Connect{ClientID: "txn-cwill-tls", CleanStart: true, KeepAlive: 30,
		WillMessage: &paho.WillMessage{Topic: "tx/will/clean-tls", QoS: 1, Payload: []byte("clean-tls")}})
	tx.js(t, n3, 4, "txn-cwill-wss", map[string]any{"clean": true,
		"will": map[string]any{"topic": "tx/will/clean-wss", "payload": "clean-wss", "qos": 1}}, nil)
	tx.paho3(t, n3, tcpT, "txn-cwill-tcp", true, &received{topic: "tx/will/clean-tcp", payload: "clean-tcp", qos: 1})
	bye := tx.paho3(t, n3, tcpT, "txn-cwill-bye", true, &received{topic: "tx/will/clean-bye", payload: "clean-bye", qos: 1})
	bye.Disconnect(100)
	tx.WaitLog(n3, `client_id=txn-cwill-bye reason="client disconnected normally"`, 1, 20*time.Second)
	// The WeChat clients on n3, with every node as a server.
	roam := map[int]*jsClient{}
	for _, v := range []int{4, 5} {
		// mqtt.js's own reconnect settings: a node closes a CONNECT
		// without a CONNACK while the survivors elect leaders after the
		// kill, so that it tries again (after a refusing CONNACK it
		// would stop for good: docs/cluster.md).
		o := map[string]any{"clean": false, "reconnectPeriod": 500,
			"servers": []any{host(n3), host(n1), host(n2)}}
		if v == 5 {
			o["properties"] = map[string]any{"sessionExpiryInterval": expiry}
			o["servers"] = []any{host(n3), host(n2), host(n1)}
		}
		roam[v] = tx.js(t, n3, v, fmt.Sprintf("txn-roam%d", v), o, map[string]int{fmt.Sprintf("tx/fo/%d", v): 1})
	}
	pub := harness.Connect(t, n1, "txn-pub")
	for v := range roam {
		pub.AwaitInterest(t, fmt.Sprintf("tx/fo/%d", v))
	}

	// QoS 1 to each session's topic, about every 20 ms, from before the
	// kill until both clients are back and a second more.
	type result struct {
		acked, noMatch, closed []string
		ackedAt                map[string]time.Time
	}
	res := map[int]*result{4: {ackedAt: map[string]time.Time{}}, 5: {ackedAt: map[string]time.Time{}}}
	var ackedN [6]atomic.Int64 // per version, for the test's goroutine
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { // errors go to done: t.Fatal is for the test's goroutine
		for i := 0; i < 3000; i++ {
			select {
			case <-stop:
				done <- nil
				return
			case <-time.After(20 * time.Millisecond):
			}
			for v, r := range res {
				p := fmt.Sprintf("v%d-%d", v, i)
				rc, closed, err := harness.PublishOnce(pub, &paho.Publish{Topic: fmt.Sprintf("tx/fo/%d", v), QoS: 1, Payload: []byte(p)})
				switch {
				case err != nil:
					done <- err
					return
				case closed: // outcome unknown: the publisher would send again
					r.closed = append(r.closed, p)
					if pub, err = harness.RedialPub(t, n1, "txn-pub"); err != nil {
						done <- err
						return
					}
				case rc == 0x10:
					r.noMatch = append(r.noMatch, p)
				case rc == 0:
					r.acked = append(r.acked, p)
					r.ackedAt[p] = time.Now()
					ackedN[v].Add(1)
				default:
					done <- fmt.Errorf("publish %s: PUBACK 0x%02X", p, rc)
					return
				}
			}
		}
		done <- nil
	}()
	time.Sleep(500 * time.Millisecond) // messages before the kill: the load's first part
	killed := time.Now()
	tx.Kill(n3, syscall.SIGKILL)
	t.Logf("n3 killed at %s", killed.UTC().Format("15:04:05.000"))
	for v, c := range roam {
		ev, before := c.awaitEvent(t, "connect", 40*time.Second)
		if !ev.SessionPresent {
			t.Errorf("mqtt.js %d reconnected %v after the kill without its session (Session Present 0)", v, time.Since(killed))
		}
		t.Logf("mqtt.js %d: %v %v after the kill, after %v", v, ev, time.Since(killed).Round(time.Millisecond), before)
	}
	// The load's last part, with both clients back: five more
	// acknowledged for each (a publisher closed while n3 died may still
	// be waiting for its CONNECT to be taken).
	base := [6]int64{4: ackedN[4].Load(), 5: ackedN[5].Load()}
	if !eventuallypkg.Within(30*time.Second, func() bool {
		return ackedN[4].Load() >= base[4]+5 && ackedN[5].Load() >= base[5]+5
	}) {
		t.Errorf("after both clients were back, %d and %d more publishes acknowledged within 30 s, want 5 each",
			ackedN[4].Load()-base[4], ackedN[5].Load()-base[5])
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for v, c := range roam {
		r := res[v]
		have := map[string]bool{}
		// Until 20 s pass without a message: a fixed 20 s judged a
		// queue still being delivered at load 30 as lost.
		drainUntil := time.Now().Add(20 * time.Second)
		missing := func() []string {
			return slices.DeleteFunc(slices.Clone(r.acked), func(p string) bool { return have[p] })
		}
		for len(missing()) > 0 && time.Now().Before(drainUntil) {
			select {
			case m := <-c.sink.ch:
				have[m.payload] = true
				drainUntil = time.Now().Add(20 * time.Second)
			case <-time.After(100 * time.Millisecond):
			}
		}
		if m := missing(); len(m) > 0 {
			t.Errorf("mqtt.js %d: %d of %d acknowledged messages never delivered: %v", v, len(m), len(r.acked), m[:min(20, len(m))])
			first, last := r.ackedAt[m[0]], r.ackedAt[m[len(m)-1]]
			t.Logf("mqtt.js %d: the first missing acknowledged at %s (%v after the kill), the last at %s",
				v, first.UTC().Format("15:04:05.000"), first.Sub(killed).Round(time.Millisecond), last.UTC().Format("15:04:05.000"))
			// What its connection did after it came back (a second
			// connect, a close) says where to look in the node logs.
			for len(c.events) > 0 {
				ev := <-c.events
				t.Logf("mqtt.js %d then, %v after the kill: %v", v, ev.At.Sub(killed).Round(time.Millisecond), ev)
			}
		}
		t.Logf("mqtt.js %d: %d acknowledged (all delivered: %v), %d answered 0x10 No matching subscribers (published while the session had no live owner), %d unanswered (connection closed)",
			v, len(r.acked), len(missing()) == 0, len(r.noMatch), len(r.closed))
	}
	// Every will, once, at the WSS subscriber on n1; none of the clean
	// client that said goodbye.
	got := map[string]int{}
	deadline := time.After(30 * time.Second)
	for len(got) < 6 {
		select {
		case r := <-wills.sink.ch:
			got[r.payload]++
		case <-deadline:
			t.Fatalf("wills delivered over WSS on n1 after n3 was killed: %v, want tls, wss, ws, clean-tls, clean-wss and clean-tcp", got)
		}
	}
	if got["clean-bye"] > 0 {
		t.Errorf("will of txn-cwill-bye published, which DISCONNECTed normally before the kill")
	}
	for w, n := range got {
		if n != 1 {
			t.Errorf("will %q delivered %d times, want once", w, n)
		}
	}
	select {
	case r := <-wills.sink.ch:
		t.Errorf("will %q delivered again", r.payload)
	case <-time.After(2 * time.Second):
	}
}
