package broker

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

func TestIPLimitsAdmit(t *testing.T) {
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

func TestAuthFailureDelay(t *testing.T) {
	now := time.Unix(1000, 0)
	ip := netip.MustParseAddr("192.0.2.1")
	l := newIPLimits(0, 0)
	var got []time.Duration
	for range authFreeTries + 7 {
		got = append(got, l.authFailed(ip, now))
	}
	for i := range authFreeTries {
		if got[i] != 0 {
			t.Fatalf("failure %d delayed %v", i+1, got[i])
		}
	}
	if got[authFreeTries] != time.Second || got[len(got)-1] != authMaxDelay {
		t.Fatalf("delays %v: want 1s after the free tries, growing to %v", got, authMaxDelay)
	}
	if d := l.authFailed(ip, now.Add(2*authFailWindow)); d != 0 {
		t.Fatalf("delay %v after the window passed", d)
	}
}

func TestMaxConnectionsPerIP(t *testing.T) {
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
