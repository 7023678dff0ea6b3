package client

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"slices"
	"sync"
)

// LogStore is a Store in one append-only file: each Put and Delete appends
// a record (length, CRC-32C, then the record), so a change costs one
// write() instead of FileStore's create, write, rename. Load replays the
// file; a torn last record (a crash in the middle of a write) is dropped
// and the file cut there. When the file has grown past compactAt and holds
// mostly dead records, the live ones are written to a new file renamed
// over it. With Sync every append is fsynced (survives power loss, not only
// a crash of the process).
type LogStore struct {
	path string
	Sync bool

	mu   sync.Mutex
	f    *os.File
	size int64
	live map[uint64][]byte // seq -> the Put record, as appended
	dead int64             // bytes of records superseded or deleted
}

// compactAt is the size past which a LogStore rewrites itself when most of
// it is dead.
const compactAt = 1 << 20

const (
	logPut    = 1
	logDelete = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenLogStore opens (or creates) the LogStore in the file path.
func OpenLogStore(path string) (*LogStore, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("client: log store: %w", err)
	}
	s := &LogStore{path: path, f: f, live: map[uint64][]byte{}}
	if err := s.replay(); err != nil {
		f.Close()
		return nil, fmt.Errorf("client: log store %s: %w", path, err)
	}
	return s, nil
}

// replay reads the file into s.live and leaves the offset at its valid end.
func (s *LogStore) replay() error {
	r := bufio.NewReader(s.f)
	var off int64
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break // the end, or a torn header
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n < 9 || n > 1<<28 {
			break
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil || crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(hdr[4:]) {
			break
		}
		seq := binary.BigEndian.Uint64(body[1:9])
		if old, ok := s.live[seq]; ok {
			s.dead += int64(len(old))
		}
		if body[0] == logPut {
			s.live[seq] = append(hdr[:], body...)
		} else {
			delete(s.live, seq)
			s.dead += int64(len(body)) + 8
		}
		off += int64(len(body)) + 8
	}
	s.size = off
	if err := s.f.Truncate(off); err != nil { // drops a torn tail
		return err
	}
	_, err := s.f.Seek(off, io.SeekStart)
	return err
}

func frame(kind byte, seq uint64, data []byte) []byte {
	body := append([]byte{kind}, binary.BigEndian.AppendUint64(nil, seq)...)
	body = append(body, data...)
	rec := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	rec = binary.BigEndian.AppendUint32(rec, crc32.Checksum(body, castagnoli))
	return append(rec, body...)
}

// Put implements Store.
func (s *LogStore) Put(r StoredPublish) error {
	data, err := encodeStored(r)
	if err != nil {
		return err
	}
	rec := frame(logPut, r.Seq, data)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.append(rec); err != nil {
		return err
	}
	if old, ok := s.live[r.Seq]; ok {
		s.dead += int64(len(old))
	}
	s.live[r.Seq] = rec
	return s.maybeCompact()
}

// Delete implements Store.
func (s *LogStore) Delete(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.live[seq]
	if !ok {
		return nil
	}
	rec := frame(logDelete, seq, nil)
	if err := s.append(rec); err != nil {
		return err
	}
	delete(s.live, seq)
	s.dead += int64(len(old) + len(rec))
	return s.maybeCompact()
}

func (s *LogStore) append(rec []byte) error {
	if _, err := s.f.Write(rec); err != nil {
		return fmt.Errorf("client: log store: %w", err)
	}
	s.size += int64(len(rec))
	if s.Sync {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("client: log store: %w", err)
		}
	}
	return nil
}

// maybeCompact rewrites the file with the live records only once it is
// large and mostly dead. A failure leaves the old file in use.
func (s *LogStore) maybeCompact() error {
	if s.size < compactAt || s.dead*2 < s.size {
		return nil
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("client: log store: compact: %w", err)
	}
	var size int64
	for _, seq := range slices.Sorted(maps.Keys(s.live)) {
		n, err := f.Write(s.live[seq])
		size += int64(n)
		if err != nil {
			f.Close()
			os.Remove(tmp)
			return fmt.Errorf("client: log store: compact: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("client: log store: compact: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("client: log store: compact: %w", err)
	}
	s.f.Close()
	s.f, s.size, s.dead = f, size, 0
	return nil
}

// Load implements Store.
func (s *LogStore) Load() ([]StoredPublish, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []StoredPublish
	for seq, rec := range s.live {
		r, err := decodeStored(rec[8+9:])
		if err != nil {
			return nil, fmt.Errorf("client: log store %s: record %d: %w", s.path, seq, err)
		}
		r.Seq = seq
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b StoredPublish) int { return cmpU64(a.Seq, b.Seq) })
	return out, nil
}

// Close closes the file.
func (s *LogStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}
