package broker

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// gate is an Authorizer that holds every receive check of one client until
// released, telling the test when the first one has started.
type gate struct {
	client  string
	entered chan struct{} // closed at the first held check
	release chan struct{}
	once    sync.Once
}

func newGate(client string) *gate {
	return &gate{client: client, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) Allow(_ context.Context, c *ClientInfo, act Action, _ string) bool {
	if act == ActionReceive && c.ClientID == g.client {
		g.once.Do(func() { close(g.entered) })
		<-g.release
	}
	return true
}

// open releases every held check; safe to call more than once.
func (g *gate) open() {
	select {
	case <-g.release:
	default:
		close(g.release)
	}
}

// A subscriber whose retained delivery waits on a slow Authorizer must not
// hold up anyone else's retained PUBLISH: retained messages are collected
// under the retained store's lock and authorized after it is released
// (DESIGN.md, lock order). Before, the Authorizer ran inside the store's
// read lock and the publisher's PUBACK waited for it.
func TestRetainedDeliveryHoldsNoLockWhileAuthorizing(t *testing.T) {
	t.Parallel()
	g := newGate("sub")
	s, addr := startServer(t, Options{Authorizer: g})
	t.Cleanup(g.open)
	for i := range 3 {
		if _, err := s.Publish(PublishRequest{Topic: fmt.Sprintf("r/%d", i), Payload: []byte("v"), Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("r/#", 1)
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("retained delivery never asked the Authorizer")
	}

	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "other/x", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("p")})
	if p, err := pub.Read(3 * time.Second); err != nil {
		t.Fatalf("retained QoS 1 publish not acknowledged while another client's retained delivery is being authorized: %v", err)
	} else if ack, ok := p.(*packet.Puback); !ok || ack.PacketID != 1 {
		t.Fatalf("got %+v, want PUBACK 1", p)
	}

	g.open()
	got := map[string]bool{}
	for len(got) < 3 {
		p, ok := sub.Next(3 * time.Second).(*packet.Publish)
		if !ok || !p.Retain {
			t.Fatalf("retained delivery: got %+v", p)
		}
		got[p.Topic] = true
	}
}

// The reason string of a DISCONNECT names the normative statement broken,
// or none; never a made-up "MQTT-x.y.z-?".
func TestDisconnectReasonRules(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts Options
		pub  *packet.Publish
		code packet.ReasonCode
		rule string
	}{
		{"wildcard in topic", Options{}, &packet.Publish{Topic: "a/+"}, packet.TopicNameInvalid, "[MQTT-3.3.2-2]"},
		{"too many levels", Options{MaxTopicLevels: 2}, &packet.Publish{Topic: "a/b/c"}, packet.TopicNameInvalid, "too many levels"},
		{"retain disabled", Options{DisableRetain: true}, &packet.Publish{Topic: "a", Retain: true}, packet.RetainNotSupported, "[MQTT-3.2.2-14]"},
		{"alias unset", Options{}, func() *packet.Publish {
			p := &packet.Publish{}
			p.Properties.TopicAlias = 1
			p.Properties.Set(packet.PropTopicAlias)
			return p
		}(), packet.ProtocolError, "section 3.3.2.3.4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startServer(t, tc.opts)
			c := dial(t, addr, packet.V5)
			c.Connect(&packet.Connect{ClientID: "c", CleanStart: true})
			c.Send(tc.pub)
			d, ok := c.Next(2 * time.Second).(*packet.Disconnect)
			if !ok || d.ReasonCode != tc.code {
				t.Fatalf("got %+v, want DISCONNECT 0x%02X", d, byte(tc.code))
			}
			rs := d.Properties.ReasonString
			if !strings.Contains(rs, tc.rule) || strings.Contains(rs, "-?") {
				t.Errorf("reason string %q, want it to name %s", rs, tc.rule)
			}
		})
	}
}

// MaxConnections holds for a burst of CONNECTs: the check and counting the
// connection are one step, so CONNECTs that arrive while others are being
// authenticated are refused with 0x89 Server busy instead of all passing the
// check and taking the broker over its limit.
func TestMaxConnectionsBurst(t *testing.T) {
	t.Parallel()
	const limit, burst = 3, 12
	var mu sync.Mutex
	entered := 0
	release := make(chan struct{})
	auth := AuthenticatorFunc(func(ctx context.Context, _ *ClientInfo) error {
		mu.Lock()
		entered++
		mu.Unlock()
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	s, addr := startServer(t, Options{MaxConnections: limit, Authenticator: auth, ConnectTimeout: 10 * time.Second})
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	type answer struct {
		code packet.ReasonCode
		err  error
	}
	answers := make(chan answer, burst)
	for i := range burst {
		c := dial(t, addr, packet.V5)
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: fmt.Sprintf("b%d", i), CleanStart: true})
		go func() {
			p, err := c.Read(10 * time.Second)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			ack, ok := p.(*packet.Connack)
			if !ok {
				answers <- answer{err: fmt.Errorf("got %v, want CONNACK", p.Type())}
				return
			}
			answers <- answer{code: ack.ReasonCode}
		}()
	}
	// Wait until every CONNECT was either refused or got to the
	// Authenticator; then no more can pass.
	busy := 0
	deadline := time.After(5 * time.Second)
	for {
		mu.Lock()
		n := entered
		mu.Unlock()
		if n+busy >= burst {
			break
		}
		select {
		case a := <-answers:
			if a.err != nil || a.code != packet.ServerBusy {
				t.Fatalf("while %d CONNECTs are held: answer %+v, want 0x89 Server busy", n, a)
			}
			busy++
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d CONNECTs authenticating, %d refused, of %d", n, busy, burst)
		}
	}
	mu.Lock()
	n := entered
	mu.Unlock()
	if n != limit {
		t.Fatalf("%d CONNECTs got past MaxConnections %d to be authenticated", n, limit)
	}
	close(release)
	released = true
	for range limit {
		if a := <-answers; a.err != nil || a.code != 0 {
			t.Fatalf("held CONNECT: answer %+v, want success", a)
		}
	}
	if got := s.Stats().Connected; got != limit {
		t.Errorf("Stats().Connected = %d, want %d", got, limit)
	}
}

// The admin listing of retained messages reads about as many as it returns:
// the first 10 of 10,000 cost a fraction of listing them all (before, every
// match was collected and sorted, and the limit applied after).
func TestRetainedListingStopsEarly(t *testing.T) {
	// Serial: it measures the whole process's allocations.
	s, _ := startServer(t, Options{})
	for i := range 50 {
		for j := range 200 {
			s.ret.set(&Message{Topic: fmt.Sprintf("d/%03d/%03d", i, j), Payload: []byte("v")})
		}
	}
	got, err := s.RetainedMessages("d/#", 10)
	if err != nil || len(got) != 10 {
		t.Fatalf("RetainedMessages: %d messages, %v", len(got), err)
	}
	for i, m := range got {
		if want := fmt.Sprintf("d/000/%03d", i); m.Topic != want {
			t.Fatalf("message %d is %s, want %s", i, m.Topic, want)
		}
	}
	allocated := func(limit int) uint64 {
		best := uint64(math.MaxUint64)
		for range 5 {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			s.RetainedMessages("d/#", limit)
			runtime.ReadMemStats(&after)
			best = min(best, after.TotalAlloc-before.TotalAlloc)
		}
		return best
	}
	page, all := allocated(10), allocated(0)
	t.Logf("page %d, all %d", page, all)
	if page*4 > all {
		t.Errorf("listing 10 of 10,000 allocated %d bytes, all of them %d: the limit does not stop the walk", page, all)
	}
}

// heldAuthz is a CachedAuthorizer that knows nothing about client "slow"
// until the test opens its gate: Allow for "slow" blocks until then, and
// denies topics under "deny/". Everyone else is allowed at once.
type heldAuthz struct {
	gate    *gate
	mu      sync.Mutex
	answers map[string]bool
	asked   int
}

func (a *heldAuthz) Allow(ctx context.Context, c *ClientInfo, act Action, topic string) bool {
	if c.ClientID != "slow" || act != ActionReceive {
		return true
	}
	a.mu.Lock()
	a.asked++
	a.mu.Unlock()
	a.gate.Allow(ctx, c, act, topic)
	allow := !strings.HasPrefix(topic, "deny/")
	a.mu.Lock()
	a.answers[topic] = allow
	a.mu.Unlock()
	return allow
}

func (a *heldAuthz) Cached(c *ClientInfo, act Action, topic string) (bool, bool) {
	if c.ClientID != "slow" || act != ActionReceive {
		return true, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	allow, ok := a.answers[topic]
	return allow, ok
}

// A receive check the Authorizer cannot answer at once holds up neither the
// publisher nor other subscribers: the publisher is acknowledged and the
// other subscriber served while the slow one's check waits; then the slow
// subscriber gets what it may receive, in order, QoS 0 included, and not
// what it may not.
func TestReceiveCheckOffPublisherPath(t *testing.T) {
	t.Parallel()
	az := &heldAuthz{gate: newGate("slow"), answers: map[string]bool{}}
	_, addr := startServer(t, Options{Authorizer: az})
	t.Cleanup(az.gate.open)
	subscribe := func(id string) *packetClient {
		c := dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: id, CleanStart: true})
		c.Subscribe("#", 1)
		return c
	}
	slow, fast := subscribe("slow"), subscribe("fast")
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	sends := []*packet.Publish{
		{Topic: "t/1", QoS: 1, PacketID: 1, Payload: []byte("1")},
		{Topic: "deny/1", QoS: 1, PacketID: 2, Payload: []byte("2")},
		{Topic: "t/2", QoS: 0, Payload: []byte("3")},
		{Topic: "t/1", QoS: 1, PacketID: 3, Payload: []byte("4")},
	}
	for _, p := range sends {
		pub.Send(p)
		if p.QoS == 0 {
			continue
		}
		if got, err := pub.Read(3 * time.Second); err != nil {
			t.Fatalf("PUBACK for %s while a subscriber's receive check waits: %v", p.Topic, err)
		} else if ack, ok := got.(*packet.Puback); !ok || ack.PacketID != p.PacketID || ack.ReasonCode != 0 {
			t.Fatalf("got %+v, want PUBACK %d", got, p.PacketID)
		}
	}
	for _, want := range []string{"1", "2", "3", "4"} {
		m, ok := fast.Next(3 * time.Second).(*packet.Publish)
		if !ok || string(m.Payload) != want {
			t.Fatalf("fast subscriber: got %+v, want message %s", m, want)
		}
		if m.QoS == 1 {
			fast.Send(&packet.Puback{PacketID: m.PacketID})
		}
	}
	select {
	case <-az.gate.entered:
	case <-time.After(3 * time.Second):
		t.Fatal("the slow subscriber's check was never asked")
	}
	if p, err := slow.Read(100 * time.Millisecond); err == nil {
		t.Fatalf("slow subscriber got %+v before its check was answered", p)
	}

	az.gate.open()
	for _, want := range []string{"1", "3", "4"} {
		m, ok := slow.Next(3 * time.Second).(*packet.Publish)
		if !ok || string(m.Payload) != want {
			t.Fatalf("slow subscriber: got %+v, want message %s", m, want)
		}
		if m.QoS == 1 {
			slow.Send(&packet.Puback{PacketID: m.PacketID})
		}
	}
	if p, err := slow.Read(200 * time.Millisecond); err == nil {
		t.Fatalf("slow subscriber got %+v, want nothing more (deny/1 is denied)", p)
	}
	az.mu.Lock()
	defer az.mu.Unlock()
	// At most once per queued message (the checks behind the head are
	// asked ahead, before the first answer is in).
	if az.asked > 4 {
		t.Errorf("Allow asked %d times for 4 messages", az.asked)
	}
}

// sessionStore is a Store that starts with one stored session.
type sessionStore struct {
	opLog
	sess StoredSession
}

func (st *sessionStore) Load() (*StoredState, error) {
	return &StoredState{Sessions: []StoredSession{st.sess}}, nil
}

// Messages queued for a session before a restart are checked again before
// they are sent: one may have been queued while its receive check was
// pending (and journalled so the publisher could be acknowledged), or the
// rules may have changed. Messages for a restored session whose client has
// not come back yet are checked when it does (who it is was not known).
func TestRestoredQueueChecked(t *testing.T) {
	t.Parallel()
	msg := func(topic string) *Message {
		return &Message{ID: 1, Topic: topic, Payload: []byte(topic), QoS: 1}
	}
	st := &sessionStore{sess: StoredSession{ClientID: "c", Expiry: 3600,
		Subs: []StoredSub{{Filter: "#", Opts: packet.SubOptions{QoS: 1}}},
		Queue: []StoredDelivery{
			{Seq: 1, Msg: msg("secret/x"), QoS: 1},
			{Seq: 2, Msg: msg("open/x"), QoS: 1},
		}}}
	az := AuthorizerFunc(func(_ context.Context, _ *ClientInfo, act Action, topic string) bool {
		return act != ActionReceive || !strings.HasPrefix(topic, "secret/")
	})
	s, addr := startServer(t, Options{Store: st, Authorizer: az, ExpirySweep: -1})
	for _, topic := range []string{"secret/live", "open/live"} {
		if _, err := s.Publish(PublishRequest{Topic: topic, Payload: []byte(topic), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "c", CleanStart: false, Properties: packet.Properties{
		SessionExpiry: 3600, Present: 1 << packet.PropSessionExpiry}})
	for _, want := range []string{"open/x", "open/live"} {
		m, ok := c.Next(3 * time.Second).(*packet.Publish)
		if !ok || m.Topic != want {
			t.Fatalf("got %+v, want %s (secret/... may not be received)", m, want)
		}
		c.Send(&packet.Puback{PacketID: m.PacketID})
	}
	if p, err := c.Read(200 * time.Millisecond); err == nil {
		t.Fatalf("got %+v, want nothing more", p)
	}
	if del := st.deleted(); !slices.Contains(del, 1) {
		t.Errorf("the denied queued message was not deleted from the store (deleted %v)", del)
	}
}

// countingHeld is a CachedAuthorizer that never knows an answer at once and
// holds every receive check until released, counting those held.
type countingHeld struct {
	release chan struct{}
	held    atomic.Int32
	most    atomic.Int32
}

func (a *countingHeld) Allow(_ context.Context, _ *ClientInfo, act Action, _ string) bool {
	if act != ActionReceive {
		return true
	}
	n := a.held.Add(1)
	for m := a.most.Load(); n > m && !a.most.CompareAndSwap(m, n); m = a.most.Load() {
	}
	<-a.release
	a.held.Add(-1)
	return true
}

func (a *countingHeld) Cached(*ClientInfo, Action, string) (bool, bool) { return false, false }

// Retained messages whose receive checks must be asked are asked askAhead
// at a time, not one after the other, and all delivered.
func TestReceiveChecksAskedAhead(t *testing.T) {
	t.Parallel()
	az := &countingHeld{release: make(chan struct{})}
	s, addr := startServer(t, Options{Authorizer: az})
	released := false
	t.Cleanup(func() {
		if !released {
			close(az.release)
		}
	})
	const n = 40
	for i := range n {
		if _, err := s.Publish(PublishRequest{Topic: fmt.Sprintf("r/%02d", i), Payload: []byte{byte(i)}, Retain: true, QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "c", CleanStart: true})
	c.Subscribe("r/#", 1)
	mqtttest.Eventually(t, 3*time.Second, func() bool { return az.held.Load() == askAhead })
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); runtime.Gosched() {
		if m := az.most.Load(); m > askAhead {
			t.Fatalf("%d receive checks of one session out at once, want at most %d", m, askAhead)
		}
	}
	close(az.release)
	released = true
	got := map[byte]bool{}
	for range n {
		m, ok := c.Next(3 * time.Second).(*packet.Publish)
		if !ok {
			t.Fatalf("after %d retained messages: %+v", len(got), m)
		}
		got[m.Payload[0]] = true
		c.Send(&packet.Puback{PacketID: m.PacketID})
	}
	if len(got) != n {
		t.Errorf("%d distinct retained messages of %d", len(got), n)
	}
}

// userHeld is a CachedAuthorizer that never knows an answer at once: it
// allows alice everything, after the gate opens, and bob nothing.
type userHeld struct{ gate *gate }

func (a *userHeld) Allow(ctx context.Context, c *ClientInfo, act Action, topic string) bool {
	if act != ActionReceive {
		return true
	}
	if c.Username == "alice" {
		a.gate.Allow(ctx, c, act, topic)
		return true
	}
	return false
}

func (a *userHeld) Cached(*ClientInfo, Action, string) (bool, bool) { return false, false }

// An answer that comes after the session was taken over by a connection of
// another user is not used: the new user is asked about.
func TestReceiveCheckAnswerForOldConnectionIgnored(t *testing.T) {
	t.Parallel()
	az := &userHeld{gate: newGate("c")}
	s, addr := startServer(t, Options{Authorizer: az})
	t.Cleanup(az.gate.open)
	connect := func(user string) *packetClient {
		c := dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: "c", CleanStart: false, UsernameFlag: true, Username: user,
			Properties: packet.Properties{SessionExpiry: 60, Present: 1 << packet.PropSessionExpiry}})
		return c
	}
	alice := connect("alice")
	alice.Subscribe("t/#", 1)
	if _, err := s.Publish(PublishRequest{Topic: "t/x", Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-az.gate.entered:
	case <-time.After(3 * time.Second):
		t.Fatal("alice's check was never asked")
	}
	bob := connect("bob") // takes the session over
	az.gate.open()
	if p, err := bob.Read(300 * time.Millisecond); err == nil {
		t.Fatalf("bob got %+v on the strength of alice's answer", p)
	}
	// and the message, denied to bob, leaves the queue.
	mqtttest.Eventually(t, 3*time.Second, func() bool { return s.Stats().Queued == 0 })
}

// panicky is a CachedAuthorizer whose receive checks panic.
type panicky struct{}

func (panicky) Allow(_ context.Context, _ *ClientInfo, act Action, _ string) bool {
	if act == ActionReceive {
		panic("authorizer bug")
	}
	return true
}

func (panicky) Cached(*ClientInfo, Action, string) (bool, bool) { return false, false }

// A panic in a receive check asked off the publisher's path is recovered,
// logged and refuses the message; the broker goes on.
func TestReceiveCheckPanicRecovered(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{Authorizer: panicky{}})
	var panics atomic.Int32
	s.onPanic = func(any) { panics.Add(1) }
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("t/#", 1)
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "t/x", QoS: 1, PacketID: 1, Payload: []byte("x")})
	if _, ok := pub.Next(3 * time.Second).(*packet.Puback); !ok {
		t.Fatal("no PUBACK")
	}
	mqtttest.Eventually(t, 3*time.Second, func() bool { return panics.Load() == 1 && s.Stats().Queued == 0 })
	if p, err := sub.Read(100 * time.Millisecond); err == nil {
		t.Fatalf("subscriber got %+v from a check that panicked", p)
	}
	pub.Send(&packet.Pingreq{})
	if _, ok := pub.Next(3 * time.Second).(*packet.Pingresp); !ok {
		t.Fatal("broker not answering after the panic")
	}
}
