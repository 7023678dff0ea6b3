package broker

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

// serveNamed serves s on one more listener, named name, and returns its
// address.
func serveNamed(t *testing.T, s *Server, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(listener.Named(ln, name)) // ends with the server's Shutdown
	return ln.Addr().String()
}

// nextPublish reads until a PUBLISH arrives and returns it.
func nextPublish(t *testing.T, c *mqtttest.Client) *packet.Publish {
	t.Helper()
	for {
		p, ok := c.Next(3 * time.Second).(*packet.Publish)
		if ok {
			return p
		}
	}
}

// A listener's mount point (mosquitto's mount_point) is put before the
// topics its clients publish to, their wills and their filters (after a
// $share name), and taken off the topics delivered to them, retained ones
// included; they see nothing outside their tree.
func TestMountPoint(t *testing.T) {
	t.Parallel()
	s, plainAddr := startServer(t, Options{Listeners: map[string]ListenerPolicy{"tenant": {MountPoint: "tenants/a/"}}})
	addr := serveNamed(t, s, "tenant")

	outside := dial(t, plainAddr, packet.V311)
	outside.Connect(&packet.Connect{ClientID: "outside", CleanStart: true})
	outside.Subscribe("#", 0)
	outside.Send(&packet.Publish{Topic: "tenants/a/state", Payload: []byte("r"), Retain: true})
	outside.Send(&packet.Publish{Topic: "other/state", Payload: []byte("o"), Retain: true})
	for range 2 { // its own two messages back
		nextPublish(t, outside)
	}

	in := dial(t, addr, packet.V5)
	in.Connect(&packet.Connect{ClientID: "in", CleanStart: true, WillFlag: true, WillTopic: "gone", WillPayload: []byte("w")})
	in.Subscribe("#", 1)
	if p := nextPublish(t, in); p.Topic != "state" || string(p.Payload) != "r" || !p.Retain {
		t.Fatalf("retained message in the mount: %q %q retain %v, want \"state\" \"r\" retained", p.Topic, p.Payload, p.Retain)
	}
	in.Send(&packet.Publish{Topic: "cmd/1", Payload: []byte("x"), QoS: 1, PacketID: 7})
	if p := nextPublish(t, outside); p.Topic != "tenants/a/cmd/1" {
		t.Fatalf("outside got %q, want tenants/a/cmd/1", p.Topic)
	}
	if p := nextPublish(t, in); p.Topic != "cmd/1" {
		t.Fatalf("the mounted client got its own message as %q, want cmd/1", p.Topic)
	}
	outside.Send(&packet.Publish{Topic: "other/x", Payload: []byte("o")})
	outside.Send(&packet.Publish{Topic: "tenants/a/in/1", Payload: []byte("i")})
	nextPublish(t, outside)
	nextPublish(t, outside)
	if p := nextPublish(t, in); p.Topic != "in/1" {
		t.Fatalf("the mounted client got %q, want in/1 (and nothing outside its mount)", p.Topic)
	}

	shared := dial(t, addr, packet.V5)
	shared.Connect(&packet.Connect{ClientID: "shared", CleanStart: true})
	shared.Subscribe("$share/g/jobs/+", 0)
	outside.Send(&packet.Publish{Topic: "tenants/a/jobs/1", Payload: []byte("j")})
	if p := nextPublish(t, shared); p.Topic != "jobs/1" {
		t.Fatalf("shared subscription got %q, want jobs/1", p.Topic)
	}
	nextPublish(t, outside)

	in.NC.Close() // no DISCONNECT: the will goes
	for {
		if p := nextPublish(t, outside); p.Topic == "tenants/a/gone" {
			break
		} else if !strings.HasPrefix(p.Topic, "tenants/a/") {
			t.Fatalf("outside got %q", p.Topic)
		}
	}
}

// A mount point with a wildcard is refused: it would make filters of the
// client's topics.
func TestMountPointRefused(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{Listeners: map[string]ListenerPolicy{"x": {MountPoint: "a/+/"}}}); err == nil {
		t.Fatal("mount point a/+/ accepted")
	}
}

// Options.MaxPayloadSize (mosquitto's message_size_limit): a larger
// message is not routed, its QoS flow completes (0x83 for MQTT 5, as
// mosquitto answers), and the connection stays open.
func TestMaxPayloadSize(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{MaxPayloadSize: 10})
	sub := dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("big/#", 1)
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		pub := dial(t, addr, v)
		pub.Connect(&packet.Connect{ClientID: "pub" + v.String(), CleanStart: true})
		pub.Send(&packet.Publish{Topic: "big/1", Payload: make([]byte, 11), QoS: 1, PacketID: 1})
		ack, ok := pub.Next(2 * time.Second).(*packet.Puback)
		if want := map[packet.Version]packet.ReasonCode{packet.V5: packet.ImplementationSpecificError}[v]; !ok || ack.ReasonCode != want {
			t.Fatalf("%v: %+v, want PUBACK 0x%02X", v, ack, byte(want))
		}
		pub.Send(&packet.Publish{Topic: "big/2", Payload: make([]byte, 11), QoS: 2, PacketID: 2})
		if rec, ok := pub.Next(2 * time.Second).(*packet.Pubrec); !ok || v == packet.V5 && rec.ReasonCode != packet.ImplementationSpecificError {
			t.Fatalf("%v: %+v, want PUBREC (0x83 for 5.0)", v, rec)
		}
		pub.Send(&packet.Publish{Topic: "big/3", Payload: make([]byte, 10), QoS: 1, PacketID: 3})
		if ack, ok := pub.Next(2 * time.Second).(*packet.Puback); !ok || ack.ReasonCode != 0 {
			t.Fatalf("%v: %+v for a payload at the limit", v, ack)
		}
		if p := nextPublish(t, sub); p.Topic != "big/3" {
			t.Fatalf("%v: delivered %q, want only big/3", v, p.Topic)
		}
	}
}

// Options.PersistentSessionExpiry (mosquitto's persistent_client_expiration)
// ends a 3.1.1 session with Clean Session 0 that stayed offline that long.
func TestPersistentSessionExpiry(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{PersistentSessionExpiry: 1})
	c := dial(t, addr, packet.V311)
	c.Connect(&packet.Connect{ClientID: "p", CleanStart: false})
	c.Subscribe("a", 1)
	c.Send(&packet.Disconnect{})
	c.ExpectClosed(2 * time.Second)
	mqtttest.Eventually(t, 5*time.Second, func() bool { return s.Stats().SessionsExpired == 1 })
	c = dial(t, addr, packet.V311)
	if ack := c.Connect(&packet.Connect{ClientID: "p", CleanStart: false}); ack.SessionPresent {
		t.Fatal("session present after the expiry")
	}
}

// An empty client id is refused with 0x85 (3.1.1: 0x02) when the server
// does not assign ids; assigned ids start with the prefix; a listener's
// policy overrides both.
func TestEmptyClientID(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{RefuseEmptyClientID: true, AutoIDPrefix: "auto-",
		Listeners: map[string]ListenerPolicy{"open": {ClientIDs: true, AutoIDPrefix: "open-"}}})
	for v, code := range map[packet.Version]packet.ReasonCode{packet.V5: packet.ClientIdentifierNotValid, packet.V311: packet.Connack311IdentifierRejected} {
		c := dial(t, addr, v)
		c.Send(&packet.Connect{ProtocolVersion: v, CleanStart: true})
		if ack, ok := c.Next(2 * time.Second).(*packet.Connack); !ok || ack.ReasonCode != code {
			t.Fatalf("%v: %+v, want CONNACK 0x%02X", v, ack, byte(code))
		}
	}
	c := dial(t, serveNamed(t, s, "open"), packet.V5)
	if ack := c.Connect(&packet.Connect{CleanStart: true}); !strings.HasPrefix(ack.Properties.AssignedClientID, "open-") {
		t.Fatalf("assigned %q, want open-...", ack.Properties.AssignedClientID)
	}
}

// A listener's maximum QoS (mosquitto's max_qos): MQTT 5 clients are told
// in CONNACK; subscriptions are granted at most that QoS, so deliveries
// are capped too; a will above it is refused with 0x9B and a PUBLISH
// above it ends the connection with DISCONNECT 0x9B.
func TestListenerMaxQoS(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, Options{Listeners: map[string]ListenerPolicy{"q0": {LimitQoS: true, MaxQoS: 0}}})
	addr := serveNamed(t, s, "q0")
	c := dial(t, addr, packet.V5)
	ack := c.Connect(&packet.Connect{ClientID: "q", CleanStart: true})
	if !ack.Properties.Has(packet.PropMaximumQoS) || ack.Properties.MaximumQoS != 0 {
		t.Fatalf("CONNACK Maximum QoS %d (set %v), want 0", ack.Properties.MaximumQoS, ack.Properties.Has(packet.PropMaximumQoS))
	}
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a", Options: packet.SubOptions{QoS: 2}}}})
	if sa, ok := c.Next(2 * time.Second).(*packet.Suback); !ok || sa.ReasonCodes[0] != 0 {
		t.Fatalf("SUBACK %+v, want QoS 0 granted", sa)
	}
	c.Send(&packet.Publish{Topic: "a", QoS: 0, Payload: []byte("x")})
	if p := nextPublish(t, c); p.QoS != 0 {
		t.Fatalf("delivered at QoS %d", p.QoS)
	}
	c.Send(&packet.Publish{Topic: "a", QoS: 1, PacketID: 2})
	got := c.ExpectClosed(2 * time.Second)
	if len(got) == 0 {
		t.Fatal("no DISCONNECT")
	}
	if d, ok := got[len(got)-1].(*packet.Disconnect); !ok || d.ReasonCode != packet.QoSNotSupported {
		t.Fatalf("last packet %+v, want DISCONNECT 0x9B", got[len(got)-1])
	}
	w := dial(t, addr, packet.V5)
	w.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: "w", CleanStart: true, WillFlag: true, WillTopic: "w", WillQoS: 1})
	if ack, ok := w.Next(2 * time.Second).(*packet.Connack); !ok || ack.ReasonCode != packet.QoSNotSupported {
		t.Fatalf("will at QoS 1: %+v, want CONNACK 0x9B", ack)
	}
}

// use_username_as_clientid: the username becomes the client id, so two
// clients sending one id but different usernames do not take over each
// other; a client without a username is refused (0x87).
func TestUsernameAsClientID(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, Options{Listeners: map[string]ListenerPolicy{"u": {UsernameAsClientID: true}}})
	addr := serveNamed(t, s, "u")
	a := dial(t, addr, packet.V311)
	a.Connect(&packet.Connect{ClientID: "same", CleanStart: true, UsernameFlag: true, Username: "alice"})
	b := dial(t, addr, packet.V311)
	b.Connect(&packet.Connect{ClientID: "same", CleanStart: true, UsernameFlag: true, Username: "bob"})
	mqtttest.Eventually(t, 5*time.Second, func() bool {
		ids := map[string]bool{}
		for _, c := range s.Clients() {
			ids[c.ClientID] = c.Connected
		}
		return ids["alice"] && ids["bob"] && !ids["same"]
	})
	n := dial(t, addr, packet.V311)
	n.Send(&packet.Connect{ProtocolVersion: packet.V311, ClientID: "x", CleanStart: true})
	if ack, ok := n.Next(2 * time.Second).(*packet.Connack); !ok || ack.ReasonCode != packet.Connack311NotAuthorized {
		t.Fatalf("without a username: %+v, want CONNACK 5", ack)
	}
}

// clientid_prefixes: ids that do not start with the prefix are refused
// with 0x87 (3.1.1: 5).
func TestClientIDPrefix(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{ClientIDPrefix: "secure-"})
	c := dial(t, addr, packet.V311)
	c.Send(&packet.Connect{ProtocolVersion: packet.V311, ClientID: "mqtt", CleanStart: true})
	if ack, ok := c.Next(2 * time.Second).(*packet.Connack); !ok || ack.ReasonCode != packet.Connack311NotAuthorized {
		t.Fatalf("%+v, want CONNACK 5", ack)
	}
	dial(t, addr, packet.V5).Connect(&packet.Connect{ClientID: "secure-client", CleanStart: true})
}

// Options.MaxInflightBytes (mosquitto's max_inflight_bytes): messages go
// out while the unacknowledged payload bytes are below the limit, so a
// third 60-byte message waits behind two under a 100-byte limit until an
// acknowledgement; a message larger than the limit goes out alone.
func TestMaxInflightBytes(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{MaxInflightBytes: 100})
	sub := dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "slow", CleanStart: true})
	sub.Subscribe("b/#", 1)
	pub := dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	for i, n := range []int{60, 60, 60, 200} {
		pub.Send(&packet.Publish{Topic: fmt.Sprintf("b/%d", i), Payload: make([]byte, n), QoS: 1, PacketID: uint16(i + 1)})
		pub.Next(2 * time.Second) // PUBACK: routed
	}
	// A QoS 0 message is not held by the window: once it arrives, every
	// QoS 1 message routed before it that had room has arrived too.
	pub.Send(&packet.Publish{Topic: "b/marker"})
	var got []*packet.Publish
	for p := nextPublish(t, sub); p.Topic != "b/marker"; p = nextPublish(t, sub) {
		got = append(got, p)
	}
	if len(got) != 2 {
		t.Fatalf("%d messages in flight, want 2 (60+60 bytes reach the 100-byte limit)", len(got))
	}
	sub.Send(&packet.Puback{PacketID: got[0].PacketID})
	third := nextPublish(t, sub)
	if third.Topic != "b/2" {
		t.Fatalf("after one ack: %s, want b/2", third.Topic)
	}
	sub.Send(&packet.Puback{PacketID: got[1].PacketID})
	sub.Send(&packet.Puback{PacketID: third.PacketID})
	if big := nextPublish(t, sub); big.Topic != "b/3" || len(big.Payload) != 200 {
		t.Fatalf("got %s (%d bytes), want b/3 alone", big.Topic, len(big.Payload))
	}
}

// A listener's own Topic Alias Maximum (mosquitto's per-listener
// max_topic_alias); 0: CONNACK has none and an alias is a protocol error
// (DISCONNECT 0x94) [MQTT-3.2.2-17, MQTT-3.3.2-9].
func TestListenerTopicAliases(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{TopicAliasMaximum: 10, Listeners: map[string]ListenerPolicy{"none": {LimitAliases: true}}})
	if ack := dial(t, addr, packet.V5).Connect(&packet.Connect{ClientID: "a", CleanStart: true}); ack.Properties.TopicAliasMaximum != 10 {
		t.Fatalf("Topic Alias Maximum %d, want 10", ack.Properties.TopicAliasMaximum)
	}
	c := dial(t, serveNamed(t, s, "none"), packet.V5)
	if ack := c.Connect(&packet.Connect{ClientID: "b", CleanStart: true}); ack.Properties.Has(packet.PropTopicAliasMaximum) {
		t.Fatalf("Topic Alias Maximum %d in CONNACK, want none", ack.Properties.TopicAliasMaximum)
	}
	p := &packet.Publish{Topic: "t"}
	p.Properties.TopicAlias = 1
	p.Properties.Set(packet.PropTopicAlias)
	c.Send(p)
	got := c.ExpectClosed(2 * time.Second)
	if len(got) == 0 {
		t.Fatal("no DISCONNECT")
	}
	if d, ok := got[len(got)-1].(*packet.Disconnect); !ok || d.ReasonCode != packet.TopicAliasInvalid {
		t.Fatalf("got %+v, want DISCONNECT 0x94", got[len(got)-1])
	}
}

// Options.CheckRetainSource (mosquitto's check_retain_source): a retained
// message reaches a new subscriber only while its publisher may still
// publish on its topic.
func TestCheckRetainSource(t *testing.T) {
	t.Parallel()
	var revoked atomic.Bool
	authz := AuthorizerFunc(func(_ context.Context, c *ClientInfo, act Action, topic string) bool {
		return !(act == ActionPublish && c.Username == "alice" && revoked.Load())
	})
	_, addr := startServer(t, Options{CheckRetainSource: true, Authorizer: authz})
	pub := dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "alice", CleanStart: true, UsernameFlag: true, Username: "alice"})
	pub.Send(&packet.Publish{Topic: "state/a", Payload: []byte("alice"), Retain: true, QoS: 1, PacketID: 1})
	pub.Next(2 * time.Second) // PUBACK
	pub.Send(&packet.Disconnect{})
	pub.ExpectClosed(2 * time.Second)
	other := dial(t, addr, packet.V311)
	other.Connect(&packet.Connect{ClientID: "bob", CleanStart: true, UsernameFlag: true, Username: "bob"})
	other.Send(&packet.Publish{Topic: "state/b", Payload: []byte("bob"), Retain: true, QoS: 1, PacketID: 1})
	other.Next(2 * time.Second)
	other.Send(&packet.Publish{Topic: "end", Payload: []byte("bob"), Retain: true, QoS: 1, PacketID: 2})
	other.Next(2 * time.Second)

	subscribe := func() []string {
		c := dial(t, addr, packet.V311)
		c.Connect(&packet.Connect{ClientID: "reader", CleanStart: true})
		// The retained messages of the second SUBSCRIBE come after those
		// of the first: the connection handles its packets in order.
		for i, f := range []string{"state/+", "end"} {
			c.Send(&packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{{Filter: f}}})
		}
		var got []string
		for p := nextPublish(t, c); p.Topic != "end"; p = nextPublish(t, c) {
			got = append(got, p.Topic)
		}
		c.Send(&packet.Disconnect{})
		c.ExpectClosed(2 * time.Second)
		return got
	}
	if got := subscribe(); len(got) != 2 {
		t.Fatalf("before the revocation: %v, want state/a and state/b", got)
	}
	revoked.Store(true)
	if got := subscribe(); len(got) != 1 || got[0] != "state/b" {
		t.Fatalf("after alice lost write access: %v, want state/b only", got)
	}
}
