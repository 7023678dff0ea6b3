package broker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

func TestIPLimitsAdmit(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	ip := netip.MustParseAddr("192.0.2.1")
	l := newIPLimits(2, 0)
	if ok, _ := l.admit(ip, now); !ok {
		t.Fatal("first refused")
	}
	if ok, _ := l.admit(ip, now); !ok {
		t.Fatal("second refused")
	}
	if ok, _ := l.admit(ip, now); ok {
		t.Fatal("third admitted with a limit of 2")
	}
	if ok, _ := l.admit(netip.MustParseAddr("192.0.2.2"), now); !ok {
		t.Fatal("another address refused")
	}
	l.release(ip)
	if ok, _ := l.admit(ip, now); !ok {
		t.Fatal("refused after a release")
	}

	r := newIPLimits(0, 1) // one per second, burst 2
	for i, want := range []bool{true, true, false} {
		if ok, _ := r.admit(ip, now); ok != want {
			t.Fatalf("connect %d admitted=%v, want %v", i, ok, want)
		}
	}
	if ok, _ := r.admit(ip, now.Add(1100*time.Millisecond)); !ok {
		t.Fatal("refused after the bucket refilled")
	}
}

// fail runs one failed attempt through the throttle and returns the delay
// it was held for (or -1 when refused unchecked).
func fail(l *ipLimits, k authKey, now time.Time) time.Duration {
	h, ok := l.authBegin(k, now)
	if !ok {
		return -1
	}
	l.authEnd(k, h, true, now)
	return h.delay
}

func TestAuthFailureDelay(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	k := authKey{ip: netip.MustParseAddr("192.0.2.1")}
	l := newIPLimits(0, 0)
	var got []time.Duration
	for range authFreeTries + 6 {
		got = append(got, fail(l, k, now))
	}
	want := []time.Duration{0, 0, 0, 0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, authMaxDelay, authMaxDelay}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	if d := fail(l, k, now.Add(2*authFailWindow)); d != 0 {
		t.Fatalf("delay %v after the window passed", d)
	}
	// A success is held like a failure (the answer's timing must not
	// tell them apart) but does not count.
	for range authFreeTries - 1 {
		fail(l, k, now.Add(2*authFailWindow))
	}
	h, _ := l.authBegin(k, now.Add(2*authFailWindow))
	l.authEnd(k, h, false, now.Add(2*authFailWindow))
	if h.delay != time.Second {
		t.Fatalf("attempt after %d failures held %v, want 1s", authFreeTries, h.delay)
	}
	if h, _ := l.authBegin(k, now.Add(2*authFailWindow)); h.delay != time.Second {
		t.Fatalf("a success raised the delay to %v", h.delay)
	}
}

// A guesser spreading one username over many addresses is slowed by the
// username's count; other usernames from the same addresses are not.
func TestAuthFailurePerUsername(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newIPLimits(0, 0)
	for i := range authFreeTries {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if d := fail(l, authKey{ip: ip, user: "admin"}, now); d != 0 {
			t.Fatalf("failure %d held %v", i+1, d)
		}
	}
	fresh := netip.MustParseAddr("203.0.113.9")
	if h, _ := l.authBegin(authKey{ip: fresh, user: "admin"}, now); h.delay != time.Second {
		t.Fatalf("admin from a new address held %v, want 1s", h.delay)
	}
	if h, _ := l.authBegin(authKey{ip: netip.AddrFrom4([4]byte{198, 51, 100, 0}), user: "alice"}, now); h.delay != 0 {
		t.Fatalf("alice held %v for admin's failures", h.delay)
	}
	// Anonymous attempts are counted by address only.
	for range authFreeTries {
		fail(l, authKey{ip: fresh}, now)
	}
	if h, _ := l.authBegin(authKey{ip: netip.MustParseAddr("203.0.113.10")}, now); h.delay != 0 {
		t.Fatalf("anonymous from another address held %v", h.delay)
	}
}

// IPv6 addresses are counted per /64: one subscriber's prefix.
func TestAuthFailureIPv6Prefix(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newIPLimits(0, 0)
	for i := range authFreeTries {
		ip := netip.MustParseAddr("2001:db8:1:2::" + string(rune('a'+i)))
		fail(l, authKey{ip: ip}, now)
	}
	if h, _ := l.authBegin(authKey{ip: netip.MustParseAddr("2001:db8:1:2:ffff::1")}, now); h.delay == 0 {
		t.Fatal("same /64 not held")
	}
	if h, _ := l.authBegin(authKey{ip: netip.MustParseAddr("2001:db8:1:3::1")}, now); h.delay != 0 {
		t.Fatalf("another /64 held %v", h.delay)
	}
}

// At most authMaxHeld attempts per username wait at once; more are refused
// unchecked until one finishes.
func TestAuthFailureHeldCap(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newIPLimits(0, 0)
	for i := range authFreeTries {
		fail(l, authKey{ip: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), user: "admin"}, now)
	}
	var holds []authHold
	for i := range authMaxHeld {
		k := authKey{ip: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), user: "admin"}
		h, ok := l.authBegin(k, now)
		if !ok || h.delay == 0 {
			t.Fatalf("attempt %d: ok=%v delay=%v", i, ok, h.delay)
		}
		holds = append(holds, h)
	}
	k := authKey{ip: netip.MustParseAddr("192.0.2.200"), user: "admin"}
	if _, ok := l.authBegin(k, now); ok {
		t.Fatalf("attempt %d held, want refused", authMaxHeld+1)
	}
	if _, ok := l.authBegin(authKey{ip: k.ip, user: "alice"}, now); !ok {
		t.Fatal("another username refused")
	}
	l.authEnd(authKey{user: "admin"}, holds[0], false, now)
	if _, ok := l.authBegin(k, now); !ok {
		t.Fatal("refused after a held attempt finished")
	}
}

// Spraying made-up usernames cannot grow the table past its cap, nor push
// a throttled username out of the throttle.
func TestAuthFailureTableBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newIPLimits(0, 0)
	l.auth = newAuthThrottle(100)
	for i := range authFreeTries {
		fail(l, authKey{user: "admin", ip: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})}, now)
	}
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		fail(l, authKey{ip: ip, user: fmt.Sprintf("spray-%d", i)}, now)
	}
	if n, m := len(l.auth.byUser.m), len(l.auth.byIP.m); n > 100 || m > 100 {
		t.Fatalf("tables hold %d usernames and %d addresses, cap 100", n, m)
	}
	if h, _ := l.authBegin(authKey{user: "admin"}, now); h.delay == 0 {
		t.Fatal("admin no longer held after the spray")
	}
	if h, _ := l.authBegin(authKey{user: "spray-new"}, now); h.delay == 0 {
		t.Fatal("a new name during a full table is not held: the overflow entry should count the spray")
	}
	later := now.Add(authFailWindow + time.Second)
	if h, _ := l.authBegin(authKey{user: "admin"}, later); h.delay != 0 {
		t.Fatalf("admin held %v after the window", h.delay)
	}
	if n := len(l.auth.byUser.m); n != 0 {
		t.Fatalf("%d usernames left after the window", n)
	}
}

// Through a real server: failures for one username from several loopback
// addresses hold the next CONNECT for it, even with the right password,
// while another username is answered at once.
func TestAuthThrottleUsernameAcrossAddresses(t *testing.T) {
	// Serial: it bounds how long each free attempt takes (500 ms),
	// which tests beside it would stretch.
	_, addr := startServer(t, Options{Authenticator: AuthenticatorFunc(func(_ context.Context, c *ClientInfo) error {
		if string(c.Password) == "right" {
			return nil
		}
		return ErrBadCredentials
	})})
	connect := func(src, user, pw string) (packet.ReasonCode, time.Duration) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		c := &mqtttest.Client{T: t, NC: nc, R: packet.NewReader(nc, 1<<20), V: packet.V5}
		start := time.Now()
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: "c-" + src, CleanStart: true,
			UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pw)})
		ack := c.Next(5 * time.Second).(*packet.Connack)
		return ack.ReasonCode, time.Since(start)
	}
	for i := range authFreeTries {
		if rc, d := connect(fmt.Sprintf("127.0.0.%d", 10+i), "admin", "guess"); rc != packet.BadUserNameOrPassword || d > 500*time.Millisecond {
			t.Fatalf("guess %d: 0x%02X after %v", i+1, byte(rc), d)
		}
	}
	if rc, d := connect("127.0.0.30", "admin", "right"); rc != 0 || d < 900*time.Millisecond {
		t.Fatalf("admin after %d failures: 0x%02X after %v, want success held ~1s", authFreeTries, byte(rc), d)
	}
	if rc, d := connect("127.0.0.31", "alice", "right"); rc != 0 || d > 500*time.Millisecond {
		t.Fatalf("alice: 0x%02X after %v, want an immediate success", byte(rc), d)
	}
}

func TestMaxConnectionsPerIP(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{MaxConnectionsPerIP: 1})
	a := dial(t, addr, packet.V311)
	a.Connect(&packet.Connect{ClientID: "a", CleanStart: true})
	b := dial(t, addr, packet.V311)
	b.Send(&packet.Connect{ProtocolVersion: packet.V311, ClientID: "b", CleanStart: true})
	if got := b.ExpectClosed(time.Second); len(got) != 0 {
		t.Fatalf("second connection from one address got %v, want a plain close", got)
	}
}

func TestMaxSubscriptions(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{MaxSubscriptions: 2})
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "s", CleanStart: true})
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a"}, {Filter: "b"}, {Filter: "c"}, {Filter: "a"}}})
	ack := c.Next(time.Second).(*packet.Suback)
	want := []packet.ReasonCode{0, 0, packet.QuotaExceeded, 0} // re-subscribing "a" is a replacement
	if !equalCodes(ack.ReasonCodes, want) {
		t.Fatalf("SUBACK %v, want %v", ack.ReasonCodes, want)
	}
}

func TestPublishRate(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Options{PublishRate: 5})
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "fast", CleanStart: true})
	// One write: the broker may close the connection before a later
	// write would reach it.
	var burst []byte
	for range 20 {
		burst, _ = (&packet.Publish{Topic: "t", Payload: []byte("x")}).Encode(burst, packet.V5)
	}
	c.NC.Write(burst)
	got := c.ExpectClosed(2 * time.Second)
	if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.MessageRateTooHigh {
		t.Fatalf("got %v, want DISCONNECT 0x96", got)
	}
}

func TestAuthFailureThrottleEndsAtShutdown(t *testing.T) {
	// Serial: it bounds how long Shutdown takes (2 s), which tests
	// beside it would stretch.
	s, addr := startServer(t, Options{Authenticator: AuthenticatorFunc(func(context.Context, *ClientInfo) error {
		return ErrBadCredentials
	})})
	for i := range authFreeTries + 1 {
		c := dial(t, addr, packet.V311)
		c.Send(&packet.Connect{ProtocolVersion: packet.V311, ClientID: "g", CleanStart: true})
		if i < authFreeTries {
			c.Next(time.Second) // refused at once
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v with a throttled connection", d)
	}
}
