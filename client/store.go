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
	// Tag is PublishAsyncTagged's tag; 0 for other publishes.
	Tag uint64
	// Completed: a tagged publish whose flow ended, kept until Forget.
	// Its Message is empty.
	Completed bool
	Message   Message
}

// Flag bits of FileStore's first byte.
const (
	storedReleased  = 1
	storedTagged    = 2 // an 8-byte tag follows the packet identifier
	storedCompleted = 4
)

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

// encodeStored is a record as FileStore and LogStore keep it: a flag
// byte, the packet identifier, the tag if any, and the message as an MQTT
// 5 PUBLISH packet.
func encodeStored(r StoredPublish) ([]byte, error) {
	p := &packet.Publish{QoS: r.Message.QoS, Retain: r.Message.Retain, Topic: r.Message.Topic,
		PacketID: max(r.PacketID, 1), Properties: r.Message.Properties, Payload: r.Message.Payload}
	b := []byte{0, byte(r.PacketID >> 8), byte(r.PacketID)}
	if r.Released {
		b[0] |= storedReleased
	}
	if r.Completed {
		b[0] |= storedCompleted
		p.QoS, p.Topic = 0, "-" // the message is not needed any more
	}
	if r.Tag != 0 {
		b[0] |= storedTagged
		b = binary.BigEndian.AppendUint64(b, r.Tag)
	}
	return p.Encode(b, packet.V5)
}

// Put implements Store.
func (s *FileStore) Put(r StoredPublish) error {
	b, err := encodeStored(r)
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
	r := StoredPublish{Released: b[0]&storedReleased != 0, Completed: b[0]&storedCompleted != 0, PacketID: binary.BigEndian.Uint16(b[1:3])}
	flags := b[0]
	b = b[3:]
	if flags&storedTagged != 0 {
		if len(b) < 8 {
			return r, errors.New("truncated")
		}
		r.Tag, b = binary.BigEndian.Uint64(b), b[8:]
	}
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
	if r.Completed {
		return r, nil
	}
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
	err := st.Put(StoredPublish{Seq: o.seq, PacketID: o.id, Released: o.pubrel, Tag: o.tag, Message: *o.msg})
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
		o := &op{kind: opPublish, msg: &m, seq: r.Seq, id: r.PacketID, pubrel: r.Released, stored: true, tag: r.Tag}
		c.sess.nextSeq = max(c.sess.nextSeq, r.Seq)
		if r.Tag != 0 {
			rp := RestoredPublish{Tag: r.Tag, Completed: r.Completed}
			if !r.Completed {
				o.done = make(chan struct{})
				rp.Token = &PublishToken{c: c, o: o, done: o.done}
			}
			c.sess.restored = append(c.sess.restored, rp)
		}
		if r.Completed {
			o.completed = true
			c.sess.kept[r.Tag] = o
			continue
		}
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

// RestoredPublish is a tagged publish (PublishAsyncTagged) that New found
// in Options.Store.
type RestoredPublish struct {
	Tag uint64
	// Completed says its flow ended before the restart; it is kept until
	// Forget.
	Completed bool
	// Token tells when a publish still in progress completes; nil when
	// Completed.
	Token *PublishToken
}

// Restored returns the tagged publishes New loaded from Options.Store, in
// their original order. The client sends those in progress again on its
// first connection (PUBLISH with DUP and the same packet identifier, or
// PUBREL).
func (c *Client) Restored() []RestoredPublish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sess.restored)
}

// PublishAsyncTagged is PublishAsync for a QoS 1 or 2 message that the
// caller knows by tag (non-zero), such as the packet identifier it
// arrived with from another server. With Options.Store the tag is stored
// with the message, Restored reports it after a restart, and the record
// stays in the Store once the flow completes, until Forget(tag): so a
// caller that crashed can tell a message it already forwarded from a new
// one. A tag must not be reused before Forget.
func (c *Client) PublishAsyncTagged(m Message, tag uint64) (*PublishToken, error) {
	if tag == 0 || m.QoS == 0 {
		return nil, errors.New("client: PublishAsyncTagged needs a non-zero tag and QoS 1 or 2")
	}
	if err := c.checkPublish(&m); err != nil {
		return nil, err
	}
	o := &op{kind: opPublish, msg: &m, tag: tag}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enqueue(o); err != nil {
		return nil, err
	}
	return &PublishToken{c: c, o: o, done: o.done}, nil
}

// Forget deletes the completed tagged publish tag from the Store; a tag
// not completed or unknown is left alone (reported false).
func (c *Client) Forget(tag uint64) bool {
	c.mu.Lock()
	o := c.sess.kept[tag]
	delete(c.sess.kept, tag)
	c.mu.Unlock()
	if o == nil {
		return false
	}
	if err := c.opts.Store.Delete(o.seq); err != nil {
		c.opts.Logger.Warn("client store delete failed", "err", err)
	}
	return true
}
