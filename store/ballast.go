package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
)

// DefaultBallast is DiskOptions.Ballast when it is zero: room for the log
// writes in flight and a memtable flush (32 MiB) when the disk fills.
const DefaultBallast = 64 << 20

// ballastName is the ballast file in the store's directory. Pebble ignores
// files whose names it does not know.
const ballastName = "roost-ballast"

// ballast is space reserved in the store's directory so that a write
// finding the disk full is not the end: the guard (see guardFS) deletes
// the file and the write goes on, so the store finishes what it started,
// while Healthy refuses new messages. Once free space is back to twice the
// ballast, the file is made again and messages are accepted. The
// free-space check (MinFree) counts the ballast as free: it is. It covers what the free-space check cannot: a check turned
// off, or a disk that fills between two checks.
type ballast struct {
	path string
	size int64 // 0: none

	mu      sync.Mutex
	present bool
	refuse  error // set while released or missing: Healthy reports it
}

// open finds or makes the ballast of d's options in d's directory.
func (b *ballast) open(d *Disk) {
	b.path = filepath.Join(d.dir, ballastName)
	b.size = d.opts.Ballast
	os.Remove(b.path + ".tmp")
	if b.size <= 0 {
		os.Remove(b.path) // turned off: give its space back
		return
	}
	if fi, err := os.Stat(b.path); err == nil && fi.Size() == b.size {
		b.present = true
		return
	}
	os.Remove(b.path) // missing, cut short, or of another configured size
	free, err := d.opts.freeSpace(d.dir)
	if err != nil {
		free = 1<<63 - 1 // cannot tell: try
	}
	if !b.restore(d, free) {
		b.refuse = fmt.Errorf("%w: %s: no room for the %d-byte ballast", ErrNoSpace, d.dir, b.size)
		d.log.Warn("no room for the store's ballast: refusing new QoS 1/2 messages until there is (a smaller --ballast / store.ballast fits a small disk)",
			"dir", d.dir, "ballast", b.size, "free", free, "needs", b.needs())
	}
}

// needs is the free space at which the ballast is made again: twice its
// size, so that making it does not fill the disk again at once.
func (b *ballast) needs() int64 { return 2 * b.size }

// reserved returns the bytes the ballast holds now.
func (b *ballast) reserved() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.present {
		return b.size
	}
	return 0
}

// release deletes the ballast, if there is one, and reports whether it did:
// the disk was found full, and the caller may try its write again.
func (b *ballast) release(d *Disk) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.present {
		return false
	}
	if err := os.Remove(b.path); err != nil {
		d.log.Error("cannot release the store's ballast", "path", b.path, "err", err)
		return false
	}
	b.present = false
	b.refuse = fmt.Errorf("%w: %s filled up; ballast released", ErrNoSpace, d.dir)
	d.log.Error("data disk full: released the store's ballast to finish pending writes; refusing new QoS 1/2 messages until space returns",
		"dir", d.dir, "ballast", b.size, "resume_at_free", b.needs())
	return true
}

// refusal returns why new messages are refused while the ballast is gone.
func (b *ballast) refusal() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refuse
}

// missing reports whether the ballast should exist and does not.
func (b *ballast) missing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size > 0 && !b.present
}

// restore makes the ballast again when free space allows, and reports
// whether it exists.
func (b *ballast) restore(d *Disk, free int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.present || b.size <= 0 {
		return true
	}
	if free < b.needs() {
		return false
	}
	if err := makeBallast(b.path, b.size); err != nil {
		d.log.Warn("cannot make the store's ballast", "path", b.path, "err", err)
		return false
	}
	was := b.refuse != nil
	b.present, b.refuse = true, nil
	if was {
		d.log.Info("data disk has space again: ballast restored; accepting messages", "dir", d.dir, "free", free)
	}
	return true
}

// makeBallast writes a file of size bytes at path, atomically: a temporary
// file renamed into place.
func makeBallast(path string, size int64) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = allocate(f, size)
	if errors.Is(err, errors.ErrUnsupported) {
		err = fill(f, size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// fill writes size bytes of random data: zeros would take no space on a
// file system that compresses.
func fill(f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{'r', 'o', 'o', 's', 't'})
	for size > 0 {
		n := min(int64(len(buf)), size)
		r.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return err
		}
		size -= n
	}
	return nil
}
