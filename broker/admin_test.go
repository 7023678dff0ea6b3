package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{})
	c := dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "car", CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: "u"})
	c.Subscribe("cmd/#", 1)

	list := s.Clients()
	if len(list) != 1 || list[0].ClientID != "car" || !list[0].Connected || list[0].Username != "u" ||
		list[0].Protocol != "5.0" || list[0].KeepAlive != 30 || list[0].Subscriptions != 1 {
		t.Fatalf("Clients() = %+v", list)
	}
	if subs := s.Subscriptions(); len(subs) != 1 || subs[0].Filter != "cmd/#" || subs[0].Options.QoS != 1 {
		t.Fatalf("Subscriptions() = %+v", subs)
	}

	n, err := s.Publish(PublishRequest{Topic: "cmd/go", Payload: []byte("fwd"), QoS: 1, Retain: true})
	if err != nil || n != 1 {
		t.Fatalf("Publish = %d, %v", n, err)
	}
	if m, ok := c.Next(time.Second).(*packet.Publish); !ok || string(m.Payload) != "fwd" {
		t.Fatalf("client got %+v", m)
	}
	if _, err := s.Publish(PublishRequest{Topic: "bad/#"}); err == nil {
		t.Error("Publish to a wildcard topic succeeded")
	}
	ret, err := s.RetainedMessages("cmd/+", 0)
	if err != nil || len(ret) != 1 || ret[0].Topic != "cmd/go" {
		t.Fatalf("RetainedMessages = %v, %v", ret, err)
	}
	if !s.DeleteRetained("cmd/go") || s.DeleteRetained("cmd/go") {
		t.Error("DeleteRetained should succeed once")
	}

	if !s.DisconnectClient("car", false) {
		t.Fatal("DisconnectClient: not connected")
	}
	got := c.ExpectClosed(time.Second)
	var last packet.Packet
	for _, p := range got {
		last = p
	}
	if d, ok := last.(*packet.Disconnect); !ok || d.ReasonCode != packet.AdministrativeAction {
		t.Errorf("client got %v, want DISCONNECT 0x98 last", got)
	}
	st := s.Stats()
	if st.Disconnects["admin"] != 1 || st.MessagesSent[1] != 1 || st.Latency.Counts == nil {
		t.Errorf("Stats = %+v", st)
	}
}

// Publish tells its caller when a retained message was delivered but not
// kept because of the retained limits.
func TestAdminPublishNotRetained(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{MaxRetained: 1})
	c := dial(t, addr, packet.V311)
	c.Connect(&packet.Connect{ClientID: "watch", CleanStart: true})
	c.Subscribe("r/#", 0)
	if n, err := s.Publish(PublishRequest{Topic: "r/1", Payload: []byte("a"), Retain: true}); err != nil || n != 1 {
		t.Fatalf("first retained Publish = %d, %v", n, err)
	}
	n, err := s.Publish(PublishRequest{Topic: "r/2", Payload: []byte("b"), Retain: true})
	if !errors.Is(err, ErrNotRetained) || n != 1 {
		t.Fatalf("Publish over the limit = %d, %v; want 1 and ErrNotRetained", n, err)
	}
	for _, want := range []string{"a", "b"} {
		if m, ok := c.Next(time.Second).(*packet.Publish); !ok || string(m.Payload) != want {
			t.Fatalf("want delivery %q, got %v", want, m)
		}
	}
	if ret, _ := s.RetainedMessages("r/#", 0); len(ret) != 1 || ret[0].Topic != "r/1" {
		t.Fatalf("retained = %v, want only r/1", ret)
	}
	// Replacing the kept one is within the limit.
	if _, err := s.Publish(PublishRequest{Topic: "r/1", Payload: []byte("c"), Retain: true}); err != nil {
		t.Fatalf("replacing: %v", err)
	}
}
