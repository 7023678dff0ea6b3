package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestDisconnectBeforeWriteFailure over TLS, where one read returns one
// record: a client's last packets, each its own record, arrive together;
// while the broker handles the first (a SUBSCRIBE whose authorization takes
// 300 ms), the client closes with deliveries unread, so the broker's next
// write fails. The reader must still read every record that had arrived
// (a PINGREQ, then the DISCONNECT), not just one more, before it ends the
// connection: the client left cleanly and its will must not be published.
func TestDisconnectBeforeWriteFailureTLS(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := tlsPair(t)
	slow := AuthorizerFunc(func(_ context.Context, _ *ClientInfo, act Action, topic string) bool {
		if act == ActionSubscribe && strings.HasPrefix(topic, "slow/") {
			time.Sleep(300 * time.Millisecond)
		}
		return true
	})
	s, err := New(Options{Authorizer: slow, Logger: slog.New(slog.DiscardHandler), SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(tls.NewListener(ln, srvConf)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	dialTLS := func(id string, will bool) (*mqtttest.Client, *holdConn) {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		held := &holdConn{Conn: raw}
		c := &mqtttest.Client{T: t, NC: tls.Client(held, cliConf), V: packet.V5}
		c.R = packet.NewReader(c.NC, 1<<20)
		cp := &packet.Connect{ClientID: id, CleanStart: true}
		if will {
			cp.WillFlag, cp.WillTopic, cp.WillPayload = true, "will/"+id, []byte("gone")
		}
		c.Connect(cp)
		return c, held
	}
	watcher, _ := dialTLS("watcher", false)
	watcher.Subscribe("will/#", 0)
	pub, _ := dialTLS("pub", false)
	var stop atomic.Bool
	var flooding sync.WaitGroup
	flooding.Add(1)
	go func() {
		defer flooding.Done()
		b, _ := (&packet.Publish{Topic: "flood/x", Payload: make([]byte, 512)}).Encode(nil, packet.V5)
		for !stop.Load() {
			if _, err := pub.NC.Write(b); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() { stop.Store(true); flooding.Wait() }()

	for i := range 3 {
		c, held := dialTLS("leaver", true)
		c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flood/#"}}})
		for {
			if _, ok := c.Next(5 * time.Second).(*packet.Suback); ok {
				break
			}
		}
		held.hold = true
		c.Send(&packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{{Filter: "slow/x"}}})
		c.Send(&packet.Pingreq{})
		c.Send(&packet.Disconnect{})
		held.flush(t)
		// Closed under tls.Client, with deliveries unread: a reset, and
		// no close_notify.
		held.Conn.Close()
		mqtttest.Eventually(t, 5*time.Second, func() bool { _, _, ok := s.Client("leaver"); return !ok })
		watcher.Send(&packet.Pingreq{})
		for {
			p := watcher.Next(10 * time.Second)
			if pp, ok := p.(*packet.Publish); ok {
				t.Fatalf("round %d: will published for a client that sent DISCONNECT: %s", i, pp.Topic)
			}
			if _, ok := p.(*packet.Pingresp); ok {
				break
			}
		}
	}
}

// holdConn keeps what is written while hold is set, for flush to send in
// one write (one TCP segment on loopback).
type holdConn struct {
	net.Conn
	hold bool
	buf  bytes.Buffer
}

func (c *holdConn) Write(b []byte) (int, error) {
	if c.hold {
		return c.buf.Write(b)
	}
	return c.Conn.Write(b)
}

func (c *holdConn) flush(t *testing.T) int {
	c.hold = false
	n, err := c.Conn.Write(c.buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tlsPair returns a server configuration with a certificate for 127.0.0.1
// and a client configuration that trusts it.
func tlsPair(t *testing.T) (srv, cli *tls.Config) {
	ca, err := devcert.NewCA("pending test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := ca.Issue(devcert.Leaf{CommonName: "127.0.0.1", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &tls.Config{Certificates: []tls.Certificate{cert}}, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
}
