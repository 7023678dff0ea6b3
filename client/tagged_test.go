package client

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A tagged QoS 2 publish stays in the FileStore, as completed, after
// PUBCOMP; a new Client on that store reports it (Restored) until Forget,
// which deletes it. Against Roost and mosquitto, 5 and 3.1.1.
func TestTaggedPublishKeptUntilForget(t *testing.T) {
	t.Parallel()
	forTargets(t, func(t *testing.T, tg target, v packet.Version) {
		dir := t.TempDir()
		st, err := NewFileStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, tg.URL(), v, func(o *Options) { o.ClientID = "tagged"; o.Store = st })
		tok, err := c.PublishAsyncTagged(Message{Topic: "tag/1", QoS: 2, Payload: []byte("x")}, 42)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tok.Wait(testCtx(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		recs, err := st.Load()
		if err != nil || len(recs) != 1 || recs[0].Tag != 42 || !recs[0].Completed {
			t.Fatalf("store after PUBCOMP: %+v %v", recs, err)
		}
		if _, err := c.PublishAsyncTagged(Message{Topic: "tag/0", QoS: 0}, 1); err == nil {
			t.Error("a tagged QoS 0 publish was accepted")
		}

		st2, _ := NewFileStore(dir)
		c2, err := New(Options{Servers: []string{tg.URL()}, Version: v, ClientID: "tagged", Store: st2})
		if err != nil {
			t.Fatal(err)
		}
		if r := c2.Restored(); len(r) != 1 || r[0].Tag != 42 || !r[0].Completed || r[0].Token != nil {
			t.Fatalf("Restored: %+v", r)
		}
		if !c2.Forget(42) || c2.Forget(42) {
			t.Fatal("Forget: want true once, then false")
		}
		if recs, _ := st2.Load(); len(recs) != 0 {
			t.Fatalf("store after Forget: %+v", recs)
		}
	})
}

// FileStore keeps a record's tag and completed flag, and reads records
// written before tags existed.
func TestFileStoreTagRoundTrip(t *testing.T) {
	t.Parallel()
	st, err := NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []StoredPublish{
		{Seq: 1, PacketID: 3, Message: Message{Topic: "a", QoS: 1, Payload: []byte("p")}},
		{Seq: 2, PacketID: 4, Released: true, Tag: 1<<40 + 5, Message: Message{Topic: "b", QoS: 2}},
		{Seq: 3, Tag: 9, Completed: true},
	} {
		if err := st.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := st.Load()
	if err != nil || len(recs) != 3 {
		t.Fatalf("Load: %+v %v", recs, err)
	}
	if r := recs[0]; r.Tag != 0 || r.Completed || r.PacketID != 3 || r.Message.Topic != "a" || string(r.Message.Payload) != "p" {
		t.Errorf("untagged: %+v", r)
	}
	if r := recs[1]; r.Tag != 1<<40+5 || !r.Released || r.PacketID != 4 || r.Message.Topic != "b" || r.Message.QoS != 2 {
		t.Errorf("tagged: %+v", r)
	}
	if r := recs[2]; r.Tag != 9 || !r.Completed {
		t.Errorf("completed: %+v", r)
	}
}
