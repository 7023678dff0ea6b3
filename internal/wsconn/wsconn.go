// Package wsconn presents a client-side WebSocket connection (gorilla)
// as the net.Conn byte stream MQTT runs on, for the client library and
// the load generator alike. (The listener's server side has its own: it
// also sends close frames and knows the client's forwarded address.)
package wsconn

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// ErrTextMessage ends the stream when the server sent a text message:
// MQTT travels in binary messages only [MQTT-6.0.0-1].
var ErrTextMessage = errors.New("websocket: non-binary message [MQTT-6.0.0-1]")

// Conn is a net.Conn over a WebSocket: each Write is one binary message,
// Read returns the bytes of consecutive messages as one stream (MQTT
// packets may span messages [MQTT-6.0.0-2]). A normal close from the
// server reads as io.EOF.
//
// Read and Write may run in their own goroutines, and deadlines may be
// moved from any goroutine to interrupt a blocked Read or Write: gorilla
// allows SetWriteDeadline only from the writer, so SetWriteDeadline
// records the deadline (the next Write hands it to gorilla) and sets it
// on the network connection at once, which interrupts a Write in
// progress.
type Conn struct {
	ws  *websocket.Conn
	rmu sync.Mutex
	r   io.Reader
	wmu sync.Mutex
	wd  atomic.Int64 // write deadline, Unix ns; 0 for none
}

// New wraps ws.
func New(ws *websocket.Conn) *Conn { return &Conn{ws: ws} }

func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, ErrTextMessage
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var d time.Time
	if ns := c.wd.Load(); ns != 0 {
		d = time.Unix(0, ns)
	}
	c.ws.SetWriteDeadline(d)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.wd.Store(ns)
	return c.ws.NetConn().SetWriteDeadline(t)
}

func (c *Conn) Close() error                      { return c.ws.Close() }
func (c *Conn) LocalAddr() net.Addr               { return c.ws.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr              { return c.ws.RemoteAddr() }
func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}
