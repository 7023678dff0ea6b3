package client

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// The will goes out when the connection is lost without DISCONNECT, with
// its QoS, retain flag and (MQTT 5) properties, and not after Disconnect.
// A retained message reaches a later subscriber with Retain set.
func TestWillAndRetained(t *testing.T) {
	t.Parallel()
	forTargets(t, func(t *testing.T, tg target, v packet.Version) {
		ctx := testCtx(t, 20*time.Second)
		var in inbox
		// A kept session: the cut below drops the watcher too, and the will
		// must wait for it on the server.
		watcher := newClient(t, tg.URL(), v, func(o *Options) { o.KeepSession = true; o.ClientID = "will-watcher" })
		if _, err := watcher.Subscribe(ctx, Subscription{Filter: "will/#", QoS: 1, Handler: in.handle}); err != nil {
			t.Fatal(err)
		}
		will := &Message{Topic: "will/car1", Payload: []byte("offline"), QoS: 1, Retain: true}
		will.Properties.Set(packet.PropContentType)
		will.Properties.ContentType = "text/plain"
		polite := newClient(t, tg.URL(), v, func(o *Options) { o.Will = &Message{Topic: "will/polite", Payload: []byte("x")} })
		newClient(t, tg.URL(), v, func(o *Options) {
			o.Will = will
			o.Reconnect.Disabled = true
		})
		open := tg.open()
		if err := polite.Disconnect(ctx); err != nil {
			t.Fatal(err)
		}
		// Disconnect returns once DISCONNECT is written; let the proxy
		// forward it before the cut resets everything it still holds.
		eventually(t, 5*time.Second, func() error {
			if tg.open() >= open {
				return errors.New("DISCONNECT not through the proxy yet")
			}
			return nil
		})
		tg.Kill(t) // every connection cut: the watcher reconnects, the car does not
		got := in.waitN(t, 1, 10*time.Second)[0]
		if got.Topic != "will/car1" || string(got.Payload) != "offline" || got.QoS != 1 {
			t.Errorf("will arrived as %q %q QoS %d", got.Topic, got.Payload, got.QoS)
		}
		if v == packet.V5 && got.Properties.ContentType != "text/plain" {
			t.Errorf("will properties %+v", got.Properties)
		}
		// The will was retained: a new subscriber gets it with Retain set.
		var late inbox
		c := newClient(t, tg.URL(), v, nil)
		if _, err := c.Subscribe(ctx, Subscription{Filter: "will/+", QoS: 1, Handler: late.handle}); err != nil {
			t.Fatal(err)
		}
		if m := late.waitN(t, 1, 5*time.Second)[0]; !m.Retain || m.Topic != "will/car1" {
			t.Errorf("retained will: topic %q retain %v", m.Topic, m.Retain)
		}
		for _, m := range append(in.all(), late.all()...) {
			if m.Topic == "will/polite" {
				t.Error("will published after Disconnect")
			}
		}
	})
}

// silentServer accepts connections and reads them, answering CONNACK only
// when connack is set, and never anything else.
func silentServer(t *testing.T, connack bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			go func() {
				rd := packet.NewReader(nc, 1<<16)
				if _, err := rd.ReadPacket(packet.V5); err != nil {
					return
				}
				if connack {
					b, _ := (&packet.Connack{}).Encode(nil, packet.V5)
					nc.Write(b)
				}
				for {
					if _, err := rd.ReadPacket(packet.V5); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "mqtt://" + ln.Addr().String()
}

// A server that never answers CONNECT fails Connect after ConnectTimeout.
func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	c, err := New(Options{Servers: []string{silentServer(t, false)}, ConnectTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Connect(testCtx(t, 10*time.Second))
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Connect = %v after %v, want a timeout after about 200ms", err, time.Since(start))
	}
	<-c.Done()
}

// A server that stops answering is detected by the keep alive: PINGREQ
// without PINGRESP loses the connection with ErrPingTimeout.
func TestPingTimeout(t *testing.T) {
	t.Parallel()
	lost := make(chan error, 1)
	newClient(t, silentServer(t, true), packet.V5, func(o *Options) {
		o.KeepAlive = 200 * time.Millisecond // rounded up to 1s on the wire; the client pings on its own clock
		o.PingTimeout = 300 * time.Millisecond
		o.OnConnectionDown = func(_ *Client, err error) {
			select {
			case lost <- err:
			default:
			}
		}
	})
	select {
	case err := <-lost:
		if !errors.Is(err, ErrPingTimeout) {
			t.Errorf("connection lost with %v, want ErrPingTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a silent server went unnoticed")
	}
}

// While offline, operations wait in a queue of OfflineQueue entries;
// beyond it Publish fails at once with ErrQueueFull.
func TestOfflineQueueFull(t *testing.T) {
	t.Parallel()
	c, err := New(Options{Servers: []string{"mqtt://127.0.0.1:1"}, OfflineQueue: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(testCtx(t, 5*time.Second))
	for range 2 {
		go c.Publish(testCtx(t, 10*time.Second), Message{Topic: "q", QoS: 1})
	}
	eventually(t, 5*time.Second, func() error {
		if c.Stats().Queued != 2 {
			return errors.New("not queued yet")
		}
		return nil
	})
	if _, err := c.Publish(testCtx(t, 5*time.Second), Message{Topic: "q", QoS: 1}); !errors.Is(err, ErrQueueFull) {
		t.Errorf("third Publish = %v, want ErrQueueFull", err)
	}
}

// With Reconnect.Disabled a lost connection stops the client: taken over
// by another connection with its client id, it ends (Done, Err) and does
// not connect again. It connected once more, at once, and took the id
// back: a bridge test saw the two fight over the id on mosquitto.
func TestReconnectDisabledStopsOnLoss(t *testing.T) {
	t.Parallel()
	forTargets(t, func(t *testing.T, tg target, v packet.Version) {
		var connected atomic.Int32
		first := newClient(t, tg.URL(), v, func(o *Options) {
			o.ClientID = "once"
			o.Reconnect.Disabled = true
			o.OnStatus = func(st Status) {
				if st.Event == Connected {
					connected.Add(1)
				}
			}
		})
		newClient(t, tg.URL(), v, func(o *Options) { o.ClientID = "once" })
		select {
		case <-first.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("the client whose id was taken over is still running (%d connections)", connected.Load())
		}
		if n := connected.Load(); n != 1 {
			t.Errorf("connected %d times, want once", n)
		}
		if first.Err() == nil {
			t.Error("Err() is nil after the connection was taken over")
		}
	})
}
