package store

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

func openT(t *testing.T, dir string, opts DiskOptions) *Disk {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = discard()
	}
	d, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func msg(id uint64, topic string) *broker.Message {
	m := &broker.Message{ID: id, Topic: topic, Payload: []byte(fmt.Sprintf("payload %d", id)), QoS: packet.QoS(id % 3),
		Retain: id%2 == 0, From: "pub"}
	m.SetCreated(time.Unix(1700000000, int64(id)))
	if id%4 == 0 {
		m.SetExpires(time.Unix(1800000000, 0))
		m.Props = &packet.Properties{ContentType: "text/plain", User: []packet.UserProperty{{Key: "k", Value: "v"}}}
		m.Props.Set(packet.PropContentType)
		m.Props.Set(packet.PropUserProperty)
	}
	if id%5 == 1 {
		m.SetOrigin(broker.Origin{ClientID: "pub", PacketID: uint16(id), Nonce: id + 1})
	}
	return m
}

// flat is a StoredState with messages as comparable values.
type flatMsg struct {
	ID               uint64
	Topic, From      string
	Payload          string
	QoS              packet.QoS
	Retain           bool
	Props            string
	Created, Expires int64
	Origin           broker.Origin
}

func flatten(m *broker.Message) *flatMsg {
	if m == nil {
		return nil
	}
	props := "none"
	if m.Props != nil {
		props = fmt.Sprintf("%x %q %v", m.Props.Present, m.Props.ContentType, m.Props.User)
	}
	return &flatMsg{m.ID, m.Topic, m.From, string(m.Payload), m.QoS, m.Retain, props,
		unixNano(m.Created()), unixNano(m.Expires()), m.Origin()}
}

func flatState(st *broker.StoredState) string {
	var b strings.Builder
	for _, s := range st.Sessions {
		fmt.Fprintf(&b, "session %q expiry=%d off=%d willAt=%d will=%+v\n", s.ClientID, s.Expiry,
			unixNano(s.DisconnectedAt), unixNano(s.WillAt), flatten(s.Will))
		for _, sub := range s.Subs {
			fmt.Fprintf(&b, "  sub %+v\n", sub)
		}
		for _, d := range s.Queue {
			fmt.Fprintf(&b, "  queue seq=%d qos=%d retain=%v subs=%v pid=%d rel=%v msg=%+v\n", d.Seq, d.QoS, d.Retain,
				d.SubIDs, d.PacketID, d.Released, flatten(d.Msg))
		}
		fmt.Fprintf(&b, "  inbound %v unrouted %v seen %v\n", s.Inbound, s.Unrouted, s.Seen)
	}
	for _, m := range st.Retained {
		fmt.Fprintf(&b, "retained %+v\n", flatten(m))
	}
	return b.String()
}

var pool sync.Map // id → *broker.Message: one message per id, as in the broker

func msgPool(id uint64, topic string) *broker.Message {
	m, _ := pool.LoadOrStore(id, msg(id, topic))
	return m.(*broker.Message)
}

// randomOps returns n random ops over a few clients, topics and messages.
func randomOps(r *rand.Rand, n int, nextID *uint64) []broker.Op {
	clients := []string{"a", "b", "a/b", "", "ü"}
	var ops []broker.Op
	for range n {
		c := clients[r.IntN(len(clients))]
		op := broker.Op{ClientID: c}
		switch k := r.IntN(20); {
		case k < 2:
			op.Kind = broker.OpSessionPut
			op.Session = broker.StoredSession{ClientID: c, Expiry: r.Uint32(), DisconnectedAt: time.Unix(int64(r.IntN(1e9)), 0)}
			if r.IntN(3) == 0 {
				*nextID++
				op.Session.Will, op.Session.WillAt = msg(*nextID, "will/"+c), time.Unix(1e9, 5)
			}
			for range r.IntN(3) {
				op.Session.Seen = append(op.Session.Seen, r.Uint64())
			}
		case k < 3:
			op.Kind = broker.OpSessionDel
		case k < 5:
			op.Kind = broker.OpSubPut
			op.Sub = broker.StoredSub{Filter: fmt.Sprintf("f/%d/#", r.IntN(4)), ID: r.Uint32N(100),
				Opts: packet.SubOptions{QoS: packet.QoS(r.IntN(3)), NoLocal: r.IntN(2) == 0, RetainAsPublished: true, RetainHandling: byte(r.IntN(3))}}
		case k < 6:
			op.Kind = broker.OpSubDel
			op.Sub.Filter = fmt.Sprintf("f/%d/#", r.IntN(4))
		case k < 11:
			op.Kind = broker.OpQueuePut
			*nextID++
			m := msgPool(*nextID-uint64(r.IntN(3)), "t") // sometimes an older message again
			op.Delivery = broker.StoredDelivery{Seq: uint64(r.IntN(20)) + 1, Msg: m, QoS: packet.QoS(r.IntN(3)),
				Retain: r.IntN(2) == 0, PacketID: uint16(r.IntN(3)), Released: r.IntN(4) == 0}
			if r.IntN(2) == 0 {
				op.Delivery.SubIDs = []uint32{1, r.Uint32N(1000)}
			}
		case k < 14:
			op.Kind = broker.OpQueueDel
			op.Delivery.Seq = uint64(r.IntN(20)) + 1
		case k < 15:
			op.Kind = broker.OpInboundPut
			op.PacketID = uint16(r.IntN(5) + 1)
			if r.IntN(2) == 0 {
				op.Nonce = r.Uint64() | 1
			}
		case k < 16:
			op.Kind = broker.OpInboundDel
			op.PacketID = uint16(r.IntN(5) + 1)
		case k < 18:
			op.Kind = broker.OpRetainPut
			*nextID++
			op.Msg = msgPool(*nextID, fmt.Sprintf("r/%d", r.IntN(6)))
		default:
			op.Kind = broker.OpRetainDel
			op.Topic = fmt.Sprintf("r/%d", r.IntN(6))
		}
		ops = append(ops, op)
	}
	return ops
}

// countMessages returns how many message bodies the store holds.
func countMessages(t *testing.T, d *Disk) int {
	n := 0
	if err := d.each(kindMessage, func(k, v []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// liveMessages counts the distinct messages a state's queues refer to.
func liveMessages(st *broker.StoredState) int {
	ids := map[uint64]bool{}
	for _, s := range st.Sessions {
		for _, d := range s.Queue {
			ids[d.Msg.ID] = true
		}
	}
	return len(ids)
}

// Random op sequences, applied to Disk and to Memory (the reference), load
// the same state after a reopen; the store holds exactly the message
// bodies still referenced.
func TestDiskMatchesMemory(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			dir := t.TempDir()
			d := openT(t, dir, DiskOptions{})
			if _, err := d.Load(); err != nil {
				t.Fatal(err)
			}
			mem := NewMemory()
			var id uint64
			for range 5 {
				var last broker.Ticket
				for range 10 {
					ops := randomOps(r, r.IntN(8)+1, &id)
					mem.Append(ops...)
					last = d.Append(ops...)
				}
				if err := d.Wait(last); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d = openT(t, dir, DiskOptions{})
			defer d.Close()
			got, err := d.Load()
			if err != nil {
				t.Fatal(err)
			}
			want, _ := mem.Load()
			if g, w := flatState(got), flatState(want); g != w {
				t.Fatalf("after reopen:\n%s\nwant:\n%s", g, w)
			}
			if n, live := countMessages(t, d), liveMessages(want); n != live {
				t.Errorf("store holds %d message bodies, %d referenced", n, live)
			}
		})
	}
}

// One body per message, however many queues refer to it; it goes with its
// last reference. Retained messages are stored apart, whole.
func TestDiskMessageRefcount(t *testing.T) {
	t.Parallel()
	d := openT(t, t.TempDir(), DiskOptions{})
	defer d.Close()
	m := msg(7, "x")
	var ops []broker.Op
	for _, c := range []string{"a", "b", "c"} {
		ops = append(ops, broker.Op{Kind: broker.OpSessionPut, ClientID: c, Session: broker.StoredSession{ClientID: c, Expiry: 60}},
			broker.Op{Kind: broker.OpQueuePut, ClientID: c, Delivery: broker.StoredDelivery{Seq: 1, Msg: m, QoS: 1}})
	}
	ops = append(ops, broker.Op{Kind: broker.OpRetainPut, Msg: m})
	steps := []struct {
		ops  []broker.Op
		want int
	}{
		{ops, 1},
		{[]broker.Op{{Kind: broker.OpQueueDel, ClientID: "a", Delivery: broker.StoredDelivery{Seq: 1}}}, 1},
		{[]broker.Op{{Kind: broker.OpSessionDel, ClientID: "b"}}, 1},
		{[]broker.Op{{Kind: broker.OpRetainDel, Topic: "x"}}, 1},
		{[]broker.Op{{Kind: broker.OpQueuePut, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 1, Msg: m, QoS: 1, PacketID: 9}}}, 1},
		{[]broker.Op{{Kind: broker.OpSessionDel, ClientID: "c"}}, 0},
	}
	for i, s := range steps {
		if err := d.Wait(d.Append(s.ops...)); err != nil {
			t.Fatal(err)
		}
		if n := countMessages(t, d); n != s.want {
			t.Fatalf("step %d: %d bodies, want %d", i, n, s.want)
		}
	}
}

func TestDiskVersionMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{discard()}})
	if err != nil {
		t.Fatal(err)
	}
	db.Set(versionKey, []byte("roost-store/99"), pebble.Sync)
	db.Close()
	_, err = Open(dir, DiskOptions{Logger: discard()})
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "roost-store/99") {
		t.Fatalf("Open: %v; want an error naming %s and the version", err, dir)
	}
}

func TestDiskNotAStore(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o600)
	dir := t.TempDir()
	db, _ := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{discard()}})
	db.Set([]byte("other"), []byte("data"), pebble.Sync)
	db.Close()
	for _, path := range []string{file, dir} {
		_, err := Open(path, DiskOptions{Logger: discard()})
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Open(%s): %v; want an error naming it", path, err)
		}
		t.Logf("%v", err)
	}
}

func TestDiskLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{})
	defer d.Close()
	_, err := Open(dir, DiskOptions{Logger: discard()})
	if err == nil || !strings.Contains(err.Error(), "store "+dir+" is locked by another process") {
		t.Fatalf("second Open: %v", err)
	}
}

// A store whose files were damaged is an error naming the directory, never
// a panic; a log cut short by a crash loses only its torn end.
func TestDiskCorrupt(t *testing.T) {
	t.Parallel()
	fill := func(t *testing.T, dir string, flush bool) {
		d := openT(t, dir, DiskOptions{})
		d.Load()
		var id uint64
		for range 20 {
			d.Wait(d.Append(randomOps(rand.New(rand.NewPCG(id, 2)), 50, &id)...))
		}
		if flush {
			d.db.Flush()
		}
		d.Close()
	}
	damage := map[string]func(t *testing.T, dir string){
		"manifest truncated": func(t *testing.T, dir string) {
			truncate(t, glob(t, dir, "MANIFEST-*"), 0.1)
		},
		"sstable garbled": func(t *testing.T, dir string) {
			garble(t, glob(t, dir, "*.sst"))
		},
		"manifest missing": func(t *testing.T, dir string) {
			os.Remove(glob(t, dir, "MANIFEST-*"))
		},
	}
	for name, f := range damage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			fill(t, dir, true)
			f(t, dir)
			d, err := Open(dir, DiskOptions{Logger: discard()})
			if err == nil {
				// Damage Pebble only notices when reading is still an
				// error from Open, which reads everything.
				d.Close()
				t.Fatal("Open of a damaged store succeeded")
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name %s", err, dir)
			}
			t.Logf("%.200s", err)
		})
	}
	t.Run("log tail torn", func(t *testing.T) {
		dir := t.TempDir()
		d := openT(t, dir, DiskOptions{})
		d.Load()
		ops := []broker.Op{{Kind: broker.OpRetainPut, Msg: msg(1, "kept")}}
		d.Wait(d.Append(ops...))
		d.db.LogData(make([]byte, 64<<10), pebble.Sync) // a large record to tear
		d.Close()
		truncate(t, glob(t, dir, "*.log"), 0.5)
		d = openT(t, dir, DiskOptions{})
		defer d.Close()
		st, _ := d.Load()
		if len(st.Retained) != 1 || st.Retained[0].Topic != "kept" {
			t.Fatalf("after torn log: %s", flatState(st))
		}
	})
}

func glob(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	return m[len(m)-1]
}

func truncate(t *testing.T, path string, frac float64) {
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(float64(info.Size())*frac)); err != nil {
		t.Fatal(err)
	}
}

func garble(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i += 97 {
		b[i] ^= 0x5A
	}
	os.WriteFile(path, b, 0o600)
}

// A nearly full disk makes Healthy refuse new messages; a full one makes
// Wait fail while ops are kept, and they commit once space returns.
func TestDiskNoSpace(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(1 << 30)
	dir := t.TempDir()
	// No ballast: MinFree would count it as free.
	d := openT(t, dir, DiskOptions{MinFree: 100, Ballast: -1, freeSpace: func(string) (int64, error) { return free.Load(), nil }})
	d.Load()
	put := func(id uint64) broker.Ticket {
		return d.Append(broker.Op{Kind: broker.OpRetainPut, Msg: msg(id, fmt.Sprint(id))})
	}
	if err := d.Wait(put(1)); err != nil {
		t.Fatal(err)
	}
	free.Store(80)
	d.health.check(d)
	if err := d.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Healthy with 80 bytes free: %v", err)
	}
	if err := d.Wait(put(2)); err != nil {
		t.Fatalf("Wait above the hard limit: %v", err)
	}
	free.Store(10)
	if err := d.Wait(put(3)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Wait with the disk full: %v", err)
	}
	free.Store(1 << 30)
	tk := put(4)
	deadline := time.Now().Add(5 * time.Second)
	for d.Wait(tk) != nil {
		if time.Now().After(deadline) {
			t.Fatal("ops not committed after space returned")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.health.check(d)
	if err := d.Healthy(); err != nil {
		t.Fatalf("Healthy after space returned: %v", err)
	}
	d.Close()
	d = openT(t, dir, DiskOptions{})
	defer d.Close()
	st, _ := d.Load()
	if len(st.Retained) != 4 {
		t.Fatalf("retained after reopen: %s", flatState(st))
	}
}

// Every sync mode keeps what was committed across a clean close.
func TestDiskSyncModes(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"always", "10ms", "none"} {
		t.Run(s, func(t *testing.T) {
			sy, err := ParseSync(s)
			if err != nil || sy.String() != s {
				t.Fatalf("ParseSync(%q) = %v, %v", s, sy, err)
			}
			dir := t.TempDir()
			d := openT(t, dir, DiskOptions{Sync: sy})
			d.Load()
			d.Wait(d.Append(broker.Op{Kind: broker.OpRetainPut, Msg: msg(1, "a")}))
			time.Sleep(20 * time.Millisecond)
			d.Close()
			d = openT(t, dir, DiskOptions{})
			defer d.Close()
			if st, _ := d.Load(); len(st.Retained) != 1 {
				t.Fatal("retained message lost")
			}
		})
	}
	for _, bad := range []string{"sometimes", "-1s", "0s"} {
		if _, err := ParseSync(bad); err == nil {
			t.Errorf("ParseSync(%q) succeeded", bad)
		}
	}
}

// Messages round-trip through the codec: with properties (packet.Decode)
// and without (decodePlain), with and without a payload.
func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	empty := msg(5, "empty/payload")
	empty.Payload = nil
	for _, m := range []*broker.Message{msg(4, "a/b"), msg(3, "plain/topic"), empty} {
		b, err := appendMessage(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMessage(b)
		if err != nil || !reflect.DeepEqual(flatten(got), flatten(m)) {
			t.Fatalf("decode = %+v, %v; want %+v", flatten(got), err, flatten(m))
		}
		for i := range b {
			if _, err := decodeMessage(b[:i]); err == nil {
				t.Fatalf("decoding %d of %d bytes succeeded", i, len(b))
			}
		}
	}
}

func discard() *slog.Logger {
	if os.Getenv("STORE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
