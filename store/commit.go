package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/roost-mqtt/roost/broker"
)

// index is what the committer must know to turn ops into writes without
// reading the database: which sessions exist, which message each queue
// entry refers to, and how many queue entries refer to each message body
// (it is deleted with the last). Retained messages are stored whole under
// their topic and need no index: one message per topic, replaced or
// deleted by topic.
type index struct {
	refs     map[uint64]int32
	sessions map[string]*idxSession
	buf      []byte
}

type idxSession struct {
	queue map[uint64]uint64 // seq → message id
	// origins: the numbers of the session's origin keys, oldest first.
	origins []uint64
	// nextOrigin numbers the next origin key.
	nextOrigin uint64
}

// seenKeep is how many Origins of deliveries a session's store keeps past
// their deletion: as many as a session remembers (broker's seenMax).
const seenKeep = 1024

func newIndex() index {
	return index{refs: make(map[uint64]int32), sessions: make(map[string]*idxSession)}
}

// commitLoop is the committer: it runs until Close, committing pending ops
// in one batch at a time.
func (d *Disk) commitLoop() {
	defer close(d.done)
	var tick <-chan time.Time
	if d.opts.Sync.Mode == SyncInterval {
		t := time.NewTicker(d.opts.Sync.Interval)
		defer t.Stop()
		tick = t.C
	}
	var retry <-chan time.Time
	for {
		d.mu.Lock()
		ops, upto := d.takeLocked()
		closed, held := d.closed, len(d.pending)
		d.mu.Unlock()
		if len(ops) == 0 {
			if closed {
				if held > 0 {
					// Closed while a QoS 2 message was being routed
					// (the broker closes the store after its
					// connections, so this is a bug of the caller):
					// committing half of its ops would be worse than
					// none. None of them was acknowledged.
					d.log.Error("store closed while held; ops appended since the hold are not committed", "dir", d.dir, "ops", held)
				}
				return
			}
			select {
			case <-d.wake:
			case <-retry:
				retry = nil
			case <-tick:
				d.syncInterval()
			}
			continue
		}
		if err := d.health.check(d); err != nil {
			// Too little space to write safely: keep the ops for when
			// space returns, and fail the Waits meanwhile.
			d.mu.Lock()
			d.putBackLocked(ops)
			d.failing = err
			d.cond.Broadcast()
			d.mu.Unlock()
			if closed {
				return
			}
			retry = time.After(time.Second)
			select {
			case <-retry:
			case <-d.wake:
				// Close, or new ops; either way check again, but not
				// more often than the retry unless closing.
			}
			continue
		}
		if err := d.commit(ops); err != nil {
			// Not written: keep the ops for the next try and fail the
			// Waits meanwhile, as for a full disk.
			d.log.Error("store commit failed: refusing new QoS 1/2 messages and failing the acknowledgements that wait for it; retrying",
				"dir", d.dir, "ops", len(ops), "err", err)
			d.mu.Lock()
			d.putBackLocked(ops)
			d.setErr(&d.commitErr, fmt.Errorf("%w: commit: %w", ErrWriteFailed, err))
			d.cond.Broadcast()
			d.mu.Unlock()
			if closed {
				return
			}
			// New ops do not hurry the next try: each rebuilds the index.
			select {
			case <-time.After(time.Second):
			case <-d.closing:
			}
			continue
		}
		d.mu.Lock()
		if d.commitErr != nil {
			d.log.Info("store commits work again", "dir", d.dir)
		}
		d.written, d.failing = upto, nil
		d.setErr(&d.commitErr, nil)
		if d.opts.Sync.Mode != SyncAlways {
			d.durable = upto
		}
		d.cond.Broadcast()
		d.mu.Unlock()
		select {
		case d.syncReq <- struct{}{}:
		default:
		}
	}
}

// syncLoop makes written ops durable under SyncAlways: one fsync of the log
// covers every batch written before it, so while it runs the committer
// writes the next batch, and the next fsync covers all of those.
func (d *Disk) syncLoop() {
	defer close(d.synced)
	for {
		_, ok := <-d.syncReq
		d.mu.Lock()
		target := d.written
		d.mu.Unlock()
		if target > d.durableLoad() {
			err := d.syncLog()
			d.mu.Lock()
			if err != nil {
				// What the failed sync covered may or may not be on
				// disk: it is never acknowledged. The next sync that
				// works ends the failing state.
				d.log.Error("store sync failed: failing the acknowledgements that wait for it", "dir", d.dir, "err", err)
				d.setErr(&d.syncErr, fmt.Errorf("%w: sync: %w", ErrWriteFailed, err))
				d.poisonLocked(d.durable, target, d.syncErr)
			} else {
				d.setErr(&d.syncErr, nil)
			}
			// Past the poisoned tickets too, so later ones are not
			// held behind them.
			d.durable = max(d.durable, target)
			d.cond.Broadcast()
			d.mu.Unlock()
		}
		if !ok {
			return
		}
	}
}

func (d *Disk) durableLoad() broker.Ticket {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.durable
}

// syncLog makes everything written to the log durable.
func (d *Disk) syncLog() error {
	if d.opts.inject != nil {
		if err := d.opts.inject("sync"); err != nil {
			return err
		}
	}
	return d.db.LogData(nil, pebble.Sync)
}

// syncInterval is SyncInterval's periodic sync. What it covers was
// acknowledged already; a failure is logged and makes the store refuse
// new messages until a sync works.
func (d *Disk) syncInterval() {
	err := d.syncLog()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.log.Error("store sync failed; refusing new QoS 1/2 messages until one works", "dir", d.dir, "err", err)
		d.setErr(&d.syncErr, fmt.Errorf("%w: sync: %w", ErrWriteFailed, err))
		return
	}
	d.setErr(&d.syncErr, nil)
}

// commit writes ops as one batch to the log, without waiting for an fsync
// (syncLoop does that). Failed writes of the log reach Pebble only after
// Close gave up on them (see guardFS), so an error here comes from Pebble
// itself; the index, updated for ops that were not written, is rebuilt
// from the database before the next try.
func (d *Disk) commit(ops []broker.Op) error {
	if d.stale {
		if _, err := d.scan(); err != nil {
			return fmt.Errorf("rebuilding the index: %w", err)
		}
		d.stale = false
	}
	b := d.db.NewBatch()
	defer b.Close()
	for i := range ops {
		d.apply(b, &ops[i])
	}
	var err error
	if d.opts.inject != nil {
		err = d.opts.inject("commit")
	}
	if err == nil {
		err = b.Commit(pebble.NoSync)
	}
	if err != nil {
		d.stale = true
	}
	return err
}

func (d *Disk) apply(b *pebble.Batch, op *broker.Op) {
	x := &d.idx
	switch op.Kind {
	case broker.OpSessionPut:
		if x.sessions[op.ClientID] == nil {
			x.sessions[op.ClientID] = &idxSession{queue: make(map[uint64]uint64)}
		}
		rec := op.Session
		var err error
		if x.buf, err = appendSession(x.buf[:0], &rec); err != nil {
			d.log.Error("store: cannot encode session; not stored", "client_id", op.ClientID, "err", err)
			return
		}
		b.Set(clientKey(kindSession, op.ClientID), x.buf, nil)
		// The record's Seen holds every Origin the session got so far:
		// the kept ones are in it.
		if s := x.sessions[op.ClientID]; len(s.origins) > 0 {
			p := clientKey(kindOrigin, op.ClientID)
			b.DeleteRange(p, prefixEnd(p), nil)
			s.origins = s.origins[:0]
		}
		return
	case broker.OpSessionDel:
		d.deleteSession(b, op.ClientID)
		return
	case broker.OpRetainPut:
		var err error
		if x.buf, err = appendMessage(x.buf[:0], op.Msg); err != nil {
			d.log.Error("store: cannot encode retained message; not stored", "topic", op.Msg.Topic, "err", err)
			return
		}
		b.Set(retainedKey(op.Msg.Topic), x.buf, nil)
		return
	case broker.OpRetainDel:
		b.Delete(retainedKey(op.Topic), nil)
		return
	}
	s := x.sessions[op.ClientID]
	if s == nil {
		return // ops for a session the store does not hold are moot
	}
	switch op.Kind {
	case broker.OpSubPut:
		b.Set(subKey(op.ClientID, op.Sub.Filter), appendSub(x.buf[:0], &op.Sub), nil)
	case broker.OpSubDel:
		b.Delete(subKey(op.ClientID, op.Sub.Filter), nil)
	case broker.OpQueuePut:
		dl := &op.Delivery
		old, had := s.queue[dl.Seq]
		d.ref(b, dl.Msg)
		s.queue[dl.Seq] = dl.Msg.ID
		b.Set(queueKey(op.ClientID, dl.Seq), appendDelivery(x.buf[:0], dl), nil)
		if had {
			d.unref(b, old)
		} else if o := dl.Msg.Origin(); !o.IsZero() {
			d.keepOrigin(b, op.ClientID, s, o.Hash())
		}
	case broker.OpQueueDel:
		if old, had := s.queue[op.Delivery.Seq]; had {
			delete(s.queue, op.Delivery.Seq)
			b.Delete(queueKey(op.ClientID, op.Delivery.Seq), nil)
			d.unref(b, old)
		}
	case broker.OpInboundPut:
		// The value is the id's nonce while its routing is not
		// confirmed (broker.Op.Nonce), empty once it is.
		var v []byte
		if op.Nonce != 0 {
			v = binary.BigEndian.AppendUint64(nil, op.Nonce)
		}
		b.Set(inboundKey(op.ClientID, op.PacketID), v, nil)
	case broker.OpInboundDel:
		b.Delete(inboundKey(op.ClientID, op.PacketID), nil)
	}
}

// keepOrigin keeps the Origin (hash h) of a delivery just put in client's
// queue past the delivery's deletion, until the next session record
// (whose Seen has it): a QoS 2 message the client completed is not given
// to it again under its Origin after a restart (a held copy, a resend),
// as the replicated ops keep it (package cluster's replay). The oldest go
// past seenKeep.
func (d *Disk) keepOrigin(b *pebble.Batch, client string, s *idxSession, h uint64) {
	b.Set(originKey(client, s.nextOrigin), binary.BigEndian.AppendUint64(nil, h), nil)
	s.origins = append(s.origins, s.nextOrigin)
	s.nextOrigin++
	if len(s.origins) > seenKeep {
		b.Delete(originKey(client, s.origins[0]), nil)
		s.origins = s.origins[1:]
	}
}

// deleteSession removes a session with its subscriptions, queue and
// inbound ids, and releases its references to messages.
func (d *Disk) deleteSession(b *pebble.Batch, client string) {
	s := d.idx.sessions[client]
	if s == nil {
		return
	}
	delete(d.idx.sessions, client)
	for _, id := range s.queue {
		d.unref(b, id)
	}
	b.Delete(clientKey(kindSession, client), nil)
	for _, kind := range []byte{kindSub, kindQueue, kindInbound, kindOrigin} {
		p := clientKey(kind, client)
		b.DeleteRange(p, prefixEnd(p), nil)
	}
}

// ref adds a reference to m, storing its body with the first.
func (d *Disk) ref(b *pebble.Batch, m *broker.Message) {
	x := &d.idx
	x.refs[m.ID]++
	if x.refs[m.ID] > 1 {
		return
	}
	buf, err := appendMessage(x.buf[:0], m)
	if err != nil {
		d.log.Error("store: cannot encode message; not stored", "topic", m.Topic, "err", err)
		return
	}
	x.buf = buf
	b.Set(messageKey(m.ID), buf, nil)
}

// unref drops a reference to message id, deleting its body with the last.
func (d *Disk) unref(b *pebble.Batch, id uint64) {
	x := &d.idx
	if x.refs[id]--; x.refs[id] > 0 {
		return
	}
	delete(x.refs, id)
	b.Delete(messageKey(id), nil)
}
