package soak

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/wsconn"
	"github.com/roost-mqtt/roost/packet"
)

// result is what one client saw, whatever its library.
type result struct {
	Peer      string   `json:"-"`
	ID        string   `json:"id"`
	Transport string   `json:"-"`
	Role      string   `json:"role"`
	Connects  int      `json:"connects"`
	Closes    int      `json:"closes"` // connections lost before the end, not asked for
	ServerDis []int    `json:"serverDisconnects"`
	Errors    []string `json:"errors"`
	Sent      int      `json:"sent"`
	Received  int      `json:"received"`
	Dups      int      `json:"duplicates"`
	Missing   int      `json:"missing"`
}

// tally counts a busy client's echoes: every number sent must come back
// exactly once.
type tally struct {
	mu   sync.Mutex
	r    result
	seen map[int]bool
}

func newTally(peer, id string, tr transport, role string) *tally {
	return &tally{r: result{Peer: peer, ID: id, Transport: tr.name, Role: role}, seen: map[int]bool{}}
}

func (t *tally) got(payload []byte) {
	n, err := strconv.Atoi(string(payload))
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.errorf("unexpected payload %q", payload)
		return
	}
	if t.seen[n] {
		t.r.Dups++
		return
	}
	t.seen[n] = true
	t.r.Received++
}

func (t *tally) errorf(format string, args ...any) {
	if len(t.r.Errors) < 10 {
		t.r.Errors = append(t.r.Errors, fmt.Sprintf(format, args...))
	}
}

func (t *tally) note(f func(r *result)) {
	t.mu.Lock()
	f(&t.r)
	t.mu.Unlock()
}

func (t *tally) done() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.r.Received >= t.r.Sent
}

func (t *tally) result() result {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.r
	r.Missing = r.Sent - r.Received
	return r
}

// goClient is a Go library client running in the test.
type goClient interface {
	// run keeps the client busy or idle until ctx ends, then waits for
	// echoes in flight, disconnects cleanly and returns what it saw.
	run(ctx context.Context) result
}

func tlsConfig(caFile string) *tls.Config {
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(b)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// dialTransport opens the byte stream MQTT runs on for tr: TCP, TLS,
// WebSocket or WebSocket over TLS (the PROXY forwarder is just an
// address).
func dialTransport(ctx context.Context, tr transport, caFile string) (net.Conn, error) {
	switch tr.scheme {
	case "mqtt":
		var d net.Dialer
		return d.DialContext(ctx, "tcp", tr.addr)
	case "mqtts":
		d := tls.Dialer{Config: tlsConfig(caFile)}
		return d.DialContext(ctx, "tcp", tr.addr)
	default:
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 10 * time.Second}
		if tr.scheme == "wss" {
			d.TLSClientConfig = tlsConfig(caFile)
		}
		ws, resp, err := d.DialContext(ctx, tr.url(""), http.Header{})
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			return nil, err
		}
		return wsconn.New(ws), nil
	}
}

// busyLoop publishes a numbered message every interval until ctx ends,
// then waits (bounded) for the echoes.
func busyLoop(ctx context.Context, t *tally, interval time.Duration, publish func(seq int) error) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	seq := 0
	for {
		select {
		case <-ctx.Done():
			deadline := time.Now().Add(10 * time.Second)
			for !t.done() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			return
		case <-tick.C:
		}
		t.note(func(r *result) { r.Sent++ })
		if err := publish(seq); err != nil {
			t.note(func(r *result) { r.Sent--; t.errorf("publish %d: %v", seq, err) })
		}
		seq++
	}
}

// roostClient is Roost's own client library.
type roostClient struct {
	tr        transport
	caFile    string
	id, role  string
	version   packet.Version
	keepAlive time.Duration
	interval  time.Duration
}

func (c roostClient) run(ctx context.Context) result {
	t := newTally("roost client", c.id, c.tr, c.role)
	ending := make(chan struct{})
	echo := "soak/echo/" + c.id
	cl, err := client.New(client.Options{
		Servers:   []string{c.tr.url("")},
		TLSConfig: tlsConfig(c.caFile),
		ClientID:  c.id,
		Version:   c.version,
		KeepAlive: c.keepAlive,
		Will:      &client.Message{Topic: "soak/will/" + c.id, Payload: []byte("dropped"), QoS: 1},
		Reconnect: client.Backoff{Min: time.Second, Max: 2 * time.Second},
		OnConnectionUp: func(*client.Client, *packet.Connack) {
			t.note(func(r *result) { r.Connects++ })
		},
		OnConnectionDown: func(_ *client.Client, err error) {
			select {
			case <-ending:
			default:
				t.note(func(r *result) { r.Closes++; t.errorf("connection lost: %v", err) })
			}
		},
	})
	if err != nil {
		t.note(func(r *result) { t.errorf("New: %v", err) })
		return t.result()
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.Connect(cctx); err != nil {
		t.note(func(r *result) { t.errorf("Connect: %v", err) })
		return t.result()
	}
	filter := "soak/idle/" + c.id
	if c.role == "busy" {
		filter = echo
	}
	if _, err := cl.Subscribe(cctx, client.Subscription{Filter: filter, QoS: 1, Handler: func(m *client.Message) { t.got(m.Payload) }}); err != nil {
		t.note(func(r *result) { t.errorf("Subscribe: %v", err) })
	}
	if c.role == "busy" {
		busyLoop(ctx, t, c.interval, func(seq int) error {
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := cl.Publish(pctx, client.Message{Topic: echo, Payload: []byte(strconv.Itoa(seq)), QoS: 1})
			return err
		})
	} else {
		<-ctx.Done()
	}
	close(ending)
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := cl.Disconnect(dctx); err != nil {
		t.note(func(r *result) { t.errorf("Disconnect: %v", err) })
	}
	return t.result()
}

// pahoClient is paho.golang (MQTT 5), over a connection the test dials:
// paho.golang does not reconnect by itself, so any loss shows.
type pahoClient struct {
	tr        transport
	caFile    string
	id, role  string
	keepAlive uint16
	interval  time.Duration
}

func (c pahoClient) run(ctx context.Context) result {
	t := newTally("paho.golang", c.id, c.tr, c.role)
	var ending sync.Once
	ended := make(chan struct{})
	echo := "soak/echo/" + c.id
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := dialTransport(cctx, c.tr, c.caFile)
	if err != nil {
		t.note(func(r *result) { t.errorf("dial: %v", err) })
		return t.result()
	}
	pc := paho.NewClient(paho.ClientConfig{
		ClientID: c.id,
		Conn:     packets.NewThreadSafeConn(conn), // whole packets: see TestPahoWritesWholePackets
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				if pr.Packet.Topic == echo {
					t.got(pr.Packet.Payload)
				}
				return true, nil
			},
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			t.note(func(r *result) { r.ServerDis = append(r.ServerDis, int(d.ReasonCode)) })
		},
		OnClientError: func(err error) {
			select {
			case <-ended:
			default:
				t.note(func(r *result) { r.Closes++; t.errorf("client error: %v", err) })
			}
		},
	})
	_, err = pc.Connect(cctx, &paho.Connect{
		ClientID: c.id, KeepAlive: c.keepAlive, CleanStart: true,
		WillMessage:    &paho.WillMessage{Topic: "soak/will/" + c.id, Payload: []byte("dropped"), QoS: 1},
		WillProperties: &paho.WillProperties{},
	})
	if err != nil {
		t.note(func(r *result) { t.errorf("Connect: %v", err) })
		conn.Close()
		return t.result()
	}
	t.note(func(r *result) { r.Connects++ })
	filter := "soak/idle/" + c.id
	if c.role == "busy" {
		filter = echo
	}
	if _, err := pc.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.note(func(r *result) { t.errorf("Subscribe: %v", err) })
	}
	if c.role == "busy" {
		busyLoop(ctx, t, c.interval, func(seq int) error {
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := pc.Publish(pctx, &paho.Publish{Topic: echo, QoS: 1, Payload: []byte(strconv.Itoa(seq))})
			return err
		})
	} else {
		<-ctx.Done()
	}
	ending.Do(func() { close(ended) })
	if err := pc.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.note(func(r *result) { t.errorf("Disconnect: %v", err) })
	}
	return t.result()
}
