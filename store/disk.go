package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/roost-mqtt/roost/broker"
)

// ErrNoSpace says the disk holding the store is (nearly) full. Wait and
// Healthy return errors wrapping it; the broker answers new QoS 1/2
// publishes with Quota Exceeded (0x97) while it lasts.
var ErrNoSpace = fmt.Errorf("store: no space left on the data disk: %w", broker.ErrStoreFull)

// ErrClosed is returned by Wait after Close for ops that were not written.
var ErrClosed = errors.New("store: closed")

// DiskOptions configure Open. The zero value is the default.
type DiskOptions struct {
	// Sync says when commits are flushed to stable storage; the zero
	// value is SyncAlways.
	Sync Sync
	// MinFree is the free space (bytes) on the store's file system below
	// which Healthy reports ErrNoSpace, so that new messages are refused
	// while acknowledgements, which free space, continue. Below half of
	// it the store stops writing altogether and Wait fails with
	// ErrNoSpace until space returns. Default 256 MiB; negative disables
	// the check.
	MinFree int64
	// Ballast is the size (bytes) of a file kept in the directory and
	// deleted when a write finds the disk full, so that the store can
	// finish the writes it started while new messages are refused (see
	// ballast); it is made again once twice its size is free, and MinFree
	// counts it as free space. Default DefaultBallast; negative: none, and
	// a write that finds the disk full waits for space (failing Waits
	// meanwhile).
	Ballast int64
	// Logger receives the store's own messages. Default slog.Default().
	Logger *slog.Logger

	// freeSpace reports the free bytes on the store's file system; tests
	// replace it to simulate a full disk.
	freeSpace func(dir string) (int64, error)
	// fs is the file system under the guard (default vfs.Default); tests
	// inject errors with errorfs.
	fs vfs.FS
	// inject, when set, is asked before each commit ("commit") and log sync
	// ("sync") and returns the error Pebble would: tests of the paths
	// where Pebble reports a failure instead of stopping the process.
	inject func(op string) error
}

// DefaultMinFree is DiskOptions.MinFree when it is zero.
const DefaultMinFree = 256 << 20

// Disk is the on-disk broker.Store: a Pebble database in one directory.
//
// Append queues ops in memory and returns at once. A committer goroutine
// takes every op queued since its last commit, writes them as one Pebble
// batch and, under SyncAlways, one fsync (group commit), then wakes the
// Waits it satisfied. It alone touches the database and the reference
// counts of stored messages.
type Disk struct {
	db   *pebble.DB
	dir  string
	opts DiskOptions
	log  *slog.Logger

	mu        sync.Mutex
	cond      sync.Cond // on mu: durable, failing or closed changed
	pending   []broker.Op
	appended  broker.Ticket // last ticket handed out
	written   broker.Ticket // every op up to it is written to the log
	durable   broker.Ticket // every op up to it is committed (SyncAlways: synced)
	failing   error         // set while commits are held back (disk nearly full)
	ioErr     error         // set while a write or sync is retried (guardFS)
	faults    int           // writes and syncs being retried
	commitErr error         // set from a failed commit until one succeeds
	syncErr   error         // set from a failed sync until one succeeds
	faulty    atomic.Bool   // ioErr, commitErr or syncErr is set
	// Ticket ranges that met a failed write or sync: Wait fails for
	// them, for good.
	poison []poisonRange
	// holds counts the open holds (Hold); while there are any, only the
	// ops appended before the first of them (held) may be committed.
	holds     int
	held      heldPrefix
	closed    bool
	closingAt atomic.Int64  // unix ns when Close began
	opened    atomic.Bool   // pebble.Open succeeded: the guard retries
	wake      chan struct{} // cap 1: pending is non-empty
	closing   chan struct{} // closed when Close begins
	done      chan struct{} // closed when the committer returns
	syncReq   chan struct{} // cap 1: written advanced; closed after done
	synced    chan struct{} // closed when the syncer returns

	health   healthState
	ballast  ballast
	idx      index // committer only (and Open)
	stale    bool  // committer only: idx must be rebuilt (a commit failed)
	state    *broker.StoredState
	loadOnce sync.Once
}

// Open opens the store in dir, creating it when absent. It reads the whole
// store to rebuild the index of messages and their references, and keeps
// what it read for Load. A store it cannot use (locked by another process,
// written by an unknown format version, corrupt) is an error naming dir.
func Open(dir string, opts DiskOptions) (*Disk, error) {
	if opts.MinFree == 0 {
		opts.MinFree = DefaultMinFree
	}
	if opts.freeSpace == nil {
		opts.freeSpace = freeSpace
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Ballast == 0 {
		opts.Ballast = DefaultBallast
	}
	if opts.fs == nil {
		opts.fs = vfs.Default
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	d := &Disk{dir: dir, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{}),
		syncReq: make(chan struct{}, 1), synced: make(chan struct{})}
	d.cond.L = &d.mu
	d.ballast.open(d)
	db, err := pebble.Open(dir, d.pebbleOptions())
	if err != nil {
		return nil, openError(dir, err)
	}
	d.db = db
	d.opened.Store(true)
	if err := d.checkVersion(); err != nil {
		db.Close()
		return nil, readError(dir, err)
	}
	st, err := d.scan()
	if err != nil {
		db.Close()
		return nil, readError(dir, fmt.Errorf("reading: %w", err))
	}
	d.state = st
	d.health.check(d)
	go d.commitLoop()
	go d.syncLoop()
	return d, nil
}

func (d *Disk) pebbleOptions() *pebble.Options {
	o := &pebble.Options{
		Logger:       pebbleLogger{d.log},
		FS:           &guardFS{FS: d.opts.fs, d: d},
		MemTableSize: 32 << 20,
		CacheSize:    16 << 20,
		EventListener: &pebble.EventListener{
			// Pebble's default is to exit; the read that met the
			// corruption returns an error too, which Open reports.
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				d.log.Error("store file is corrupt", "dir", d.dir, "file", info.Path, "err", info.Details)
			},
		},
	}
	// SyncAlways fsyncs each commit; the others let Pebble write the WAL
	// in the background and sync it when the interval ticks or on Close.
	o.EnsureDefaults()
	return o
}

// openError turns a pebble.Open failure into one that names the store
// and says what is wrong in words.
func openError(dir string, err error) error {
	switch {
	case errors.Is(err, syscall.EAGAIN) || strings.Contains(err.Error(), "lock held"):
		return fmt.Errorf("store %s is locked by another process: %w", dir, err)
	case pebble.IsCorruptionError(err):
		return fmt.Errorf("store %s is corrupt: %w", dir, err)
	}
	return fmt.Errorf("store %s: cannot open: %w", dir, err)
}

// readError names dir in err, and says "corrupt" when it is.
func readError(dir string, err error) error {
	if pebble.IsCorruptionError(err) || errors.Is(err, errCorrupt) {
		return fmt.Errorf("store %s is corrupt: %w", dir, err)
	}
	return fmt.Errorf("store %s: %w", dir, err)
}

// checkVersion records the format version in a new store and refuses a
// store of another version, or a non-empty one without any.
func (d *Disk) checkVersion() error {
	v, closer, err := d.db.Get(versionKey)
	if errors.Is(err, pebble.ErrNotFound) {
		it, err := d.db.NewIter(nil)
		if err != nil {
			return err
		}
		empty := !it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
		if !empty {
			return errors.New("no format version: not a Roost store")
		}
		if err := d.db.Set(versionKey, []byte(formatVersion), pebble.Sync); err != nil {
			return fmt.Errorf("writing format version: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading format version: %w", err)
	}
	defer closer.Close()
	if string(v) != formatVersion {
		return fmt.Errorf("format %q; this Roost reads %q", v, formatVersion)
	}
	return nil
}

// Load returns what Open read. Session queues are in Seq order, subs by
// filter, sessions by client id, retained messages by topic.
func (d *Disk) Load() (*broker.StoredState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state
	d.state = nil
	if st == nil {
		return nil, errors.New("store: Load called twice")
	}
	return st, nil
}

// Append queues ops for the next commit and returns the ticket of the last.
// It never blocks on I/O. Without ops it returns the ticket of the last op
// appended so far, which Wait can wait for.
func (d *Disk) Append(ops ...broker.Op) broker.Ticket {
	d.mu.Lock()
	if len(ops) == 0 {
		// A ticket of its own would never be committed: the committer
		// only advances over ops it writes.
		defer d.mu.Unlock()
		return d.appended
	}
	d.pending = append(d.pending, ops...)
	d.appended++
	t := d.appended
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return t
}

// heldPrefix is what may be committed while the store is held: the first
// ops of pending, up to ticket.
type heldPrefix struct {
	ops    int
	ticket broker.Ticket
}

// Hold implements broker.Grouper: ops appended from now on are not
// committed until every hold is released, and are then committed in one
// batch with everything appended before the last Release.
func (d *Disk) Hold() {
	d.mu.Lock()
	if d.holds == 0 {
		d.held = heldPrefix{ops: len(d.pending), ticket: d.appended}
	}
	d.holds++
	d.mu.Unlock()
}

// Release implements broker.Grouper: it ends a Hold.
func (d *Disk) Release() {
	d.mu.Lock()
	d.holds--
	if d.holds < 0 {
		d.mu.Unlock()
		panic("store: Release without Hold")
	}
	last := d.holds == 0 && len(d.pending) > 0
	d.mu.Unlock()
	if last {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// takeLocked takes the ops the committer may commit now, and the ticket
// of the last of them: all pending ops, or while the store is held those
// appended before the hold. d.mu must be held.
func (d *Disk) takeLocked() ([]broker.Op, broker.Ticket) {
	if d.holds == 0 {
		ops := d.pending
		d.pending = nil
		return ops, d.appended
	}
	n := d.held.ops
	// Capped, so that putting them back (putBackLocked) copies rather
	// than overwrites the held ops behind them.
	ops := d.pending[:n:n]
	d.pending = d.pending[n:]
	d.held.ops = 0
	return ops, d.held.ticket
}

// putBackLocked returns ops that could not be committed to the front of
// pending, for the next try. d.mu must be held.
func (d *Disk) putBackLocked(ops []broker.Op) {
	d.pending = append(ops, d.pending...)
	if d.holds > 0 {
		d.held.ops += len(ops)
	}
}

// Wait returns nil once every op up to t is committed (under SyncAlways:
// on stable storage). It returns an error wrapping ErrNoSpace while the
// disk is too full to commit, one wrapping ErrWriteFailed while a write
// or sync fails, and ErrClosed after Close. Ops that were not yet durable
// when a write, sync or commit failed are never acknowledged: Wait
// returns that failure for them even after writes work again.
func (d *Disk) Wait(t broker.Ticket) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		if err := d.poisoned(t); err != nil {
			return err
		}
		if d.durable >= t {
			return nil
		}
		if err := d.failingLocked(); err != nil {
			return err
		}
		if d.closed {
			return ErrClosed
		}
		d.cond.Wait()
	}
}

// Healthy returns nil while the store accepts new messages, and an error
// wrapping ErrNoSpace while free disk space is below DiskOptions.MinFree
// or the ballast is released, or ErrWriteFailed while a write fails. The
// broker should refuse new QoS 1/2 publishes meanwhile (0x97 Quota
// Exceeded in MQTT 5); acknowledgements and session removals go on and
// free space. It is cheap: the free space is measured at most every
// 100 ms.
func (d *Disk) Healthy() error {
	herr := d.health.get(d) // first: it restores the ballast
	if d.faulty.Load() {
		d.mu.Lock()
		err := d.faultLocked()
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if err := d.ballast.refusal(); err != nil {
		return err
	}
	return herr
}

// Close commits what is pending, syncs, and closes the database.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.closingAt.Store(time.Now().UnixNano())
	close(d.closing)
	select {
	case d.wake <- struct{}{}:
	default:
	}
	<-d.done
	close(d.syncReq)
	<-d.synced
	d.mu.Lock()
	d.cond.Broadcast()
	d.mu.Unlock()
	var errs []error
	if d.opts.Sync.Mode != SyncAlways {
		errs = append(errs, d.db.LogData(nil, pebble.Sync))
	}
	errs = append(errs, d.db.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store %s: close: %w", d.dir, err)
	}
	return nil
}

// Dir returns the store's directory.
func (d *Disk) Dir() string { return d.dir }

var _ broker.Store = (*Disk)(nil)

// pebbleLogger sends Pebble's messages to slog: info as debug, errors as
// errors. Fatalf (a failed WAL write: Pebble cannot continue) logs and
// exits; the store is consistent on disk and a restart recovers it.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error("store failed; exiting: "+fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(70)
}

// healthState caches the free-space verdict.
type healthState struct {
	mu      sync.Mutex
	checked time.Time
	err     error
	logged  bool
}

func (h *healthState) get(d *Disk) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.checked) >= 100*time.Millisecond {
		h.checkLocked(d)
	}
	return h.err
}

func (h *healthState) check(d *Disk) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.checkLocked(d)
}

// checkLocked measures free space; it returns an error wrapping ErrNoSpace
// when commits must stop (below MinFree/2), and sets h.err when new
// messages should be refused (below MinFree).
func (h *healthState) checkLocked(d *Disk) error {
	h.checked = time.Now()
	was := h.err
	h.err = nil
	if d.opts.MinFree < 0 && !d.ballast.missing() {
		return nil
	}
	free, err := d.opts.freeSpace(d.dir)
	if err != nil {
		return nil // cannot tell: do not refuse service over it
	}
	d.ballast.restore(d, free)
	if d.opts.MinFree < 0 {
		return nil
	}
	free += d.ballast.reserved() // released at need: as good as free
	if free < d.opts.MinFree {
		h.err = fmt.Errorf("%w: %s has %d bytes free, below the %d reserved", ErrNoSpace, d.dir, free, d.opts.MinFree)
	}
	switch {
	case h.err != nil && was == nil:
		d.log.Error("data disk nearly full: refusing new QoS 1/2 messages", "dir", d.dir, "free", free, "min_free", d.opts.MinFree)
	case h.err == nil && was != nil:
		d.log.Info("data disk has space again: accepting messages", "dir", d.dir, "free", free)
	}
	if free < d.opts.MinFree/2 {
		return h.err
	}
	return nil
}

// Size returns the bytes the store's files take on disk, the ballast
// aside.
func (d *Disk) Size() (int64, error) {
	var n int64
	err := filepath.WalkDir(d.dir, func(_ string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() && e.Name() != ballastName {
			info, err := e.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

var _ io.Closer = (*Disk)(nil)
