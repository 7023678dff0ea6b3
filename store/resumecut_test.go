package store_test

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// resumeCase is one way a client comes back to its persistent session.
type resumeCase struct {
	name string
	v    packet.Version
	// expiry is the MQTT 5 Session Expiry Interval of both connections.
	expiry uint32
	// oldWill: the first connection has a will and is taken over instead
	// of disconnecting (the takeover publishes the will and records the
	// session without it before the resume); newWill: the resuming
	// CONNECT has a will.
	oldWill, newWill bool
	// quiet: the resume changes nothing a restart reads, and its CONNACK
	// may go before the new session record is durable (checked where
	// the first connection disconnected).
	quiet bool
}

func (rc resumeCase) connect(id string) *packet.Connect {
	p := &packet.Connect{ClientID: id, KeepAlive: 60}
	if rc.v == packet.V5 {
		p.Properties.SessionExpiry = rc.expiry
		p.Properties.Set(packet.PropSessionExpiry)
	}
	return p
}

func withWill(p *packet.Connect) *packet.Connect {
	p.WillFlag, p.WillTopic, p.WillPayload = true, "wills/back", []byte("gone")
	return p
}

// A CONNACK that resumes a persistent session says Session Present 1, so
// whatever a crash keeps from the moment it was written must still hold
// the session [MQTT-3.2.2-2]: at every cut of the journal from the largest
// ticket the broker waited for before writing it, a restarted broker
// resumes the session with its subscription. A resume that changes
// nothing a restart reads (a session that never expires, no will before
// or after) waits only for the record before it (here the DISCONNECT's,
// already written), not for its own: that is what spares a reconnect
// storm one fsync round per batch of CONNECTs. Any other resume waits for
// its own record, which carries a new expiry or will.
func TestResumeSurvivesACrashAtEveryCut(t *testing.T) {
	t.Parallel()
	for _, rc := range []resumeCase{
		{name: "3.1.1", v: packet.V311, quiet: true},
		{name: "5.0 never expires", v: packet.V5, expiry: 0xFFFFFFFF, quiet: true},
		{name: "5.0 expiry 3600", v: packet.V5, expiry: 3600},
		{name: "5.0 new will", v: packet.V5, expiry: 0xFFFFFFFF, newWill: true},
		{name: "5.0 takeover of a will", v: packet.V5, expiry: 0xFFFFFFFF, oldWill: true, quiet: true},
		{name: "3.1.1 takeover of a will", v: packet.V311, oldWill: true, quiet: true},
	} {
		t.Run(rc.name, func(t *testing.T) { testResumeCuts(t, rc) })
	}
}

func testResumeCuts(t *testing.T, rc resumeCase) {
	const id = "back"
	rec := &recorder{}
	addr := runWith(t, broker.Options{Store: rec})
	first := mqtttest.Dial(t, addr, rc.v)
	p := rc.connect(id)
	if rc.oldWill {
		p = withWill(p)
	}
	first.Connect(p)
	first.Subscribe("resume/#", 1)
	if !rc.oldWill {
		first.Send(&packet.Disconnect{})
		first.ExpectClosed(2 * time.Second)
	}
	before := rec.count()

	again := mqtttest.Dial(t, addr, rc.v)
	p = rc.connect(id)
	if rc.newWill {
		p = withWill(p)
	}
	if ack := again.Connect(p); !ack.SessionPresent {
		t.Fatal("the session was not resumed")
	}
	waited := rec.acked()
	switch {
	case rc.oldWill:
	case rc.quiet && waited > before:
		t.Errorf("the CONNACK waited for ticket %d, after the %d appends before the resume: want no wait for the resume's own record", waited, before)
	case !rc.quiet && waited <= before:
		t.Errorf("the CONNACK waited for ticket %d, none of the resume's records (after %d): its new expiry or will could be lost", waited, before)
	}
	if rc.oldWill {
		first.ExpectClosed(2 * time.Second) // taken over
	}
	for _, k := range rec.cuts(waited) {
		if rc.oldWill && lastSession(rec.journal(k), id).Will != nil {
			t.Errorf("cut %d: the session is stored with the will the takeover published: a restart would publish it again", k)
		}
		checkResumed(t, rec, k, rc)
	}
}

// lastSession is the last record of session id in ops.
func lastSession(ops []broker.Op, id string) broker.StoredSession {
	var last broker.StoredSession
	for _, op := range ops {
		if op.Kind == broker.OpSessionPut && op.Session.ClientID == id {
			last = op.Session
		}
	}
	return last
}

// checkResumed restarts a broker on the first k appends of rec and checks
// that the client's session is there with its subscription.
func checkResumed(t *testing.T, rec *recorder, k int, rc resumeCase) {
	t.Helper()
	addr := restart(t, rec, k)
	c := mqtttest.Dial(t, addr, rc.v)
	if ack := c.Connect(rc.connect("back")); !ack.SessionPresent {
		t.Fatalf("cut %d: the session the CONNACK said was present is gone", k)
	}
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "resume/x", QoS: 1, PacketID: 1, Payload: []byte("hello")})
	expect[*packet.Puback](t, pub, "PUBACK")
	if m := expect[*packet.Publish](t, c, "the message on the resumed subscription"); string(m.Payload) != "hello" {
		t.Fatalf("cut %d: got %q on %s, want hello on resume/x", k, m.Payload, m.Topic)
	}
}
