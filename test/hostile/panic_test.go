package hostile

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// panicky is an Authenticator and Authorizer with bugs: it panics for
// chosen usernames and topics, as a broken plugin would.
type panicky struct{}

func (panicky) Authenticate(_ context.Context, c *broker.ClientInfo) error {
	if c.Username == "panic-auth" {
		panic("authenticator bug")
	}
	return nil
}

func (panicky) Allow(_ context.Context, _ *broker.ClientInfo, act broker.Action, topic string) bool {
	if act == broker.ActionPublish && topic == "boom/publish" || act == broker.ActionReceive && topic == "boom/receive" {
		panic("authorizer bug on " + topic)
	}
	return true
}

// A panic while handling one connection — in authentication, in the
// publish check, in the check of a delivery (run by the publisher's
// connection) or of a retained message on subscribe — is recovered, logged
// with its stack, and closes only the connection it happened on; locks
// are released, so the broker goes on serving everyone else, retained
// messages included.
func TestPanicClosesOnlyItsConnection(t *testing.T) {
	t.Parallel()
	addr, logs := startBroker(t, func(o *broker.Options) { o.Authenticator, o.Authorizer = panicky{}, panicky{} })
	conn := func(user, id string) *mqtttest.Client {
		c := mqtttest.Dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: id, CleanStart: true, UsernameFlag: user != "", Username: user})
		return c
	}
	watcher := conn("", "watcher")
	watcher.Subscribe("ok/#", 0)
	roundTrip := func(step string) {
		t.Helper()
		p := conn("", "pub-"+step)
		p.Send(&packet.Publish{Topic: "ok/" + step, Payload: []byte(step)})
		pub, ok := watcher.Next(2 * time.Second).(*packet.Publish)
		if !ok || pub.Topic != "ok/"+step {
			t.Fatalf("%s: watcher got %v", step, pub)
		}
	}

	// 1. In the Authenticator: the connection closes without CONNACK.
	c := mqtttest.Dial(t, addr, packet.V5)
	c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: "pa", CleanStart: true, UsernameFlag: true, Username: "panic-auth"})
	if got := c.ExpectClosed(2 * time.Second); len(got) != 0 {
		t.Errorf("authenticator panic: got %v, want a plain close", got)
	}
	roundTrip("after-auth")

	// 2. In the publish check: DISCONNECT 0x83 Implementation specific error.
	p := conn("", "pp")
	p.Send(&packet.Publish{Topic: "boom/publish", QoS: 1, PacketID: 1})
	if got := p.ExpectClosed(2 * time.Second); len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.ImplementationSpecificError {
		t.Errorf("publish-check panic: got %v, want DISCONNECT 0x83", got)
	}
	roundTrip("after-publish")

	// 3. In a delivery check, run by the publisher: the publisher goes,
	// the subscriber stays.
	sub := conn("", "sub")
	sub.Subscribe("boom/#", 0)
	p = conn("", "pr")
	p.Send(&packet.Publish{Topic: "boom/receive", Retain: true, Payload: []byte("r")})
	p.ExpectClosed(2 * time.Second)
	sub.Send(&packet.Pingreq{})
	if _, ok := sub.Next(2 * time.Second).(*packet.Pingresp); !ok {
		t.Error("subscriber lost with the publisher")
	}
	roundTrip("after-receive")

	// 4. In the check of a retained message on SUBSCRIBE (the message was
	// retained before the panic above): that subscriber goes; retained
	// messages still work for everyone else.
	late := conn("", "late")
	late.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "boom/#"}}})
	late.ExpectClosed(2 * time.Second)
	r := conn("", "retainer")
	r.Send(&packet.Publish{Topic: "ok/retained", Retain: true, QoS: 1, PacketID: 1, Payload: []byte("kept")})
	r.Next(2 * time.Second)
	watcher.Next(2 * time.Second)
	fresh := conn("", "fresh")
	fresh.Subscribe("ok/retained", 0)
	if pub, ok := fresh.Next(2 * time.Second).(*packet.Publish); !ok || string(pub.Payload) != "kept" {
		t.Errorf("retained message after the panics: %v", pub)
	}

	out := logs.String()
	if n := strings.Count(out, "panic while serving connection"); n != 4 {
		t.Errorf("%d panics logged, want 4", n)
	}
	if !strings.Contains(out, "goroutine ") || !strings.Contains(out, "panicky.Allow") {
		t.Error("panics logged without their stack")
	}
}

// A panic in the Authorizer while a delayed will is published, from the
// will's timer rather than a connection, must not take the broker down.
// The scenario runs in a child process, which a crash would kill.
func TestPanicInDelayedWill(t *testing.T) {
	if os.Getenv("HOSTILE_WILL_CHILD") == "1" {
		delayedWillChild()
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicInDelayedWill$", "-test.v")
	cmd.Env = append(os.Environ(), "HOSTILE_WILL_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "broker still serving") {
		t.Fatalf("the broker process died when a delayed will's check panicked: %v\n%s", err, tail(string(out), 3000))
	}
}

// delayedWillChild runs in the child: a will with a 1 s delay on a topic
// whose publish check panics, then checks the broker still answers.
func delayedWillChild() {
	s, err := broker.New(broker.Options{Logger: slog.New(slog.DiscardHandler), SysInterval: -1, Authorizer: panicky{}})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go s.Serve(ln)
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	cp := &packet.Connect{ProtocolVersion: packet.V5, ClientID: "w", CleanStart: true, WillFlag: true,
		WillTopic: "boom/publish", WillPayload: []byte("x")}
	cp.Properties.SessionExpiry = 10
	cp.Properties.Set(packet.PropSessionExpiry)
	cp.WillProperties.WillDelay = 1
	cp.WillProperties.Set(packet.PropWillDelay)
	b, _ := cp.Encode(nil, packet.V5)
	nc.Write(b)
	packet.NewReader(nc, 1<<16).ReadPacket(packet.V5)
	nc.Close() // abnormal: the will is due in 1 s
	time.Sleep(2 * time.Second)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err == nil {
		c.Close()
		println("broker still serving")
	}
}
