package listeners

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

// server is an in-process broker with its listeners.
type server struct {
	t    *testing.T
	srv  *broker.Server
	logs *mqtttest.LogBuffer
	log  *slog.Logger
}

func newServer(t *testing.T) *server {
	t.Helper()
	return newServerWith(t, broker.Options{MaxPacketSize: 256 << 10})
}

// tcp listens on 127.0.0.1:0 and returns the raw TCP listener.
func (s *server) tcp() net.Listener {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	return ln
}

// serve serves ln (built on top of a tcp() listener) and returns its address.
func (s *server) serve(ln net.Listener) string {
	go s.srv.Serve(ln)
	return ln.Addr().String()
}

// ws serves MQTT over WebSocket and returns the ws:// or wss:// URL.
func (s *server) ws(o listener.WSOptions) string {
	if o.Logger == nil {
		o.Logger = s.log
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = listener.WSMessageLimit(256 << 10)
	}
	addr := s.serve(listener.WebSocket(s.tcp(), o))
	scheme := "ws"
	if o.TLS != nil {
		scheme = "wss"
	}
	return scheme + "://" + addr + "/mqtt"
}

// waitLog waits until the broker's logs contain all of parts on one line.
func (s *server) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	var found string
	mqtttest.Eventually(t, 5*time.Second, func() bool {
		for line := range strings.Lines(s.logs.String()) {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

// pki is a development CA with a server certificate for 127.0.0.1 and
// localhost, written to a temporary directory.
type pki struct {
	dir               string
	ca                *devcert.CA
	caFile            string
	certFile, keyFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := devcert.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server-key.pem")}
	writeFile(t, p.caFile, ca.CertPEM())
	p.issueServer(t, "localhost", "127.0.0.1")
	return p
}

// issueServer (re)writes the server certificate for hosts.
func (p *pki) issueServer(t *testing.T, hosts ...string) {
	t.Helper()
	chain, key, err := p.ca.Issue(devcert.Leaf{CommonName: hosts[0], Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.certFile, chain)
	writeFile(t, p.keyFile, key)
}

func (p *pki) manager(t *testing.T, o listener.TLSOptions) *listener.CertManager {
	t.Helper()
	if o.Certs == nil {
		o.Certs = []listener.KeyPair{{Cert: p.certFile, Key: p.keyFile}}
	}
	m, err := listener.NewCertManager(o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// writeFile replaces name atomically (mqtttest.WriteFile): certificate
// watchers poll these files while tests renew them.
func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	mqtttest.WriteFile(t, name, data, time.Time{})
}

// mqttClient wraps any conn carrying MQTT in a raw test client.
func mqttClient(t *testing.T, nc net.Conn, v packet.Version) *mqtttest.Client {
	t.Cleanup(func() { nc.Close() })
	return &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<20), V: v}
}

// dialTCP connects a raw MQTT client over TCP, CONNECTs it and, if filter
// is set, subscribes it.
func dialTCP(t *testing.T, addr, id, filter string) *mqtttest.Client {
	t.Helper()
	c := mqtttest.Dial(t, addr, packet.V311)
	c.Connect(&packet.Connect{ProtocolName: "MQTT", CleanStart: true, KeepAlive: 30, ClientID: id})
	if filter != "" {
		c.Subscribe(filter, packet.QoS(1))
	}
	return c
}

// expectPublish reads until a PUBLISH arrives and returns it.
func expectPublish(t *testing.T, c *mqtttest.Client, d time.Duration) *packet.Publish {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for PUBLISH: %v", err)
		}
		if pub, ok := p.(*packet.Publish); ok {
			if pub.QoS == packet.QoS(1) {
				c.Send(&packet.Puback{PacketID: pub.PacketID})
			}
			return pub
		}
	}
}

// requireTool returns the path of a peer program or fails the test.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run ./scripts/test.sh, which installs the test peers (%v)", name, err)
	}
	return p
}

// requireNodeModules fails the test unless npm ci ran in this directory.
func requireNodeModules(t *testing.T) {
	t.Helper()
	for _, m := range []string{"mqtt", "playwright-core"} {
		if _, err := os.Stat(filepath.Join("node_modules", m, "package.json")); err != nil {
			t.Fatalf("node module %s missing: run ./scripts/test.sh (npm ci --prefix test/listeners): %v", m, err)
		}
	}
}

// event is one JSON line a node peer printed.
type event struct {
	Event   string `json:"event"`
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
	Message string `json:"message"`
	Text    string `json:"text"`
	Where   string `json:"where"`
}

// peer is a running node process printing JSON events.
type peer struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan event
	stderr *mqtttest.LogBuffer
}

// startNode runs node with args (from this directory) for at most a minute.
func startNode(t *testing.T, args ...string) *peer {
	t.Helper()
	node := requireTool(t, "node")
	requireNodeModules(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, node, args...)
	p := &peer{t: t, cmd: cmd, events: make(chan event, 64), stderr: &mqtttest.LogBuffer{}}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.events)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = event{Event: "garbage", Text: sc.Text()}
			}
			p.events <- ev
		}
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cancel()
			<-done
		}
		cancel()
		if t.Failed() {
			t.Logf("node %s stderr:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	return p
}

// expect waits for the named event, failing on an error event or timeout.
// Console messages from a browser are logged and skipped.
func (p *peer) expect(name string, d time.Duration) event {
	p.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-p.events:
			switch {
			case !ok:
				p.t.Fatalf("peer exited while waiting for %q; stderr:\n%s", name, p.stderr.String())
			case ev.Event == name:
				return ev
			case ev.Event == "error" || ev.Event == "pageerror" || ev.Event == "close" || ev.Event == "garbage":
				p.t.Fatalf("peer: %+v while waiting for %q", ev, name)
			case ev.Event == "console":
				p.t.Logf("browser console: %s", ev.Text)
			}
		case <-timeout:
			p.t.Fatalf("peer: no %q within %v", name, d)
		}
	}
}

func jsonArg(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func uniq(t *testing.T, prefix string) string {
	return fmt.Sprintf("%s/%s/%d", prefix, strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano())
}

// splitHostPort returns the host and port of a URL.
func splitHostPort(t *testing.T, raw string) (host string, port int, path string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	port, err = strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), port, u.Path
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func itoa(n int) string { return strconv.Itoa(n) }

// timeoutErr returns err if it is a timeout, else a value no error is.
func timeoutErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errNotTimeout
}

var errNotTimeout = errors.New("not a timeout")
