package soak

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mqtttest"
)

// transport is one way to reach the broker: a scheme, and the address a
// client dials (the broker's listener, or the PROXY forwarder in front of
// one).
type transport struct {
	name   string // mqtt, mqtts, ws, wss, with "-proxy" behind the forwarder
	scheme string
	addr   string // host:port
	proxy  bool
}

// url is the transport's URL for a client library; scheme may be replaced
// (wx and wxs for mqtt.js's mini program transport).
func (tr transport) url(scheme string) string {
	if scheme == "" {
		scheme = tr.scheme
	}
	u := scheme + "://" + tr.addr
	if strings.HasPrefix(tr.scheme, "ws") {
		u += "/mqtt"
	}
	return u
}

func (tr transport) tls() bool { return tr.scheme == "mqtts" || tr.scheme == "wss" }

// roostProc is the broker under test, a `roost serve` process.
type roostProc struct {
	cmd        *exec.Cmd
	logs       *mqtttest.LogBuffer
	dir        string
	caFile     string
	transports []transport
	exited     chan struct{}
}

// listenerSpecs are the broker's listeners, in the order of its config:
// serve logs one "listener ready" line each, in that order.
var listenerSpecs = []struct {
	scheme string
	proxy  bool
}{
	{"mqtt", false}, {"mqtts", false}, {"ws", false}, {"wss", false},
	{"mqtt", true}, {"mqtts", true}, {"ws", true}, {"wss", true},
}

// startRoost writes a CA, a server certificate and a config with every
// listener on 127.0.0.1, starts `roost serve` and waits for its listeners.
func startRoost(t *testing.T, connectTimeout time.Duration) *roostProc {
	t.Helper()
	dir := t.TempDir()
	ca, err := devcert.NewCA("roost soak CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM())
	writeFile(t, filepath.Join(dir, "server.pem"), chain)
	writeFile(t, filepath.Join(dir, "server.key"), key)

	var cfg strings.Builder
	cfg.WriteString("listeners:\n")
	for _, l := range listenerSpecs {
		path := ""
		if strings.HasPrefix(l.scheme, "ws") {
			path = "/mqtt"
		}
		fmt.Fprintf(&cfg, "  - url: %s://127.0.0.1:0%s\n", l.scheme, path)
		name := l.scheme
		if l.proxy {
			name += "-proxy"
			cfg.WriteString("    proxy_protocol: true\n")
		}
		fmt.Fprintf(&cfg, "    name: %s\n", name)
		if l.scheme == "mqtts" || l.scheme == "wss" {
			cfg.WriteString("    tls: {cert: server.pem, key: server.key}\n")
		}
	}
	// Loopback only, and anonymous on purpose: this test is about
	// connections, not credentials.
	cfg.WriteString("auth:\n  allow_anonymous: true\n")
	fmt.Fprintf(&cfg, "limits:\n  connect_timeout: %s\n", connectTimeout)
	writeFile(t, filepath.Join(dir, "roost.yaml"), []byte(cfg.String()))

	p := &roostProc{logs: new(mqtttest.LogBuffer), dir: dir, caFile: filepath.Join(dir, "ca.pem"), exited: make(chan struct{})}
	p.cmd = exec.Command(roostBin, "serve", "--config", filepath.Join(dir, "roost.yaml"), "--data", filepath.Join(dir, "data"))
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop(t) })

	ready := regexp.MustCompile(`msg="listener ready" addr=(\S+) scheme=(\S+)`)
	deadline := time.Now().Add(60 * time.Second) // a -race build on a busy machine starts slowly
	var found [][]string
	for {
		found = ready.FindAllStringSubmatch(p.logs.String(), -1)
		if len(found) == len(listenerSpecs) {
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("roost serve exited: %v\n%s", p.cmd.ProcessState, p.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("roost serve: %d of %d listeners ready after 60 s\n%s", len(found), len(listenerSpecs), p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, l := range listenerSpecs {
		if found[i][2] != l.scheme {
			t.Fatalf("listener %d: scheme %s, want %s", i, found[i][2], l.scheme)
		}
		tr := transport{name: l.scheme, scheme: l.scheme, addr: found[i][1], proxy: l.proxy}
		if l.proxy {
			tr.name += "-proxy"
			tr.addr = startProxy(t, found[i][1], !strings.HasPrefix(l.scheme, "ws"))
		}
		p.transports = append(p.transports, tr)
	}
	return p
}

// stop ends the broker with SIGTERM, as a service manager would, and
// fails the test if it does not exit cleanly or ever logged a panic.
func (p *roostProc) stop(t *testing.T) {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("roost serve did not exit within 30 s of SIGTERM")
		}
	}
	if !p.cmd.ProcessState.Success() {
		t.Errorf("roost serve exited with %v", p.cmd.ProcessState)
	}
	if strings.Contains(strings.ToLower(p.logs.String()), "panic") {
		t.Errorf("the broker logged a panic:\n%s", p.logs)
	}
	if t.Failed() {
		os.WriteFile(filepath.Join(os.TempDir(), "roost-soak-broker.log"), []byte(p.logs.String()), 0o644)
		t.Logf("broker log kept in %s", filepath.Join(os.TempDir(), "roost-soak-broker.log"))
	}
}

// rssKiB is the broker's resident set size.
func (p *roostProc) rssKiB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

// dropLines are the broker's log lines about clients that went away (or
// panics) between byte offsets from and to.
func (p *roostProc) dropLines(from, to int) []string {
	s := p.logs.String()
	to = min(to, len(s))
	from = min(from, to)
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s[from:to]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, `msg="client disconnected"`) || strings.Contains(l, `msg="closing connection"`) ||
			strings.Contains(l, "panic") {
			out = append(out, l)
		}
	}
	return out
}

// startProxy plays a load balancer that speaks the PROXY protocol: it
// accepts on 127.0.0.1 and forwards each connection to backend after a
// PROXY header naming the client (v2 when v2 is set, else v1).
func startProxy(t *testing.T, backend string, v2 bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				forward(ctx, c, backend, v2)
			}()
		}
	}()
	return ln.Addr().String()
}

func forward(ctx context.Context, c net.Conn, backend string, v2 bool) {
	defer c.Close()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); b.Close() })
	defer stop()
	src := c.RemoteAddr().(*net.TCPAddr)
	dst := c.LocalAddr().(*net.TCPAddr)
	if _, err := b.Write(proxyHeader(src, dst, v2)); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(to, from net.Conn) {
		io.Copy(to, from)
		if tc, ok := to.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
}

// proxyHeader is a PROXY protocol header for a TCP over IPv4 connection.
func proxyHeader(src, dst *net.TCPAddr, v2 bool) []byte {
	if !v2 {
		return fmt.Appendf(nil, "PROXY TCP4 %s %s %d %d\r\n", src.IP, dst.IP, src.Port, dst.Port)
	}
	var h bytes.Buffer
	h.WriteString("\r\n\r\n\x00\r\nQUIT\n")
	h.WriteByte(0x21) // version 2, PROXY
	h.WriteByte(0x11) // TCP over IPv4
	h.Write([]byte{0, 12})
	h.Write(src.IP.To4())
	h.Write(dst.IP.To4())
	h.Write([]byte{byte(src.Port >> 8), byte(src.Port), byte(dst.Port >> 8), byte(dst.Port)})
	return h.Bytes()
}

// writeFile writes a fixture atomically: a temporary file renamed into
// place, so that nothing ever reads half of it.
func writeFile(t *testing.T, name string, b []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}
