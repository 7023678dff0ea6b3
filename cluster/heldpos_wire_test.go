package cluster

import (
	"encoding/base64"
	"errors"
	"slices"
	"testing"
	"time"
)

// A handover's held places come back as they were sent; none is ""; bad
// or cut values are errWire, never a panic.
func TestHeldPosRoundTrip(t *testing.T) {
	since := time.Unix(0, 1_764_990_000_123_456_789)
	ps := []heldPos{
		{node: "n1", from: 103},
		{node: "n2", since: since, floor: since.Add(time.Second)},
		{node: "n=3 with, odd bytes\x00", from: 1 << 40, floor: since},
	}
	v := encodeHeldPos(ps)
	got, err := decodeHeldPos(v)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ps) {
		t.Fatalf("decoded %d places, want %d: %+v", len(got), len(ps), got)
	}
	for i, p := range ps {
		g := got[i]
		if g.node != p.node || g.from != p.from || !g.since.Equal(p.since) || !g.floor.Equal(p.floor) {
			t.Errorf("place %d: %+v, want %+v", i, g, p)
		}
	}
	if v := encodeHeldPos(nil); v != "" {
		t.Errorf("no places: %q, want no header", v)
	}
	if got, err := decodeHeldPos(""); got != nil || err != nil {
		t.Errorf("no header: %v, %v; want none", got, err)
	}
	raw, _ := base64.RawStdEncoding.DecodeString(v)
	for _, bad := range []string{
		"not base64!",
		base64.RawStdEncoding.EncodeToString([]byte{wireVersion + 9, 0}),
		base64.RawStdEncoding.EncodeToString(raw[:len(raw)-1]),
		base64.RawStdEncoding.EncodeToString(append(slices.Clone(raw), 0)),
		base64.RawStdEncoding.EncodeToString([]byte{wireVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}),
	} {
		if got, err := decodeHeldPos(bad); !errors.Is(err, errWire) {
			t.Errorf("%q: %+v, %v; want errWire", bad, got, err)
		}
	}
}

// heldPositions names the followers that follow the session, each at its
// place (or, for a session handed over here, the place it was given, when
// further on); followHanded puts a session on those followers at the
// places given, and an ordinary join forgets such a place.
func TestHeldPositionsAndFollowHanded(t *testing.T) {
	until := time.Now().Add(time.Minute)
	since := time.Now().Add(-time.Minute)
	s := &sessions{followers: map[string]*heldFollower{
		"n2": {node: "n2", ids: map[string]time.Time{"a": until, "b": until}, from: 40, floor: map[string]time.Time{"a": since}},
		"n1": {node: "n1", ids: map[string]time.Time{"a": until}, since: since},
		"n3": {node: "n3", ids: map[string]time.Time{"b": until}, from: 7},
	}}
	got := s.heldPositions("a")
	want := []heldPos{{node: "n1", since: since}, {node: "n2", from: 40, floor: since}}
	if !slices.EqualFunc(got, want, sameHeldPos) {
		t.Fatalf("places of a: %+v, want %+v", got, want)
	}
	if got := s.heldPositions("c"); got != nil {
		t.Errorf("places of c, followed nowhere: %+v", got)
	}

	// c handed over here: n2's follower reads again from 30 (another
	// session's place was 40), n3's from 9 gives c nothing before 9; n1's
	// reads by time, its floor the place; a place with neither a
	// sequence nor a time is no place.
	w := newHeldWait(func() {})
	s.followHanded("c", []heldPos{{node: "n2", from: 30}, {node: "n3", from: 9}, {node: "n1", since: since, floor: since}, {node: "n4"}}, until, w)
	if f := s.followers["n2"]; f.from != 30 || f.after["c"] != 30 {
		t.Errorf("n2 after c's handover: from %d, c after %d; want 30, 30", f.from, f.after["c"])
	}
	if f := s.followers["n3"]; f.from != 7 || f.after["c"] != 9 {
		t.Errorf("n3 after c's handover: from %d, c after %d; want 7 (b's), 9", f.from, f.after["c"])
	}
	if a, ok := s.followers["n1"].after["c"]; !ok || a != 0 || !s.followers["n1"].floor["c"].Equal(since) {
		t.Errorf("n1 after c's handover by time: after %d (%v), floor %v; want 0, the floor %v", a, ok, s.followers["n1"].floor["c"], since)
	}
	if _, ok := s.followers["n4"]; ok {
		t.Error("n4 followed for c: its place named neither a sequence nor a time")
	}
	if got, want := w.unreadFrom(), []string{"n1", "n2", "n3"}; !slices.Equal(got, want) {
		t.Errorf("c's wait: unread from %v, want %v", got, want)
	}
	// Handed on again: the place given, past the follower's own.
	want = []heldPos{{node: "n1", since: since, floor: since}, {node: "n2", from: 30}, {node: "n3", from: 9}}
	if got := s.heldPositions("c"); !slices.EqualFunc(got, want, sameHeldPos) {
		t.Errorf("places of c, handed over here: %+v, want %+v", got, want)
	}
	s.joinFollower("n3", "c", until, 12, since, time.Time{}, false, nil)
	if _, ok := s.followers["n3"].after["c"]; ok {
		t.Error("an ordinary join of c kept the place of its earlier handover")
	}
}

// A restored session settled here and still catching up with this node's
// own held subject is handed over with that subject's place: the first
// message not applied durably here. Not once the catch-up read to its
// end, nor for another session, nor when a follower here reads this
// node's subject for the session (taken from the stream here since: that
// place is its own).
func TestHeldPositionsOwnCatchUp(t *testing.T) {
	until := time.Now().Add(time.Minute)
	s := &sessions{n: &Node{cfg: Config{Node: "n1"}}, followers: map[string]*heldFollower{
		"n2": {node: "n2", ids: map[string]time.Time{"a": until}, from: 40},
	}}
	s.gate.next.Store(17)
	s.gate.catchOwn([]string{"a", "b"})
	if got, want := s.heldPositions("a"), []heldPos{{node: "n1", from: 17, copyHas: true}, {node: "n2", from: 40}}; !slices.EqualFunc(got, want, sameHeldPos) {
		t.Errorf("places of a, catching up: %+v, want %+v", got, want)
	}
	if got := s.heldPositions("c"); got != nil {
		t.Errorf("places of c, not restored here: %+v", got)
	}
	s.followers["n1"] = &heldFollower{node: "n1", ids: map[string]time.Time{"b": until}, from: 30}
	if got, want := s.heldPositions("b"), []heldPos{{node: "n1", from: 30}}; !slices.EqualFunc(got, want, sameHeldPos) {
		t.Errorf("places of b, followed here on n1's subject: %+v, want %+v", got, want)
	}
	s.gate.caughtOwn()
	if got, want := s.heldPositions("a"), []heldPos{{node: "n2", from: 40}}; !slices.EqualFunc(got, want, sameHeldPos) {
		t.Errorf("places of a, caught up: %+v, want %+v", got, want)
	}
}

func sameHeldPos(a, b heldPos) bool {
	return a.node == b.node && a.from == b.from && a.since.Equal(b.since) && a.floor.Equal(b.floor) && a.copyHas == b.copyHas
}

// Which places skip what is kept for a disowned copy (copyHas) travel
// beside the places, one mark each; none is ""; a value that does not fit
// the places is errWire and marks none.
func TestHeldPosCopyRoundTrip(t *testing.T) {
	ps := []heldPos{{node: "n1", from: 3}, {node: "n2", from: 9, copyHas: true}, {node: "n3", from: 1}}
	v := encodeHeldPosCopy(ps)
	if v != "010" {
		t.Errorf("marks %q, want %q", v, "010")
	}
	got := []heldPos{{node: "n1", from: 3}, {node: "n2", from: 9}, {node: "n3", from: 1}}
	if err := decodeHeldPosCopy(got, v); err != nil || !slices.EqualFunc(got, ps, sameHeldPos) {
		t.Errorf("decoded %+v, %v; want %+v", got, err, ps)
	}
	if v := encodeHeldPosCopy(got[:1]); v != "" {
		t.Errorf("no place marked: %q, want no header", v)
	}
	if err := decodeHeldPosCopy(got, ""); err != nil || !got[1].copyHas {
		t.Errorf("no header (an older node's answer): %v, and the places changed: %+v", err, got)
	}
	for _, bad := range []string{"01", "0100", "0x0"} {
		fresh := []heldPos{{node: "n1"}, {node: "n2"}, {node: "n3"}}
		if err := decodeHeldPosCopy(fresh, bad); !errors.Is(err, errWire) || slices.ContainsFunc(fresh, func(p heldPos) bool { return p.copyHas }) {
			t.Errorf("%q: %v, places %+v; want errWire and none marked", bad, err, fresh)
		}
	}
}

// A place that skips what is kept for a disowned copy (copyHas) puts the
// session on the follower so, and is named so again when the session is
// handed on before that follower read for it; an ordinary join of the
// session forgets it. Each such join wakes the follower for a read at
// once.
func TestFollowHandedCopyHas(t *testing.T) {
	until := time.Now().Add(time.Minute)
	s := &sessions{followers: map[string]*heldFollower{
		"n1": {node: "n1", ids: map[string]time.Time{"b": until}, from: 5, wake: make(chan struct{}, 1)},
		"n2": {node: "n2", ids: map[string]time.Time{"b": until}, from: 8, wake: make(chan struct{}, 1)},
	}}
	s.followHanded("a", []heldPos{{node: "n1", from: 12, copyHas: true}, {node: "n2", from: 8}}, until, nil)
	if !s.followers["n1"].copyHas["a"] || s.followers["n2"].copyHas["a"] {
		t.Errorf("copyHas after the handover: n1 %v, n2 %v; want true, false", s.followers["n1"].copyHas, s.followers["n2"].copyHas)
	}
	for _, node := range []string{"n1", "n2"} {
		if len(s.followers[node].wake) != 1 {
			t.Errorf("%s's follower not woken by the handover's join", node)
		}
	}
	s.followHanded("c", []heldPos{{node: "n1", from: 12}}, until, nil) // a second wake while one waits: no block
	want := []heldPos{{node: "n1", from: 12, copyHas: true}, {node: "n2", from: 8}}
	if got := s.heldPositions("a"); !slices.EqualFunc(got, want, sameHeldPos) {
		t.Errorf("places of a, handed on: %+v, want %+v", got, want)
	}
	if !s.follows("n1", "a") || s.follows("n3", "a") || s.follows("n1", "z") {
		t.Error("follows: want n1's follower reading for a only")
	}
	s.joinFollower("n1", "a", until, 12, time.Time{}, time.Time{}, false, nil)
	if s.followers["n1"].copyHas["a"] {
		t.Error("an ordinary join of a kept the copy mark of its earlier handover")
	}
}
