package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/roost-mqtt/roost/packet"
)

// Store persists outgoing QoS 1/2 publishes from the moment Publish
// accepts them until their flow completes, so that a new Client created
// with the same Store (after a process restart) sends them again. Records
// are keyed by Seq, which orders them. Implementations must be safe for
// concurrent use; Put replaces the record with the same Seq.
type Store interface {
	Put(r StoredPublish) error
	Delete(seq uint64) error
	Load() ([]StoredPublish, error)
}

// StoredPublish is one persisted outgoing publish.
type StoredPublish struct {
	Seq      uint64
	PacketID uint16 // 0 until first sent
	Released bool   // QoS 2: PUBREC received, PUBREL is what remains
	Message  Message
}

// FileStore is a Store keeping one file per message in a directory:
// <seq>.pub holds a flag byte, the packet identifier and the message as an
// MQTT 5 PUBLISH packet. Each Put writes a temporary file and renames it
// over the old one, so a crash leaves either version, never a torn one.
// With Sync set every Put is fsynced (slower, survives power loss).
type FileStore struct {
	dir  string
	Sync bool
	mu   sync.Mutex
}

// NewFileStore returns a FileStore in dir, creating it if needed.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: file store: %w", err)
	}
	return &FileStore{dir: dir}, nil
}

func (s *FileStore) name(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016x.pub", seq))
}

// Put implements Store.
func (s *FileStore) Put(r StoredPublish) error {
	p := &packet.Publish{QoS: r.Message.QoS, Retain: r.Message.Retain, Topic: r.Message.Topic,
		PacketID: max(r.PacketID, 1), Properties: r.Message.Properties, Payload: r.Message.Payload}
	b := []byte{0, byte(r.PacketID >> 8), byte(r.PacketID)}
	if r.Released {
		b[0] = 1
	}
	b, err := p.Encode(b, packet.V5)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tmp := s.name(r.Seq) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("client: file store: %w", err)
	}
	_, err = f.Write(b)
	if err == nil && s.Sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.name(r.Seq))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("client: file store: %w", err)
	}
	return nil
}

// Delete implements Store.
func (s *FileStore) Delete(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(s.name(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("client: file store: %w", err)
	}
	return nil
}

// Load implements Store. Unreadable files are reported, not skipped.
func (s *FileStore) Load() ([]StoredPublish, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("client: file store: %w", err)
	}
	var out []StoredPublish
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".pub")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("client: file store: %w", err)
		}
		r, err := decodeStored(b)
		if err != nil {
			return nil, fmt.Errorf("client: file store: %s: %w", e.Name(), err)
		}
		r.Seq = seq
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b StoredPublish) int { return cmpU64(a.Seq, b.Seq) })
	return out, nil
}

func decodeStored(b []byte) (StoredPublish, error) {
	if len(b) < 3 {
		return StoredPublish{}, errors.New("truncated")
	}
	r := StoredPublish{Released: b[0] == 1, PacketID: binary.BigEndian.Uint16(b[1:3])}
	b = b[3:]
	h, err := packet.ParseFixedHeader(b)
	if err != nil {
		return r, err
	}
	if h.Type != packet.PUBLISH || len(b) != h.HeaderLen+h.Remaining {
		return r, errors.New("not one PUBLISH")
	}
	p, err := packet.Decode(h, b[h.HeaderLen:], packet.V5)
	if err != nil {
		return r, err
	}
	pub := p.(*packet.Publish)
	r.Message = Message{Topic: pub.Topic, Payload: pub.Payload, QoS: pub.QoS, Retain: pub.Retain, Properties: pub.Properties}
	return r, nil
}

// MemoryStore is a Store in memory, for tests and for keeping publishes
// across Clients within one process.
type MemoryStore struct {
	mu sync.Mutex
	m  map[uint64]StoredPublish
}

// Put implements Store.
func (s *MemoryStore) Put(r StoredPublish) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[uint64]StoredPublish{}
	}
	s.m[r.Seq] = r
	return nil
}

// Delete implements Store.
func (s *MemoryStore) Delete(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, seq)
	return nil
}

// Load implements Store.
func (s *MemoryStore) Load() ([]StoredPublish, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []StoredPublish
	for _, r := range s.m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b StoredPublish) int { return cmpU64(a.Seq, b.Seq) })
	return out, nil
}

// storePut records o in the Store. c.mu is held. A failure is returned for
// the first Put (Publish fails) and logged for later updates.
func (c *Client) storePut(o *op) error {
	st := c.opts.Store
	if st == nil || o.kind != opPublish || o.msg.QoS == 0 {
		return nil
	}
	err := st.Put(StoredPublish{Seq: o.seq, PacketID: o.id, Released: o.pubrel, Message: *o.msg})
	if err != nil {
		c.opts.Logger.Warn("client store put failed", "err", err)
		return err
	}
	o.stored = true
	return nil
}

func (c *Client) storeDelete(o *op) {
	if !o.stored {
		return
	}
	o.stored = false
	if err := c.opts.Store.Delete(o.seq); err != nil {
		c.opts.Logger.Warn("client store delete failed", "err", err)
	}
}

// restore loads the Store: publishes that had a packet identifier become
// inflight (resent with DUP, or PUBREL, on connect), the others queued.
func (c *Client) restore() error {
	recs, err := c.opts.Store.Load()
	if err != nil {
		return err
	}
	for _, r := range recs {
		m := r.Message
		o := &op{kind: opPublish, msg: &m, seq: r.Seq, id: r.PacketID, pubrel: r.Released, stored: true}
		c.sess.nextSeq = max(c.sess.nextSeq, r.Seq)
		if _, dup := c.sess.inflight[o.id]; o.id != 0 && !dup {
			o.sent = true
			c.sess.inflight[o.id] = o // resent when a connection is up (connUp)
			continue
		}
		o.id = 0
		c.sess.queue = append(c.sess.queue, o)
	}
	return nil
}
