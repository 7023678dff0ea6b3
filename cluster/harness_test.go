package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The process tests run real `roost serve` processes, one per node, on
// 127.0.0.2, .3, .4 (every address of 127.0.0.0/8 is the loopback on
// Linux, and the nodes bind their outgoing cluster connections to their
// own), with real MQTT clients (paho.golang) connected to different nodes.

var roostBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "roost-cluster-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roostBin = filepath.Join(dir, "roost")
	build := exec.Command("go", "build", "-o", roostBin, "../cmd/roost")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building roost:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a TCP port the OS considers free on ip.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("no free port on %s: %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// node is one roost serve process.
type node struct {
	name     string
	ip       string
	mqtt     string // MQTT listener HOST:PORT
	cluster  string // --cluster-listen HOST:PORT
	data     string
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
	peers    []string
	extraArg []string
}

type testCluster struct {
	t     *testing.T
	nodes []*node
}

// startCluster starts n nodes (n <= 3 here: 127.0.0.2..4) as peers of each
// other and waits until every node has heard from every other.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n)
}

// startClusterWith is startCluster with extra arguments for every node.
func startClusterWith(t *testing.T, n int, args ...string) *testCluster {
	t.Helper()
	tc := &testCluster{t: t}
	dir := t.TempDir()
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", i+2)
		nd := &node{name: fmt.Sprintf("n%d", i+1), ip: ip,
			mqtt:    net.JoinHostPort(ip, strconv.Itoa(freePort(t, ip))),
			cluster: net.JoinHostPort(ip, strconv.Itoa(freePort(t, ip))),
			data:    filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		nd.logPath = nd.data + ".log"
		nd.extraArg = args
		tc.nodes = append(tc.nodes, nd)
	}
	for _, nd := range tc.nodes {
		for _, o := range tc.nodes {
			if o != nd {
				nd.peers = append(nd.peers, o.cluster)
			}
		}
	}
	for _, nd := range tc.nodes {
		tc.start(nd)
	}
	t.Cleanup(tc.stop)
	// Bounds for a loaded 2-core machine running -race: a node starts in
	// about a second when it is quiet.
	for _, nd := range tc.nodes {
		tc.waitLog(nd, "listener ready", 1, 40*time.Second)
	}
	for _, nd := range tc.nodes {
		tc.waitLog(nd, "cluster node joined", n-1, 30*time.Second)
		tc.waitLog(nd, "cluster ownership records ready", 1, 30*time.Second)
		tc.waitLog(nd, "cluster retained messages caught up", 1, 30*time.Second)
	}
	return tc
}

// start starts nd's process (again, after a kill: same data directory).
func (tc *testCluster) start(nd *node) {
	tc.t.Helper()
	args := []string{"serve", "--listen", "mqtt://" + nd.mqtt, "--data", nd.data, "--node", nd.name,
		"--cluster-listen", nd.cluster, "--log-level", "debug"}
	for _, p := range nd.peers {
		args = append(args, "--cluster-peer", p)
	}
	args = append(args, nd.extraArg...)
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tc.t.Fatal(err)
	}
	cmd := exec.Command(roostBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		tc.t.Fatalf("starting %s: %v", nd.name, err)
	}
	nd.cmd, nd.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(nd.done)
	}()
}

// kill sends sig to nd and, for SIGKILL, waits for the process to end.
func (tc *testCluster) kill(nd *node, sig syscall.Signal) {
	tc.t.Helper()
	nd.cmd.Process.Signal(sig)
	if sig == syscall.SIGSTOP {
		// kill(2) returns before the process has stopped: wait until
		// /proc says it has (state T).
		eventually(tc.t, 5*time.Second, func() error {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", nd.cmd.Process.Pid))
			if err != nil {
				return err
			}
			if _, rest, ok := strings.Cut(string(b), ") "); !ok || !strings.HasPrefix(rest, "T") {
				return fmt.Errorf("%s not stopped yet", nd.name)
			}
			return nil
		})
	}
	if sig == syscall.SIGKILL {
		select {
		case <-nd.done:
		case <-time.After(10 * time.Second):
			tc.t.Fatalf("%s did not die", nd.name)
		}
	}
}

// stop ends every node: SIGTERM, then SIGKILL after a bound. On failure
// the tail of each node's log is printed.
func (tc *testCluster) stop() {
	var wg sync.WaitGroup
	for _, nd := range tc.nodes {
		if nd.cmd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.cmd.Process.Signal(syscall.SIGCONT) // in case a test paused it
			nd.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-nd.done:
			case <-time.After(15 * time.Second):
				tc.t.Errorf("%s did not stop on SIGTERM within 15s; killing", nd.name)
				nd.cmd.Process.Kill()
				<-nd.done
			}
		}()
	}
	wg.Wait()
	if tc.t.Failed() {
		for _, nd := range tc.nodes {
			b, _ := os.ReadFile(nd.logPath)
			lines := strings.Split(string(b), "\n")
			var keep []string
			for _, l := range lines {
				if !strings.Contains(l, "component=nats") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
					keep = append(keep, l)
				}
			}
			tc.t.Logf("--- %s log (without NATS info lines), last 60 lines:\n%s", nd.name, strings.Join(keep[max(0, len(keep)-60):], "\n"))
		}
	}
}

// countLog counts lines of nd's log containing s.
func countLog(nd *node, s string) int {
	f, err := os.Open(nd.logPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(s)) {
			n++
		}
	}
	return n
}

func (tc *testCluster) waitLog(nd *node, s string, n int, d time.Duration) {
	tc.t.Helper()
	eventually(tc.t, d, func() error {
		if got := countLog(nd, s); got < n {
			select {
			case <-nd.done:
				b, _ := os.ReadFile(nd.logPath)
				tc.t.Fatalf("%s exited while waiting for %q; its log:\n%s", nd.name, s, b)
			default:
			}
			return fmt.Errorf("%s: %d log lines with %q, want %d", nd.name, got, s, n)
		}
		return nil
	})
}

// eventually polls cond until it returns nil or d passes.
func eventually(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client is a paho.golang MQTT 5 client whose received messages go to a
// channel.
type client struct {
	*paho.Client
	id  string
	in  chan *paho.Publish
	dis chan *paho.Disconnect
}

// connect connects an MQTT 5 client with id to nd; it disconnects when the
// test ends.
func connect(t *testing.T, nd *node, id string) *client {
	t.Helper()
	c, ack := connectWith(t, nd, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if ack.ReasonCode != 0 {
		t.Fatalf("connect %s to %s: CONNACK 0x%02X", id, nd.name, ack.ReasonCode)
	}
	return c
}

// connectWith sends cp to nd and returns the client and its CONNACK,
// whatever its code.
func connectWith(t *testing.T, nd *node, cp *paho.Connect) (*client, *paho.Connack) {
	t.Helper()
	id := cp.ClientID
	conn, err := net.DialTimeout("tcp", nd.mqtt, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", nd.name, err)
	}
	c := &client{id: id, in: make(chan *paho.Publish, 1000), dis: make(chan *paho.Disconnect, 4)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.in <- pr.Packet:
			default:
				t.Errorf("client %s: inbox full", id)
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.dis <- d },
		OnClientError:      func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); conn.Close() })
	if err != nil && ack == nil {
		t.Fatalf("connect %s to %s: %v", id, nd.name, err)
	}
	return c, ack
}

func (c *client) subscribe(t *testing.T, opts ...paho.SubscribeOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if err != nil {
		t.Fatalf("%s: subscribe: %v", c.id, err)
	}
	for i, rc := range ack.Reasons {
		if rc >= 0x80 {
			t.Fatalf("%s: SUBACK 0x%02X for %q", c.id, rc, opts[i].Topic)
		}
	}
}

// publish publishes and returns the PUBACK/PUBCOMP reason code (0 for QoS 0).
func (c *client) publish(t *testing.T, p *paho.Publish) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil && r != nil && r.ReasonCode >= 0x80 {
		return r.ReasonCode // paho reports failure codes as errors too
	}
	if err != nil {
		t.Fatalf("%s: publish %q: %v", c.id, p.Topic, err)
	}
	if r == nil {
		return 0
	}
	return r.ReasonCode
}

// awaitInterest publishes QoS 1 probes on topic through c until the
// publishing node reports a matching subscription (PUBACK 0x00 rather than
// 0x10 No matching subscribers): a subscription on another node reaches
// this one asynchronously, within milliseconds. Subscribers see the probes
// (payload "probe") and must skip them.
func (c *client) awaitInterest(t *testing.T, topic string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if rc := c.publish(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("probe")}); rc != 0 {
			return fmt.Errorf("probe on %q: PUBACK 0x%02X", topic, rc)
		}
		return nil
	})
}

// next returns the next message that is not a probe, within d.
func (c *client) next(t *testing.T, d time.Duration) *paho.Publish {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p := <-c.in:
			if string(p.Payload) == "probe" {
				continue
			}
			return p
		case <-deadline:
			t.Fatalf("%s: no message within %v", c.id, d)
			return nil
		}
	}
}

// none checks that no message but probes arrives within d.
func (c *client) none(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p := <-c.in:
			if string(p.Payload) != "probe" {
				t.Fatalf("%s: unexpected message %q on %q", c.id, p.Payload, p.Topic)
			}
		case <-deadline:
			return
		}
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

// retainedOn subscribes a new client on nd to filter and returns the
// payloads of the retained messages it is sent within d (sorted).
func retainedOn(t *testing.T, nd *node, id, filter string, d time.Duration) []string {
	t.Helper()
	c := connect(t, nd, id)
	c.subscribe(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
	var got []string
	deadline := time.After(d)
	for {
		select {
		case p := <-c.in:
			if p.Retain {
				got = append(got, p.Topic+"="+string(p.Payload))
			}
		case <-deadline:
			c.Disconnect(&paho.Disconnect{})
			slices.Sort(got)
			return got
		}
	}
}

// tryPublish publishes p and returns the reason code of its
// acknowledgement, or closed true when the broker closed the connection
// instead: what it does with a QoS 1 message another node did not confirm.
func (c *client) tryPublish(t *testing.T, p *paho.Publish) (rc byte, closed bool) {
	t.Helper()
	type result struct {
		r   *paho.PublishResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := contextWithTimeout(15 * time.Second)
		defer cancel()
		r, err := c.Publish(ctx, p)
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		if res.r != nil {
			return res.r.ReasonCode, false
		}
		if res.err != nil {
			select {
			case <-c.Done():
				return 0, true
			default:
			}
			t.Fatalf("%s: publish %q: %v", c.id, p.Topic, res.err)
		}
		return 0, false
	case <-c.Done():
		return 0, true
	case <-time.After(12 * time.Second):
		t.Fatalf("%s: publish %q neither acknowledged nor its connection closed", c.id, p.Topic)
		return 0, false
	}
}

// redial connects a client with id to nd, for use inside eventually: a
// CONNECT may be refused (0x88) while the ownership records elect a leader.
func redial(t *testing.T, nd *node, id string, dst **client) error {
	c, ack := connectWith(t, nd, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if ack.ReasonCode != 0 {
		return fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
	}
	*dst = c
	return nil
}
