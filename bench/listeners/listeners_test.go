// Package listeners benchmarks MQTT throughput over plain TCP against
// WebSocket, with the broker in-process; see RESULTS.md.
package listeners

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

const (
	payloadSize = 64
	batch       = 64    // publishes per write (one WebSocket message)
	window      = 20000 // most messages in flight, below the broker's slow-consumer cut-off
)

// BenchmarkQoS0 sends 64-byte QoS 0 messages from one publisher to one
// subscriber, both on the transport named by the sub-benchmark, and reports
// messages per second delivered.
func BenchmarkQoS0(b *testing.B) {
	srv, err := broker.New(broker.Options{Logger: slog.New(slog.DiscardHandler), SysInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	tcpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	wsTCP, _ := net.Listen("tcp", "127.0.0.1:0")
	wsLn := listener.WebSocket(wsTCP, listener.WSOptions{Logger: slog.New(slog.DiscardHandler)})
	go srv.Serve(tcpLn)
	go srv.Serve(wsLn)

	dials := map[string]func(b *testing.B) net.Conn{
		"tcp": func(b *testing.B) net.Conn {
			c, err := net.Dial("tcp", tcpLn.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			return c
		},
		"ws": func(b *testing.B) net.Conn {
			d := websocket.Dialer{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
			ws, _, err := d.Dial("ws://"+wsLn.Addr().String()+"/mqtt", nil)
			if err != nil {
				b.Fatal(err)
			}
			return &wsClient{ws: ws}
		},
	}
	for _, name := range []string{"tcp", "ws"} {
		b.Run(name, func(b *testing.B) { run(b, dials[name]) })
	}
}

func run(b *testing.B, dial func(*testing.B) net.Conn) {
	sub, pub := dial(b), dial(b)
	defer sub.Close()
	defer pub.Close()
	subR := connect(b, sub, "bench-sub")
	subscribe(b, sub, subR, "bench/t")
	connect(b, pub, "bench-pub")

	one, _ := (&packet.Publish{Topic: "bench/t", Payload: make([]byte, payloadSize)}).Encode(nil, packet.V311)
	var buf []byte
	for range batch {
		buf = append(buf, one...)
	}
	var got atomic.Int64
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() {
		for got.Load() < int64(b.N) {
			p, err := subR.ReadPacket(packet.V311)
			if err != nil {
				done <- err
				return
			}
			if _, ok := p.(*packet.Publish); ok {
				got.Add(1)
			}
		}
		done <- nil
	}()
	for sent := 0; sent < b.N; sent += batch {
		for int64(sent)-got.Load() > window {
			time.Sleep(20 * time.Microsecond)
		}
		n := min(batch, b.N-sent)
		if _, err := pub.Write(buf[:n*len(one)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

func connect(b *testing.B, c net.Conn, id string) *packet.Reader {
	p, _ := (&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, ClientID: id}).Encode(nil, packet.V311)
	c.Write(p)
	r := packet.NewReader(c, 1<<20)
	if ack, err := r.ReadPacket(packet.V311); err != nil || ack.Type() != packet.CONNACK {
		b.Fatalf("CONNACK: %v %v", ack, err)
	}
	return r
}

func subscribe(b *testing.B, c net.Conn, r *packet.Reader, filter string) {
	p, _ := (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter}}}).Encode(nil, packet.V311)
	c.Write(p)
	if ack, err := r.ReadPacket(packet.V311); err != nil || ack.Type() != packet.SUBACK {
		b.Fatalf("SUBACK: %v %v", ack, err)
	}
}

// wsClient is the client side of MQTT over WebSocket: each Write is one
// binary message; Read concatenates messages.
type wsClient struct {
	net.Conn // unused methods
	ws       *websocket.Conn
	r        io.Reader
}

func (c *wsClient) Write(p []byte) (int, error) {
	return len(p), c.ws.WriteMessage(websocket.BinaryMessage, p)
}

func (c *wsClient) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsClient) Close() error { return c.ws.Close() }
