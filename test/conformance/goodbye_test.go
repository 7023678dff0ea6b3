package conformance

import (
	"testing"
	"time"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// goodbyeRounds is how often each test below disconnects and reconnects at
// once: the failure it guards against is a race, lost in about half the
// rounds when it is there.
const goodbyeRounds = 50

// TestMQTT_3_14_4_3_NoWillAfterDisconnectAndQuickReconnect: a will is
// discarded on a normal DISCONNECT [MQTT-3.14.4-3] also when the client
// closes its connection and reconnects with the same client id at once.
// The new CONNECT takes the session over [MQTT-3.1.4-3]; the DISCONNECT the
// old connection carried must be applied before that takeover decides
// about the old will, which would otherwise be published as if the client
// had vanished.
func TestMQTT_3_14_4_3_NoWillAfterDisconnectAndQuickReconnect(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		w := watcher(t, addr, v, "quick")
		for range goodbyeRounds {
			c := willConnect(t, addr, v, "quick", false, nil, nil)
			// DISCONNECT and close, without waiting for anything.
			c.send([]byte{0xE0, 0x00})
			c.drop()
		}
		w.quiet(2 * quietPeriod)
	})
}

// TestMQTT5_3_1_2_23_SessionEndsOnDisconnectAndQuickReconnect: a DISCONNECT
// that sets the Session Expiry Interval to 0 ends the session when the
// connection closes [MQTT-3.1.2-23, section 3.14.2.2.2], also when the
// client reconnects with the same id at once: the new CONNECT (Clean Start
// 0) must find no session (Session Present 0 [MQTT-3.2.2-3]) and no
// subscription of the old one.
func TestMQTT5_3_1_2_23_SessionEndsOnDisconnectAndQuickReconnect(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		disconnectEnd := rc.Frame(0xE0, // DISCONNECT
			[]byte{0x00}, // reason: normal disconnection
			rc.Props(rc.PropU32(rc.PropSessionExpiry, 0))) // the session ends with the connection
		for i := range goodbyeRounds {
			c, ack := connect(t, addr, persistent(5, "brief"))
			if ack.SessionPresent {
				t.Fatalf("round %d: Session Present 1 for a session that ended with its DISCONNECT", i)
			}
			c.sub("brief/t", 1)
			c.send(disconnectEnd)
			c.drop()
		}
		// The last session ended too: nothing is queued for it.
		pub := cleanConnect(t, addr, 5, "brief-pub")
		pub.publish("brief/t", "after", 1, false, 1)
		c, ack := connect(t, addr, persistent(5, "brief"))
		if ack.SessionPresent {
			t.Fatal("Session Present 1 after the last DISCONNECT ended the session")
		}
		c.quiet(quietPeriod)
	})
}

// TestMQTT5_3_1_2_23_SessionEndsOnDisconnectAfterIdleAndQuickReconnect is
// the case above for a client that was idle before it said goodbye, as
// most clients are: a broker may hand an idle connection's socket to a
// poller and restart its reader only when bytes come (Roost parks after
// 50 ms), so the DISCONNECT reaches a reader that must first be woken,
// while the new CONNECT arrives on a fresh connection whose reader runs.
// The DISCONNECT, sent first, must still end the session before the new
// CONNECT looks for it [MQTT-3.1.2-23, MQTT-3.2.2-3].
func TestMQTT5_3_1_2_23_SessionEndsOnDisconnectAfterIdleAndQuickReconnect(t *testing.T) {
	t.Parallel()
	const idle = 100 * time.Millisecond // longer than Roost's parkIdle
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		disconnectEnd := rc.Frame(0xE0, // DISCONNECT
			[]byte{0x00}, // reason: normal disconnection
			rc.Props(rc.PropU32(rc.PropSessionExpiry, 0))) // the session ends with the connection
		c, _ := connect(t, addr, persistent(5, "idler"))
		c.sub("idler/t", 1)
		for i := range goodbyeRounds / 5 {
			time.Sleep(idle) // the scenario: a client with nothing to say
			c.send(disconnectEnd)
			c.drop()
			var ack rc.Connack
			c, ack = connect(t, addr, persistent(5, "idler"))
			if ack.SessionPresent {
				t.Fatalf("round %d: Session Present 1 for a session that ended with its DISCONNECT", i)
			}
			c.sub("idler/t", 1)
		}
	})
}
