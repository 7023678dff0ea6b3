package bridge

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/packet"
)

// mosquitto, with a connection block left at its defaults (MQTT 3.1.1 with
// try_private, so protocol level 0x84), bridges into Roost: Roost accepts
// the first CONNECT (before the bridge bit it refused it and mosquitto
// backed off), messages flow both ways, and a "both" topic does not come
// back to the side it was published on.
//
// The same with bridge_protocol_version mqttv50, where mosquitto asks for
// No Local and Retain As Published itself.
func TestMosquittoBridgesIntoRoost(t *testing.T) {
	for _, c := range []struct{ name, line, protocol string }{
		{"default", "", "3.1.1"},
		{"mqttv50", "bridge_protocol_version mqttv50", "5.0"},
	} {
		t.Run(c.name, func(t *testing.T) { mosquittoIntoRoost(t, c.line, c.protocol) })
	}
}

func mosquittoIntoRoost(t *testing.T, extra, protocol string) {
	srv, roostURL := startRoost(t)
	u, _ := url.Parse(roostURL)
	lines := []string{
		"connection roost",
		"address " + u.Host,
		"topic up/# out 1",
		"topic down/# in 1",
		"topic both/# both 1"}
	if extra != "" {
		lines = append(lines, extra)
	}
	m := mosquittotest.Start(t, lines...)
	mURL := "mqtt://" + m.Addr
	eventually(t, 15*time.Second, func() error { return hasSub(srv, "both/#") })
	eventually(t, 15*time.Second, func() error { return hasSub(srv, "down/#") })
	if log := m.Log.String(); strings.Contains(log, "Connection Refused") || strings.Contains(log, "unacceptable protocol") {
		t.Fatalf("mosquitto was refused at first:\n%s", log)
	}
	var bridgeSessions []string
	for _, c := range srv.Clients() {
		bridgeSessions = append(bridgeSessions, c.ClientID+" "+c.Protocol)
	}
	if len(bridgeSessions) != 1 || !strings.HasSuffix(bridgeSessions[0], " "+protocol) {
		t.Fatalf("sessions on Roost: %v, want mosquitto's one %s bridge", bridgeSessions, protocol)
	}

	var atRoost, atMosq inbox
	rc := newClient(t, roostURL, packet.V5, nil)
	subscribe(t, rc, "#", &atRoost)
	mc := newClient(t, mURL, packet.V5, nil)
	subscribe(t, mc, "#", &atMosq)

	publish(t, mc, "up/1", "from mosquitto", false)
	if got := atRoost.waitFor(t, "up/1"); string(got.Payload) != "from mosquitto" {
		t.Fatalf("up/1 payload %q", got.Payload)
	}
	publish(t, rc, "down/1", "from roost", false)
	atMosq.waitFor(t, "down/1")
	publish(t, rc, "both/r", "from roost", false)
	publish(t, mc, "both/m", "from mosquitto", false)
	atMosq.waitFor(t, "both/r")
	atRoost.waitFor(t, "both/m")
	// Markers behind everything on both paths: an echo would be in by now.
	publish(t, rc, "both/marker-r", "", false)
	publish(t, mc, "both/marker-m", "", false)
	atMosq.waitFor(t, "both/marker-r")
	atRoost.waitFor(t, "both/marker-m")
	atMosq.waitFor(t, "both/marker-m")
	atRoost.waitFor(t, "both/marker-r")
	for _, tp := range []string{"both/r", "both/m"} {
		if n := atRoost.count(tp); n != 1 {
			t.Errorf("Roost subscriber got %s %d times, want 1", tp, n)
		}
		if n := atMosq.count(tp); n != 1 {
			t.Errorf("mosquitto subscriber got %s %d times, want 1", tp, n)
		}
	}
	// Retained messages keep the flag across the bridge into Roost.
	publish(t, mc, "both/ret", "kept", true)
	atRoost.waitFor(t, "both/ret")
	var late inbox
	rc2 := newClient(t, roostURL, packet.V5, nil)
	subscribe(t, rc2, "both/ret", &late)
	if got := late.waitFor(t, "both/ret"); !got.Retain || string(got.Payload) != "kept" {
		t.Fatalf("retained both/ret on Roost: retain %v payload %q", got.Retain, got.Payload)
	}
	publish(t, mc, "both/ret", "", true)

	// mosquitto's notifications: a retained "1" on Roost while the bridge
	// is up, and its will's "0" when mosquitto dies.
	state := func() string {
		msgs, _ := srv.RetainedMessages("$SYS/broker/connection/+/state", 0)
		if len(msgs) != 1 {
			return fmt.Sprintf("%d messages", len(msgs))
		}
		return string(msgs[0].Payload)
	}
	eventually(t, 10*time.Second, func() error {
		if s := state(); s != "1" {
			return fmt.Errorf("connection state %q", s)
		}
		return nil
	})
	m.Stop(syscall.SIGKILL)
	eventually(t, 30*time.Second, func() error {
		if s := state(); s != "0" {
			return fmt.Errorf("connection state %q after mosquitto died", s)
		}
		return nil
	})
}

// Roost bridges to a real mosquitto, MQTT 5 and 3.1.1: out and in topics
// with prefixes, a one-topic remap, and a "both" topic without echo.
//
// MQTT 3.1 (mosquitto's bridge_protocol_version mqttv31) too: protocol
// name MQIsdp, level 3 with the bridge bit (0x83): mosquitto logs a
// "bridge" of its protocol 1, MQTT 3.1.
func TestBridgeToMosquitto(t *testing.T) {
	for _, v := range []packet.Version{packet.V5, packet.V311, packet.V31} {
		t.Run(v.String(), func(t *testing.T) {
			srv, roostURL := startRoost(t)
			m := mosquittotest.Start(t, "log_type all")
			mURL := "mqtt://" + m.Addr
			id := ""
			if v == packet.V31 {
				id = "edge-31" // 3.1: at most 23 bytes
			}
			b := startBridge(t, srv, Config{Name: "cloud", ClientID: id, Addresses: []string{mURL}, Version: v, Notifications: true,
				Topics: []Rule{
					{Pattern: "sensors/#", Direction: Out, QoS: 1, LocalPrefix: "edge/", RemotePrefix: "cloud/site1/"},
					{Pattern: "cmd/#", Direction: In, QoS: 1, LocalPrefix: "edge/", RemotePrefix: "cloud/site1/"},
					{Direction: Out, QoS: 1, LocalPrefix: "alarm", RemotePrefix: "cloud/site1/alarm-now"},
					{Pattern: "chat/#", Direction: Both, QoS: 1},
				}})
			var atRoost, atMosq inbox
			rc := newClient(t, roostURL, packet.V5, nil)
			subscribe(t, rc, "#", &atRoost)
			mc := newClient(t, mURL, packet.V5, nil)
			subscribe(t, mc, "#", &atMosq)
			eventually(t, 15*time.Second, func() error {
				if !b.Stats().Connected {
					return fmt.Errorf("bridge not connected: %+v", b.Stats())
				}
				return nil
			})
			// The remote side's subscriptions are made once it is up.
			eventually(t, 15*time.Second, func() error {
				publish(t, mc, "cloud/site1/cmd/probe", "", false)
				for _, m := range atRoost.all() {
					if m.Topic == "edge/cmd/probe" {
						return nil
					}
				}
				return fmt.Errorf("remote subscription not working yet")
			})

			publish(t, rc, "edge/sensors/t1", "21.5", false)
			if got := atMosq.waitFor(t, "cloud/site1/sensors/t1"); string(got.Payload) != "21.5" {
				t.Fatalf("payload %q", got.Payload)
			}
			publish(t, mc, "cloud/site1/cmd/reboot", "now", false)
			atRoost.waitFor(t, "edge/cmd/reboot")
			publish(t, rc, "alarm", "fire", false)
			atMosq.waitFor(t, "cloud/site1/alarm-now")
			publish(t, rc, "chat/r", "hi", false)
			publish(t, mc, "chat/m", "ho", false)
			publish(t, rc, "chat/marker-r", "", false)
			publish(t, mc, "chat/marker-m", "", false)
			for _, tp := range []string{"chat/r", "chat/m", "chat/marker-r", "chat/marker-m"} {
				atRoost.waitFor(t, tp)
				atMosq.waitFor(t, tp)
			}
			for _, tp := range []string{"chat/r", "chat/m"} {
				if n := atRoost.count(tp); n != 1 {
					t.Errorf("Roost subscriber got %s %d times, want 1", tp, n)
				}
				if n := atMosq.count(tp); n != 1 {
					t.Errorf("mosquitto subscriber got %s %d times, want 1", tp, n)
				}
			}
			// Nothing the rules do not name crosses.
			if n := atMosq.count("edge/sensors/t1") + atRoost.count("cloud/site1/cmd/reboot"); n != 0 {
				t.Errorf("unmapped copies crossed: %d", n)
			}
			// The connection notification: retained "1" on both brokers.
			topic := "$SYS/broker/connection/" + b.cfg.ClientID + "/state"
			var note inbox
			subscribe(t, newClient(t, mURL, packet.V5, nil), topic, &note)
			if got := note.waitFor(t, topic); string(got.Payload) != "1" || !got.Retain {
				t.Errorf("remote notification %q retain %v", got.Payload, got.Retain)
			}
			msgs, _ := srv.RetainedMessages(topic, 0)
			if len(msgs) != 1 || string(msgs[0].Payload) != "1" {
				t.Errorf("local notification: %v", msgs)
			}
			st := b.Stats()
			if st.ForwardedOut < 4 || st.ForwardedIn < 3 || st.Dropped != 0 {
				t.Errorf("stats %+v", st)
			}
			if log := m.Log.String(); v == packet.V31 && !(strings.Contains(log, "New bridge connected from 127.0.0.1") && strings.Contains(log, "as edge-31 (p1,")) {
				t.Errorf("mosquitto did not see an MQTT 3.1 bridge:\n%s", log)
			}
		})
	}
}

// Two Roosts joined by one bridge with a "both" rule on "#", in MQTT 5
// (No Local on the remote subscription) and 3.1.1 (the bridge bit, Roost
// giving No Local itself): every message reaches each side exactly once.
func TestTwoRoostsBothWays(t *testing.T) {
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(v.String(), func(t *testing.T) {
			a, aURL := startRoost(t)
			_, bURL := startRoost(t)
			br := startBridge(t, a, Config{Name: "ab", Addresses: []string{bURL}, Version: v,
				Topics: []Rule{{Pattern: "#", Direction: Both, QoS: 1}}})
			var atA, atB inbox
			ca := newClient(t, aURL, packet.V5, nil)
			subscribe(t, ca, "#", &atA)
			cb := newClient(t, bURL, packet.V5, nil)
			subscribe(t, cb, "#", &atB)
			eventually(t, 15*time.Second, func() error {
				publish(t, cb, "probe", "", false)
				if atA.count("probe") == 0 {
					return fmt.Errorf("bridge not forwarding in yet")
				}
				return nil
			})
			const n = 50
			for i := range n {
				publish(t, ca, fmt.Sprintf("a/%d", i), "", i%10 == 0)
				publish(t, cb, fmt.Sprintf("b/%d", i), "", i%10 == 0)
			}
			publish(t, ca, "a/marker", "", false)
			publish(t, cb, "b/marker", "", false)
			for _, in := range []*inbox{&atA, &atB} {
				in.waitFor(t, "a/marker")
				in.waitFor(t, "b/marker")
			}
			for i := range n {
				for _, tp := range []string{fmt.Sprintf("a/%d", i), fmt.Sprintf("b/%d", i)} {
					if c1, c2 := atA.count(tp), atB.count(tp); c1 != 1 || c2 != 1 {
						t.Fatalf("%s arrived %d times on A and %d on B, want once each", tp, c1, c2)
					}
				}
			}
			if st := br.Stats(); st.ForwardedOut < n || st.ForwardedIn < n {
				t.Errorf("stats %+v", st)
			}
			for i := range n {
				if i%10 == 0 {
					publish(t, ca, fmt.Sprintf("a/%d", i), "", true) // clear the retained ones
					publish(t, cb, fmt.Sprintf("b/%d", i), "", true)
				}
			}
		})
	}
}

// The remote (a real mosquitto) is stopped while a publisher sends QoS 1
// messages through the bridge, and started again: every message Roost
// acknowledged to the publisher reaches the remote subscriber, whose
// session mosquitto kept across its restart (persistence).
func TestRemoteDownUnderQoS1Load(t *testing.T) {
	srv, roostURL := startRoost(t)
	m := mosquittotest.Start(t, "persistence true", "max_queued_messages 100000")
	mURL := "mqtt://" + m.Addr
	b := startBridge(t, srv, Config{Name: "sf", Addresses: []string{mURL}, ClientID: "sf-bridge",
		Topics: []Rule{{Pattern: "load/#", Direction: Out, QoS: 1, RemotePrefix: "site/"}}})
	var sink inbox
	sc := newClient(t, mURL, packet.V5, func(o *client.Options) { o.ClientID = "sink"; o.KeepSession = true })
	subscribe(t, sc, "site/load/#", &sink)
	eventually(t, 15*time.Second, func() error {
		if !b.Stats().Connected {
			return fmt.Errorf("bridge not connected")
		}
		return nil
	})

	pub := newClient(t, roostURL, packet.V5, nil)
	const n = 600
	acked := make(chan int, n)
	go func() {
		defer close(acked)
		for i := range n {
			if _, err := pub.Publish(testCtx(t, 30*time.Second), client.Message{Topic: fmt.Sprintf("load/%d", i), QoS: 1}); err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			acked <- i
			if i%50 == 0 {
				time.Sleep(5 * time.Millisecond) // spread the load across the outage
			}
		}
	}()
	waitAcked := func(k int) {
		for i := range acked {
			if i >= k {
				return
			}
		}
	}
	waitAcked(n / 4)
	m.Stop(syscall.SIGTERM)
	waitAcked(n / 2) // acknowledged by Roost while the remote is down
	eventually(t, 10*time.Second, func() error {
		if q := b.Stats().Queued; q == 0 {
			return fmt.Errorf("nothing queued for the remote yet")
		}
		return nil
	})
	m.Restart(t)
	for range acked {
	}
	eventually(t, 60*time.Second, func() error {
		seen := map[string]bool{}
		for _, msg := range sink.all() {
			seen[msg.Topic] = true
		}
		for i := range n {
			if !seen[fmt.Sprintf("site/load/%d", i)] {
				return fmt.Errorf("%d of %d distinct messages at the remote; missing site/load/%d (bridge %+v)", len(seen), n, i, b.Stats())
			}
		}
		return nil
	})
	st := b.Stats()
	t.Logf("bridge %+v; %d deliveries at the remote", st, len(sink.all()))
	if st.Dropped != 0 || st.QueueDropped != 0 {
		t.Errorf("dropped: %+v", st)
	}
}

// QoS 2 both ways through a bridge to mosquitto: every message arrives
// once, still at QoS 2.
func TestBridgeQoS2(t *testing.T) {
	srv, roostURL := startRoost(t)
	m := mosquittotest.Start(t)
	mURL := "mqtt://" + m.Addr
	startBridge(t, srv, Config{Name: "q2", Addresses: []string{mURL},
		Topics: []Rule{{Pattern: "q/#", Direction: Both, QoS: 2}}})
	var atRoost, atMosq inbox
	rc := newClient(t, roostURL, packet.V5, nil)
	mc := newClient(t, mURL, packet.V5, nil)
	for _, x := range []struct {
		c  *client.Client
		in *inbox
	}{{rc, &atRoost}, {mc, &atMosq}} {
		if _, err := x.c.Subscribe(testCtx(t, 10*time.Second), client.Subscription{Filter: "q/#", QoS: 2, Handler: x.in.handle}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 15*time.Second, func() error {
		if _, err := mc.Publish(testCtx(t, 5*time.Second), client.Message{Topic: "q/probe", QoS: 2}); err != nil {
			return err
		}
		if atRoost.count("q/probe") == 0 {
			return fmt.Errorf("not forwarding in yet")
		}
		return nil
	})
	const n = 20
	for i := range n {
		for side, c := range map[string]*client.Client{"r": rc, "m": mc} {
			if _, err := c.Publish(testCtx(t, 10*time.Second), client.Message{Topic: fmt.Sprintf("q/%s%d", side, i), QoS: 2}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, in := range []*inbox{&atRoost, &atMosq} {
		in.waitFor(t, fmt.Sprintf("q/r%d", n-1))
		in.waitFor(t, fmt.Sprintf("q/m%d", n-1))
	}
	for i := range n {
		for _, tp := range []string{fmt.Sprintf("q/r%d", i), fmt.Sprintf("q/m%d", i)} {
			for name, in := range map[string]*inbox{"roost": &atRoost, "mosquitto": &atMosq} {
				if c := in.count(tp); c != 1 {
					t.Errorf("%s got %s %d times", name, tp, c)
				}
			}
		}
	}
	for _, msg := range append(atRoost.all(), atMosq.all()...) {
		if msg.QoS != 2 {
			t.Fatalf("%s arrived at QoS %d", msg.Topic, msg.QoS)
		}
	}
}

// A bridge restarted with a rule changed from both to out unsubscribes on
// the remote, whose kept session still had the old subscription
// (mosquitto's bridge_attempt_unsubscribe); with NoAttemptUnsubscribe it
// leaves it.
func TestAttemptUnsubscribe(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprint("NoAttemptUnsubscribe=", keep), func(t *testing.T) {
			local, localURL := startRoost(t)
			remote, remoteURL := startRoost(t)
			remoteSub := func() bool {
				_, subs, _ := remote.Client("u-remote")
				for _, s := range subs {
					if s.Filter == "x/#" {
						return true
					}
				}
				return false
			}
			cfg := Config{Name: "u", Addresses: []string{remoteURL}, ClientID: "u-remote",
				Topics: []Rule{{Pattern: "x/#", Direction: Both, QoS: 1}}}
			b1, err := New(local, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := b1.Start(testCtx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, func() error {
				if !remoteSub() {
					return fmt.Errorf("no remote subscription yet")
				}
				return nil
			})
			if err := b1.Close(testCtx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			cfg.Topics[0].Direction, cfg.NoAttemptUnsubscribe = Out, keep
			b2 := startBridge(t, local, cfg)
			eventually(t, 10*time.Second, func() error {
				if !b2.Stats().Connected {
					return fmt.Errorf("not connected")
				}
				return nil
			})
			if keep {
				// The old subscription still delivers, and the bridge
				// forwards what comes (that is why mosquitto unsubscribes).
				var in inbox
				subscribe(t, newClient(t, localURL, packet.V5, nil), "x/#", &in)
				pub := newClient(t, remoteURL, packet.V5, nil)
				eventually(t, 10*time.Second, func() error {
					publish(t, pub, "x/1", "", false)
					if in.count("x/1") == 0 {
						return fmt.Errorf("x/1 not forwarded in")
					}
					return nil
				})
				return
			}
			eventually(t, 10*time.Second, func() error {
				if remoteSub() {
					return fmt.Errorf("x/# still subscribed on the remote")
				}
				return nil
			})
		})
	}
}

// BindAddress picks the address the remote sees; NoOutgoingRetain clears
// RETAIN on what goes out, so the remote delivers it but keeps nothing.
func TestBindAddressAndOutgoingRetain(t *testing.T) {
	local, localURL := startRoost(t)
	remote, remoteURL := startRoost(t)
	b := startBridge(t, local, Config{Name: "o", Addresses: []string{remoteURL}, ClientID: "o-remote",
		BindAddress: "127.0.0.2", NoOutgoingRetain: true, Topics: []Rule{{Pattern: "r/#", Direction: Out, QoS: 1}}})
	eventually(t, 10*time.Second, func() error {
		if !b.Stats().Connected {
			return fmt.Errorf("not connected")
		}
		return nil
	})
	if cs, _, _ := remote.Client("o-remote"); !strings.HasPrefix(cs.RemoteAddr, "127.0.0.2:") {
		t.Errorf("remote sees the bridge from %q, want 127.0.0.2", cs.RemoteAddr)
	}
	var in inbox
	subscribe(t, newClient(t, remoteURL, packet.V5, nil), "r/#", &in)
	publish(t, newClient(t, localURL, packet.V5, nil), "r/1", "v", true)
	if got := in.waitFor(t, "r/1"); got.Retain {
		t.Error("forwarded with RETAIN")
	}
	if msgs, _ := remote.RetainedMessages("r/#", 0); len(msgs) != 0 {
		t.Errorf("remote retained %d messages", len(msgs))
	}
	if _, err := New(local, Config{Name: "bad", Addresses: []string{remoteURL}, BindAddress: "eth0", Topics: []Rule{{Pattern: "#", Direction: Out}}}); !errors.Is(err, ErrConfig) {
		t.Errorf("bind address eth0: %v", err)
	}
}

// Retained messages that exist before a bridge starts reach the remote,
// retained, once: a restart of the bridge (its subscription is no longer
// new) does not send them again.
func TestRetainedSentOnceToRemote(t *testing.T) {
	local, localURL := startRoost(t)
	remote, remoteURL := startRoost(t)
	publish(t, newClient(t, localURL, packet.V5, nil), "state/door", "open", true)
	cfg := Config{Name: "r", Addresses: []string{remoteURL}, Topics: []Rule{{Pattern: "state/#", Direction: Out, QoS: 1}}}
	var in inbox
	subscribe(t, newClient(t, remoteURL, packet.V5, nil), "state/#", &in)
	b1, err := New(local, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b1.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	in.waitFor(t, "state/door")
	msgs, _ := remote.RetainedMessages("state/#", 0)
	if len(msgs) != 1 || string(msgs[0].Payload) != "open" {
		t.Fatalf("remote retained %v", msgs)
	}
	if err := b1.Close(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	startBridge(t, local, cfg)
	// A marker through the restarted bridge: the old retained message
	// would have come before it.
	publish(t, newClient(t, localURL, packet.V5, nil), "state/marker", "", false)
	in.waitFor(t, "state/marker")
	if n := in.count("state/door"); n != 1 {
		t.Errorf("state/door reached the remote %d times", n)
	}
}
