package soak

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/internal/rawclient"
)

// paho.golang writes a packet as a header buffer and body buffers
// (net.Buffers.WriteTo), which is one writev on a *net.TCPConn but one
// Write per buffer on a *tls.Conn or a WebSocket conn, and its pinger
// writes PINGREQ from a goroutine of its own, the first one at once after
// CONNACK. It serialises its writes only when the conn is a sync.Locker
// (packets.NewThreadSafeConn; eclipse-paho/paho.golang#81, #84). Without
// one a PINGREQ can land between the header and the body of a SUBSCRIBE:
// the broker reads the PINGREQ as the first two bytes of the body, and
// when the rest has come finds the packet malformed ("topic filter: packet
// too short", DISCONNECT 0x81). That is what test/soak saw once over
// mqtts, and why its paho client (like test/interop's) gets a locked conn.
//
// Here paho's first PINGREQ is brought between the header and the body of
// its first SUBSCRIBE whenever nothing stops it (stallConn), and with the
// locked conn the SUBSCRIBE still reaches the broker whole on every
// transport: SUBACK, no DISCONNECT, no broker log line about a malformed
// packet. Without the lock the PINGREQ interleaves and
// the broker answers with DISCONNECT 0x81 "topic filter: packet too
// short" on every transport (on TCP too: stallConn, like any wrapper, is
// not a conn net.Buffers can writev to).
func TestPahoWritesWholePackets(t *testing.T) {
	logs := &mqtttest.LogBuffer{}
	opts := broker.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	pki, err := brokertest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, eps := brokertest.StartAll(t, opts, pki)
	for _, tr := range []rawclient.Transport{rawclient.TCP, rawclient.TLS, rawclient.WS, rawclient.WSS} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			nc, err := pki.Dialer().DialConn(ctx, eps[tr])
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			sc := newStallConn(nc)
			var disconnects []string
			var mu sync.Mutex
			pc := paho.NewClient(paho.ClientConfig{
				ClientID: "pahowrite-" + string(tr), Conn: packets.NewThreadSafeConn(sc),
				OnServerDisconnect: func(d *paho.Disconnect) {
					mu.Lock()
					defer mu.Unlock()
					disconnects = append(disconnects, fmt.Sprintf("0x%02X %s", d.ReasonCode, reasonString(d)))
				},
			})
			if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "pahowrite-" + string(tr), KeepAlive: 1, CleanStart: true}); err != nil {
				t.Fatal(err)
			}
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			if _, err := pc.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "pahowrite/" + string(tr), QoS: 1}}}); err != nil {
				mu.Lock()
				t.Errorf("Subscribe: %v; server DISCONNECTs %q", err, disconnects)
				mu.Unlock()
			}
			pc.Disconnect(&paho.Disconnect{})
		})
	}
	t.Cleanup(func() {
		if l := logs.String(); strings.Contains(l, "malformed") {
			t.Errorf("broker found a malformed packet:\n%s", l)
		}
	})
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil {
		return d.Properties.ReasonString
	}
	return ""
}

// stallConn brings paho's first PINGREQ between the fixed header and the
// body of its first SUBSCRIBE whenever nothing stops it: a PINGREQ written
// before that header waits for it (up to 300 ms), and the header's Write
// returns only once a PINGREQ was written after it (or 700 ms passed).
// Both bounds are under the 1 s keep alive, so a locked conn, where one
// write waits for the other's whole packet instead, still gets its
// PINGRESP in time.
type stallConn struct {
	net.Conn
	headerOnce, pingOnce sync.Once
	header, pinged       chan struct{}
}

func newStallConn(nc net.Conn) *stallConn {
	return &stallConn{Conn: nc, header: make(chan struct{}), pinged: make(chan struct{})}
}

func (c *stallConn) Write(b []byte) (int, error) {
	switch {
	case bytes.Equal(b, []byte{0xC0, 0}):
		first := false
		c.pingOnce.Do(func() { first = true })
		if first {
			select {
			case <-c.header:
			case <-time.After(300 * time.Millisecond):
			}
			defer close(c.pinged)
		}
	case len(b) <= 5 && len(b) > 0 && b[0] == 0x82:
		n, err := c.Conn.Write(b)
		c.headerOnce.Do(func() {
			close(c.header)
			select {
			case <-c.pinged:
			case <-time.After(700 * time.Millisecond):
			}
		})
		return n, err
	}
	return c.Conn.Write(b)
}
