package interop

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// pahoOpts configure a Paho peer.
type pahoOpts struct {
	id            string // default: a fresh unique id
	persistent    bool   // clean session 0 / clean start 0
	sessionExpiry uint32 // MQTT 5 session expiry interval
	keepalive     uint16 // seconds; default 30
	will          *will
}

// pahoPeer is a Paho Go client: paho.mqtt.golang for 3.1.1, paho.golang
// for 5. Either way the test owns the net.Conn, so it can cut the TCP
// connection without a DISCONNECT.
type pahoPeer struct {
	name           string
	p              proto
	in             *inbox
	sessionPresent bool

	c3 mqtt.Client
	c5 *paho.Client

	mu   sync.Mutex
	conn net.Conn

	lost       chan error            // connection lost (3.1.1) or client error (5)
	serverDisc chan *paho.Disconnect // MQTT 5 DISCONNECT from the server
}

// startPaho connects a Paho client; the connection is closed when t ends.
func startPaho(t *testing.T, b *testBroker, p proto, o pahoOpts) *pahoPeer {
	t.Helper()
	if o.id == "" {
		o.id = clientID("paho")
	}
	if o.keepalive == 0 {
		o.keepalive = 30
	}
	c := &pahoPeer{name: "paho " + p.name + " " + o.id, p: p, in: newInbox("paho " + o.id),
		lost: make(chan error, 4), serverDisc: make(chan *paho.Disconnect, 4)}
	if p.level == 5 {
		c.connect5(t, b, o)
	} else {
		c.connect3(t, b, o)
	}
	t.Cleanup(c.close)
	return c
}

// dial connects over the scenario's transport: Paho gets the conn ready
// made, so it runs over every transport.
func (c *pahoPeer) dial(b *testBroker) (net.Conn, error) {
	conn, err := b.dial()
	if err == nil {
		c.mu.Lock()
		c.conn = conn
		c.mu.Unlock()
	}
	return conn, err
}

func (c *pahoPeer) connect3(t *testing.T, b *testBroker, o pahoOpts) {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + b.addr).SetClientID(o.id).
		SetCleanSession(!o.persistent).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(time.Duration(o.keepalive) * time.Second).
		SetConnectTimeout(5 * time.Second).
		SetCustomOpenConnectionFn(func(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			return c.dial(b)
		}).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			c.in.put(message{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(),
				Retain: m.Retained(), Dup: m.Duplicate()})
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	if o.will != nil {
		opts.SetWill(o.will.topic, o.will.payload, o.will.qos, o.will.retain)
	}
	c.c3 = mqtt.NewClient(opts)
	tok := c.c3.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("%s: CONNECT timed out", c.name)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: CONNECT: %v", c.name, err)
	}
	c.sessionPresent = tok.(*mqtt.ConnectToken).SessionPresent()
}

func (c *pahoPeer) connect5(t *testing.T, b *testBroker, o pahoOpts) {
	t.Helper()
	conn, err := c.dial(b)
	if err != nil {
		t.Fatalf("%s: dial: %v", c.name, err)
	}
	c.c5 = paho.NewClient(paho.ClientConfig{
		ClientID: o.id,
		// paho.golang writes a packet as several buffers from more than
		// one goroutine (the pinger, acks, the caller) and serialises
		// them only if the conn is a sync.Locker. A TCP conn gets each
		// packet in one writev; over TLS and WebSocket, without the
		// lock, a PINGREQ lands inside a SUBSCRIBE.
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				c.in.put(message5(pr.Packet))
				return true, nil
			},
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.serverDisc <- d:
			default:
			}
		},
		OnClientError: func(err error) {
			select {
			case c.lost <- err:
			default:
			}
		},
	})
	cp := &paho.Connect{ClientID: o.id, KeepAlive: o.keepalive, CleanStart: !o.persistent,
		Properties: &paho.ConnectProperties{}}
	if o.sessionExpiry > 0 {
		cp.Properties.SessionExpiryInterval = &o.sessionExpiry
	}
	if o.will != nil {
		cp.WillMessage = &paho.WillMessage{Topic: o.will.topic, Payload: []byte(o.will.payload),
			QoS: o.will.qos, Retain: o.will.retain}
		cp.WillProperties = &paho.WillProperties{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.c5.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("%s: CONNECT: %v", c.name, err)
	}
	c.sessionPresent = ca.SessionPresent
}

func message5(p *paho.Publish) message {
	m := message{Topic: p.Topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain}
	if p.Properties != nil {
		m.Expiry = p.Properties.MessageExpiry
		if p.Properties.SubscriptionIdentifier != nil {
			m.SubIDs = []int{*p.Properties.SubscriptionIdentifier}
		}
	}
	return m
}

// subscribe subscribes to filter and returns the granted QoS (or failure
// reason code). subID is an MQTT 5 subscription identifier, 0 for none.
func (c *pahoPeer) subscribe(t *testing.T, filter string, qos byte, subID int) byte {
	t.Helper()
	if c.c3 != nil {
		tok := c.c3.Subscribe(filter, qos, nil)
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("%s: SUBSCRIBE %s timed out", c.name, filter)
		}
		if err := tok.Error(); err != nil {
			t.Fatalf("%s: SUBSCRIBE %s: %v", c.name, filter, err)
		}
		return tok.(*mqtt.SubscribeToken).Result()[filter]
	}
	s := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}
	if subID > 0 {
		s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &subID}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.c5.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("%s: SUBSCRIBE %s: %v", c.name, filter, err)
	}
	return sa.Reasons[0]
}

// publish publishes and, for QoS 1/2, waits for the acknowledgement flow.
func (c *pahoPeer) publish(t *testing.T, topic, payload string, qos byte, retain bool) {
	t.Helper()
	if c.c3 != nil {
		tok := c.c3.Publish(topic, qos, retain, payload)
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("%s: PUBLISH %s timed out", c.name, topic)
		}
		if err := tok.Error(); err != nil {
			t.Fatalf("%s: PUBLISH %s: %v", c.name, topic, err)
		}
		return
	}
	c.publish5(t, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain})
}

// publish5 publishes an MQTT 5 message as given.
func (c *pahoPeer) publish5(t *testing.T, pb *paho.Publish) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr, err := c.c5.Publish(ctx, pb)
	if err != nil {
		t.Fatalf("%s: PUBLISH %q: %v", c.name, pb.Topic, err)
	}
	if pr != nil && pr.ReasonCode >= 0x80 {
		t.Fatalf("%s: PUBLISH %q: reason code %#x", c.name, pb.Topic, pr.ReasonCode)
	}
}

// killConn closes the TCP connection under the client without DISCONNECT,
// as a crashed process or a lost network would.
func (c *pahoPeer) killConn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
	}
}

// disconnect sends DISCONNECT with reason (MQTT 5; 0 for 3.1.1) and closes.
func (c *pahoPeer) disconnect(t *testing.T, reason byte) {
	t.Helper()
	if c.c3 != nil {
		c.c3.Disconnect(250)
		return
	}
	if err := c.c5.Disconnect(&paho.Disconnect{ReasonCode: reason}); err != nil {
		t.Fatalf("%s: DISCONNECT: %v", c.name, err)
	}
}

// waitLost waits for the client to notice its connection is gone.
func (c *pahoPeer) waitLost(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-c.lost:
		return err
	case <-time.After(d):
		t.Fatalf("%s: connection not lost within %v", c.name, d)
		return nil
	}
}

func (c *pahoPeer) close() {
	if c.c3 != nil {
		if c.c3.IsConnectionOpen() {
			c.c3.Disconnect(100)
		}
	}
	if c.c5 != nil {
		c.c5.Disconnect(&paho.Disconnect{})
		select {
		case <-c.c5.Done():
		case <-time.After(2 * time.Second):
		}
	}
	c.killConn()
}
