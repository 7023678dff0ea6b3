package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

func retainedMsg(topic, payload string) *Message {
	return &Message{Topic: topic, Payload: []byte(payload), Retain: true}
}

// The limits refuse new topics only; replacing and clearing work, except a
// replacement that grows the byte total past the limit, which clears the
// topic instead. $SYS is neither limited nor counted.
func TestRetainerLimits(t *testing.T) {
	t.Parallel()
	type step struct {
		topic, payload string
		err            error
		n, bytes       int // totals after the step
		kept           bool
	}
	tests := []struct {
		name  string
		lim   retainLimits
		steps []step
	}{
		{"count", retainLimits{count: 2, bytes: -1}, []step{
			{"a", "1", nil, 1, 2, true},
			{"b", "22", nil, 2, 5, true},
			{"c", "3", errRetainedCount, 2, 5, false},     // a new topic is refused
			{"a", "11111", nil, 2, 9, true},               // replacing works, growing too
			{"$SYS/x", "9", nil, 2, 9, true},              // $SYS: not limited, not counted
			{"b", "", nil, 1, 6, false},                   // clearing works
			{"c", "3", nil, 2, 8, true},                   // and makes room
			{"d", "4", errRetainedCount, 2, 8, false},     // full again
			{"nothing", "", nil, 2, 8, false},             // clearing nothing is a no-op
			{"a/b/c", "x", errRetainedCount, 2, 8, false}, // same for any depth
		}},
		{"bytes", retainLimits{count: -1, bytes: 10}, []step{
			{"a", "1234", nil, 1, 5, true},
			{"b", "123", nil, 2, 9, true},
			{"c", "1", errRetainedBytes, 2, 9, false},      // would make 11
			{"a", "12", nil, 2, 7, true},                   // shrinking
			{"a", "12345", nil, 2, 10, true},               // growing up to the limit
			{"a", "123456", errRetainedBytes, 1, 4, false}, // growing past it: refused, old one cleared
			{"c", "12345", nil, 2, 10, true},               // the room it left
			{"$SYS/big", "123456789012", nil, 2, 10, true},
			{"b", "", nil, 1, 6, false},
		}},
		{"unlimited", retainLimits{count: -1, bytes: -1}, []step{
			{"a", strings.Repeat("x", 1000), nil, 1, 1001, true},
			{"b", "1", nil, 2, 1003, true},
		}},
		{"zero", retainLimits{count: 0, bytes: 0}, []step{
			{"a", "1", errRetainedCount, 0, 0, false},
			{"$SYS/a", "1", nil, 0, 0, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRetainer(nil)
			for i, st := range tt.steps {
				_, err := r.put(retainedMsg(st.topic, st.payload), tt.lim)
				if !errors.Is(err, st.err) || (err != nil) != (st.err != nil) {
					t.Fatalf("step %d (%s=%q): err %v, want %v", i, st.topic, st.payload, err, st.err)
				}
				if n, b := r.usage(); n != st.n || b != st.bytes {
					t.Fatalf("step %d (%s=%q): usage %d, %d; want %d, %d", i, st.topic, st.payload, n, b, st.n, st.bytes)
				}
				m, ok := r.msgs.Get(st.topic)
				if ok != st.kept || ok && string(m.Payload) != st.payload {
					t.Fatalf("step %d (%s=%q): retained %v %+v, want kept=%v", i, st.topic, st.payload, ok, m, st.kept)
				}
			}
		})
	}
}

// What the store is told: a refused new topic changes nothing, a refused
// replacement deletes the old message.
func TestRetainerLimitsStoreOps(t *testing.T) {
	t.Parallel()
	log := &opLog{}
	r := newRetainer(log)
	lim := retainLimits{count: 1, bytes: 5}
	r.put(retainedMsg("a", "12"), lim)     // put
	r.put(retainedMsg("b", "1"), lim)      // refused: count
	r.put(retainedMsg("a", "123456"), lim) // refused: bytes, old cleared
	r.put(retainedMsg("$SYS/s", "1"), lim) // not persisted
	r.put(retainedMsg("a", "1234"), lim)   // put again: the topic is new, there is room
	r.put(retainedMsg("a", ""), lim)       // delete
	var got []string
	for _, op := range log.ops {
		switch op.Kind {
		case OpRetainPut:
			got = append(got, "put "+op.Msg.Topic)
		case OpRetainDel:
			got = append(got, "del "+op.Topic)
		}
	}
	if want := "put a,del a,put a,del a"; strings.Join(got, ",") != want {
		t.Errorf("ops %v, want %s", got, want)
	}
}

// Properties count towards the byte limit, so they cannot carry what the
// payload may not; expired messages removed by match leave the totals.
func TestRetainedSizeAndExpiry(t *testing.T) {
	t.Parallel()
	m := retainedMsg("t", "pp")
	m.Props = &packet.Properties{ContentType: "ct", ResponseTopic: "rt", CorrelationData: []byte("cd"),
		User: []packet.UserProperty{{Key: "k", Value: "vv"}}}
	if got := retainedSize(m); got != 1+2+2+2+2+3 {
		t.Errorf("retainedSize = %d, want 12", got)
	}
	r := newRetainer(nil)
	old := retainedMsg("old", "x")
	old.SetExpires(time.Now().Add(-time.Second))
	r.put(old, retainLimits{count: 1, bytes: -1})
	if got := r.matching("#"); len(got) != 0 {
		t.Errorf("expired message matched: %v", got[0].Topic)
	}
	if n, b := r.usage(); n != 0 || b != 0 {
		t.Errorf("after expiry usage %d, %d; want 0, 0", n, b)
	}
	if _, err := r.put(retainedMsg("new", "y"), retainLimits{count: 1, bytes: -1}); err != nil {
		t.Errorf("expired message still counted: %v", err)
	}
}

// Over MaxRetained a retained PUBLISH is still delivered; only keeping it is
// refused. Replacing and clearing keep working, and clearing makes room.
func TestRetainedLimitDeliversButDoesNotKeep(t *testing.T) {
	t.Parallel()
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			s, addr := startServer(t, Options{MaxRetained: 2})
			sub := dial(t, addr, v)
			sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
			sub.Subscribe("r/#", 1)
			pub := dial(t, addr, v)
			pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
			id := uint16(0)
			publish := func(topic, payload string) {
				t.Helper()
				id++
				pub.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Retain: true, Payload: []byte(payload)})
				if a, ok := pub.Next(2 * time.Second).(*packet.Puback); !ok || a.ReasonCode != packet.Success {
					t.Fatalf("%s: got %+v, want PUBACK 0x00 (delivered to a subscriber)", topic, a)
				}
				m, ok := sub.Next(2 * time.Second).(*packet.Publish)
				if !ok || m.Topic != topic || string(m.Payload) != payload {
					t.Fatalf("subscriber got %+v, want %s=%q", m, topic, payload)
				}
				sub.Send(&packet.Puback{PacketID: m.PacketID})
			}
			publish("r/1", "one")
			publish("r/2", "two")
			publish("r/3", "three") // refused
			if st := s.Stats(); st.Retained != 2 || st.RetainedRefused != 1 {
				t.Fatalf("Retained %d, RetainedRefused %d; want 2, 1", st.Retained, st.RetainedRefused)
			}
			publish("r/1", "uno") // replace
			publish("r/2", "")    // clear
			publish("r/3", "tres")
			if st := s.Stats(); st.Retained != 2 || st.RetainedRefused != 1 || st.RetainedBytes != 3+3+3+4 {
				t.Fatalf("Retained %d, RetainedRefused %d, RetainedBytes %d; want 2, 1, 13", st.Retained, st.RetainedRefused, st.RetainedBytes)
			}
			late := dial(t, addr, v)
			late.Connect(&packet.Connect{ClientID: "late", CleanStart: true})
			late.Subscribe("r/#", 0)
			got := map[string]string{}
			for range 2 {
				m, ok := late.Next(2 * time.Second).(*packet.Publish)
				if !ok || !m.Retain {
					t.Fatalf("late subscriber got %+v, want a retained PUBLISH", m)
				}
				got[m.Topic] = string(m.Payload)
			}
			if fmt.Sprint(got) != "map[r/1:uno r/3:tres]" {
				t.Errorf("retained %v, want r/1=uno r/3=tres", got)
			}
		})
	}
}

// An MQTT 5 publisher learns of a refused retain (0x97) only when the
// publish had no effect at all: it matched no subscription. A failed PUBREC
// ends the QoS 2 exchange, so its packet id is free again at once. 3.1.1
// publishers, which cannot be told, get the plain acknowledgement.
func TestRetainedLimitReasonCodes(t *testing.T) {
	t.Parallel()
	s, addr := startServer(t, Options{MaxRetained: 1})
	pub := dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	ack := func(p *packet.Publish) packet.ReasonCode {
		t.Helper()
		pub.Send(p)
		switch a := pub.Next(2 * time.Second).(type) {
		case *packet.Puback:
			return a.ReasonCode
		case *packet.Pubrec:
			return a.ReasonCode
		default:
			t.Fatalf("got %+v, want PUBACK or PUBREC", a)
		}
		return 0
	}
	for _, c := range []struct {
		p    *packet.Publish
		want packet.ReasonCode
	}{
		{&packet.Publish{Topic: "a", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("x")}, packet.NoMatchingSubscribers}, // kept
		{&packet.Publish{Topic: "b", QoS: 1, PacketID: 2, Retain: true, Payload: []byte("x")}, packet.QuotaExceeded},
		{&packet.Publish{Topic: "b", QoS: 2, PacketID: 3, Retain: true, Payload: []byte("x")}, packet.QuotaExceeded},
		{&packet.Publish{Topic: "a", QoS: 2, PacketID: 4, Retain: true, Payload: []byte("y")}, packet.NoMatchingSubscribers}, // replaced
	} {
		if got := ack(c.p); got != c.want {
			t.Errorf("%s QoS %d: reason 0x%02X, want 0x%02X", c.p.Topic, c.p.QoS, byte(got), byte(c.want))
		}
	}
	pub.Send(&packet.Pubrel{PacketID: 4})
	if a, ok := pub.Next(2 * time.Second).(*packet.Pubcomp); !ok || a.ReasonCode != packet.Success {
		t.Fatalf("got %+v, want PUBCOMP 0x00", a)
	}

	// Packet id 3 was released by the failed PUBREC: reusing it delivers.
	sub := dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("b", 0)
	if got := ack(&packet.Publish{Topic: "b", QoS: 2, PacketID: 3, Retain: true, Payload: []byte("again")}); got != packet.Success {
		t.Errorf("reused packet id 3: reason 0x%02X, want 0x00 (delivered, not retained)", byte(got))
	}
	if m, ok := sub.Next(2 * time.Second).(*packet.Publish); !ok || string(m.Payload) != "again" {
		t.Fatalf("subscriber got %+v, want the reused id's message", m)
	}
	if st := s.Stats(); st.RetainedRefused != 3 || st.Retained != 1 {
		t.Errorf("RetainedRefused %d, Retained %d; want 3, 1", st.RetainedRefused, st.Retained)
	}

	old := dial(t, addr, packet.V311)
	old.Connect(&packet.Connect{ClientID: "old", CleanStart: true})
	old.Send(&packet.Publish{Topic: "c", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("x")})
	if _, ok := old.Next(2 * time.Second).(*packet.Puback); !ok {
		t.Fatal("3.1.1 publisher: no PUBACK")
	}
	old.Send(&packet.Publish{Topic: "c", QoS: 2, PacketID: 2, Retain: true, Payload: []byte("x")})
	if _, ok := old.Next(2 * time.Second).(*packet.Pubrec); !ok {
		t.Fatal("3.1.1 publisher: no PUBREC")
	}
	old.Send(&packet.Pubrel{PacketID: 2})
	if _, ok := old.Next(2 * time.Second).(*packet.Pubcomp); !ok {
		t.Fatal("3.1.1 publisher: no PUBCOMP")
	}
	if st := s.Stats(); st.RetainedRefused != 5 {
		t.Errorf("RetainedRefused %d, want 5", st.RetainedRefused)
	}
}

// retainedStore is a Store that starts with retained messages.
type retainedStore struct {
	opLog
	retained []*Message
}

func (st *retainedStore) Load() (*StoredState, error) {
	return &StoredState{Retained: st.retained}, nil
}

// Retained messages restored at start-up count towards the limits but are
// all kept, with a warning, when they are over them.
func TestRetainedRestoreOverLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     Options
		wantWarn bool
	}{
		{"under", Options{MaxRetained: 3, MaxRetainedBytes: 12}, false},
		{"count", Options{MaxRetained: 2}, true},
		{"bytes", Options{MaxRetainedBytes: 11}, true},
		{"unlimited", Options{MaxRetained: -1, MaxRetainedBytes: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &mqtttest.LogBuffer{}
			opts := tt.opts
			opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
			opts.SysInterval, opts.ExpirySweep = -1, -1
			opts.Store = &retainedStore{retained: []*Message{
				retainedMsg("r/1", "a"), retainedMsg("r/2", "b"), retainedMsg("r/3", "c"),
			}}
			s, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Shutdown(context.Background()) })
			if st := s.Stats(); st.Retained != 3 || st.RetainedBytes != 12 {
				t.Fatalf("Retained %d, RetainedBytes %d after restore; want 3, 12", st.Retained, st.RetainedBytes)
			}
			if got := strings.Contains(logs.String(), "restored retained messages exceed the retained limits"); got != tt.wantWarn {
				t.Errorf("warning logged: %v, want %v\n%s", got, tt.wantWarn, logs)
			}
			if !tt.wantWarn {
				return
			}
			if _, _, err, _ := s.route(retainedMsg("r/4", "d")); err == nil {
				t.Error("a new topic was retained over the limit")
			}
			if _, _, err, _ := s.route(retainedMsg("r/1", "A")); err != nil {
				t.Errorf("replacing a restored message: %v", err)
			}
			s.publish(retainedMsg("r/2", ""))
			s.publish(retainedMsg("r/3", ""))
			if _, _, err, _ := s.route(retainedMsg("r/4", "d")); err != nil {
				t.Errorf("a new topic after clearing under the limit: %v", err)
			}
		})
	}
}

// Refusals are logged the first time and every 1000th, and published under
// $SYS, whose own retained messages are exempt.
func TestRetainedRefusedLogAndSys(t *testing.T) {
	t.Parallel()
	logs := &mqtttest.LogBuffer{}
	s, err := New(Options{MaxRetained: 1, Logger: slog.New(slog.NewTextHandler(logs, nil)), SysInterval: -1, ExpirySweep: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	s.publish(retainedMsg("kept", "x"))
	for i := range 1000 {
		s.publish(retainedMsg(fmt.Sprint("t/", i), "x"))
	}
	if n := strings.Count(logs.String(), "not retaining message"); n != 2 {
		t.Errorf("%d refusal log lines, want 2 (the 1st and the 1000th):\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "refused_total=1000") || !strings.Contains(logs.String(), "topic=t/0") {
		t.Errorf("log lines lack the topic or the total:\n%s", logs)
	}
	s.publishSys()
	if n, _ := s.ret.usage(); n != 1 {
		t.Errorf("%d retained messages counted, want 1: $SYS does not count", n)
	}
	m, ok := s.ret.msgs.Get("$SYS/broker/retained messages/refused")
	if !ok || string(m.Payload) != "1000" {
		t.Errorf("$SYS refused figure: %v %+v, want 1000", ok, m)
	}
	if st := s.Stats(); st.RetainedRefused != 1000 {
		t.Errorf("RetainedRefused %d, want 1000", st.RetainedRefused)
	}
}

func TestRetainedLimitDefaults(t *testing.T) {
	t.Parallel()
	o := DefaultOptions()
	if o.MaxRetained != 1000000 || o.MaxRetainedBytes != 1<<30 {
		t.Errorf("defaults %d, %d; want 1000000, 1 GiB", o.MaxRetained, o.MaxRetainedBytes)
	}
	o = Options{MaxRetained: -1, MaxRetainedBytes: -5}
	o.fill()
	if o.MaxRetained != -1 || o.MaxRetainedBytes != -5 {
		t.Errorf("negative (unlimited) changed by fill: %d, %d", o.MaxRetained, o.MaxRetainedBytes)
	}
}
