package interop

import (
	"sync"
	"testing"
	"time"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// jsSub is one subscription for js/client.js.
type jsSub struct {
	Topic string `json:"topic"`
	QoS   byte   `json:"qos"`
}

// jsOpts are js/client.js's JSON options; see the script's header.
type jsOpts struct {
	URL                 string         `json:"url"`
	CAFile              string         `json:"caFile,omitempty"`
	ProtocolVersion     byte           `json:"protocolVersion"`
	ClientID            string         `json:"clientId,omitempty"`
	Clean               *bool          `json:"clean,omitempty"`
	Keepalive           *int           `json:"keepalive,omitempty"`
	Properties          map[string]any `json:"properties,omitempty"`
	Will                map[string]any `json:"will,omitempty"`
	Subscribe           []jsSub        `json:"subscribe,omitempty"`
	SubscribeProperties map[string]any `json:"subscribeProperties,omitempty"`
	LifetimeMs          int            `json:"lifetimeMs,omitempty"`
}

// jsEvent is one JSON line js/client.js prints.
type jsEvent struct {
	Event          string  `json:"event"`
	ID             int     `json:"id"`
	SessionPresent bool    `json:"sessionPresent"`
	ReasonCode     int     `json:"reasonCode"`
	Topic          string  `json:"topic"`
	Payload        string  `json:"payload"`
	QoS            byte    `json:"qos"`
	Retain         bool    `json:"retain"`
	Dup            bool    `json:"dup"`
	SubIDs         []int   `json:"subIds"`
	Expiry         *uint32 `json:"expiry"`
	Granted        []jsSub `json:"granted"`
	Where          string  `json:"where"`
	Message        string  `json:"message"`
}

// jsClient is a running mqtt.js client, one of the hub's (js/hub.js).
type jsClient struct {
	name    string
	hub     *jsHub
	cid     int
	logs    *logSink
	in      *inbox
	events  *queue[jsEvent]
	connack jsEvent
	nextID  int
	// gone is closed once the hub has forgotten the client (after "end",
	// kill or close) or the hub has exited.
	gone     chan struct{}
	goneOnce sync.Once
}

// jsPersistent fills o for a persistent session: clean false and, for MQTT
// 5, a session expiry interval.
func jsPersistent(p proto, o jsOpts, expiry int) jsOpts {
	f := false
	o.Clean = &f
	if p.level == 5 {
		if o.Properties == nil {
			o.Properties = map[string]any{}
		}
		o.Properties["sessionExpiryInterval"] = expiry
	}
	return o
}

// startJS opens an mqtt.js client (js/peer.js in the hub) and waits for
// CONNACK and, when o subscribes, for SUBACK. It fails the test if node
// or the npm packages are missing.
func startJS(t *testing.T, b *testBroker, p proto, o jsOpts) *jsClient {
	t.Helper()
	c := startJSNoWait(t, b, p, o)
	// For the first client the wait covers node's start and its loading
	// of mqtt.js, which took 8 s at load 26 (a suite run beside other
	// engineers' cluster runs); the broker answered the CONNECT in under a
	// millisecond.
	c.connack = c.waitEvent(t, 30*time.Second, "connect")
	if len(o.Subscribe) > 0 {
		c.waitEvent(t, 5*time.Second, "suback")
	}
	return c
}

// startJSNoWait opens an mqtt.js client in the hub without waiting for
// anything.
func startJSNoWait(t *testing.T, b *testBroker, p proto, o jsOpts) *jsClient {
	t.Helper()
	h := startHub(t)
	o.URL = b.url()
	if b.tr == rc.TLS || b.tr == rc.WSS {
		o.CAFile = pki.CAFile
	}
	o.ProtocolVersion = p.level
	if o.ClientID == "" {
		o.ClientID = clientID("PonyRemoteControl")
	}
	if o.LifetimeMs == 0 {
		o.LifetimeMs = int(procLifetime / time.Millisecond)
	}
	name := "mqtt.js " + o.ClientID
	c := &jsClient{name: name, hub: h, logs: newLogSink(t, name), in: newInbox(name),
		events: newQueue[jsEvent](), gone: make(chan struct{})}
	if err := h.open(c, o); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if s := h.stderr.String(); s != "" {
				t.Logf("---- mqtt.js hub stderr ----\n%s", h.stderr.tail(50))
			}
		}
		c.close()
	})
	return c
}

// deliver takes one event of the client from the hub.
func (c *jsClient) deliver(ev jsEvent, line string) {
	c.logs.Write([]byte(line + "\n"))
	switch ev.Event {
	case "message":
		c.in.put(message{Topic: ev.Topic, Payload: ev.Payload, QoS: ev.QoS, Retain: ev.Retain,
			Dup: ev.Dup, SubIDs: ev.SubIDs, Expiry: ev.Expiry})
		return
	case "ended", "gone":
		c.goneOnce.Do(func() { close(c.gone) })
	}
	c.events.put(ev)
}

// close disconnects the client if it is still there (the hub kills it if
// its DISCONNECT cannot go out within 2 s).
func (c *jsClient) close() {
	if c.waitExit(0) {
		return
	}
	if err := c.hub.send(c.cid, map[string]any{"cmd": "close"}); err == nil {
		c.waitExit(5 * time.Second)
	}
}

// kill drops the client's connection at once, with no chance to send
// DISCONNECT (nor a WebSocket close frame or TLS close_notify), as when
// its process is killed.
func (c *jsClient) kill(t *testing.T) {
	t.Helper()
	if err := c.hub.send(c.cid, map[string]any{"cmd": "kill"}); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	if !c.waitExit(5 * time.Second) {
		t.Fatalf("%s: not gone 5s after kill", c.name)
	}
}

// waitExit waits up to d until the hub has forgotten the client.
func (c *jsClient) waitExit(d time.Duration) bool {
	select {
	case <-c.gone:
		return true
	default:
	}
	select {
	case <-c.gone:
		return true
	case <-time.After(d):
		return false
	}
}

// waitEvent waits for the next unclaimed event named name; an error event
// or the process exiting first fails the test.
func (c *jsClient) waitEvent(t *testing.T, d time.Duration, name string) jsEvent {
	t.Helper()
	ev, ok := c.events.claim(d, func(ev jsEvent) bool { return ev.Event == name || ev.Event == "error" })
	if !ok {
		t.Fatalf("%s: no %q event within %v; events: %+v", c.name, name, d, c.events.all())
	}
	if ev.Event == "error" && name != "error" {
		t.Fatalf("%s: waiting for %q: error in %s: %s", c.name, name, ev.Where, ev.Message)
	}
	return ev
}

func (c *jsClient) send(t *testing.T, cmd map[string]any) int {
	t.Helper()
	c.nextID++
	cmd["id"] = c.nextID
	if err := c.hub.send(c.cid, cmd); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	return c.nextID
}

// publish publishes and waits until mqtt.js reports it complete (PUBACK or
// PUBCOMP received for QoS 1/2).
func (c *jsClient) publish(t *testing.T, topic, payload string, qos byte, retain bool, props map[string]any) {
	t.Helper()
	cmd := map[string]any{"cmd": "publish", "topic": topic, "payload": payload, "qos": qos, "retain": retain}
	if props != nil {
		cmd["properties"] = props
	}
	id := c.send(t, cmd)
	ev, ok := c.events.claim(5*time.Second, func(ev jsEvent) bool {
		return ev.ID == id && (ev.Event == "published" || ev.Event == "error")
	})
	if !ok || ev.Event != "published" {
		t.Fatalf("%s: publish %s: %+v (ok=%v)", c.name, topic, ev, ok)
	}
}

// subscribe subscribes and returns the granted QoS per filter.
func (c *jsClient) subscribe(t *testing.T, subs []jsSub, props map[string]any) []jsSub {
	t.Helper()
	cmd := map[string]any{"cmd": "subscribe", "subscribe": subs}
	if props != nil {
		cmd["properties"] = props
	}
	id := c.send(t, cmd)
	ev, ok := c.events.claim(5*time.Second, func(ev jsEvent) bool {
		return ev.ID == id && (ev.Event == "suback" || ev.Event == "error")
	})
	if !ok || ev.Event != "suback" {
		t.Fatalf("%s: subscribe %v: %+v (ok=%v)", c.name, subs, ev, ok)
	}
	return ev.Granted
}

// end disconnects cleanly (DISCONNECT with reasonCode) and waits until the
// client is closed.
func (c *jsClient) end(t *testing.T, reasonCode int) {
	t.Helper()
	c.send(t, map[string]any{"cmd": "end", "reasonCode": reasonCode})
	if !c.waitExit(5 * time.Second) {
		t.Fatalf("%s not closed 5s after end", c.name)
	}
}
