package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Options.MaxKeepAlive caps the keep alive as mosquitto's max_keepalive
// does: an MQTT 5 client asking for more, or for 0, gets the cap as Server
// Keep Alive [MQTT-3.2.2-21]; an MQTT 3.1.x client, which cannot be told,
// is refused with CONNACK 0x02; asking for the cap or less changes nothing.
func TestMaxKeepAlive(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{MaxKeepAlive: 30})
	for _, tc := range []struct {
		v      packet.Version
		ask    uint16
		code   packet.ReasonCode // CONNACK code
		server uint16            // Server Keep Alive in CONNACK; 0 = none
	}{
		{packet.V5, 120, 0, 30},
		{packet.V5, 0, 0, 30},
		{packet.V5, 30, 0, 0},
		{packet.V5, 20, 0, 0},
		{packet.V311, 120, packet.Connack311IdentifierRejected, 0},
		{packet.V311, 0, packet.Connack311IdentifierRejected, 0},
		{packet.V311, 30, 0, 0},
		{packet.V31, 31, packet.Connack311IdentifierRejected, 0},
		{packet.V31, 5, 0, 0},
	} {
		t.Run(fmt.Sprintf("%v/%d", tc.v, tc.ask), func(t *testing.T) {
			c := dial(t, addr, tc.v)
			c.Send(&packet.Connect{ProtocolVersion: tc.v, ClientID: "ka", CleanStart: true, KeepAlive: tc.ask})
			ack, ok := c.Next(2 * time.Second).(*packet.Connack)
			if !ok {
				t.Fatal("first packet is not CONNACK")
			}
			if ack.ReasonCode != tc.code {
				t.Fatalf("CONNACK code 0x%02X, want 0x%02X", byte(ack.ReasonCode), byte(tc.code))
			}
			got := uint16(0)
			if ack.Properties.Has(packet.PropServerKeepAlive) {
				got = ack.Properties.ServerKeepAlive
			}
			if got != tc.server {
				t.Fatalf("Server Keep Alive %d, want %d (0: none)", got, tc.server)
			}
			if tc.code != 0 {
				if rest := c.ExpectClosed(2 * time.Second); len(rest) != 0 {
					t.Fatalf("after the refusal: %v", rest)
				}
			}
		})
	}
}

// The cap is enforced, not only announced: an MQTT 5 client that asked for
// no keep alive and stays silent is disconnected with 0x8D after 1.5x the
// cap.
func TestMaxKeepAliveEnforced(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{MaxKeepAlive: 1})
	c := dial(t, addr, packet.V5)
	start := time.Now()
	if ack := c.Connect(&packet.Connect{ClientID: "silent", CleanStart: true}); ack.Properties.ServerKeepAlive != 1 {
		t.Fatalf("Server Keep Alive %d, want 1", ack.Properties.ServerKeepAlive)
	}
	got := c.ExpectClosed(5 * time.Second)
	if len(got) != 1 {
		t.Fatalf("before the close: %v, want one DISCONNECT", got)
	}
	if d, ok := got[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.KeepAliveTimeout {
		t.Fatalf("got %+v, want DISCONNECT 0x8D", got[0])
	}
	if took := time.Since(start); took < 1400*time.Millisecond {
		t.Fatalf("closed after %v, before 1.5x the keep alive", took)
	}
}

// A ServerKeepAlive above the cap is a configuration error.
func TestMaxKeepAliveBelowServerKeepAlive(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{MaxKeepAlive: 10, ServerKeepAlive: 20}); err == nil {
		t.Fatal("New accepted ServerKeepAlive 20 with MaxKeepAlive 10")
	}
}
