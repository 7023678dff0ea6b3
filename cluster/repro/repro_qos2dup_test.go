package repro_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/rawclient"
)

// qos2Sub is a persistent QoS 2 subscriber at the packet level, so that
// a test knows when it completed a message (its PUBCOMP is written). It
// keeps its QoS 2 receive state across connections as a client must: a
// PUBLISH repeating a packet id that awaits PUBREL is acknowledged, not
// delivered again [MQTT-4.3.3-10]; any other PUBLISH of a payload it had
// is a second delivery.
type qos2Sub struct {
	t         *testing.T
	id        string
	conn      *rawclient.Conn
	awaiting  map[uint16]string // packet id -> payload, PUBREC sent
	got       map[string]int    // deliveries per payload
	completed map[string]bool   // PUBCOMP written
	subacks   map[uint16]bool
	publishes map[string]int // QoS 2 PUBLISHes per payload, repeats (DUP) included
}

func newQoS2Sub(t *testing.T, id string) *qos2Sub {
	return &qos2Sub{t: t, id: id, awaiting: map[uint16]string{}, got: map[string]int{},
		completed: map[string]bool{}, subacks: map[uint16]bool{}, publishes: map[string]int{}}
}

// startQoS2OnN2 starts three nodes with faults, moving sessions by the
// client's claims only (no janitor adoption; forward_timeout 15 s, room
// for elections after kills), id's QoS 2 subscriber on n2 subscribed to
// topic at QoS 1 (persistent), and a publisher on n1 that has seen its
// interest: the set-up of the repro tests of a QoS 2 session's claims.
func startQoS2OnN2(t *testing.T, id, topic, faults string) (*harness.Cluster, *qos2Sub, *harness.Client) {
	t.Helper()
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: faults, Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	sub := newQoS2Sub(t, id)
	if _, err := sub.connect(tc.Nodes[1], true); err != nil {
		t.Fatal(err)
	}
	sub.subscribe(topic, 1, 15*time.Second)
	pub := harness.Connect(t, tc.Nodes[0], id+"-pub")
	pub.AwaitInterest(t, topic)
	return tc, sub, pub
}

// connect opens a connection to nd (Clean Start clean, Session Expiry
// harness.QueuedExpiry) and returns the CONNACK's Session Present; an error for
// no CONNACK or a refusal.
func (s *qos2Sub) connect(nd *harness.Node, clean bool) (bool, error) {
	if s.conn != nil {
		s.conn.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := rawclient.Dial(ctx, nd.MQTT)
	cancel()
	if err != nil {
		return false, err
	}
	s.t.Cleanup(func() { c.Close() })
	s.conn = c
	err = c.Write(rawclient.Connect{Version: 5, ClientID: s.id, Clean: clean, KeepAlive: 60,
		Props: rawclient.PropU32(rawclient.PropSessionExpiry, harness.QueuedExpiry)}.Bytes(), 5*time.Second)
	if err != nil {
		return false, err
	}
	p, err := c.ReadPacket(10 * time.Second)
	if err != nil {
		return false, err
	}
	if p.Type != rawclient.CONNACK {
		return false, fmt.Errorf("%s: %v instead of CONNACK", s.id, p)
	}
	ack, err := rawclient.ParseConnack(5, p.Body)
	if err != nil || ack.Code != 0 {
		return false, fmt.Errorf("%s: CONNACK 0x%02X (%v)", s.id, ack.Code, err)
	}
	return ack.SessionPresent, nil
}

// subscribe subscribes to filter at QoS 2 under packet id pid and reads
// until its SUBACK, within d. A SUBACK is written once the subscription
// is durable, and the session's ops are replicated in order: whatever
// the session did before (a completion's delete) is durable too.
func (s *qos2Sub) subscribe(filter string, pid uint16, d time.Duration) {
	s.t.Helper()
	if err := s.conn.Write(rawclient.Subscribe(5, pid, nil, rawclient.Sub{Filter: filter, Opts: 2}), 5*time.Second); err != nil {
		s.t.Fatalf("%s: SUBSCRIBE %s: %v", s.id, filter, err)
	}
	s.until(d, func() bool { return s.subacks[pid] })
}

// until reads and answers packets until done reports true, failing the
// test if it does not within d or the connection ends.
func (s *qos2Sub) until(d time.Duration, done func() bool) {
	s.t.Helper()
	if err := s.read(time.Now().Add(d), done); err != nil {
		s.t.Fatalf("%s: %v (got %v)", s.id, err, s.got)
	}
}

// resumed is until on a resumed session: when the connection ends (a
// CONNECT of an earlier try, answered late under load, took the session
// over), it connects to nd again, as a client does.
func (s *qos2Sub) resumed(nd *harness.Node, d time.Duration, done func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := s.read(deadline, done)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: %v (got %v)", s.id, err, s.got)
		}
		s.t.Logf("%s: %v; connecting again", s.id, err)
		harness.Eventually(s.t, time.Until(deadline), func() error {
			_, err := s.connect(nd, false)
			return err
		})
	}
}

// read reads and answers packets until done reports true; an error when
// deadline passes or the connection ends.
func (s *qos2Sub) read(deadline time.Time, done func() bool) error {
	for !done() {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("not in time")
		}
		p, err := s.conn.ReadPacket(min(left, time.Second))
		if errors.Is(err, rawclient.ErrTimeout) {
			continue
		}
		if err != nil {
			return err
		}
		if p.Type == rawclient.DISCONNECT {
			return fmt.Errorf("DISCONNECT %v", p)
		}
		s.handle(p)
	}
	return nil
}

func (s *qos2Sub) handle(p rawclient.Packet) {
	s.t.Helper()
	var reply []byte
	switch p.Type {
	case rawclient.PUBLISH:
		m, err := rawclient.ParsePublish(5, p.Flags, p.Body)
		if err != nil {
			s.t.Fatalf("%s: %v", s.id, err)
		}
		switch m.QoS {
		case 1:
			s.got[string(m.Payload)]++
			reply = rawclient.Ack(rawclient.PUBACK, m.ID)
		case 2:
			s.publishes[string(m.Payload)]++
			if _, repeat := s.awaiting[m.ID]; !repeat {
				s.awaiting[m.ID] = string(m.Payload)
				s.got[string(m.Payload)]++
			}
			reply = rawclient.Ack(rawclient.PUBREC, m.ID)
		}
	case rawclient.PUBREL:
		a, err := rawclient.ParseAck(5, p.Body)
		if err != nil {
			s.t.Fatalf("%s: %v", s.id, err)
		}
		if payload, ok := s.awaiting[a.ID]; ok {
			s.completed[payload] = true
			delete(s.awaiting, a.ID)
		}
		reply = rawclient.Ack(rawclient.PUBCOMP, a.ID)
	case rawclient.SUBACK:
		sa, err := rawclient.ParseSuback(5, p.Body)
		if err != nil || len(sa.Codes) != 1 || sa.Codes[0] >= 0x80 {
			s.t.Fatalf("%s: SUBACK %v (%v)", s.id, sa.Codes, err)
		}
		s.subacks[sa.ID] = true
	}
	if reply != nil {
		if err := s.conn.Write(reply, 5*time.Second); err != nil {
			s.t.Fatalf("%s: %v", s.id, err)
		}
	}
}

// TestReproQoS2HeldAfterCompleted: test/jepsen TestClusterFull seed 42
// (bench/jepsen/RESULTS.md, "QoS 2 twice to persistent sessions"): ps0
// got two clean publishes' QoS 2 messages twice. n3 had delivered them
// to ps0 and was killed before it confirmed the forwards, so their
// publishing node held them for n3; ps0's client, resumed on n1, had
// completed the copies its record held when n1 applied the held ones,
// and nothing there knew them for the same messages (the session no
// longer held them; it was watched, but its copies came in its record,
// not by a forward). Here: the subscriber completes m1 on n2, whose
// confirmation of the forward is withheld (confirm-late); n2 is killed,
// n1 holds m1 for it and answers its publisher; the client resumes on
// n3, whose claim takes the session from the stream and reads what was
// held for n2. m1 must not come again.
func TestReproQoS2HeldAfterCompleted(t *testing.T) {
	t.Parallel() // see harness.Main
	qos2HeldAfterCompleted(t, false)
}

// TestReproQoS2HeldAfterRestart: TestClusterFull seed 46 with the naming
// of copies (bench/jepsen/RESULTS.md): the same, but n2 comes back and
// the client resumes there. The restored session is read from n2's own
// store, which had dropped the completed copy and its Origin with it;
// n2's follower then applied the held copy to it. m1 must not come
// again.
func TestReproQoS2HeldAfterRestart(t *testing.T) {
	t.Parallel() // see harness.Main
	qos2HeldAfterCompleted(t, true)
}

// qos2HeldAfterCompleted has a subscriber complete m1 on n2, whose
// confirmation of the forward is withheld, kills n2 (n1 holds m1 for it)
// and resumes the session on n3 or, with restart, on n2 restarted.
func qos2HeldAfterCompleted(t *testing.T, restart bool) {
	id, topic := "q2d-sub", "q2d/t"
	if restart {
		id, topic = "q2r-sub", "q2r/t"
	}
	// forward_timeout 20 s: n1 waits for n2's confirmation until the
	// kill. adopt_after 60 s: no janitor takes the session before the
	// client's claim on n3 does.
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "confirm-late=" + topic + "@n2", Config: "cluster:\n  forward_timeout: 20s\n  adopt_after: 60s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]

	sub := newQoS2Sub(t, id)
	if _, err := sub.connect(n2, true); err != nil {
		t.Fatal(err)
	}
	sub.subscribe(topic, 1, 15*time.Second)
	pub := harness.Connect(t, n1, id+"-pub")
	pub.AwaitInterest(t, topic)

	type result struct {
		rc  byte
		err error
	}
	published := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), harness.PublishBound)
		defer cancel()
		r, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 2, Payload: []byte("m1")})
		if r != nil {
			published <- result{rc: r.ReasonCode}
			return
		}
		published <- result{err: err}
	}()
	sub.until(30*time.Second, func() bool { return sub.completed["m1"] })
	// The completion's delete is durable once this SUBACK is written.
	sub.subscribe(topic+"/after", 2, 15*time.Second)
	tc.WaitLog(n2, "confirmation withheld", 1, 10*time.Second)
	select {
	case r := <-published:
		t.Fatalf("m1 answered (0x%02X, %v) before n2's kill: the fault did not hold its confirmation", r.rc, r.err)
	default:
	}
	tc.Kill(n2, syscall.SIGKILL)
	// n2's routes closed with the forward unconfirmed: n1 holds m1 for
	// n2, then answers.
	select {
	case r := <-published:
		if r.err != nil || r.rc >= 0x80 {
			t.Fatalf("m1 after n2's kill: 0x%02X, %v", r.rc, r.err)
		}
	case <-time.After(harness.PublishBound + 5*time.Second):
		t.Fatal("m1 not answered after n2's kill")
	}
	back := n3
	if restart {
		back = n2
		tc.Start(n2)
	}
	harness.Eventually(t, 60*time.Second, func() error {
		present, err := sub.connect(back, false)
		if err == nil && !present {
			t.Fatalf("%s: resumed on n3 without its session", id)
		}
		return err
	})
	// What was held for n2 is read before the CONNACK, and what is
	// forwarded to the session while its followers read on waits behind
	// what they read (catchup.go): once m2 is in, a held m1 was too.
	// On topic's other subscription: n2 withholds the confirmation of
	// topic's messages again after its restart.
	rc := pub.Pub(t, &paho.Publish{Topic: topic + "/after", QoS: 2, Payload: []byte("m2")})
	if rc >= 0x80 {
		t.Fatalf("m2: 0x%02X", rc)
	}
	sub.resumed(back, 30*time.Second, func() bool { return sub.completed["m2"] })
	// The path: n3 read m1 where n1 held it for n2 (ahead of the
	// adoption, or by its follower after).
	if !restart && !readHeldFor(n3, "n2") || restart && harness.CountLog(n2, "messages held for this node applied") == 0 {
		t.Fatalf("%s read nothing held for n2: the test missed its path\nn1:\n%s\n%s:\n%s", back.Name, harness.GrepLog(n1, "held", "n2"), back.Name, harness.GrepLog(back, id))
	}
	if sub.got["m1"] != 1 || sub.got["m2"] != 1 {
		t.Fatalf("%s got m1 %d times and m2 %d times at QoS 2, want once each\nn1:\n%s\n%s:\n%s", id, sub.got["m1"], sub.got["m2"],
			harness.GrepLog(n1, "held", id), back.Name, harness.GrepLog(back, id))
	}
}

// readHeldFor reports whether nd's log shows a message held for peer
// read for a session: read ahead of an adoption, or by a follower.
func readHeldFor(nd *harness.Node, peer string) bool {
	for _, l := range strings.Split(harness.GrepLog(nd, "read ahead for a session taken from the stream", "message held for a node read"), "\n") {
		if strings.Contains(l, "peer="+peer+" ") && !strings.Contains(l, " messages=0 ") {
			return true
		}
	}
	return false
}
