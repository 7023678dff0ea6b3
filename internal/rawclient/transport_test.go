package rawclient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// The contract DialConn promises, on every transport against a real
// broker: a read timeout leaves the connection usable, and a close by the
// server reads as ErrClosed, as does a write after it.
func TestTransportContract(t *testing.T) {
	pki, err := brokertest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, eps := brokertest.StartAll(t, broker.Options{}, pki)
	for _, tr := range rc.Transports() {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := pki.Dialer().Dial(ctx, eps[tr])
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			send := func(b []byte) {
				t.Helper()
				if err := c.Write(b, time.Second); err != nil {
					t.Fatal(err)
				}
			}
			expect := func(typ byte) {
				t.Helper()
				p, err := c.ReadPacket(3 * time.Second)
				if err != nil || p.Type != typ {
					t.Fatalf("got %v, %v; want %s", p, err, rc.TypeName(typ))
				}
			}
			send(rc.Connect{Version: 4, ClientID: "contract-" + string(tr), Clean: true, KeepAlive: 60}.Bytes())
			expect(rc.CONNACK)
			// Two timeouts in a row, then traffic: on WebSocket, gorilla
			// itself would fail every read after the first timeout.
			for range 2 {
				if _, err := c.ReadPacket(50 * time.Millisecond); !errors.Is(err, rc.ErrTimeout) {
					t.Fatalf("quiet read: %v, want ErrTimeout", err)
				}
			}
			send([]byte{0xC0, 0x00}) // PINGREQ
			expect(rc.PINGRESP)
			// A second CONNECT is a protocol error: the server closes
			// [MQTT-3.1.0-2].
			send(rc.Connect{Version: 4, ClientID: "again", Clean: true}.Bytes())
			if got, err := c.ExpectClosed(3 * time.Second); err != nil || len(got) != 0 {
				t.Fatalf("after a second CONNECT: %v, %v; want a close and nothing before it", got, err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for {
				// A write may still succeed once while the close is on its way.
				err := c.Write([]byte{0xC0, 0x00}, time.Second)
				if errors.Is(err, rc.ErrClosed) {
					break
				}
				if err != nil || time.Now().After(deadline) {
					t.Fatalf("write after the close: %v, want ErrClosed", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestTransportOf(t *testing.T) {
	for _, tr := range rc.Transports() {
		got, err := rc.TransportOf(tr.URL("127.0.0.1:1883"))
		if err != nil || got != tr {
			t.Errorf("TransportOf(%s) = %q, %v", tr.URL("127.0.0.1:1883"), got, err)
		}
	}
	if got, err := rc.TransportOf("127.0.0.1:1883"); err != nil || got != rc.TCP {
		t.Errorf("bare host:port: %q, %v; want tcp", got, err)
	}
	if _, err := rc.TransportOf("http://127.0.0.1:80"); err == nil {
		t.Error("http:// accepted")
	}
}
