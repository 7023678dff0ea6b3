package cluster_test

import (
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/internal/clustertest"
	eventuallypkg "github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/netfault"
)

// The process tests run real `roost serve` processes, one per node, on
// 127.0.0.2, .3, .4 (every address of 127.0.0.0/8 is the loopback on
// Linux, and the nodes bind their outgoing cluster connections to their
// own), with real MQTT clients (paho.golang) connected to different nodes.
// Each test has a cluster of its own (its own ports, data directories and,
// for partitions, network namespace), and they run in parallel
// (clusterLanes at a time): most of their time is spent waiting for what a
// cluster does in seconds (elections, timeouts), not on the CPU, and one
// after the other they took 7 minutes.
// internal/clustertest runs them; this file is the short names the tests
// of this package use for it.

var roostBin string

// clusterLanes is how many process tests run at once unless -test.parallel
// says otherwise: they wait on elections and timeouts far more than they
// compute (the package alone used about half a core with three), so four
// fit on two cores. With three the package was the suite's long pole
// again; four took it from 419 to 324 s and the fresh-clone suite from
// 549 to 514 s at the same CPU (docs/testing.md, "Four lanes").
const clusterLanes = 4

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		flag.Set("test.parallel", strconv.Itoa(clusterLanes))
	}
	bin, err := clustertest.Build(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roostBin = bin
	clustertest.Main(m)
}

// node is one roost serve process, with its addresses.
type node struct {
	*clustertest.Node
	name    string
	ip      string
	mqtt    string // MQTT listener HOST:PORT
	cluster string // --cluster-listen HOST:PORT
}

type testCluster struct {
	t     *testing.T
	c     *clustertest.Cluster
	nodes []*node
}

// startCluster starts n nodes as peers of each other and waits until every
// node has heard from every other.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n)
}

// startClusterWith is startCluster with extra arguments for every node.
func startClusterWith(t *testing.T, n int, args ...string) *testCluster {
	t.Helper()
	return wrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: n, Args: args}))
}

// startClusterFault is startClusterWith with fault (fault.go, faultEnv)
// in every node's environment; each node takes the faults that name it.
func startClusterFault(t *testing.T, n int, fault string, args ...string) *testCluster {
	t.Helper()
	return wrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: n, Args: args, Env: []string{"ROOST_TEST_FAULT=" + fault}}))
}

func wrapCluster(t *testing.T, c *clustertest.Cluster) *testCluster {
	tc := &testCluster{t: t, c: c}
	for _, nd := range c.Nodes {
		tc.nodes = append(tc.nodes, &node{Node: nd, name: nd.Name, ip: nd.IP, mqtt: nd.MQTT, cluster: nd.Cluster})
	}
	return tc
}

// start starts nd's process again, after a kill: same data directory.
func (tc *testCluster) start(nd *node) {
	tc.t.Helper()
	nd.Restart(tc.t)
}

// kill sends sig to nd: SIGKILL waits for the process to end, SIGSTOP for
// it to have stopped.
func (tc *testCluster) kill(nd *node, sig syscall.Signal) {
	tc.t.Helper()
	switch sig {
	case syscall.SIGKILL:
		nd.Kill(tc.t)
	case syscall.SIGSTOP:
		nd.Pause(tc.t)
	case syscall.SIGCONT:
		nd.Resume(tc.t)
	default:
		tc.t.Fatalf("kill %s: signal %v not supported by the harness", nd.name, sig)
	}
}

// countLog counts lines of nd's log containing s.
func countLog(nd *node, s string) int { return nd.CountLog(s) }

func (tc *testCluster) waitLog(nd *node, s string, n int, d time.Duration) {
	tc.t.Helper()
	nd.WaitLog(tc.t, s, n, d)
}

// eventually polls cond until it returns nil or d passes.
func eventually(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	eventuallypkg.NoError(t, d, cond)
}

// client is a paho.golang MQTT 5 client whose received messages go to a
// channel.
type client struct {
	*clustertest.Client
	id  string
	in  chan *paho.Publish
	dis chan *paho.Disconnect
}

func wrapClient(c *clustertest.Client) *client {
	return &client{Client: c, id: c.ID, in: c.In, dis: c.Dis}
}

// connect connects an MQTT 5 client with id to nd; it disconnects when the
// test ends.
func connect(t *testing.T, nd *node, id string) *client {
	t.Helper()
	return wrapClient(clustertest.Connect(t, nd.mqtt, id))
}

// connectWith sends cp to nd and returns the client and its CONNACK,
// whatever its code.
func connectWith(t *testing.T, nd *node, cp *paho.Connect) (*client, *paho.Connack) {
	t.Helper()
	c, ack := clustertest.ConnectWith(t, nd.mqtt, cp)
	return wrapClient(c), ack
}

func (c *client) subscribe(t *testing.T, opts ...paho.SubscribeOptions) {
	t.Helper()
	c.Sub(t, opts...)
}

// publish publishes and returns the PUBACK/PUBCOMP reason code (0 for QoS 0).
func (c *client) publish(t *testing.T, p *paho.Publish) byte {
	t.Helper()
	return c.Pub(t, p)
}

// awaitInterest: see clustertest.Client.AwaitInterest. Subscribers see the
// probes (payload "probe") and must skip them.
func (c *client) awaitInterest(t *testing.T, topic string) {
	t.Helper()
	c.AwaitInterest(t, topic)
}

// next returns the next message that is not a probe, within d.
func (c *client) next(t *testing.T, d time.Duration) *paho.Publish {
	t.Helper()
	return c.Next(t, d)
}

// none checks that no message but probes arrives within d.
func (c *client) none(t *testing.T, d time.Duration) {
	t.Helper()
	c.None(t, d)
}

// drainInbox hands take every message waiting in c's inbox (nil: none),
// without waiting: the inbox is bounded, so a test that publishes while
// its client receives empties it as it goes.
func drainInbox(c *client, take func(*paho.Publish)) {
	for c != nil {
		select {
		case m := <-c.in:
			take(m)
		default:
			return
		}
	}
}

// tryPublish publishes p and returns the reason code of its
// acknowledgement, or closed true when the broker closed the connection
// instead: what it does with a QoS 1 message another node did not confirm.
// The node does one or the other within its forward_timeout (15 s at most
// in these tests), so the bound is past that (it was 12 s, shorter than
// the 15 s, which a busy machine can take).
func (c *client) tryPublish(t *testing.T, p *paho.Publish) (rc byte, closed bool) {
	t.Helper()
	return c.TryPub(t, p, publishBound)
}

// publishBound bounds the wait for a node's answer to a publish: past the
// longest forward_timeout of these tests (15 s).
const publishBound = 30 * time.Second

// publishOwed publishes QoS 1 messages PREFIX-0, PREFIX-1, ... on topic
// through *pub (client id id on nd) until n were acknowledged, 4n tries at
// most, and returns those: what the cluster owes a subscriber. A closed
// connection leaves its message's outcome unknown (not owed) and is
// dialled again; a refusal fails t, as do fewer than n acknowledged.
func publishOwed(t *testing.T, nd *node, id string, pub **client, topic, prefix string, n int) []string {
	t.Helper()
	return publishOwedQoS(t, nd, id, pub, topic, prefix, n, 1)
}

// publishOwedQoS is publishOwed at QoS qos (2: the messages completed).
func publishOwedQoS(t *testing.T, nd *node, id string, pub **client, topic, prefix string, n int, qos byte) []string {
	t.Helper()
	var owed []string
	for i := 0; len(owed) < n && i < 4*n; i++ {
		p := fmt.Sprintf("%s-%d", prefix, i)
		rc, closed := (*pub).tryPublish(t, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(p)})
		switch {
		case closed:
			eventually(t, 30*time.Second, func() error { return redial(t, nd, id, pub) })
		case rc >= 0x80:
			t.Fatalf("publish %s refused: 0x%02X", p, rc)
		default:
			owed = append(owed, p)
		}
	}
	if len(owed) < n {
		t.Fatalf("only %d of %d messages to %s acknowledged", len(owed), 4*n, topic)
	}
	return owed
}

// retainedOn subscribes a new client on nd to filter and returns the
// payloads of the retained messages it is sent within d (sorted).
func retainedOn(t *testing.T, nd *node, id, filter string, d time.Duration) []string {
	t.Helper()
	return clustertest.Retained(t, nd.mqtt, id, filter, d)
}

// persistentPair connects PREFIX-sub to sub with a persistent session
// (Session Expiry expiry) subscribed to PREFIX/q1 at QoS 1 and PREFIX/q2 at
// QoS 2, and PREFIX-pub to pub, which has seen that interest.
func persistentPair(t *testing.T, sub, pub *node, prefix string, expiry uint32) (*client, *client) {
	t.Helper()
	s, ack := connectWith(t, sub, &paho.Connect{ClientID: prefix + "-sub", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}
	s.subscribe(t, paho.SubscribeOptions{Topic: prefix + "/q1", QoS: 1}, paho.SubscribeOptions{Topic: prefix + "/q2", QoS: 2})
	p := connect(t, pub, prefix+"-pub")
	p.awaitInterest(t, prefix+"/q1")
	p.awaitInterest(t, prefix+"/q2")
	return s, p
}

// readRetainedOn is retainedOn returning an error when the client cannot
// connect or subscribe: for use inside eventually.
func readRetainedOn(t *testing.T, nd *node, id, filter string, d time.Duration) ([]string, error) {
	t.Helper()
	return clustertest.ReadRetained(t, nd.mqtt, id, filter, d)
}

// redial connects a client with id to nd, for use inside eventually: a
// CONNECT may be closed without a CONNACK while the ownership records elect a leader.
func redial(t *testing.T, nd *node, id string, dst **client) error {
	c, ack, err := clustertest.Dial(t, nd.mqtt, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err != nil {
		return err
	}
	if ack.ReasonCode != 0 {
		return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
	}
	*dst = wrapClient(c)
	return nil
}

// resume connects id to its persistent session (Session Expiry expiry)
// on nd, again until it is accepted with the session present, within d: a
// CONNECT may be refused while a stream elects a leader, or not find the
// session yet while a node adopts it.
func resume(t *testing.T, nd *node, id string, expiry uint32, d time.Duration) *client {
	t.Helper()
	var back *client
	eventually(t, d, func() error {
		c, ack, err := tryConnect(t, nd, &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 || !ack.SessionPresent {
			c.Disconnect(&paho.Disconnect{})
			return fmt.Errorf("CONNACK 0x%02X, session present %v", ack.ReasonCode, ack.SessionPresent)
		}
		back = c
		return nil
	})
	return back
}

// rejectCut cuts nd off from the other nodes with a firewall that rejects
// (TCP resets, ICMP), so the routes close at once, and waits until nd and
// peer have dropped each other.
func rejectCut(t *testing.T, nf *netfault.Net, nd, peer *node) {
	t.Helper()
	nf.SetMode(netfault.Reject)
	if err := nf.Isolate(nd.ip); err != nil {
		t.Fatal(err)
	}
	eventually(t, partitionBound, func() error {
		if !goneFrom(peer, nd) || !goneFrom(nd, peer) {
			return fmt.Errorf("%s and %s have not dropped each other yet", peer.name, nd.name)
		}
		return nil
	})
}

// healTakesOver heals nf's cut and checks that stale, a connection on the
// node that was cut off whose client id was claimed on the majority
// meanwhile, is still up until then and taken over after it (DISCONNECT
// 0x8E): one connection per client id again.
func healTakesOver(t *testing.T, nf *netfault.Net, stale *client) {
	t.Helper()
	select {
	case <-stale.Done():
		t.Fatal("the connection on the cut-off node ended during the cut; the test needs it to end only after")
	default:
	}
	if err := nf.Heal(); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-stale.dis:
		if d.ReasonCode != 0x8E {
			t.Errorf("stale connection got DISCONNECT 0x%02X, want 0x8E Session taken over", d.ReasonCode)
		}
	case <-stale.Done():
		// Closed before its DISCONNECT was read: the server's 0x8E is a
		// courtesy [MQTT-3.1.4-3 asks only that the old connection be
		// closed]; one connection per client id is what counts.
		select {
		case d := <-stale.dis:
			if d.ReasonCode != 0x8E {
				t.Errorf("stale connection got DISCONNECT 0x%02X, want 0x8E Session taken over", d.ReasonCode)
			}
		default:
			t.Logf("the stale connection was closed without a DISCONNECT it could read")
		}
	case <-time.After(partitionBound):
		t.Fatal("the stale connection on the formerly cut-off node is still up: two connections for one client id")
	}
}

// tcpConns returns the established IPv4 TCP connections of this machine as
// local and remote HOST:PORT pairs, from /proc/net/tcp.
func tcpConns(t *testing.T) [][2]string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	var out [][2]string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		out = append(out, [2]string{procAddr(f[1]), procAddr(f[2])})
	}
	return out
}

// procAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func procAddr(s string) string {
	ipHex, portHex, _ := strings.Cut(s, ":")
	ip, _ := hex.DecodeString(ipHex)
	port, _ := strconv.ParseUint(portHex, 16, 16)
	if len(ip) != 4 {
		return s
	}
	return net.JoinHostPort(net.IPv4(ip[3], ip[2], ip[1], ip[0]).String(), strconv.Itoa(int(port)))
}

// newPersistent connects id to nd with a new persistent session (Clean
// Start, Session Expiry queuedExpiry), which must be accepted, and
// subscribes it to subs.
func newPersistent(t *testing.T, nd *node, id string, subs ...paho.SubscribeOptions) *client {
	t.Helper()
	expiry := uint32(queuedExpiry)
	c, ack := connectWith(t, nd, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
	}
	c.subscribe(t, subs...)
	return c
}
