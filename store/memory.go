package store

import (
	"cmp"
	"slices"
	"sync"

	"github.com/roost-mqtt/roost/broker"
)

// Memory is an in-memory broker.Store. Every op is applied when appended,
// so Wait never waits. It is safe for concurrent use.
type Memory struct {
	mu       sync.Mutex
	sessions map[string]*memSession
	retained map[string]*broker.Message
	ticket   broker.Ticket
	closed   bool
}

type memSession struct {
	rec     broker.StoredSession
	subs    map[string]broker.StoredSub
	queue   map[uint64]broker.StoredDelivery
	inbound map[uint16]uint64 // packet id -> Op.Nonce
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{sessions: make(map[string]*memSession), retained: make(map[string]*broker.Message)}
}

// Load returns a copy of the stored state, sessions sorted by client id and
// queues by sequence.
func (m *Memory) Load() (*broker.StoredState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &broker.StoredState{}
	for _, ms := range m.sessions {
		rec := ms.rec
		for _, sub := range ms.subs {
			rec.Subs = append(rec.Subs, sub)
		}
		slices.SortFunc(rec.Subs, func(a, b broker.StoredSub) int { return cmp.Compare(a.Filter, b.Filter) })
		for _, d := range ms.queue {
			rec.Queue = append(rec.Queue, d)
		}
		slices.SortFunc(rec.Queue, func(a, b broker.StoredDelivery) int { return cmp.Compare(a.Seq, b.Seq) })
		for pid, nonce := range ms.inbound {
			rec.Inbound = append(rec.Inbound, pid)
			if nonce != 0 {
				rec.Unrouted = append(rec.Unrouted, broker.InboundIntent{PacketID: pid, Nonce: nonce})
			}
		}
		slices.Sort(rec.Inbound)
		slices.SortFunc(rec.Unrouted, func(a, b broker.InboundIntent) int { return cmp.Compare(a.PacketID, b.PacketID) })
		st.Sessions = append(st.Sessions, rec)
	}
	slices.SortFunc(st.Sessions, func(a, b broker.StoredSession) int { return cmp.Compare(a.ClientID, b.ClientID) })
	for _, msg := range m.retained {
		st.Retained = append(st.Retained, msg)
	}
	slices.SortFunc(st.Retained, func(a, b *broker.Message) int { return cmp.Compare(a.Topic, b.Topic) })
	return st, nil
}

// Append applies ops in order.
func (m *Memory) Append(ops ...broker.Op) broker.Ticket {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range ops {
		m.apply(&ops[i])
	}
	m.ticket++
	return m.ticket
}

func (m *Memory) apply(op *broker.Op) {
	switch op.Kind {
	case broker.OpSessionPut:
		ms := m.session(op.ClientID, true)
		ms.rec = op.Session
		ms.rec.Subs, ms.rec.Queue, ms.rec.Inbound = nil, nil, nil
	case broker.OpSessionDel:
		delete(m.sessions, op.ClientID)
	case broker.OpRetainPut:
		m.retained[op.Msg.Topic] = op.Msg
	case broker.OpRetainDel:
		delete(m.retained, op.Topic)
	}
	ms := m.session(op.ClientID, false)
	if ms == nil {
		return // ops for a session the store does not hold are moot
	}
	switch op.Kind {
	case broker.OpSubPut:
		ms.subs[op.Sub.Filter] = op.Sub
	case broker.OpSubDel:
		delete(ms.subs, op.Sub.Filter)
	case broker.OpQueuePut:
		if _, had := ms.queue[op.Delivery.Seq]; !had && op.Delivery.Msg != nil {
			// Its Origin stays with the session after the delivery's
			// end, as on disk (keepOrigin).
			if o := op.Delivery.Msg.Origin(); !o.IsZero() {
				ms.rec.Seen = append(slices.Clip(ms.rec.Seen), o.Hash())
				if len(ms.rec.Seen) > seenKeep {
					ms.rec.Seen = ms.rec.Seen[len(ms.rec.Seen)-seenKeep:]
				}
			}
		}
		ms.queue[op.Delivery.Seq] = op.Delivery
	case broker.OpQueueDel:
		delete(ms.queue, op.Delivery.Seq)
	case broker.OpInboundPut:
		ms.inbound[op.PacketID] = op.Nonce
	case broker.OpInboundDel:
		delete(ms.inbound, op.PacketID)
	}
}

func (m *Memory) session(id string, create bool) *memSession {
	ms := m.sessions[id]
	if ms == nil && create {
		ms = &memSession{subs: make(map[string]broker.StoredSub), queue: make(map[uint64]broker.StoredDelivery),
			inbound: make(map[uint16]uint64)}
		m.sessions[id] = ms
	}
	return ms
}

// Wait returns at once: appended ops are already applied.
func (m *Memory) Wait(broker.Ticket) error { return nil }

// Close is a no-op; the state stays available to a new Server.
func (m *Memory) Close() error { return nil }

var _ broker.Store = (*Memory)(nil)
