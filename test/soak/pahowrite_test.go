package soak

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/internal/rawclient"
	"github.com/roost-mqtt/roost/packet"
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
// Here paho's first PINGREQ is brought into a packet whenever nothing
// stops it (stallConn): between the header and the body of a SUBSCRIBE,
// and between the topic and the payload of a PUBLISH. With the locked conn
// both reach the broker whole on every transport: SUBACK, the message
// delivered as sent, no DISCONNECT, no broker log line about a malformed
// packet. Without the lock the SUBSCRIBE gets DISCONNECT 0x81 "topic
// filter: packet too short" (the soak's failure over mqtts) and the
// PUBLISH is delivered with the PINGREQ's two bytes at the start of its
// payload and its last two bytes taken for the next packet's header (the
// "unexpected payload" and 0x81 seen once over wss), on every transport,
// TCP included: stallConn, like any wrapper, is not a conn net.Buffers
// can writev to.
func TestPahoWritesWholePackets(t *testing.T) {
	logs := &mqtttest.LogBuffer{}
	opts := broker.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	pki, err := brokertest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, eps := brokertest.StartAll(t, opts, pki)
	for _, tr := range []rawclient.Transport{rawclient.TCP, rawclient.TLS, rawclient.WS, rawclient.WSS} {
		t.Run(string(tr)+"/subscribe", func(t *testing.T) {
			t.Parallel()
			// The cut: the write after SUBSCRIBE's fixed header.
			pc, sc, report := pahoOver(t, pki, eps[tr], "pahowrite-sub-"+string(tr), func(prev, _ []byte) bool {
				return len(prev) > 0 && len(prev) <= 5 && prev[0] == 0x82
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "pahowrite/" + string(tr), QoS: 1}}}); err != nil {
				t.Errorf("Subscribe: %v; %s", err, report())
			}
			sc.checkCut(t)
		})
		t.Run(string(tr)+"/publish", func(t *testing.T) {
			t.Parallel()
			topic, payload := "pahowrite/pub/"+string(tr), []byte("1234567890")
			sub := subscribeRaw(t, pki, eps[rawclient.TCP], topic)
			// The cut: the payload's write.
			pc, sc, report := pahoOver(t, pki, eps[tr], "pahowrite-pub-"+string(tr), func(_, b []byte) bool {
				return bytes.Equal(b, payload)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
				t.Errorf("Publish: %v; %s", err, report())
			}
			sc.checkCut(t)
			p, err := sub.Read(10 * time.Second)
			switch pub, ok := p.(*packet.Publish); {
			case err != nil || !ok:
				t.Errorf("subscriber got %v (err %v), want the PUBLISH; %s", p, err, report())
			case !bytes.Equal(pub.Payload, payload):
				t.Errorf("subscriber got the payload %q, want %q; %s", pub.Payload, payload, report())
			}
		})
	}
	t.Cleanup(func() {
		if l := logs.String(); strings.Contains(l, "malformed") {
			t.Errorf("broker found a malformed packet:\n%s", l)
		}
	})
}

// pahoOver connects a paho.golang client (MQTT 5, keep alive 1 s) over a
// locked stallConn to url; report describes the DISCONNECTs the server
// sent it.
func pahoOver(t *testing.T, pki *brokertest.PKI, url, id string, cut func(prev, b []byte) bool) (*paho.Client, *stallConn, func() string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := pki.Dialer().DialConn(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	sc := &stallConn{Conn: nc, cut: cut, reached: make(chan struct{}), pinged: make(chan struct{})}
	var mu sync.Mutex
	var disconnects []string
	pc := paho.NewClient(paho.ClientConfig{
		ClientID: id, Conn: packets.NewThreadSafeConn(sc),
		OnServerDisconnect: func(d *paho.Disconnect) {
			mu.Lock()
			defer mu.Unlock()
			disconnects = append(disconnects, fmt.Sprintf("0x%02X %s", d.ReasonCode, reasonString(d)))
		},
	})
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 1, CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Disconnect(&paho.Disconnect{}) })
	return pc, sc, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("server DISCONNECTs %q", disconnects)
	}
}

// subscribeRaw subscribes a raw MQTT 5 client over url to topic.
func subscribeRaw(t *testing.T, pki *brokertest.PKI, url, topic string) *mqtttest.Client {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := pki.Dialer().DialConn(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V5}
	c.Connect(&packet.Connect{ProtocolName: "MQTT", CleanStart: true, ClientID: "sub-" + topic})
	c.Subscribe(topic, 0)
	return c
}

func reasonString(d *paho.Disconnect) string {
	if d.Properties != nil {
		return d.Properties.ReasonString
	}
	return ""
}

// stallConn brings paho's first PINGREQ to the cut, the write cut picks,
// whenever nothing stops it: a PINGREQ written before the cut is reached
// waits for it (up to 300 ms), and the write at the cut waits for a PINGREQ
// (up to 700 ms) before it goes. Both bounds are under the 1 s keep alive,
// so a locked conn, where one packet waits for the other whole instead,
// still gets its PINGRESP in time.
type stallConn struct {
	net.Conn
	cut               func(prev, b []byte) bool
	prev              []byte // the last write, for cut (paho's writes of one packet are one goroutine's)
	cutOnce, pingOnce sync.Once
	reached, pinged   chan struct{}
	cutSeen           atomic.Bool
}

func (c *stallConn) Write(b []byte) (int, error) {
	if bytes.Equal(b, []byte{0xC0, 0}) {
		first := false
		c.pingOnce.Do(func() { first = true })
		if first {
			select {
			case <-c.reached:
			case <-time.After(300 * time.Millisecond):
			}
			defer close(c.pinged)
		}
		return c.Conn.Write(b)
	}
	if !c.cutSeen.Load() && c.cut(c.prev, b) {
		c.cutOnce.Do(func() {
			c.cutSeen.Store(true)
			close(c.reached)
			select {
			case <-c.pinged:
			case <-time.After(700 * time.Millisecond):
			}
		})
	}
	c.prev = append(c.prev[:0], b...)
	return c.Conn.Write(b)
}

// checkCut fails t if the cut was never reached (the test would prove
// nothing).
func (c *stallConn) checkCut(t *testing.T) {
	if !c.cutSeen.Load() {
		t.Error("stallConn: the write to cut at never came")
	}
}
