package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

const (
	// readTimeout bounds every wait for a packet that must arrive (and a
	// dial, TLS and WebSocket handshakes included); only a failing test
	// waits it out. 3 s failed TLS and WSS dials by the dozen in a suite
	// run at a load average of 30.
	readTimeout = 15 * time.Second
	// closeTimeout bounds every wait for the server to close a connection.
	closeTimeout = 15 * time.Second
	// quietPeriod is how long a client listens to conclude that a packet
	// that must not arrive did not.
	quietPeriod = 400 * time.Millisecond
)

// client is a raw connection bound to a test: every helper fails the test
// on an unexpected packet, a timeout or a close.
type client struct {
	t    testing.TB
	conn *rc.Conn
	v    byte // protocol level the client speaks: 4 or 5
	name string
}

// dial opens a connection to addr, a URL from startBroker, without
// sending anything.
func dial(t testing.TB, addr string, v byte, name string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	conn, err := pki.Dialer().Dial(ctx, addr)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, v: v, name: name}
}

// connect dials and sends cp, and requires a successful CONNACK.
func connect(t testing.TB, addr string, cp rc.Connect) (*client, rc.Connack) {
	t.Helper()
	name := cp.ClientID
	if name == "" {
		name = "(empty id)"
	}
	c := dial(t, addr, cp.Version, name)
	c.send(cp.Bytes())
	ack := c.connack()
	if ack.Code != 0x00 {
		t.Fatalf("%s: CONNACK code 0x%02x, want 0x00 (props %v)", name, ack.Code, ack.Props)
	}
	return c, ack
}

// cleanConnect connects with Clean Session/Clean Start 1 and keep alive 60.
func cleanConnect(t testing.TB, addr string, v byte, id string) *client {
	t.Helper()
	c, _ := connect(t, addr, rc.Connect{Version: v, ClientID: id, Clean: true, KeepAlive: 60})
	return c
}

// persistent describes a CONNECT that resumes or creates a session that
// outlives the connection: Clean Session 0 in 3.1.1; Clean Start 0 with a
// Session Expiry Interval of 300s in 5.0 [MQTT-3.1.2-23].
func persistent(v byte, id string) rc.Connect {
	cp := rc.Connect{Version: v, ClientID: id, KeepAlive: 60}
	if v == 5 {
		cp.Props = rc.PropU32(rc.PropSessionExpiry, 300)
	}
	return cp
}

// send writes the concatenated byte groups.
func (c *client) send(parts ...[]byte) {
	c.t.Helper()
	if err := c.conn.Write(rc.Cat(parts...), readTimeout); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

// sendBad writes bytes that should make the server close the connection;
// the server may already have closed it, so a closed socket is not an error.
func (c *client) sendBad(parts ...[]byte) {
	c.t.Helper()
	err := c.conn.Write(rc.Cat(parts...), readTimeout)
	if err != nil && !errors.Is(err, rc.ErrClosed) {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

// read returns the next packet.
func (c *client) read() rc.Packet {
	c.t.Helper()
	p, err := c.conn.ReadPacket(readTimeout)
	if err != nil {
		c.t.Fatalf("%s: waiting for a packet: %v", c.name, err)
	}
	return p
}

// expect returns the next packet and requires it to be of type typ.
func (c *client) expect(typ byte) rc.Packet {
	c.t.Helper()
	p := c.read()
	if p.Type != typ {
		c.t.Fatalf("%s: got %v, want %s", c.name, p, rc.TypeName(typ))
	}
	return p
}

// expectBytes requires the next packet to be exactly want.
func (c *client) expectBytes(want []byte) {
	c.t.Helper()
	p := c.read()
	got := rc.Frame(p.Type<<4|p.Flags, p.Body)
	if !bytes.Equal(got, want) {
		c.t.Fatalf("%s: got % x, want % x", c.name, got, want)
	}
}

func (c *client) connack() rc.Connack {
	c.t.Helper()
	p := c.expect(rc.CONNACK)
	if p.Flags != 0 {
		c.t.Errorf("%s: CONNACK flags %x, want 0 [MQTT-2.1.3-1]", c.name, p.Flags)
	}
	ack, err := rc.ParseConnack(c.v, p.Body)
	if err != nil {
		c.t.Fatalf("%s: CONNACK % x: %v", c.name, p.Body, err)
	}
	return ack
}

// subscribe sends a SUBSCRIBE and returns the SUBACK codes, after checking
// that the SUBACK echoes the packet identifier [MQTT-3.8.4-2].
func (c *client) subscribe(id uint16, props []byte, subs ...rc.Sub) []byte {
	c.t.Helper()
	c.send(rc.Subscribe(c.v, id, props, subs...))
	p := c.expect(rc.SUBACK)
	sa, err := rc.ParseSuback(c.v, p.Body)
	if err != nil {
		c.t.Fatalf("%s: SUBACK % x: %v", c.name, p.Body, err)
	}
	if sa.ID != id {
		c.t.Fatalf("%s: SUBACK id %d, want %d [MQTT-3.8.4-2]", c.name, sa.ID, id)
	}
	return sa.Codes
}

// sub subscribes to one filter with the given options byte and requires
// the grant of the requested QoS.
func (c *client) sub(filter string, opts byte) {
	c.t.Helper()
	codes := c.subscribe(1, nil, rc.Sub{Filter: filter, Opts: opts})
	if len(codes) != 1 || codes[0] != opts&0x03 {
		c.t.Fatalf("%s: SUBACK codes % x for %q, want [%02x]", c.name, codes, filter, opts&0x03)
	}
}

// message reads the next packet, which must be a PUBLISH, without
// acknowledging it.
func (c *client) message() rc.Message {
	c.t.Helper()
	p := c.expect(rc.PUBLISH)
	m, err := rc.ParsePublish(c.v, p.Flags, p.Body)
	if err != nil {
		c.t.Fatalf("%s: PUBLISH %v: %v", c.name, p, err)
	}
	return m
}

// receive reads a PUBLISH and completes its QoS handshake.
func (c *client) receive() rc.Message {
	c.t.Helper()
	m := c.message()
	c.ackMessage(m)
	return m
}

// receiveTopic receives one message and requires its topic and payload.
func (c *client) receiveTopic(topic, payload string) rc.Message {
	c.t.Helper()
	m := c.receive()
	if m.Topic != topic || string(m.Payload) != payload {
		c.t.Fatalf("%s: got message %q %q, want %q %q", c.name, m.Topic, m.Payload, topic, payload)
	}
	return m
}

// ackMessage completes the receiver side of QoS 1 and 2 [MQTT-4.3].
func (c *client) ackMessage(m rc.Message) {
	c.t.Helper()
	switch m.QoS {
	case 1:
		c.send(rc.Ack(rc.PUBACK, m.ID))
	case 2:
		c.send(rc.Ack(rc.PUBREC, m.ID))
		c.expectAck(rc.PUBREL, m.ID)
		c.send(rc.Ack(rc.PUBCOMP, m.ID))
	}
}

// expectAck reads a PUBACK/PUBREC/PUBREL/PUBCOMP for id and requires a
// success code (0x00, or 0x10 No matching subscribers in 5.0).
func (c *client) expectAck(typ byte, id uint16) rc.AckPacket {
	c.t.Helper()
	p := c.expect(typ)
	wantFlags := byte(0)
	if typ == rc.PUBREL {
		wantFlags = 0x02
	}
	if p.Flags != wantFlags {
		c.t.Errorf("%s: %s flags %x, want %x [MQTT-2.1.3-1]", c.name, rc.TypeName(typ), p.Flags, wantFlags)
	}
	a, err := rc.ParseAck(c.v, p.Body)
	if err != nil {
		c.t.Fatalf("%s: %v: %v", c.name, p, err)
	}
	if a.ID != id {
		c.t.Fatalf("%s: %s for id %d, want id %d", c.name, rc.TypeName(typ), a.ID, id)
	}
	if a.Code != 0x00 && a.Code != 0x10 {
		c.t.Fatalf("%s: %s reason code 0x%02x, want success", c.name, rc.TypeName(typ), a.Code)
	}
	return a
}

// publish sends a message and completes the sender side of its QoS
// handshake. props (5.0 only) are the encoded PUBLISH properties.
func (c *client) publish(topic, payload string, qos byte, retain bool, id uint16, props ...[]byte) {
	c.t.Helper()
	c.send(rc.Publish{Version: c.v, QoS: qos, Retain: retain, Topic: topic, ID: id,
		Props: rc.Cat(props...), Payload: []byte(payload)}.Bytes())
	switch qos {
	case 1:
		c.expectAck(rc.PUBACK, id)
	case 2:
		c.expectAck(rc.PUBREC, id)
		c.send(rc.Ack(rc.PUBREL, id))
		c.expectAck(rc.PUBCOMP, id)
	}
}

// quiet requires that nothing arrives, and the connection stays open, for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	p, err := c.conn.ReadPacket(d)
	switch {
	case errors.Is(err, rc.ErrTimeout):
	case err != nil:
		c.t.Fatalf("%s: want silence for %v, got %v", c.name, d, err)
	default:
		c.t.Fatalf("%s: want silence for %v, got %v", c.name, d, p)
	}
}

// ping sends PINGREQ and requires PINGRESP; a cheap way to prove the
// connection is alive and that everything sent before has been processed.
func (c *client) ping() {
	c.t.Helper()
	c.send([]byte{0xC0, 0x00})
	c.expectBytes([]byte{0xD0, 0x00})
}

// closedAfter waits for the server to close the connection and returns
// what it sent first.
func (c *client) closedAfter() []rc.Packet {
	c.t.Helper()
	seen, err := c.conn.ExpectClosed(closeTimeout)
	if err != nil {
		c.t.Fatalf("%s: want the server to close the connection, got %v after packets %v", c.name, err, seen)
	}
	return seen
}

// expectClosed requires the server to close the connection. A 3.1.1
// server must close it silently; a 5.0 server may first send one
// DISCONNECT whose reason code is in allowed (any code >= 0x80 when
// allowed is empty), as section 4.13 allows. It returns the DISCONNECT reason code
// and whether one was sent.
func (c *client) expectClosed(allowed ...byte) (byte, bool) {
	c.t.Helper()
	return c.checkDisconnect(c.closedAfter(), allowed...)
}

// checkDisconnect applies the rules of expectClosed to the packets seen
// before a close.
func (c *client) checkDisconnect(seen []rc.Packet, allowed ...byte) (byte, bool) {
	c.t.Helper()
	if len(seen) == 0 {
		return 0, false
	}
	if c.v != 5 || len(seen) > 1 || seen[0].Type != rc.DISCONNECT {
		c.t.Fatalf("%s: want the connection closed%s, got packets %v", c.name, disconnectNote(c.v, allowed), seen)
	}
	d, err := rc.ParseDisconnect(seen[0].Body)
	if err != nil {
		c.t.Fatalf("%s: DISCONNECT % x: %v", c.name, seen[0].Body, err)
	}
	if !codeAllowed(d.Code, allowed) {
		c.t.Fatalf("%s: DISCONNECT reason 0x%02x, want%s", c.name, d.Code, disconnectNote(c.v, allowed))
	}
	return d.Code, true
}

// expectDisconnect requires a 5.0 DISCONNECT with reason code want
// followed by the server closing the connection.
func (c *client) expectDisconnect(want byte) {
	c.t.Helper()
	if _, ok := c.expectClosed(want); !ok {
		c.t.Fatalf("%s: connection closed without DISCONNECT 0x%02x", c.name, want)
	}
}

func codeAllowed(code byte, allowed []byte) bool {
	if len(allowed) == 0 {
		return code >= 0x80
	}
	return bytes.IndexByte(allowed, code) >= 0
}

func disconnectNote(v byte, allowed []byte) string {
	switch {
	case v != 5:
		return " silently"
	case len(allowed) == 0:
		return " (optionally after a DISCONNECT with a code >= 0x80)"
	}
	return fmt.Sprintf(" (optionally after a DISCONNECT with a code in % x)", allowed)
}

// disconnect sends a normal DISCONNECT and waits for the server to close
// the connection, so that the session state it leaves is settled before
// the test goes on. A server that keeps the socket open is not an error
// here ([MQTT-3.14.4-1] puts closing on the client).
func (c *client) disconnect() {
	c.t.Helper()
	c.send([]byte{0xE0, 0x00})
	_, _ = c.conn.ExpectClosed(time.Second)
	c.conn.Close()
}

// drop closes the TCP connection without DISCONNECT, as a crash would.
func (c *client) drop() { c.conn.Close() }
