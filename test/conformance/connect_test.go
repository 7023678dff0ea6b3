package conformance

import (
	"fmt"
	"testing"
	"time"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// connectBytes frames a CONNECT field by field so tests can corrupt any
// one of them. withProps adds the empty 5.0 property block.
func connectBytes(protocolName string, level, flags byte, keepAlive uint16, withProps bool, clientID string) []byte {
	vh := rc.Cat(
		rc.Str(protocolName), // protocol name [MQTT-3.1.2.1]
		[]byte{level},        // protocol level [MQTT-3.1.2.2]
		[]byte{flags},        // connect flags [MQTT-3.1.2.3]
		rc.U16(keepAlive),    // keep alive, seconds [MQTT-3.1.2.10]
	)
	if withProps {
		vh = append(vh, 0x00) // property length 0 [MQTT-3.1.2.11]
	}
	return rc.Frame(0x10, vh, rc.Str(clientID)) // payload: client id [MQTT-3.1.3.1]
}

// TestMQTT_3_1_0_1_FirstPacketMustBeConnect: the first packet from a
// client MUST be CONNECT; the server closes the connection otherwise. It
// must not answer: no CONNACK without CONNECT, and no 5.0 DISCONNECT
// before a CONNACK [MQTT-3.14.0-1].
func TestMQTT_3_1_0_1_FirstPacketMustBeConnect(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		cases := map[string][]byte{
			"PINGREQ": {0xC0, 0x00},
			"PUBLISH": {
				0x30, 0x05, // PUBLISH QoS 0, remaining length 5
				0x00, 0x01, 'a', // topic "a"
				'h', 'i', // payload
			},
			"SUBSCRIBE": {
				0x82, 0x06, // SUBSCRIBE, flags 0010, remaining length 6
				0x00, 0x01, // packet id 1
				0x00, 0x01, 'a', 0x00, // filter "a", QoS 0
			},
			"DISCONNECT": {0xE0, 0x00},
		}
		for name, b := range cases {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				c := dial(t, addr, 4, name)
				c.sendBad(b)
				if seen := c.closedAfter(); len(seen) > 0 {
					t.Fatalf("server sent %v before closing, want a silent close", seen)
				}
			})
		}
	})
}

// TestMQTT_3_1_0_2_SecondConnectIsProtocolError: a second CONNECT on a
// connection is a protocol error and the server MUST close the connection
// (5.0 may send DISCONNECT 0x82 Protocol Error first).
func TestMQTT_3_1_0_2_SecondConnectIsProtocolError(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c := cleanConnect(t, addr, v, "twice")
		c.sendBad(rc.Connect{Version: v, ClientID: "twice", Clean: true, KeepAlive: 60}.Bytes())
		c.expectClosed(0x82)
	})
}

// TestMQTT_3_1_2_1_BadProtocolName: a protocol name other than "MQTT"
// ends the connection. 3.1.1 lets the server close silently; 5.0 also lets
// it send CONNACK 0x84 first. Either way the client must not be accepted.
func TestMQTT_3_1_2_1_BadProtocolName(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		for _, name := range []string{"MQTX", "mqtt", "MQTT\x00"} {
			c := dial(t, addr, v, name)
			c.sendBad(connectBytes(name, v, 0x02, 60, v == 5, "c"))
			seen := c.closedAfter()
			requireRefusalConnack(t, seen, 0x01, 0x84)
		}
	})
}

// requireRefusalConnack accepts a silent close, or a single CONNACK with
// one of the refusal codes (in 3.1.1 or 5.0 framing) before the close.
func requireRefusalConnack(t *testing.T, seen []rc.Packet, codes ...byte) {
	t.Helper()
	if len(seen) == 0 {
		t.Log("closed silently")
		return
	}
	t.Logf("closed after %v", seen)
	if len(seen) > 1 || seen[0].Type != rc.CONNACK || len(seen[0].Body) < 2 {
		t.Fatalf("server sent %v, want a close, optionally after a refusing CONNACK", seen)
	}
	got := seen[0].Body[1]
	for _, code := range codes {
		if got == code {
			return
		}
	}
	t.Fatalf("server sent %v, want CONNACK with a code in % x", seen[0], codes)
}

// TestMQTT_3_1_2_2_UnsupportedProtocolLevel: for a protocol level it does
// not support, a 3.1.1 server MUST send CONNACK 0x01 (unacceptable protocol
// level) and close the connection. A 5.0 server MAY instead answer in 5.0
// form with reason code 0x84 Unsupported Protocol Version.
func TestMQTT_3_1_2_2_UnsupportedProtocolLevel(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		for _, level := range []byte{2, 6, 0x7F} {
			t.Run(fmt.Sprintf("level%d", level), func(t *testing.T) {
				t.Parallel()
				c := dial(t, addr, 4, "level")
				c.sendBad(connectBytes("MQTT", level, 0x02, 60, false, "c"))
				p := c.expect(rc.CONNACK)
				switch {
				case len(p.Body) == 2 && p.Body[0] == 0x00 && p.Body[1] == 0x01:
					// 3.1.1 form: 20 02 00 01.
				case len(p.Body) >= 3 && p.Body[0] == 0x00 && p.Body[1] == 0x84:
					t.Logf("level %d: refused in 5.0 form, CONNACK % x", level, p.Body)
				default:
					t.Fatalf("level %d: got %v, want CONNACK 20 02 00 01 (or 5.0 0x84)", level, p)
				}
				if seen := c.closedAfter(); len(seen) > 0 {
					t.Fatalf("level %d: packets after refusing CONNACK: %v", level, seen)
				}
			})
		}
	})
}

// TestMQTT_3_1_2_3_ReservedConnectFlag: the reserved bit 0 of the connect
// flags MUST be 0; otherwise the server closes the connection. A 5.0 server
// may first send CONNACK 0x81 Malformed Packet (section 4.13).
func TestMQTT_3_1_2_3_ReservedConnectFlag(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c := dial(t, addr, v, "reserved")
		c.sendBad(connectBytes("MQTT", v, 0x03 /* clean | reserved */, 60, v == 5, "c"))
		seen := c.closedAfter()
		if v == 4 && len(seen) > 0 {
			t.Fatalf("got %v, want a silent close", seen)
		}
		requireRefusalConnack(t, seen, 0x81, 0x82)
	})
}

// TestMQTT_3_1_3_8_EmptyClientIDNeedsCleanSession: a 3.1.1 client with a
// zero-byte client id and Clean Session 0 MUST get CONNACK 0x02 (identifier
// rejected), with Session Present 0 [MQTT-3.2.2-4], and be disconnected.
func TestMQTT_3_1_3_8_EmptyClientIDNeedsCleanSession(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		c := dial(t, addr, 4, "empty-id")
		c.sendBad([]byte{
			0x10, 0x0C, // CONNECT, remaining length 12
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x04,       // protocol level 4
			0x00,       // connect flags: Clean Session 0
			0x00, 0x3C, // keep alive 60
			0x00, 0x00, // client id: zero bytes
		})
		c.expectBytes([]byte{0x20, 0x02, 0x00, 0x02})
		c.expectClosed()
	})
}

// TestMQTT_3_1_3_6_EmptyClientIDWithCleanSession: a server that allows a
// zero-byte client id with Clean Session 1 assigns one itself and accepts
// the connection. (Allowing it is a MAY; both Roost and mosquitto do.)
func TestMQTT_3_1_3_6_EmptyClientIDWithCleanSession(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		c := dial(t, addr, 4, "empty-id")
		c.send([]byte{
			0x10, 0x0C, // CONNECT, remaining length 12
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x04,       // protocol level 4
			0x02,       // connect flags: Clean Session 1
			0x00, 0x3C, // keep alive 60
			0x00, 0x00, // client id: zero bytes
		})
		c.expectBytes([]byte{0x20, 0x02, 0x00, 0x00})
		c.ping()
	})
}

// TestMQTT5_3_2_2_16_AssignedClientIdentifier: a 5.0 client that connects
// with a zero-length client id MUST get a CONNACK carrying an Assigned
// Client Identifier [MQTT-3.2.2-16], unique to it [MQTT-3.1.3-6, -7].
func TestMQTT5_3_2_2_16_AssignedClientIdentifier(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		var ids []string
		for i := 0; i < 2; i++ {
			c := dial(t, addr, 5, "empty-id")
			c.send([]byte{
				0x10, 0x0D, // CONNECT, remaining length 13
				0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
				0x05,       // protocol level 5
				0x02,       // connect flags: Clean Start
				0x00, 0x3C, // keep alive 60
				0x00,       // property length 0
				0x00, 0x00, // client id: zero bytes
			})
			ack := c.connack()
			if ack.Code != 0x00 {
				t.Fatalf("CONNACK code 0x%02x, want 0x00", ack.Code)
			}
			p, ok := ack.Props.Get(rc.PropAssignedClientID)
			if !ok || p.Str == "" {
				t.Fatalf("CONNACK properties %v lack a non-empty Assigned Client Identifier (0x12)", ack.Props)
			}
			ids = append(ids, p.Str)
		}
		if ids[0] == ids[1] {
			t.Fatalf("two connections were both assigned client id %q", ids[0])
		}
	})
}

// TestMQTT_3_1_2_24_KeepAliveTimeout: with keep alive 1s and no traffic
// the server MUST disconnect the client after one and a half times the
// keep alive ([MQTT-3.1.2-24] in 3.1.1, [MQTT-3.1.2-22] in 5.0). The test
// allows 1.0s to 3.0s; a 5.0 server may send DISCONNECT 0x8D first. A
// client that keeps pinging (keep alive 3s) stays connected past 4.5s.
func TestMQTT_3_1_2_24_KeepAliveTimeout(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		t.Run("silent", func(t *testing.T) {
			t.Parallel()
			c, _ := connect(t, addr, rc.Connect{Version: v, ClientID: "idle", Clean: true, KeepAlive: 1})
			upper := 3 * time.Second
			if mosquittoDeviates(t, "keep alive is checked coarsely: 1s is enforced after about 5s") {
				upper = 7 * time.Second
			}
			start := time.Now()
			seen, err := c.conn.ExpectClosed(upper + time.Second)
			d := time.Since(start)
			if err != nil {
				t.Fatalf("still connected after %v (%v), want a disconnect at about 1.5s", d, err)
			}
			c.checkDisconnect(seen, 0x8D)
			if d < time.Second || d > upper {
				t.Fatalf("disconnected after %v, want 1.5s (1.0s..%v)", d, upper)
			}
		})
		t.Run("pinging", func(t *testing.T) {
			t.Parallel()
			// Keep alive 3 s, not 1 s: with 1 s a client pinging every
			// 500 ms had 1 s of slack, and a suite run at load 32 saw
			// the test process stall 1.5 s between two pings (four
			// subtests at once), a disconnect the rule requires. The
			// pings go on past the 4.5 s the server allows a silent
			// client, so the test still fails unless each ping resets
			// the timer.
			const keepAlive = 3
			c, _ := connect(t, addr, rc.Connect{Version: v, ClientID: "busy", Clean: true, KeepAlive: keepAlive})
			for start := time.Now(); time.Since(start) < keepAlive*1500*time.Millisecond+time.Second; {
				time.Sleep(500 * time.Millisecond)
				c.ping()
			}
		})
	})
}

// TestRoost_ConnectTimeout: a connection that sends no CONNECT, or only
// part of one, is closed after Options.ConnectTimeout. This is Roost
// policy, not a numbered rule (section 4.2 suggests it: a server "should
// close" a connection with no CONNECT "within a reasonable amount of time").
func TestRoost_ConnectTimeout(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		if target == targetMosquitto {
			t.Skip("mosquitto has no configurable CONNECT timeout")
		}
		addr := startBroker(t, brokerConfig{ConnectTimeout: 500 * time.Millisecond})
		cases := map[string][]byte{
			"nothing": nil,
			"partial": {0x10, 0x0D, 0x00, 0x04, 'M', 'Q'}, // first bytes of a CONNECT
		}
		for name, b := range cases {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				// The broker's timer starts at accept, which lies between
				// the dial's start and its end: a TLS or WebSocket
				// handshake inside dial (slow on a loaded machine: a
				// suite run at load 20 saw the close 2.1-2.3 s after a WSS
				// dial began, past the old 2 s bound from there) already
				// counts against it. So the close may come no sooner
				// than 500 ms after the dial began (300 ms allows for
				// clocks), and no later than 500 ms after it ended (2 s
				// allows for a stalled test process).
				start := time.Now()
				c := dial(t, addr, 4, name)
				dialed := time.Now()
				if b != nil {
					c.send(b)
				}
				if seen := c.closedAfter(); len(seen) > 0 {
					t.Fatalf("got %v, want a silent close", seen)
				}
				if d, sinceDial := time.Since(start), time.Since(dialed); d < 300*time.Millisecond || sinceDial > 2*time.Second {
					t.Fatalf("closed %v after the dial began and %v after it ended, want about 500ms after accept", d, sinceDial)
				}
			})
		}
	})
}

// TestMQTT_3_1_4_2_TakeoverClosesExistingConnection: a CONNECT with a
// client id already connected MUST close the existing connection
// ([MQTT-3.1.4-2] in 3.1.1, [MQTT-3.1.4-3] in 5.0, where the server first
// sends it DISCONNECT 0x8E Session taken over). The new connection works.
func TestMQTT_3_1_4_2_TakeoverClosesExistingConnection(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		first := cleanConnect(t, addr, v, "same")
		second := cleanConnect(t, addr, v, "same")
		if v == 5 && !mosquittoDeviates(t, "closes a taken-over 5.0 connection without DISCONNECT 0x8E") {
			first.expectDisconnect(0x8E)
		} else {
			first.expectClosed()
		}
		second.ping()
	})
}

// TestMQTT_3_2_2_1_SessionPresentZeroOnCleanStart: with Clean Session
// (Clean Start) 1 the CONNACK MUST carry Session Present 0, even when a
// stored session existed ([MQTT-3.2.2-1] in 3.1.1, [MQTT-3.2.2-2] in 5.0).
func TestMQTT_3_2_2_1_SessionPresentZeroOnCleanStart(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c, _ := connect(t, addr, persistent(v, "sp"))
		c.sub("sp/#", 1)
		c.disconnect()
		cp := persistent(v, "sp")
		cp.Clean = true
		_, ack := connect(t, addr, cp)
		if ack.SessionPresent {
			t.Fatal("Session Present 1 on a clean start")
		}
	})
}

// TestMQTT_3_2_2_2_SessionPresentOnResume: resuming a stored session with
// Clean Session (Clean Start) 0 MUST give Session Present 1 ([MQTT-3.2.2-2]
// in 3.1.1, [MQTT-3.2.2-3] in 5.0).
func TestMQTT_3_2_2_2_SessionPresentOnResume(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		c, _ := connect(t, addr, persistent(v, "sp"))
		c.sub("sp/#", 1)
		c.disconnect()
		_, ack := connect(t, addr, persistent(v, "sp"))
		if !ack.SessionPresent {
			t.Fatal("Session Present 0 when resuming a stored session")
		}
	})
}

// TestMQTT_3_2_2_3_SessionPresentZeroWithoutSession: Clean Session (Clean
// Start) 0 with no stored session MUST give Session Present 0.
func TestMQTT_3_2_2_3_SessionPresentZeroWithoutSession(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		_, ack := connect(t, addr, persistent(v, "fresh"))
		if ack.SessionPresent {
			t.Fatal("Session Present 1 for a client id never seen before")
		}
	})
}
