package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	wait "github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/store"
)

// target is a broker the scenario tests run against, behind a TCP proxy
// that can cut every connection at once.
type target interface {
	URL() string
	// Down stops the broker cleanly, keeping its sessions; Up starts it
	// again on the same address.
	Down(t *testing.T)
	Up(t *testing.T)
	// Kill cuts every client connection abruptly (RST, no DISCONNECT), as
	// a network failure does; the broker and its state stay.
	Kill(t *testing.T)
	// open counts the client connections through the proxy.
	open() int
	// Crash ends the broker abruptly and starts it again: mosquitto gets
	// SIGKILL (it keeps what it had saved), Roost is cut off and restarted
	// with its store.
	Crash(t *testing.T)
}

// forTargets runs fn against Roost and mosquitto, for MQTT 5 and 3.1.1.
func forTargets(t *testing.T, fn func(t *testing.T, tg target, v packet.Version)) {
	forTargetsWith(t, nil, fn)
}

// forTargetsWith is forTargets with mosq added to mosquitto's
// configuration (startMosquitto).
func forTargetsWith(t *testing.T, mosq []string, fn func(t *testing.T, tg target, v packet.Version)) {
	for _, name := range []string{"roost", "mosquitto"} {
		for _, v := range []packet.Version{packet.V5, packet.V311} {
			t.Run(fmt.Sprintf("%s/%v", name, v), func(t *testing.T) {
				fn(t, startTarget(t, name, mosq), v)
			})
		}
	}
}

// startTarget starts the broker name ("roost" or "mosquitto", with mosq
// added to its configuration).
func startTarget(t *testing.T, name string, mosq []string) target {
	if name == "roost" {
		// As mosquitto (max_queued_messages): the default 1000 would
		// drop messages a fast publisher queues for a subscriber whose
		// acknowledgements lag, by design.
		return startRoost(t, broker.Options{MaxQueued: 100000})
	}
	return startMosquitto(t, mosq...)
}

// proxy forwards connections to a backend address and can cut them all.
type proxy struct {
	ln    net.Listener
	addr  string
	mu    sync.Mutex
	back  string // "" while the backend is down: connections are refused
	conns map[net.Conn]struct{}
}

func newProxy(t *testing.T) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) setBack(addr string) {
	p.mu.Lock()
	p.back = addr
	p.mu.Unlock()
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		back := p.back
		p.mu.Unlock()
		if back == "" {
			c.Close()
			continue
		}
		b, err := net.Dial("tcp", back)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(c, b)
		go p.pipe(b, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// open counts the proxied connections (two sockets each) still open.
func (p *proxy) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// cut resets every proxied connection at once.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, like a crash
		}
		c.Close()
		delete(p.conns, c)
	}
}

// roostTarget is an in-process Roost whose sessions survive restarts in a
// store.Memory.
type roostTarget struct {
	*proxy
	opts broker.Options
	srv  *broker.Server
}

func startRoost(t *testing.T, opts broker.Options) *roostTarget {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.SysInterval = -1
	opts.Store = store.NewMemory()
	r := &roostTarget{proxy: newProxy(t), opts: opts}
	r.Up(t)
	t.Cleanup(func() { r.Down(t) })
	return r
}

func (r *roostTarget) URL() string { return "mqtt://" + r.addr }

func (r *roostTarget) Up(t *testing.T) {
	srv, err := broker.New(r.opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	r.srv = srv
	r.setBack(ln.Addr().String())
}

func (r *roostTarget) Down(t *testing.T) {
	r.setBack("")
	if r.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		t.Errorf("broker Shutdown: %v", err)
	}
	r.srv = nil
	r.cut()
}

func (r *roostTarget) Kill(t *testing.T) { r.cut() }

func (r *roostTarget) Crash(t *testing.T) {
	r.setBack("")
	r.cut()
	r.Down(t)
	r.Up(t)
}

// mosqTarget is a real mosquitto with persistence in a temp dir, behind
// the proxy.
type mosqTarget struct {
	*proxy
	b *mosquittotest.Broker
}

// keepOrder is the mosquitto configuration line under which it keeps
// each topic's order at volume (TestThousandsInOrder,
// TestOrderBehindHeldQoS2). With its default inflight limit (20 for a
// 3.1.1 client), mosquitto 2.0.11 (Debian's) reorders: an acknowledgement
// moves up to 20 messages from the client's queue counting only the
// inflight messages ahead of the acknowledged one, so its inflight list
// grows past 20; an acknowledgement with 20 or more ahead of it (QoS 2
// flows awaiting PUBCOMP) frees quota and moves nothing; and a QoS 1/2
// message that arrives while quota is free is sent at once, ahead of the
// older ones still queued. With no limit nothing is queued for a connected
// client. Its changelog lists "various fixes around inflight quota
// management" for 2.0.13 (#2306), not checked against this case. A 5.0
// client's limit is its own Receive Maximum (65,535 unless it sends one),
// never reached here.
const keepOrder = "max_inflight_messages 0"

// startMosquitto starts mosquitto with persistence saved at every change,
// so that a crash (SIGKILL) loses no more than a real one would; lines are
// added to its config (see mosquittotest.Start).
func startMosquitto(t *testing.T, lines ...string) *mosqTarget {
	t.Helper()
	lines = append([]string{"persistence true", "autosave_interval 1", "autosave_on_changes true",
		"max_queued_messages 100000"}, lines...)
	m := &mosqTarget{proxy: newProxy(t), b: mosquittotest.Start(t, lines...)}
	m.setBack(m.b.Addr)
	return m
}

func (m *mosqTarget) URL() string { return "mqtt://" + m.addr }

func (m *mosqTarget) Up(t *testing.T) {
	t.Helper()
	m.b.Restart(t)
	m.setBack(m.b.Addr)
}

func (m *mosqTarget) Down(t *testing.T) { m.setBack(""); m.b.Stop(syscall.SIGTERM) }
func (m *mosqTarget) Kill(t *testing.T) { m.cut() }
func (m *mosqTarget) Crash(t *testing.T) {
	m.setBack("")
	m.b.Stop(syscall.SIGKILL)
	m.Up(t)
}

// eventually retries fn until it returns nil or d passes
// (internal/eventually).
func eventually(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	wait.NoError(t, d, fn)
}

// waitServerClosed waits until no client connection is open through the
// proxy and, for Roost, the broker has finished with every connection (for
// one that ended with DISCONNECT: has handled it).
func waitServerClosed(t *testing.T, tg target) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if n := tg.open(); n > 0 {
			return fmt.Errorf("%d connections open through the proxy", n)
		}
		if r, ok := tg.(*roostTarget); ok {
			if n := r.srv.Stats().Connected; n > 0 {
				return fmt.Errorf("the broker still serves %d connections", n)
			}
		}
		return nil
	})
}

// testCtx is a context bounded for one test.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fastReconnect is a Backoff for tests.
var fastReconnect = Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}

// newClient creates and connects a client, disconnected at cleanup.
func newClient(t *testing.T, url string, v packet.Version, mod func(*Options)) *Client {
	t.Helper()
	o := Options{Servers: []string{url}, Version: v, Reconnect: fastReconnect, ConnectTimeout: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// inbox collects received messages.
type inbox struct {
	mu   sync.Mutex
	msgs []*Message
}

func (in *inbox) handle(m *Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
}

func (in *inbox) all() []*Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*Message(nil), in.msgs...)
}

func (in *inbox) waitN(t *testing.T, n int, d time.Duration) []*Message {
	t.Helper()
	eventually(t, d, func() error {
		if got := len(in.all()); got < n {
			return fmt.Errorf("%d of %d messages", got, n)
		}
		return nil
	})
	return in.all()
}

var errStop = errors.New("stop")
