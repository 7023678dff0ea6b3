package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/rawclient"
)

// TestClusterLiveHandoverRounds moves one persistent session round the
// nodes while every node stays alive (n1 → n2 → n3 → n1 ...), each move a
// takeover of the live connection by a CONNECT on the next node, while a
// QoS 1 and a QoS 2 publisher on every node publish to the session's topic
// at a steady rate. It asserts what the issue asks of a session that moves
// between live nodes: no message acknowledged to its publisher is lost,
// no QoS 2 message is delivered twice [MQTT-4.3.3], and each publisher's
// messages arrive in the order they were published [MQTT-4.6.0-6].
//
// The subscriber is a raw client that keeps its own session state as a
// conforming client does: a QoS 2 PUBLISH whose packet id it answered
// with PUBREC and has not seen released is the same message again, not a
// new one; anything else is a delivery.
//
// The subscriber comes over TCP, WebSocket, TLS and WebSocket over TLS in
// turn, so that takeovers end connections of every transport. It runs
// twice:
// with the moving session the topic's only subscriber (a node forwards to
// the session's node alone, so what goes to the old node after the move
// is what could be lost), and with a clean subscriber on every node as
// well (every node gets every message, so the old and the new node could
// both deliver one to the session), and a third time with the session
// subscribed through a share group it is the only member of
// ($share/mv/...): each group message goes to one node, which may be the
// old node after the session left it or the new one before the session
// arrived. For the group the order is not checked: a group message that
// reached the old node after the session left goes on to the new one
// and may come after a later one of the same publisher.
func TestClusterLiveHandoverRounds(t *testing.T) {
	t.Parallel() // see harness_test.go
	for _, c := range []struct {
		name               string
		everywhere, shared bool
	}{{"alone", false, false}, {"interest_everywhere", true, false}, {"shared", false, true}} {
		t.Run(c.name, func(t *testing.T) { testLiveHandoverRounds(t, c.everywhere, c.shared, "") })
	}
}

// TestClusterLiveHandoverRoundsNamed runs the rounds with every handover
// naming the old owner's own held subject for the new owner to read on
// from (the fault name-own-always on every node): the path a node takes
// after a stall or a dropped peer (withOwnBehind), or after a restart
// (ownCatchFrom), at every move. Taken at nearly every move, it lost
// 1,728, 95 and 16,121 acknowledged messages in the three subtests
// (bench/jepsen/RESULTS.md, "loss46", left 1); with this fault on
// 71b7304, 11,710 (shared) and 5,380 (alone), dropped as queue_full: the
// session, catching up after each move, sent nothing for longer than it
// stayed (RESULTS.md, "named").
func TestClusterLiveHandoverRoundsNamed(t *testing.T) {
	t.Parallel() // see harness_test.go
	const fault = "name-own-always=mover@n1,name-own-always=mover@n2,name-own-always=mover@n3"
	for _, c := range []struct {
		name               string
		everywhere, shared bool
	}{{"shared", false, true}, {"alone", false, false}} {
		t.Run(c.name, func(t *testing.T) { testLiveHandoverRounds(t, c.everywhere, c.shared, fault) })
	}
}

func testLiveHandoverRounds(t *testing.T, everywhere, shared bool, fault string) {
	const rounds = 60
	// Each node also listens on WebSocket, TLS and WebSocket over TLS
	// (a certificate for its address from a test CA); the subscriber
	// comes over each in turn.
	ca, err := devcert.NewCA("roost test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	dir := t.TempDir()
	more := map[string][]string{} // per node: ws, mqtts, wss URLs
	tc := harness.WrapCluster(t, clustertest.Start(t, clustertest.Options{Nodes: 3, NodeArgs: func(name, ip string) []string {
		chain, key, err := ca.Issue(devcert.Leaf{CommonName: name, Hosts: []string{ip}})
		if err != nil {
			t.Fatal(err)
		}
		cert, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		harness.WriteAtomic(t, cert, chain, 0o644)
		harness.WriteAtomic(t, keyFile, key, 0o600)
		hp := func() string { return net.JoinHostPort(ip, strconv.Itoa(clustertest.FreePort(t, ip))) }
		more[name] = []string{"ws://" + hp() + "/mqtt", "mqtts://" + hp(), "wss://" + hp() + "/mqtt"}
		args := []string{"--tls-cert", cert, "--tls-key", keyFile}
		for _, u := range more[name] {
			args = append(args, "--listen", u)
		}
		return args
	}, Env: faultEnv(fault)}))
	const topic = "handover/live"
	if everywhere {
		for _, nd := range tc.Nodes {
			c := harness.Connect(t, nd, "watcher-"+nd.Name)
			c.Sub(t, paho.SubscribeOptions{Topic: topic, QoS: 0})
			done := make(chan struct{})
			t.Cleanup(func() { close(done) })
			go func() { // only there to be routed to
				for {
					select {
					case <-c.In:
					case <-done:
						return
					}
				}
			}()
		}
	}
	sub := &liveSubscriber{t: t, id: "mover", filter: topic, ordered: !shared, rng: rand.New(rand.NewPCG(15, 1)),
		dialer: rawclient.Dialer{TLS: &tls.Config{RootCAs: roots}}}
	if shared {
		sub.filter = "$share/mv/" + topic
	}
	sub.connect(tc.Nodes[0], tc.Nodes[0].MQTT, false)
	// Every publisher's node must know the subscription before the
	// first message counts.
	var pubs []*livePublisher
	for _, nd := range tc.Nodes {
		for _, qos := range []byte{1, 2} {
			p := &livePublisher{t: t, nd: nd, qos: qos, topic: topic, name: fmt.Sprintf("%s-q%d", nd.Name, qos)}
			p.c = harness.Connect(t, nd, "pub-"+p.name)
			p.c.AwaitInterest(t, topic)
			pubs = append(pubs, p)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	// Deferred, so that it runs before t's cleanups when the test ends
	// early (t.Fatal in the rounds): publishers still dialing and
	// publishing while the cleanups disconnected their clients were
	// data races in paho (a suite run: ten race reports, which failed
	// three other tests running then too).
	defer halt()
	for _, p := range pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(stop) }()
	}
	for i := 1; i <= rounds; i++ {
		sub.receiveFor(time.Duration(20+sub.rng.IntN(100)) * time.Millisecond)
		nd := tc.Nodes[i%len(tc.Nodes)]
		addr := nd.MQTT // TCP, then ws, mqtts, wss
		if k := i % 4; k > 0 {
			addr = more[nd.Name][k-1]
		}
		sub.connect(nd, addr, true)
	}
	sub.receiveFor(200 * time.Millisecond)
	halt()
	// Everything acknowledged must come; the last node has it all.
	want := 0
	for _, p := range pubs {
		want += len(p.acked)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && sub.missing(pubs) > 0 {
		sub.receiveFor(200 * time.Millisecond)
	}
	sent := 0
	for _, p := range pubs {
		sent += p.sent
	}
	slices.Sort(sub.took)
	t.Logf("%d handovers; %d messages published, %d acknowledged, %d delivered (%d QoS 1 again, as QoS 1 allows); CONNECT to CONNACK of a takeover: median %v, p90 %v, max %v",
		rounds, sent, want, len(sub.first), sub.qos1Again, sub.took[len(sub.took)/2].Round(time.Millisecond),
		sub.took[len(sub.took)*9/10].Round(time.Millisecond), sub.took[len(sub.took)-1].Round(time.Millisecond))
	if want < 100 {
		t.Errorf("only %d messages acknowledged: the load did not run", want)
	}
	if fault != "" {
		named := 0
		for _, nd := range tc.Nodes {
			named += harness.CountLog(nd, "its held subject named for the new owner")
		}
		t.Logf("the old owner named its own held subject at %d handovers", named)
		if named == 0 {
			t.Errorf("no handover named the old owner's held subject: the fault (%s) missed its path", fault)
		}
	}
	for _, p := range pubs {
		var lost []int
		for _, seq := range p.acked {
			if _, ok := sub.first[p.name+"/"+strconv.Itoa(seq)]; !ok {
				lost = append(lost, seq)
			}
		}
		if len(lost) > 0 {
			t.Errorf("publisher %s: %d acknowledged messages never delivered: %v (%d acknowledged with 0x10, no matching subscribers: %v)",
				p.name, len(lost), head(lost, 20), len(p.noSubs), head(p.noSubs, 20))
		}
	}
	for _, e := range sub.errs {
		t.Error(e)
	}
	if t.Failed() {
		if len(sub.refused) > 0 {
			t.Logf("%d attempts to connect failed (tried again):\n%s", len(sub.refused), strings.Join(sub.refused, "\n"))
		}
		// The session's whole history on each node (its moves, fences,
		// kept messages), which the logs' last lines do not reach: a
		// loss seen only in full-suite runs is read from here.
		for _, nd := range tc.Nodes {
			var lines []string
			for _, l := range strings.Split(harness.GrepLog(nd, "client_id="+sub.id, "clients=["+sub.id+"]"), "\n") {
				if !strings.Contains(l, "msg=received") {
					lines = append(lines, l)
				}
			}
			t.Logf("--- %s: %s's lines but its packets:\n%s", nd.Name, sub.id, strings.Join(lines, "\n"))
		}
	}
}

func head(s []int, n int) []int { return s[:min(len(s), n)] }

// livePublisher publishes seq numbers "name/seq" on one node at one QoS.
type livePublisher struct {
	t     *testing.T
	nd    *harness.Node
	c     *harness.Client
	qos   byte
	topic string
	name  string
	sent  int
	acked []int // seqs acknowledged with a success code, in order
	// noSubs: seqs acknowledged with 0x10 (no matching subscribers),
	// which the moving session's node should never say: a loss shows
	// whether the cluster routed the message nowhere or lost it later.
	noSubs []int
}

// run publishes about every 4 ms until stop, at most 5000 messages (each
// waits for its acknowledgement, so under load the rate is lower). A
// publish not acknowledged (0x80: a node did not confirm in time; or the
// connection closed) is not counted, and the publisher connects again.
// A publisher that cannot connect again within its bound fails the test
// and stops: what it had acknowledged is still checked.
func (p *livePublisher) run(stop <-chan struct{}) {
	tick := time.NewTicker(4 * time.Millisecond)
	defer tick.Stop()
	for seq := 0; seq < 5000; seq++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		p.sent++
		rc, closed := p.c.TryPublish(p.t, &paho.Publish{Topic: p.topic, QoS: p.qos,
			Payload: []byte(p.name + "/" + strconv.Itoa(seq))})
		switch {
		case closed:
			p.c.Disconnect(&paho.Disconnect{})
			if !p.redial(stop) {
				return
			}
		case rc < 0x80:
			p.acked = append(p.acked, seq)
			if rc == 0x10 {
				p.noSubs = append(p.noSubs, seq)
			}
		}
	}
}

// livePublisherRedial bounds a publisher's reconnect: past the rounds'
// own takeover bound (20 s), as a busy machine needs.
const livePublisherRedial = 60 * time.Second

// redial connects the publisher again, within livePublisherRedial, and
// reports whether it did; false when stop closed first, or when the bound
// passed (the test then fails). A CONNECT closed without CONNACK, or
// refused, is the cluster saying "try again" while it cannot record the
// id's owner (docs/cluster.md): under load a single refusal, taken as
// fatal, failed the test from this goroutine (harness.Connect's t.Fatal).
func (p *livePublisher) redial(stop <-chan struct{}) bool {
	var last error
	tries := 0
	for end := time.Now().Add(livePublisherRedial); time.Now().Before(end); {
		tries++
		c, ack, err := clustertest.Dial(p.t, p.nd.MQTT, &paho.Connect{ClientID: "pub-" + p.name, CleanStart: true, KeepAlive: 30})
		if err == nil && ack.ReasonCode == 0 {
			if tries > 1 {
				p.t.Logf("publisher %s connected again on try %d (last refusal: %v)", p.name, tries, last)
			}
			p.c = harness.WrapClient(c)
			return true
		}
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
			err = fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
		}
		last = err
		select {
		case <-stop:
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	p.t.Errorf("publisher %s not connected again to %s within %v (%d tries, last: %v)", p.name, p.nd.Name, livePublisherRedial, tries, last)
	return false
}

// liveSubscriber is a persistent MQTT 5 session held by a raw client that
// moves between nodes.
type liveSubscriber struct {
	t       *testing.T
	id      string
	filter  string
	ordered bool // check each publisher's order
	rng     *rand.Rand
	dialer  rawclient.Dialer // trusts the nodes' test CA
	conn    *rawclient.Conn
	// awaiting: packet ids of QoS 2 messages answered with PUBREC and
	// not released yet (the client's half of the QoS 2 state).
	awaiting map[uint16]bool
	// first: payloads delivered; last: per publisher, the last seq
	// delivered (order).
	first map[string]bool
	last  map[string]int
	// via names each connection (its number, node and address), got
	// says how each QoS 2 payload first came (connection, time, packet
	// id, DUP), and
	// released where each packet id was last released (PUBREL): a QoS 2
	// message delivered twice is traced from the error alone, as the
	// nodes log no outgoing PUBLISH (pom28's run in session 28, n2-q2/191
	// twice in the shared subtest, could not be: bench/jepsen/RESULTS.md,
	// "hs28").
	via       map[*rawclient.Conn]string
	got       map[string]string
	released  map[uint16]string
	qos1Again int
	errs      []string
	// took: each resuming CONNECT's time to its CONNACK (the takeover).
	took []time.Duration
	// refused: each failed attempt to connect, with its time; logged
	// when the test fails.
	refused []string
}

// connect takes the session over on nd: the previous connection is left
// open, for the server to end (DISCONNECT 0x8E); what it still received
// before that is handled first, as a client does with a connection it
// has read before it reads the next.
// takeoverBound bounds one takeover of liveSubscriber's session,
// refusals and tries again included.
const takeoverBound = 45 * time.Second

func (s *liveSubscriber) connect(nd *harness.Node, addr string, resume bool) {
	s.t.Helper()
	if s.first == nil {
		s.first, s.last, s.awaiting = map[string]bool{}, map[string]int{}, map[uint16]bool{}
		s.via, s.got, s.released = map[*rawclient.Conn]string{}, map[string]string{}, map[uint16]string{}
	}
	old := s.conn
	var conn *rawclient.Conn
	tries := 0
	// A node closes a takeover's CONNECT it cannot record in its bounds
	// (the session's stream read, another connect being recorded), and
	// the client tries again: at a load of 50-100 three such refusals
	// took the 20 s this wait had ("not within 20s: mover on n2 ...
	// EOF", /shared in two ./cluster passes of session 32, and in
	// session 27's); takeoverBound.
	harness.Eventually(s.t, takeoverBound, func() error {
		if tries++; tries > 1 && old != nil {
			// The session is still served on the old connection until
			// a takeover: a client that stopped reading it while it
			// tried again had the broker fill the session's queue
			// (max_queued_messages) and drop the rest (a suite run: a
			// connect that took 12 s, 4,493 messages dropped).
			old = s.readOld(old, 100*time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := s.dialer.Dial(ctx, addr)
		if err != nil {
			return err
		}
		began := time.Now()
		err = c.Write(rawclient.Connect{Version: 5, ClientID: s.id, Clean: !resume, KeepAlive: 30,
			Props: rawclient.PropU32(rawclient.PropSessionExpiry, 600)}.Bytes(), 5*time.Second)
		var p rawclient.Packet
		if err == nil {
			p, err = c.ReadPacket(clustertest.ConnectBound)
		}
		if err == nil && p.Type != rawclient.CONNACK {
			err = fmt.Errorf("got %v, not CONNACK", p)
		}
		var ack rawclient.Connack
		if err == nil {
			ack, err = rawclient.ParseConnack(5, p.Body)
		}
		if err == nil && ack.Code != 0 {
			err = fmt.Errorf("CONNACK 0x%02X", ack.Code)
		}
		if err == nil && resume && !ack.SessionPresent {
			s.t.Fatalf("%s on %s: CONNACK without Session Present: the session did not move", s.id, nd.Name)
		}
		if err != nil {
			c.Close()
			err = fmt.Errorf("%s on %s (%s): %w", s.id, nd.Name, addr, err)
			s.refused = append(s.refused, time.Now().Format("15:04:05.000")+" "+err.Error())
			return err
		}
		conn = c
		s.via[c] = fmt.Sprintf("connection %d (%s, %s)", len(s.via)+1, nd.Name, addr)
		if resume {
			s.took = append(s.took, time.Since(began))
		}
		return nil
	})
	if old != nil {
		s.drain(old)
	}
	s.conn = conn
	if !resume {
		if err := conn.Write(rawclient.Subscribe(5, 1, nil, rawclient.Sub{Filter: s.filter, Opts: 2}), 5*time.Second); err != nil {
			s.t.Fatal(err)
		}
		for {
			p, err := conn.ReadPacket(10 * time.Second)
			if err != nil {
				s.t.Fatalf("SUBACK: %v", err)
			}
			if p.Type == rawclient.SUBACK {
				break
			}
			s.handle(conn, p)
		}
	}
}

// drain handles what the taken-over connection still holds, until the
// server closes it.
// readOld handles what the connection c brings for up to d, and returns
// it, or nil once it has ended.
func (s *liveSubscriber) readOld(c *rawclient.Conn, d time.Duration) *rawclient.Conn {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return c
		}
		p, err := c.ReadPacket(left)
		if errors.Is(err, rawclient.ErrTimeout) {
			return c
		}
		if err != nil {
			if !errors.Is(err, rawclient.ErrClosed) {
				s.errs = append(s.errs, fmt.Sprintf("connection being taken over: %v", err))
			}
			c.Close()
			return nil
		}
		s.handleOld(c, p)
	}
}

// handleOld handles a packet on a connection being taken over: the
// server ends it with DISCONNECT 0x8E.
func (s *liveSubscriber) handleOld(c *rawclient.Conn, p rawclient.Packet) {
	if p.Type != rawclient.DISCONNECT {
		s.handle(c, p)
		return
	}
	if d, _ := rawclient.ParseDisconnect(p.Body); d.Code != 0x8E {
		s.errs = append(s.errs, fmt.Sprintf("taken-over connection: DISCONNECT 0x%02X, want 0x8E", d.Code))
	}
}

func (s *liveSubscriber) drain(c *rawclient.Conn) {
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p, err := c.ReadPacket(time.Until(deadline))
		if err != nil {
			if !errors.Is(err, rawclient.ErrClosed) {
				s.errs = append(s.errs, fmt.Sprintf("taken-over connection: %v", err))
			}
			return
		}
		s.handleOld(c, p)
	}
	s.errs = append(s.errs, "taken-over connection not closed within 10s")
}

// receiveFor handles packets on the current connection for d.
func (s *liveSubscriber) receiveFor(d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		p, err := s.conn.ReadPacket(left)
		if errors.Is(err, rawclient.ErrTimeout) {
			return
		}
		if err != nil {
			s.t.Fatalf("%s: connection lost: %v", s.id, err)
		}
		s.handle(s.conn, p)
	}
}

// handle is the client's side of one packet; acknowledgements written to
// a connection the server already closed are lost, as they would be.
func (s *liveSubscriber) handle(c *rawclient.Conn, p rawclient.Packet) {
	switch p.Type {
	case rawclient.PUBLISH:
		m, err := rawclient.ParsePublish(5, p.Flags, p.Body)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("bad PUBLISH: %v", err))
			return
		}
		switch m.QoS {
		case 1:
			s.deliver(c, m)
			c.Write(rawclient.Ack(rawclient.PUBACK, m.ID), time.Second)
		case 2:
			if !s.awaiting[m.ID] {
				s.awaiting[m.ID] = true
				s.deliver(c, m)
			}
			c.Write(rawclient.Ack(rawclient.PUBREC, m.ID), time.Second)
		}
	case rawclient.PUBREL:
		a, _ := rawclient.ParseAck(5, p.Body)
		delete(s.awaiting, a.ID)
		s.released[a.ID] = s.via[c]
		c.Write(rawclient.Ack(rawclient.PUBCOMP, a.ID), time.Second)
	}
}

// deliver records one delivery to the application, which came on c, and
// checks it.
func (s *liveSubscriber) deliver(c *rawclient.Conn, m rawclient.Message) {
	payload := string(m.Payload)
	if payload == clustertest.Probe {
		return
	}
	name, seqS, ok := strings.Cut(payload, "/")
	seq, err := strconv.Atoi(seqS)
	if !ok || err != nil {
		s.errs = append(s.errs, fmt.Sprintf("unexpected payload %q", payload))
		return
	}
	how := fmt.Sprintf("%s at %s packet id %d dup %v", s.via[c], time.Now().UTC().Format("15:04:05.000"), m.ID, m.Dup)
	if s.first[payload] {
		if m.QoS == 2 || strings.HasSuffix(name, "q2") {
			s.errs = append(s.errs, fmt.Sprintf("QoS 2 message %s delivered twice: first on %s, again on %s (that packet id last released on %q)",
				payload, s.got[payload], how, s.released[m.ID]))
		} else {
			s.qos1Again++
		}
		return
	}
	s.first[payload] = true
	if m.QoS == 2 {
		s.got[payload] = how
	}
	if last, ok := s.last[name]; ok && seq < last && s.ordered {
		s.errs = append(s.errs, fmt.Sprintf("publisher %s: %d delivered after %d", name, seq, last))
	}
	s.last[name] = max(s.last[name], seq)
}

// missing counts acknowledged messages not delivered yet.
func (s *liveSubscriber) missing(pubs []*livePublisher) int {
	n := 0
	for _, p := range pubs {
		for _, seq := range p.acked {
			if !s.first[p.name+"/"+strconv.Itoa(seq)] {
				n++
			}
		}
	}
	return n
}

// faultEnv is the nodes' environment for fault (ROOST_TEST_FAULT), none
// for "".
func faultEnv(fault string) []string {
	if fault == "" {
		return nil
	}
	return []string{"ROOST_TEST_FAULT=" + fault}
}
