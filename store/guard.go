package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/roost-mqtt/roost/broker"
)

// ErrWriteFailed is wrapped by the errors Wait and Healthy return while a
// write or sync of the store's files fails for another reason than a full
// disk (an I/O error): nothing that waited for it is acknowledged, and new
// QoS 1/2 messages are refused until writes work again.
var ErrWriteFailed = errors.New("store: writing the data disk failed")

// Retry pacing of a failing write: quick at first (a transient error, a
// ballast just released), then once a second, so that a disk that stays
// broken costs nothing.
const (
	retryMin = 10 * time.Millisecond
	retryMax = time.Second
	// closeGrace bounds how long Close lets a failing write keep trying
	// before it gives the error to Pebble, which then stops the process
	// (see pebbleLogger.Fatalf): a shutdown must end, and nothing that
	// waited for the write was acknowledged.
	closeGrace = 5 * time.Second
	// retryLogEvery: a write that keeps failing is logged again every
	// this many tries (about a minute at retryMax).
	retryLogEvery = 60
)

// guardFS is the file system Pebble writes the store through. Pebble
// cannot go on after a failed write or sync of its log or manifest: it
// stops the process. The guard never lets such an error reach it: a write
// that fails with a full disk first releases the ballast (see ballast) and
// goes on at once; a write that still fails, or fails for another reason,
// puts the store in its failing state (Wait and Healthy report the error;
// ops that were waiting for the failed write or sync are never
// acknowledged) and is retried until it succeeds, which ends the failing
// state. Pebble sees a slow write, not a failed one.
type guardFS struct {
	vfs.FS
	d *Disk
}

func (g *guardFS) Unwrap() vfs.FS { return g.FS }

func (g *guardFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &guardFile{File: f, d: g.d, name: name}, nil
}

func (g *guardFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	var f vfs.File
	err := g.d.retry("create "+name, createErr, func() (err error) {
		f, err = g.FS.Create(name, c)
		return err
	})
	return g.wrap(name, f, err)
}

func (g *guardFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	var f vfs.File
	err := g.d.retry("open "+name, createErr, func() (err error) {
		f, err = g.FS.OpenReadWrite(name, c, opts...)
		return err
	})
	return g.wrap(name, f, err)
}

func (g *guardFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	var f vfs.File
	err := g.d.retry("reuse "+oldname, createErr, func() (err error) {
		f, err = g.FS.ReuseForWrite(oldname, newname, c)
		return err
	})
	return g.wrap(newname, f, err)
}

// OpenDir's files are synced after files are created or renamed in them.
func (g *guardFS) OpenDir(name string) (vfs.File, error) {
	f, err := g.FS.OpenDir(name)
	return g.wrap(name, f, err)
}

func (g *guardFS) Link(oldname, newname string) error {
	return g.d.retry("link "+newname, createErr, func() error { return g.FS.Link(oldname, newname) })
}

func (g *guardFS) Rename(oldname, newname string) error {
	return g.d.retry("rename "+oldname, createErr, func() error { return g.FS.Rename(oldname, newname) })
}

func (g *guardFS) MkdirAll(dir string, perm os.FileMode) error {
	return g.d.retry("mkdir "+dir, createErr, func() error { return g.FS.MkdirAll(dir, perm) })
}

// guardFile retries its writes and syncs; see guardFS. Preallocate is
// left alone: it is advice, and Pebble ignores its errors (a WAL is
// preallocated 110% of a memtable, more than a small disk has).
type guardFile struct {
	vfs.File
	d    *Disk
	name string
}

func (f *guardFile) Write(p []byte) (int, error) {
	n := 0
	err := f.d.retry("write "+f.name, writeErr, func() error {
		m, err := f.File.Write(p[n:])
		n += m // a short write is resumed where it stopped
		return err
	})
	return n, err
}

func (f *guardFile) WriteAt(p []byte, off int64) (int, error) {
	n := 0
	err := f.d.retry("write "+f.name, writeErr, func() error {
		m, err := f.File.WriteAt(p[n:], off+int64(n))
		n += m
		return err
	})
	return n, err
}

func (f *guardFile) Sync() error {
	return f.d.retry("sync "+f.name, writeErr, f.File.Sync)
}

func (f *guardFile) SyncData() error {
	return f.d.retry("sync "+f.name, writeErr, f.File.SyncData)
}

func (f *guardFile) SyncTo(length int64) (full bool, err error) {
	err = f.d.retry("sync "+f.name, writeErr, func() (err error) {
		full, err = f.File.SyncTo(length)
		return err
	})
	return full, err
}

// Which errors retry retries: every failure of a write or sync; for the
// operations that create or rename files (a failure to create a new log is
// a panic in Pebble), every failure but a missing or existing name, which
// says the call itself was wrong and which Pebble expects and handles.
func writeErr(error) bool { return true }

func createErr(err error) bool {
	return !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrExist)
}

// isNoSpace reports errors that mean the file system is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// retry runs op, the file operation what, until it succeeds. Errors that
// retries does not accept are returned at once. A full disk first releases the
// ballast and tries again at once: the store finishes what it started and
// Healthy refuses new messages. Otherwise the store is failing until op
// succeeds; see guardFS. After Close has waited closeGrace, the error is
// returned.
func (d *Disk) retry(what string, retries func(error) bool, op func() error) error {
	err := op()
	if err == nil || !retries(err) || !d.opened.Load() {
		// Until Open succeeded, a failure is Open's error: a data
		// directory Roost cannot write is reported at start.
		return err
	}
	if isNoSpace(err) && d.ballast.release(d) {
		if err = op(); err == nil {
			return nil
		}
	}
	d.faultBegin(what, err)
	start, tries := time.Now(), 1
	for wait := retryMin; ; wait = min(2*wait, retryMax) {
		time.Sleep(wait)
		if isNoSpace(err) {
			d.ballast.release(d) // re-created meanwhile: it is what it is for
		}
		tries++
		if err = op(); err == nil {
			d.faultEnd(what, time.Since(start), tries)
			return nil
		}
		if tries%retryLogEvery == 0 {
			d.log.Error("store write still failing; retrying", "dir", d.dir, "op", what, "tries", tries,
				"for", time.Since(start).Round(time.Second), "err", err)
		}
		if at := d.closingAt.Load(); at != 0 && time.Since(time.Unix(0, at)) > closeGrace {
			d.log.Error("store write still failing at close; giving up", "dir", d.dir, "op", what, "err", err)
			return err
		}
	}
}

// faultBegin enters the failing state for a write or sync that failed with
// err and is being retried. A full disk only delays the write, which is
// complete once it succeeds; any other error leaves unknown what reached
// the disk, so every op not yet durable is never acknowledged
// ("poisoned"), even once the retry succeeds.
func (d *Disk) faultBegin(what string, err error) {
	var ferr error
	if isNoSpace(err) {
		ferr = fmt.Errorf("%w: %s: %w", ErrNoSpace, what, err)
	} else {
		ferr = fmt.Errorf("%w: %s: %w", ErrWriteFailed, what, err)
	}
	d.mu.Lock()
	d.faults++
	first := d.ioErr == nil
	d.ioErr = ferr
	d.noteFaultLocked()
	if !isNoSpace(err) {
		d.poisonLocked(d.durable, d.appended, ferr)
	}
	d.cond.Broadcast()
	d.mu.Unlock()
	if first {
		d.log.Error("store write failed: refusing new QoS 1/2 messages and failing the acknowledgements that wait for it; retrying",
			"dir", d.dir, "op", what, "err", err)
	}
}

// faultEnd leaves the failing state once no write is being retried.
func (d *Disk) faultEnd(what string, took time.Duration, tries int) {
	d.mu.Lock()
	d.faults--
	last := d.faults == 0
	if last {
		d.ioErr = nil
		d.noteFaultLocked()
	}
	d.cond.Broadcast()
	d.mu.Unlock()
	if last {
		d.log.Info("store writes work again", "dir", d.dir, "op", what, "took", took.Round(time.Millisecond), "tries", tries)
	}
}

// poisonRange is tickets (from, to] that met a failed write or sync.
type poisonRange struct {
	from, to broker.Ticket
	err      error
}

// maxPoisoned bounds the ranges kept. Waits come soon after their Append
// (a connection waits once per ticket), so only recent ranges matter.
const maxPoisoned = 64

// poisonLocked makes Wait fail with err, for good, for tickets in
// (from, to]: ops whose write or sync failed. d.mu held.
func (d *Disk) poisonLocked(from, to broker.Ticket, err error) {
	if to <= from {
		return
	}
	if n := len(d.poison); n > 0 && from <= d.poison[n-1].to {
		last := &d.poison[n-1] // overlaps the last: one range
		last.from, last.to, last.err = min(last.from, from), max(last.to, to), err
		return
	}
	if len(d.poison) == maxPoisoned {
		d.poison = append(d.poison[:0], d.poison[1:]...)
	}
	d.poison = append(d.poison, poisonRange{from, to, err})
}

// poisoned returns the failure ticket t met, if it met one. d.mu held.
func (d *Disk) poisoned(t broker.Ticket) error {
	for i := range d.poison {
		if r := &d.poison[i]; t > r.from && t <= r.to {
			return r.err
		}
	}
	return nil
}

// failingLocked returns why Wait cannot succeed now, if anything does:
// ops held back by a full disk, or a fault (faultLocked).
func (d *Disk) failingLocked() error {
	if d.failing != nil {
		return d.failing
	}
	return d.faultLocked()
}

// faultLocked returns the fault the store is in, if any: a write or sync
// being retried, or a commit or sync Pebble refused. d.mu held.
func (d *Disk) faultLocked() error {
	switch {
	case d.ioErr != nil:
		return d.ioErr
	case d.commitErr != nil:
		return d.commitErr
	}
	return d.syncErr
}

// setErr sets or clears one of the store's faults (commitErr, syncErr).
// d.mu held.
func (d *Disk) setErr(field *error, err error) {
	*field = err
	d.noteFaultLocked()
}

// noteFaultLocked keeps faulty, which lets Healthy skip d.mu on every
// publish, true while there is a fault. d.mu held.
func (d *Disk) noteFaultLocked() { d.faulty.Store(d.faultLocked() != nil) }
