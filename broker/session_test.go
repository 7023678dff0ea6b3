package broker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// opLog is a Store that remembers the ops appended to it.
type opLog struct {
	mu  sync.Mutex
	ops []Op
}

func (l *opLog) Load() (*StoredState, error) { return &StoredState{}, nil }
func (l *opLog) Wait(Ticket) error           { return nil }
func (l *opLog) Close() error                { return nil }
func (l *opLog) Append(ops ...Op) Ticket {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, ops...)
	return Ticket(len(l.ops))
}

// deleted returns the sequence numbers of the deliveries deleted so far.
func (l *opLog) deleted() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var seqs []uint64
	for _, op := range l.ops {
		if op.Kind == OpQueueDel {
			seqs = append(seqs, op.Delivery.Seq)
		}
	}
	return seqs
}

// offlineSession returns a server with opts and a persistent session of it
// that has no connection, so everything delivered to it is queued.
func offlineSession(t *testing.T, opts Options) (*Server, *session, *opLog) {
	t.Helper()
	log := &opLog{}
	opts.Store, opts.Logger, opts.SysInterval = log, slog.New(slog.DiscardHandler), -1
	if opts.ExpirySweep == 0 {
		opts.ExpirySweep = -1
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	ss := newSession(s, "offline")
	ss.expiry = 3600
	s.sessions[ss.id] = ss
	return s, ss, log
}

// queued lists a session's queue as "topic:qos" items.
func queued(ss *session) []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var out []string
	for _, ob := range ss.queue[ss.qhead:] {
		out = append(out, ob.msg.Topic+":"+string(rune('0'+ob.qos)))
	}
	return out
}

// The byte limit has the drop policy of the count limit: the oldest queued
// QoS 0 messages make room if they can, otherwise the new message is
// dropped; every drop is counted and deleted from the store.
func TestQueueByteLimit(t *testing.T) {
	t.Parallel()
	type item struct {
		topic string
		qos   packet.QoS
		size  int // topic + payload bytes
	}
	tests := []struct {
		name     string
		maxN     int
		in       []item
		want     []string
		dropped  uint64
		deleted  int // evicted queue entries deleted from the store
		wantSize int
	}{
		{"fits", 10, []item{{"a", 1, 40}, {"b", 1, 40}}, []string{"a:1", "b:1"}, 0, 0, 80},
		{"new dropped", 10, []item{{"a", 1, 40}, {"b", 1, 40}, {"c", 1, 40}}, []string{"a:1", "b:1"}, 1, 0, 80},
		{"oldest qos0 evicted", 10, []item{{"a", 0, 40}, {"b", 1, 40}, {"c", 1, 40}}, []string{"b:1", "c:1"}, 1, 1, 80},
		{"several qos0 evicted", 10, []item{{"a", 0, 30}, {"b", 0, 30}, {"c", 0, 30}, {"d", 1, 70}},
			[]string{"c:0", "d:1"}, 2, 2, 100},
		{"qos0 too small to make room", 10, []item{{"a", 0, 10}, {"b", 1, 80}, {"c", 1, 40}},
			[]string{"a:0", "b:1"}, 1, 0, 90},
		{"larger than the limit", 10, []item{{"a", 0, 10}, {"big", 1, 101}}, []string{"a:0"}, 1, 0, 10},
		{"count limit", 2, []item{{"a", 0, 1}, {"b", 1, 1}, {"c", 1, 1}, {"d", 1, 1}}, []string{"b:1", "c:1"}, 2, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ss, log := offlineSession(t, Options{MaxQueued: tt.maxN, MaxQueuedBytes: 100, QueueQoS0: true})
			for _, it := range tt.in {
				m := &Message{ID: s.msgID.Add(1), Topic: it.topic, Payload: []byte(strings.Repeat("x", it.size-len(it.topic))), QoS: it.qos}
				ss.deliver(m, it.qos, false, nil)
			}
			if got := queued(ss); strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("queue %v, want %v", got, tt.want)
			}
			if n := s.Stats().Dropped[DropQueueFull]; n != tt.dropped {
				t.Errorf("%d dropped, want %d", n, tt.dropped)
			}
			if n := len(log.deleted()); n != tt.deleted {
				t.Errorf("%d queue entries deleted from the store, want %d", n, tt.deleted)
			}
			if ss.qbytes != tt.wantSize {
				t.Errorf("queue holds %d bytes by its count, want %d", ss.qbytes, tt.wantSize)
			}
		})
	}
}

// A sweep removes expired queued messages of offline sessions only, keeps
// the rest in order, deletes what it removed from the store, and stops at
// its budget to continue with the sessions it did not get to.
func TestSweepExpired(t *testing.T) {
	t.Parallel()
	s, ss, log := offlineSession(t, Options{})
	now := time.Now()
	for i, ttl := range []time.Duration{0, time.Second, 0, time.Hour, time.Second} {
		m := &Message{ID: s.msgID.Add(1), Topic: string(rune('a' + i)), Payload: []byte("p"), QoS: 1}
		if ttl > 0 {
			m.SetExpires(now.Add(ttl))
		}
		ss.deliver(m, 1, false, nil)
	}
	online := newSession(s, "online")
	online.expiry = 3600
	online.conn = &conn{} // never written to: nothing is delivered below
	m := &Message{ID: s.msgID.Add(1), Topic: "z", QoS: 1}
	m.SetExpires(now.Add(time.Second))
	online.queue = append(online.queue, &outbound{msg: m, qos: 1})
	online.requeue(online.queue[0])

	later := now.Add(2 * time.Second)
	if rest := s.sweep([]*session{ss, online}, later, 1); len(rest) != 1 || rest[0] != online {
		t.Fatalf("a sweep with a budget of 1 left %d sessions, want the second", len(rest))
	}
	if got := strings.Join(queued(ss), " "); got != "a:1 c:1 d:1" {
		t.Errorf("queue after the sweep %q, want the messages that had not expired", got)
	}
	if got := log.deleted(); len(got) != 2 || got[0] != 2 || got[1] != 5 {
		t.Errorf("store deletes %v, want deliveries 2 and 5", got)
	}
	if n := s.Stats().Dropped[DropExpired]; n != 2 {
		t.Errorf("%d dropped as expired, want 2", n)
	}
	if ss.qexpiring != 1 || ss.qbytes != 3*2 {
		t.Errorf("qexpiring %d, qbytes %d; want 1 and 6", ss.qexpiring, ss.qbytes)
	}
	if rest := s.sweep([]*session{online}, later, 1); rest != nil || online.queueLen() != 1 {
		t.Errorf("an online session's queue was swept: %d left", online.queueLen())
	}
}

// gatedStore is a Store whose ops become durable only when the test says.
type gatedStore struct {
	opLog
	durable  Ticket // every op up to this one is durable
	released bool
	cond     *sync.Cond // on opLog.mu
}

func newGatedStore() *gatedStore {
	g := &gatedStore{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// hold makes ops appended from now on wait for release.
func (g *gatedStore) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.durable, g.released = Ticket(len(g.ops)), false
}

func (g *gatedStore) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.released = true
	g.cond.Broadcast()
}

func (g *gatedStore) Wait(t Ticket) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for t > g.durable && !g.released {
		g.cond.Wait()
	}
	return nil
}

// The publisher's PUBACK waits for the store; the subscriber's QoS 1
// PUBLISH does not (a crash could only repeat it), a QoS 2 PUBLISH does (a
// crash must not send it again under another packet id).
func TestDurabilityWaits(t *testing.T) {
	t.Parallel()
	for _, qos := range []packet.QoS{1, 2} {
		t.Run(string(rune('0'+qos)), func(t *testing.T) {
			g := newGatedStore()
			g.released = true
			_, addr := startServer(t, Options{Store: g})
			t.Cleanup(g.release) // before the server's shutdown, which drains
			sub := dial(t, addr, packet.V5)
			cp := &packet.Connect{ClientID: "sub", KeepAlive: 60}
			cp.Properties.SessionExpiry = 60
			cp.Properties.Set(packet.PropSessionExpiry)
			sub.Connect(cp)
			sub.Subscribe("d", qos)

			g.hold()
			pub := dial(t, addr, packet.V5)
			pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
			pub.Send(&packet.Publish{Topic: "d", QoS: qos, PacketID: 1, Payload: []byte("x")})
			got := sub.Collect(300 * time.Millisecond)
			if qos == 1 && len(got) != 1 {
				t.Fatalf("QoS 1 subscriber got %v before the store was durable, want the PUBLISH", got)
			}
			if qos == 2 && len(got) != 0 {
				t.Fatalf("QoS 2 subscriber got %v before the store was durable, want nothing", got)
			}
			if ack := pub.Collect(100 * time.Millisecond); len(ack) != 0 {
				t.Fatalf("publisher got %v before the store was durable", ack)
			}
			g.release()
			if p := pub.Next(time.Second); p == nil {
				t.Fatal("no acknowledgement once durable")
			}
			if qos == 2 {
				if _, ok := sub.Next(time.Second).(*packet.Publish); !ok {
					t.Fatal("QoS 2 subscriber got no PUBLISH once durable")
				}
			}
		})
	}
}
