package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// A Subscription Identifier given with SubscribeWithProperties comes back
// on the messages, and still does after a reconnect on which the server
// had no session and the client subscribed again by itself.
func TestSubscriptionIdentifier(t *testing.T) {
	t.Parallel()
	for _, tg := range []target{startRoost(t, broker.Options{}), startMosquitto(t)} {
		t.Run(fmt.Sprintf("%T", tg), func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			var in inbox
			var ups atomic.Int32
			up := func(o *Options) { o.OnConnectionUp = func(*Client, *packet.Connack) { ups.Add(1) } }
			sub := newClient(t, tg.URL(), packet.V5, up) // no session kept
			props := packet.Properties{SubscriptionIDs: []uint32{7}, User: []packet.UserProperty{{Key: "app", Value: "rccar"}}}
			if _, err := sub.SubscribeWithProperties(ctx, props, Subscription{Filter: "sid/#", QoS: 1, Handler: in.handle}); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.Subscribe(ctx, Subscription{Filter: "sid/plain", QoS: 1, Handler: in.handle}); err != nil {
				t.Fatal(err)
			}
			pub := newClient(t, tg.URL(), packet.V5, up)
			check := func(round int) {
				t.Helper()
				k := len(in.all())
				if _, err := pub.Publish(ctx, Message{Topic: "sid/x", QoS: 1}); err != nil {
					t.Fatal(err)
				}
				m := in.waitN(t, k+1, 5*time.Second)[k]
				if !slices.Equal(m.Properties.SubscriptionIDs, []uint32{7}) {
					t.Errorf("round %d: subscription ids %v, want [7]", round, m.Properties.SubscriptionIDs)
				}
			}
			check(1)
			tg.Kill(t)
			eventually(t, 10*time.Second, func() error {
				if ups.Load() < 4 {
					return errors.New("reconnecting")
				}
				return nil
			})
			// The resubscription is in flight right after CONNACK.
			eventually(t, 5*time.Second, func() error {
				if sub.Stats().Inflight != 0 {
					return errors.New("resubscribe not acknowledged")
				}
				return nil
			})
			check(2)
		})
	}
}

// Properties a packet cannot carry, or any on 3.1.1, are refused before
// anything is sent.
func TestPropertiesRefused(t *testing.T) {
	t.Parallel()
	tg := startRoost(t, broker.Options{})
	ctx := testCtx(t, 10*time.Second)
	c5 := newClient(t, tg.URL(), packet.V5, nil)
	c3 := newClient(t, tg.URL(), packet.V311, nil)
	sub := Subscription{Filter: "x", Handler: func(*Message) {}}
	user := packet.Properties{User: []packet.UserProperty{{Key: "k", Value: "v"}}}
	var expiry packet.Properties
	expiry.Set(packet.PropSessionExpiry)
	expiry.SessionExpiry = 60
	cases := []struct {
		name string
		err  error
	}{
		{"two subscription ids", func() error {
			_, err := c5.SubscribeWithProperties(ctx, packet.Properties{SubscriptionIDs: []uint32{1, 2}}, sub)
			return err
		}()},
		{"subscription id 0", func() error {
			_, err := c5.SubscribeWithProperties(ctx, packet.Properties{SubscriptionIDs: []uint32{0}}, sub)
			return err
		}()},
		{"session expiry in SUBSCRIBE", func() error { _, err := c5.SubscribeWithProperties(ctx, expiry, sub); return err }()},
		{"subscription id in UNSUBSCRIBE", func() error {
			_, err := c5.UnsubscribeWithProperties(ctx, packet.Properties{SubscriptionIDs: []uint32{1}}, "x")
			return err
		}()},
		{"3.1.1 subscribe", func() error { _, err := c3.SubscribeWithProperties(ctx, user, sub); return err }()},
		{"3.1.1 unsubscribe", func() error { _, err := c3.UnsubscribeWithProperties(ctx, user, "x"); return err }()},
		{"3.1.1 disconnect", c3.DisconnectWithProperties(ctx, user)},
		{"session expiry raised from 0", c5.DisconnectWithProperties(ctx, expiry)},
	}
	for _, tc := range cases {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if !c5.Connected() || !c3.Connected() {
		t.Error("a refused call disconnected the client")
	}
	// User properties are fine in all three.
	if _, err := c5.SubscribeWithProperties(ctx, user, sub); err != nil {
		t.Error(err)
	}
	if _, err := c5.UnsubscribeWithProperties(ctx, user, "x"); err != nil {
		t.Error(err)
	}
	if err := c5.DisconnectWithProperties(ctx, user); err != nil {
		t.Error(err)
	}
}

// DisconnectWithProperties can end the session on the server: a Session
// Expiry Interval of 0 in DISCONNECT makes the server drop it, so the next
// connection with the same client id finds none.
func TestDisconnectEndsSession(t *testing.T) {
	t.Parallel()
	for _, tg := range []target{startRoost(t, broker.Options{}), startMosquitto(t)} {
		t.Run(fmt.Sprintf("%T", tg), func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			connect := func() (*Client, bool) {
				var present bool
				c := newClient(t, tg.URL(), packet.V5, func(o *Options) {
					o.ClientID, o.KeepSession, o.SessionExpiry = "disc-props", true, time.Hour
					o.OnConnectionUp = func(_ *Client, ca *packet.Connack) { present = ca.SessionPresent }
				})
				eventually(t, 5*time.Second, func() error {
					if c.Stats().Pending != 0 {
						return errors.New("callbacks pending")
					}
					return nil
				})
				return c, present
			}
			c, _ := connect()
			if err := c.Disconnect(ctx); err != nil {
				t.Fatal(err)
			}
			c, present := connect()
			if !present {
				t.Fatal("session not kept over a plain Disconnect")
			}
			var end packet.Properties
			end.Set(packet.PropSessionExpiry)
			if err := c.DisconnectWithProperties(ctx, end); err != nil {
				t.Fatal(err)
			}
			// Disconnect returns once DISCONNECT is written; a new
			// connection that the server handled before reading it would
			// take the live session over (seen under CPU load).
			waitServerClosed(t, tg)
			if _, present = connect(); present {
				t.Error("session kept after DISCONNECT with Session Expiry Interval 0")
			}
		})
	}
}

// Options.DialContext carries every transport's TCP connection.
func TestDialContext(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	urls := roostTransports(t, p)
	for _, scheme := range []string{"mqtt", "mqtts", "ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			var mu sync.Mutex
			var dialed []string
			c := newClient(t, urls[scheme], packet.V5, func(o *Options) {
				o.TLSConfig = p.tlsConfig(t, false)
				o.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					mu.Lock()
					dialed = append(dialed, network+" "+addr)
					mu.Unlock()
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}
			})
			if _, err := c.Publish(testCtx(t, 5*time.Second), Message{Topic: "dial", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			host := urls[scheme][len(scheme)+3:]
			host, _, _ = strings.Cut(host, "/")
			if len(dialed) != 1 || dialed[0] != "tcp "+host {
				t.Errorf("dialed %q, want [tcp %s]", dialed, host)
			}
		})
	}
}
