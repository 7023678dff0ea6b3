package store_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/store"
)

func openDisk(t *testing.T, dir string) *store.Disk {
	t.Helper()
	d, err := store.Open(dir, store.DiskOptions{Ballast: -1, MinFree: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The publisher of a retained message (kept for check_retain_source) is
// stored with it and comes back after a reopen; a message without one
// comes back without one.
func TestRetainedPublisherSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := openDisk(t, dir)
	alice := broker.Publisher{ClientID: "alice-1", Username: "alice", Listener: "tenant"}
	bridge := broker.Publisher{ClientID: "$bridge/up", Internal: true}
	withPub := &broker.Message{ID: 1, Topic: "state/a", Payload: []byte("a"), From: "alice-1", QoS: 1, Retain: true}
	withPub.SetPublisher(alice)
	fromBridge := &broker.Message{ID: 2, Topic: "state/b", Payload: []byte("b"), From: "$bridge/up", Retain: true}
	fromBridge.SetPublisher(bridge)
	none := &broker.Message{ID: 3, Topic: "state/c", Payload: []byte("c"), From: "carol", Retain: true}
	tk := d.Append(broker.Op{Kind: broker.OpRetainPut, Msg: withPub}, broker.Op{Kind: broker.OpRetainPut, Msg: fromBridge},
		broker.Op{Kind: broker.OpRetainPut, Msg: none})
	if err := d.Wait(tk); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openDisk(t, dir)
	defer d.Close()
	st, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*broker.Publisher{"state/a": &alice, "state/b": &bridge, "state/c": nil}
	if len(st.Retained) != len(want) {
		t.Fatalf("%d retained messages after reopen, want %d", len(st.Retained), len(want))
	}
	for _, m := range st.Retained {
		p, ok := m.Publisher()
		w, known := want[m.Topic]
		switch {
		case !known:
			t.Errorf("unexpected retained %s", m.Topic)
		case w == nil && ok:
			t.Errorf("%s: publisher %+v, want none", m.Topic, p)
		case w != nil && (!ok || p != *w):
			t.Errorf("%s: publisher %+v (known=%v), want %+v", m.Topic, p, ok, *w)
		}
		if string(m.Payload) != m.Topic[len(m.Topic)-1:] || !m.Retain {
			t.Errorf("%s: payload %q retain %v", m.Topic, m.Payload, m.Retain)
		}
	}
}

// A data directory written before publishers were kept (testdata/v1: two
// retained messages, one with properties, and a persistent session with
// a subscription and a queued message; see testdata/README.md) loads
// whole, its retained messages without a publisher.
func TestLoadsStoreWithoutPublishers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join("testdata", "v1")
	files, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(src, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := openDisk(t, dir)
	defer d.Close()
	st, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	got := map[string]*broker.Message{}
	for _, m := range st.Retained {
		got[m.Topic] = m
		if p, ok := m.Publisher(); ok {
			t.Errorf("%s: publisher %+v from a store that kept none", m.Topic, p)
		}
		if !m.Created().Equal(created) || !m.Retain {
			t.Errorf("%s: created %v retain %v", m.Topic, m.Created(), m.Retain)
		}
	}
	if m := got["fixture/plain"]; m == nil || string(m.Payload) != "plain" || m.From != "alice" || m.QoS != 1 || m.Props != nil {
		t.Errorf("fixture/plain: %+v", m)
	}
	if m := got["fixture/props"]; m == nil || string(m.Payload) != "props" || m.From != "bob" || m.Props == nil || m.Props.ContentType != "text/plain" {
		t.Errorf("fixture/props: %+v", m)
	}
	if len(st.Sessions) != 1 {
		t.Fatalf("%d sessions, want keeper's", len(st.Sessions))
	}
	s := st.Sessions[0]
	if s.ClientID != "keeper" || s.Expiry != 0xFFFFFFFF || len(s.Subs) != 1 || s.Subs[0].Filter != "fixture/#" || s.Subs[0].Opts.QoS != 1 {
		t.Errorf("session: %+v", s)
	}
	if len(s.Queue) != 1 || s.Queue[0].Msg == nil || s.Queue[0].Msg.Topic != "fixture/queued" || string(s.Queue[0].Msg.Payload) != "queued" {
		t.Errorf("queue: %+v", s.Queue)
	}
}
