package store

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/roost-mqtt/roost/broker"
)

// scan reads the whole store into a StoredState and builds the committer's
// index. Message bodies that nothing refers to (none should exist) are
// deleted.
func (d *Disk) scan() (*broker.StoredState, error) {
	d.idx = newIndex()
	msgs := make(map[uint64]*broker.Message)
	err := d.each(kindMessage, func(k, v []byte) error {
		m, err := decodeMessage(v)
		if err != nil {
			return err
		}
		if len(k) != 9 || binary.BigEndian.Uint64(k[1:]) != m.ID {
			return fmt.Errorf("%w: message key %x holds message %d", errCorrupt, k, m.ID)
		}
		msgs[m.ID] = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	lookup := func(id uint64, what string) (*broker.Message, error) {
		m := msgs[id]
		if m == nil {
			return nil, fmt.Errorf("%w: %s refers to missing message %d", errCorrupt, what, id)
		}
		d.idx.refs[id]++
		return m, nil
	}
	st := &broker.StoredState{}
	err = d.each(kindRetained, func(k, v []byte) error {
		m, err := decodeMessage(v)
		if err != nil {
			return fmt.Errorf("retained %q: %w", k[1:], err)
		}
		if m.Topic != string(k[1:]) {
			return fmt.Errorf("%w: retained key %q holds topic %q", errCorrupt, k[1:], m.Topic)
		}
		st.Retained = append(st.Retained, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sessions, err := d.scanSessions(lookup)
	if err != nil {
		return nil, err
	}
	for _, s := range sessions {
		st.Sessions = append(st.Sessions, *s)
	}
	slices.SortFunc(st.Sessions, func(a, b broker.StoredSession) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return st, d.dropOrphans(msgs)
}

func (d *Disk) scanSessions(lookup func(uint64, string) (*broker.Message, error)) (map[string]*broker.StoredSession, error) {
	sessions := make(map[string]*broker.StoredSession)
	err := d.each(kindSession, func(k, v []byte) error {
		client, rest, err := splitClientKey(k)
		if err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: session key %q", errCorrupt, k)
		}
		s, err := decodeSession(client, v)
		if err != nil {
			return fmt.Errorf("session %q: %w", client, err)
		}
		sessions[client] = &s
		d.idx.sessions[client] = &idxSession{queue: make(map[uint64]uint64)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Records of a session come after it in no particular key order, so
	// each kind is read on its own; a record without its session is moot
	// (it cannot be written, but tolerate it).
	err = d.each(kindSub, func(k, v []byte) error {
		client, rest, err := splitClientKey(k)
		if err != nil {
			return err
		}
		s := sessions[client]
		if s == nil {
			return nil
		}
		sub, err := decodeSub(string(rest), v)
		if err != nil {
			return fmt.Errorf("session %q subscription %q: %w", client, rest, err)
		}
		s.Subs = append(s.Subs, sub)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = d.each(kindQueue, func(k, v []byte) error {
		client, rest, err := splitClientKey(k)
		if err != nil || len(rest) != 8 {
			return fmt.Errorf("%w: queue key %q", errCorrupt, k)
		}
		s := sessions[client]
		if s == nil {
			return nil
		}
		seq := binary.BigEndian.Uint64(rest)
		dl, id, err := decodeDelivery(seq, v)
		if err != nil {
			return fmt.Errorf("session %q delivery %d: %w", client, seq, err)
		}
		if dl.Msg, err = lookup(id, fmt.Sprintf("session %q delivery %d", client, seq)); err != nil {
			return err
		}
		d.idx.sessions[client].queue[seq] = id
		s.Queue = append(s.Queue, dl)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = d.each(kindInbound, func(k, v []byte) error {
		client, rest, err := splitClientKey(k)
		if err != nil || len(rest) != 2 || len(v) != 0 && len(v) != 8 {
			return fmt.Errorf("%w: inbound key %q", errCorrupt, k)
		}
		if s := sessions[client]; s != nil {
			pid := binary.BigEndian.Uint16(rest)
			s.Inbound = append(s.Inbound, pid)
			if len(v) == 8 {
				s.Unrouted = append(s.Unrouted, broker.InboundIntent{PacketID: pid, Nonce: binary.BigEndian.Uint64(v)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Origins of the deliveries put since the session's record
	// (keepOrigin), oldest first, after the record's own.
	err = d.each(kindOrigin, func(k, v []byte) error {
		client, rest, err := splitClientKey(k)
		if err != nil || len(rest) != 8 || len(v) != 8 {
			return fmt.Errorf("%w: origin key %q", errCorrupt, k)
		}
		if s := sessions[client]; s != nil {
			s.Seen = append(s.Seen, binary.BigEndian.Uint64(v))
			x := d.idx.sessions[client]
			n := binary.BigEndian.Uint64(rest)
			x.origins, x.nextOrigin = append(x.origins, n), n+1
		}
		return nil
	})
	return sessions, err
}

// each calls fn for every key of one kind, in key order. fn must copy what
// it keeps of k and v.
func (d *Disk) each(kind byte, fn func(k, v []byte) error) error {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		if err := fn(it.Key(), v); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	return it.Close()
}

// dropOrphans deletes message bodies without references.
func (d *Disk) dropOrphans(msgs map[uint64]*broker.Message) error {
	b := d.db.NewBatch()
	defer b.Close()
	for id := range msgs {
		if d.idx.refs[id] == 0 {
			b.Delete(messageKey(id), nil)
		}
	}
	if b.Empty() {
		return nil
	}
	return b.Commit(pebble.Sync)
}
