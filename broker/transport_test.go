package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// fatalConn behaves like gorilla's websocket.Conn under a read deadline:
// the first read timeout is kept as a permanent error, and it panics after
// a thousand reads on the failed connection. It is the kind of conn the
// transport contract (transport.go) calls fatal.
type fatalConn struct {
	net.Conn
	mu    sync.Mutex
	err   error
	reads int
}

func (c *fatalConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		c.reads++
		if c.reads >= 1000 {
			c.mu.Unlock()
			panic("repeated read on failed websocket connection")
		}
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	if err != nil && isTimeout(err) {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}
	return n, err
}

type fatalListener struct{ net.Listener }

func (l fatalListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &fatalConn{Conn: nc}, nil
}

// fatalConnectTimeout is the connect timeout of the tests whose clients
// CONNECT.
const fatalConnectTimeout = 2 * time.Second

// startFatal runs a broker whose conns make read timeouts fatal, with
// connect timeout ct, and returns its address and its log.
func startFatal(t *testing.T, ct time.Duration) (string, *mqtttest.LogBuffer) {
	t.Helper()
	logs := new(mqtttest.LogBuffer)
	s, err := New(Options{
		SysInterval:    -1,
		ConnectTimeout: ct,
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(fatalListener{ln}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		if strings.Contains(logs.String(), "panic") {
			t.Errorf("broker log has a panic:\n%s", logs.String())
		} else if t.Failed() {
			t.Logf("broker log:\n%s", logs.String())
		}
	})
	return ln.Addr().String(), logs
}

// TestFatalTimeoutConnLasts keeps a busy and an idle client on conns whose
// read timeouts are fatal well past the connect timeout and several
// keep-alive periods: neither may be dropped. (The WebSocket transport
// once dropped every client when the CONNECT deadline, left armed after
// CONNACK, fired.)
func TestFatalTimeoutConnLasts(t *testing.T) {
	t.Parallel()
	// The connect timeout is short, to be passed soon, but long enough
	// that a loaded machine's clients still CONNECT in time (with 0.3 s a
	// starved test process's CONNECT came late: "no CONNECT within the
	// connect timeout").
	addr, logs := startFatal(t, fatalConnectTimeout)
	const keepAlive = 1 // second: 1.5 s without a packet ends a client
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			t.Parallel()
			busy := dial(t, addr, v)
			busy.Connect(&packet.Connect{ClientID: "busy-" + v.String(), CleanStart: true, KeepAlive: keepAlive})
			busy.Subscribe("busy/"+v.String(), 0)
			idle := dial(t, addr, v)
			idle.Connect(&packet.Connect{ClientID: "idle-" + v.String(), CleanStart: true, KeepAlive: keepAlive})

			var received atomic.Int64
			readerDone := make(chan error, 1)
			go func() {
				for {
					p, err := busy.Read(5 * time.Second)
					if err != nil {
						readerDone <- err
						return
					}
					if _, ok := p.(*packet.Publish); ok {
						received.Add(1)
					}
				}
			}()
			// 4 s: past the 2 s connect timeout and 2.5 keep-alive
			// deadlines. The busy client publishes every 20 ms (and so
			// never needs PINGREQ); the idle one only pings, at the keep
			// alive as clients do.
			end := time.Now().Add(4 * time.Second)
			sent := 0
			nextPing := time.Now()
			for time.Now().Before(end) {
				b, _ := (&packet.Publish{Topic: "busy/" + v.String(), Payload: []byte("x")}).Encode(nil, v)
				if _, err := busy.NC.Write(b); err != nil {
					t.Fatalf("busy client: write after %d publishes: %v\n%s", sent, err, logs)
				}
				sent++
				if time.Now().After(nextPing) {
					idle.Send(&packet.Pingreq{})
					if _, ok := idle.Next(2 * time.Second).(*packet.Pingresp); !ok {
						t.Fatalf("idle client: no PINGRESP\n%s", logs)
					}
					nextPing = time.Now().Add(keepAlive * time.Second)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Every QoS 0 message on a healthy loopback connection arrives.
			mqtttest.Eventually(t, 5*time.Second, func() bool { return received.Load() == int64(sent) })
			select {
			case err := <-readerDone:
				t.Fatalf("busy client's connection ended: %v\n%s", err, logs)
			default:
			}
		})
	}
}

// TestFatalTimeoutConnKeepAlive checks that a conn with fatal timeouts
// still has its keep alive enforced: a client that sends nothing after
// CONNACK is closed once 1.5x its keep alive passed, and not before.
func TestFatalTimeoutConnKeepAlive(t *testing.T) {
	t.Parallel()
	addr, _ := startFatal(t, fatalConnectTimeout)
	c := dial(t, addr, packet.V5)
	// Before the CONNECT leaves: the keep alive counts from its arrival,
	// so a test process slow to read the CONNACK cannot make the close
	// look early.
	start := time.Now()
	c.Connect(&packet.Connect{ClientID: "silent", CleanStart: true, KeepAlive: 1})
	got := c.ExpectClosed(10 * time.Second) // 1.5 s, plus the 1/16 slack, plus a loaded machine
	elapsed := time.Since(start)
	if elapsed < 1400*time.Millisecond {
		t.Fatalf("closed after %v, before 1.5x the keep alive", elapsed)
	}
	if len(got) != 1 {
		t.Fatalf("got %v, want one DISCONNECT", got)
	}
	if d, ok := got[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.KeepAliveTimeout {
		t.Fatalf("got %v, want DISCONNECT 0x8D keep alive timeout", got[0])
	}
}

// TestFatalTimeoutConnConnectTimeout checks the connect timeout on a conn
// with fatal timeouts: a client that never sends CONNECT is closed.
func TestFatalTimeoutConnConnectTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := startFatal(t, 300*time.Millisecond)
	c := dial(t, addr, packet.V5)
	c.ExpectClosed(10 * time.Second)
}
