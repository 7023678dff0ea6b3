package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// eventually fails t unless cond holds within 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logFault injects err into the operations of kinds on the store's log
// (*.log) while on is set; with once, into the first only.
type logFault struct {
	on    atomic.Bool
	once  bool
	err   error
	kinds []errorfs.OpKind
	hits  atomic.Int32
}

func (f *logFault) MaybeError(op errorfs.Op) error {
	if !f.on.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	for _, k := range f.kinds {
		if op.Kind == k {
			if f.once && !f.on.CompareAndSwap(true, false) {
				return nil
			}
			f.hits.Add(1)
			return &os.PathError{Op: "write", Path: op.Path, Err: f.err}
		}
	}
	return nil
}

func (f *logFault) String() string { return "logFault" }

var (
	writeOps = []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}
	syncOps  = []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}
)

func retainOp(id uint64) broker.Op {
	return broker.Op{Kind: broker.OpRetainPut, Msg: msg(id, fmt.Sprint("t/", id))}
}

func retainedTopics(t *testing.T, dir string) string {
	t.Helper()
	d := openT(t, dir, DiskOptions{})
	defer d.Close()
	st, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	var topics []string
	for _, m := range st.Retained {
		topics = append(topics, m.Topic)
	}
	return strings.Join(topics, " ")
}

// A write or sync of the log that fails with an I/O error fails the Waits
// for what it carried, for good; the store refuses new messages until the
// retried write works, and then takes new ops. Pebble never sees the
// error (it would stop the process).
func TestDiskLogIOErrors(t *testing.T) {
	t.Parallel()
	for name, kinds := range map[string][]errorfs.OpKind{"write": writeOps, "sync": syncOps} {
		t.Run(name, func(t *testing.T) {
			f := &logFault{err: syscall.EIO, kinds: kinds}
			dir := t.TempDir()
			d := openT(t, dir, DiskOptions{MinFree: -1, fs: errorfs.Wrap(vfs.Default, f)})
			d.Load()
			if err := d.Wait(d.Append(retainOp(1))); err != nil {
				t.Fatal(err)
			}
			f.on.Store(true)
			t2 := d.Append(retainOp(2))
			if err := d.Wait(t2); !errors.Is(err, ErrWriteFailed) {
				t.Fatalf("Wait during a failing %s: %v, want ErrWriteFailed", name, err)
			}
			if err := d.Healthy(); !errors.Is(err, ErrWriteFailed) {
				t.Fatalf("Healthy during a failing %s: %v", name, err)
			}
			if f.hits.Load() == 0 {
				t.Fatal("no error was injected")
			}
			f.on.Store(false)
			eventually(t, "Healthy after the fault", func() bool { return d.Healthy() == nil })
			if err := d.Wait(t2); !errors.Is(err, ErrWriteFailed) {
				t.Fatalf("Wait for an op caught in the failed %s, after recovery: %v; want it never acknowledged", name, err)
			}
			if err := d.Wait(d.Append(retainOp(3))); err != nil {
				t.Fatalf("Wait after recovery: %v", err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			// The retried write completed: even the op that was failed is
			// there; what matters is that 1 and 3 are.
			if got := retainedTopics(t, dir); got != "t/1 t/2 t/3" {
				t.Fatalf("after reopen: %q", got)
			}
		})
	}
}

// A full disk under the free-space check: the first failed write releases
// the ballast and goes on, so what was started completes and is
// acknowledged, and new messages are refused until space returns, when
// the ballast is made again.
func TestDiskFullReleasesBallast(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(1 << 40)
	f := &logFault{err: syscall.ENOSPC, kinds: writeOps, once: true}
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{MinFree: -1, Ballast: 1 << 20, fs: errorfs.Wrap(vfs.Default, f),
		freeSpace: func(string) (int64, error) { return free.Load(), nil }})
	defer d.Close()
	d.Load()
	path := filepath.Join(dir, ballastName)
	if fi, err := os.Stat(path); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("ballast: %v %v", fi, err)
	}
	free.Store(0)
	f.on.Store(true)
	if err := d.Wait(d.Append(retainOp(1))); err != nil {
		t.Fatalf("the write that found the disk full was not finished: %v", err)
	}
	if f.hits.Load() != 1 {
		t.Fatalf("injected %d errors, want 1", f.hits.Load())
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ballast not released: %v", err)
	}
	if err := d.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Healthy with the ballast released: %v", err)
	}
	free.Store(1 << 20) // less than twice the ballast: not yet
	d.health.check(d)
	if err := d.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Healthy with room for only the ballast: %v", err)
	}
	free.Store(1 << 40)
	eventually(t, "Healthy once space returns", func() bool { return d.Healthy() == nil })
	if fi, err := os.Stat(path); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("ballast not restored: %v %v", fi, err)
	}
	if sz, _ := d.Size(); sz >= 1<<20 {
		t.Fatalf("Size %d counts the ballast", sz)
	}
}

// With no ballast left, a write that finds the disk full waits for space:
// the Waits fail with ErrNoSpace meanwhile, and the write completes once
// space returns (it was whole, so it may be acknowledged then).
func TestDiskFullWithoutBallast(t *testing.T) {
	t.Parallel()
	f := &logFault{err: syscall.ENOSPC, kinds: writeOps}
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{MinFree: -1, Ballast: -1, fs: errorfs.Wrap(vfs.Default, f)})
	d.Load()
	if _, err := os.Stat(filepath.Join(dir, ballastName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ballast made though turned off: %v", err)
	}
	f.on.Store(true)
	t1 := d.Append(retainOp(1))
	if err := d.Wait(t1); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Wait on a full disk: %v", err)
	}
	if err := d.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Healthy on a full disk: %v", err)
	}
	f.on.Store(false)
	eventually(t, "the write completes", func() bool { return d.Wait(t1) == nil })
	if err := d.Healthy(); err != nil {
		t.Fatalf("Healthy after space returned: %v", err)
	}
	d.Close()
	if got := retainedTopics(t, dir); got != "t/1" {
		t.Fatalf("after reopen: %q", got)
	}
}

// A commit Pebble refuses is not marked written: its Waits fail, the store
// refuses new messages, and the ops are written by a later try, with the
// message reference counts rebuilt so that bodies are neither lost nor
// leaked.
func TestDiskCommitFailure(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{MinFree: -1, inject: func(op string) error {
		if op == "commit" && fail.Load() {
			return errors.New("injected commit failure")
		}
		return nil
	}})
	d.Load()
	mem := NewMemory()
	mem.Load()
	both := func(ops ...broker.Op) broker.Ticket {
		mem.Append(ops...)
		return d.Append(ops...)
	}
	m1, m2 := msg(1, "a"), msg(2, "b")
	sess := broker.StoredSession{ClientID: "c", Expiry: 60}
	if err := d.Wait(both(broker.Op{Kind: broker.OpSessionPut, ClientID: "c", Session: sess},
		broker.Op{Kind: broker.OpQueuePut, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 1, Msg: m1, QoS: 1}})); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	t2 := both(broker.Op{Kind: broker.OpQueuePut, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 2, Msg: m2, QoS: 1}},
		broker.Op{Kind: broker.OpQueueDel, ClientID: "c", Delivery: broker.StoredDelivery{Seq: 1}})
	if err := d.Wait(t2); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("Wait for a failed commit: %v", err)
	}
	if err := d.Healthy(); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("Healthy after a failed commit: %v", err)
	}
	fail.Store(false)
	eventually(t, "the ops are committed", func() bool { return d.Wait(t2) == nil })
	if err := d.Healthy(); err != nil {
		t.Fatalf("Healthy after a commit worked: %v", err)
	}
	d.Close()
	d = openT(t, dir, DiskOptions{})
	defer d.Close()
	got, _ := d.Load()
	want, _ := mem.Load()
	if flatState(got) != flatState(want) {
		t.Fatalf("after reopen:\n%s\nwant:\n%s", flatState(got), flatState(want))
	}
	if len(d.idx.refs) != 1 || d.idx.refs[2] != 1 {
		t.Fatalf("message references after reopen: %v, want only message 2", d.idx.refs)
	}
}

// A sync Pebble reports failed fails the Waits it covered, for good; the
// next sync that works ends the failing state.
func TestDiskSyncFailure(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	d := openT(t, t.TempDir(), DiskOptions{MinFree: -1, inject: func(op string) error {
		if op == "sync" && fail.Load() {
			return errors.New("injected sync failure")
		}
		return nil
	}})
	defer d.Close()
	d.Load()
	fail.Store(true)
	t1 := d.Append(retainOp(1))
	if err := d.Wait(t1); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("Wait for a failed sync: %v", err)
	}
	if err := d.Healthy(); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("Healthy after a failed sync: %v", err)
	}
	fail.Store(false)
	// Waits fail fast until a sync works; the ops they wait for are
	// synced meanwhile.
	id := uint64(1)
	eventually(t, "a Wait succeeds once syncs work", func() bool {
		id++
		return d.Wait(d.Append(retainOp(id))) == nil
	})
	if err := d.Wait(t1); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("Wait for the op of the failed sync, later: %v", err)
	}
	if err := d.Healthy(); err != nil {
		t.Fatalf("Healthy after a sync worked: %v", err)
	}
}

// A store opened without room for its ballast refuses new messages until
// there is room, and makes it then.
func TestDiskOpensWithoutRoomForBallast(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(1 << 20)
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{MinFree: -1, Ballast: 1 << 20, freeSpace: func(string) (int64, error) { return free.Load(), nil }})
	defer d.Close()
	d.Load()
	if err := d.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Healthy without room for the ballast: %v", err)
	}
	free.Store(1 << 40)
	eventually(t, "Healthy once there is room", func() bool { return d.Healthy() == nil })
	if fi, err := os.Stat(filepath.Join(dir, ballastName)); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("ballast: %v %v", fi, err)
	}
}

// Until Open succeeded the guard retries nothing: a data directory that
// cannot be written is an error at start, not a hang.
func TestDiskOpenWriteErrorIsAnError(t *testing.T) {
	t.Parallel()
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpCreate {
			return &os.PathError{Op: "create", Path: op.Path, Err: syscall.EIO}
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		d, err := Open(t.TempDir(), DiskOptions{Logger: discard(), fs: errorfs.Wrap(vfs.Default, inj)})
		if err == nil {
			d.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("Open with failing creates: %v, want the EIO", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open with failing creates did not return")
	}
}

// Close does not wait forever for a write that keeps failing: after
// closeGrace the error reaches Pebble, which stops the process (status
// 70); what was acknowledged before is there at the next open.
func TestDiskCloseGivesUpOnAFailingWrite(t *testing.T) {
	t.Parallel()
	if dir := os.Getenv("ROOST_STORE_CLOSE_HELPER"); dir != "" {
		f := &logFault{err: syscall.EIO, kinds: writeOps}
		d, err := Open(dir, DiskOptions{MinFree: -1, fs: errorfs.Wrap(vfs.Default, f)})
		if err != nil {
			t.Fatal(err)
		}
		d.Load()
		if err := d.Wait(d.Append(retainOp(1))); err != nil {
			t.Fatal(err)
		}
		f.on.Store(true)
		if err := d.Wait(d.Append(retainOp(2))); !errors.Is(err, ErrWriteFailed) {
			t.Fatalf("Wait: %v", err)
		}
		d.Close()
		t.Fatal("Close returned with a write failing")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskCloseGivesUpOnAFailingWrite$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ROOST_STORE_CLOSE_HELPER="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 70 {
		t.Fatalf("helper: %v, want exit status 70; output:\n%s", err, out)
	}
	for _, want := range []string{"giving up", "store failed; exiting"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("helper output lacks %q:\n%s", want, out)
		}
	}
	if got := retainedTopics(t, dir); !strings.HasPrefix(got, "t/1") {
		t.Fatalf("after the exit, reopened store holds %q; want t/1 first", got)
	}
}

// The free-space check counts the ballast as free: it is, at need.
func TestDiskMinFreeCountsBallast(t *testing.T) {
	t.Parallel()
	var free atomic.Int64
	free.Store(1 << 40)
	d := openT(t, t.TempDir(), DiskOptions{MinFree: 3 << 20, Ballast: 1 << 20,
		freeSpace: func(string) (int64, error) { return free.Load(), nil }})
	defer d.Close()
	d.Load()
	free.Store(5 << 19) // 2.5 MiB + the 1 MiB ballast: above MinFree
	d.health.check(d)
	if err := d.Healthy(); err != nil {
		t.Fatalf("Healthy with 2.5 MiB free and a 1 MiB ballast, MinFree 3 MiB: %v", err)
	}
	free.Store(3 << 19) // 1.5 + 1 MiB: below
	d.health.check(d)
	if err := d.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Healthy with 1.5 MiB free and a 1 MiB ballast, MinFree 3 MiB: %v", err)
	}
}

// Two failures apart do not fail what was acknowledged between them.
func TestDiskPoisonedRangesStayApart(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	d := openT(t, t.TempDir(), DiskOptions{MinFree: -1, inject: func(op string) error {
		if op == "sync" && fail.Load() {
			return errors.New("injected sync failure")
		}
		return nil
	}})
	defer d.Close()
	d.Load()
	id := uint64(0)
	put := func() broker.Ticket { id++; return d.Append(retainOp(id)) }
	failOnce := func() broker.Ticket {
		fail.Store(true)
		tk := put()
		if err := d.Wait(tk); !errors.Is(err, ErrWriteFailed) {
			t.Fatalf("Wait for a failed sync: %v", err)
		}
		fail.Store(false)
		eventually(t, "syncs work again", func() bool { return d.Wait(put()) == nil })
		return tk
	}
	t1 := failOnce()
	t2 := put()
	if err := d.Wait(t2); err != nil {
		t.Fatal(err)
	}
	t3 := failOnce()
	for _, tk := range []broker.Ticket{t1, t3} {
		if err := d.Wait(tk); !errors.Is(err, ErrWriteFailed) {
			t.Errorf("Wait(%d), whose sync failed: %v", tk, err)
		}
	}
	if err := d.Wait(t2); err != nil {
		t.Errorf("Wait(%d), synced between two failures: %v", t2, err)
	}
}

// A ballast of another size (the option changed) is made again at the
// configured size; a ballast turned off is removed.
func TestDiskBallastFollowsTheOption(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, ballastName)
	for _, size := range []int64{2 << 20, 1 << 20, -1} {
		d := openT(t, dir, DiskOptions{MinFree: -1, Ballast: size})
		d.Load()
		fi, err := os.Stat(path)
		switch {
		case size < 0 && !errors.Is(err, os.ErrNotExist):
			t.Errorf("ballast turned off: %v %v", fi, err)
		case size > 0 && (err != nil || fi.Size() != size):
			t.Errorf("ballast %d: %v %v", size, fi, err)
		}
		d.Close()
	}
}

// fill, the ballast where fallocate is not supported, writes the size asked
// for, in bytes a compressing file system cannot squeeze away.
func TestBallastFill(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 3<<20 + 5
	if err := fill(f, size); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size {
		t.Fatalf("%d bytes, want %d", len(b), size)
	}
	if zeros := bytes.Count(b, []byte{0}); zeros > size/128 {
		t.Fatalf("%d zero bytes of %d: compressible", zeros, size)
	}
}

// Through the broker, on a Disk whose log writes fail (errorfs): an MQTT 5
// publisher whose message the failed write carried gets no PUBACK but
// DISCONNECT 0x80 (the write is retried: the outcome is unknown), then
// 0x97 while the store refuses, a 3.1.1 publisher is disconnected, nothing
// is acknowledged that the store did not keep, and once writes work the
// broker accepts again and the persistent subscriber gets every
// acknowledged message after a restart.
func TestBrokerOnFailingLogWrites(t *testing.T) {
	t.Parallel()
	f := &logFault{err: syscall.EIO, kinds: writeOps}
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{MinFree: -1, fs: errorfs.Wrap(vfs.Default, f)})
	s, addr := brokertest.Start(t, broker.Options{Store: d, Logger: discard()})

	expiry := packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 3600}
	sub := mqtttest.Dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "keeper", Properties: expiry})
	sub.Subscribe("f/#", 1)
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed(time.Second)

	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	acked := map[string]bool{}
	publish := func(pid uint16, payload string) packet.ReasonCode {
		t.Helper()
		pub.Send(&packet.Publish{Topic: "f/x", QoS: 1, PacketID: pid, Payload: []byte(payload)})
		a, ok := pub.Next(5 * time.Second).(*packet.Puback)
		if !ok || a.PacketID != pid {
			t.Fatalf("publish %s: got %+v, want its PUBACK", payload, a)
		}
		if a.ReasonCode < 0x80 {
			acked[payload] = true
		}
		return a.ReasonCode
	}
	if rc := publish(1, "before"); rc != packet.Success {
		t.Fatalf("PUBACK with a working disk: 0x%02X", byte(rc))
	}
	f.on.Store(true)
	// The failed write is retried and may yet keep the message: its
	// outcome is unknown, so it is neither acknowledged nor refused.
	pub.Send(&packet.Publish{Topic: "f/x", QoS: 1, PacketID: 2, Payload: []byte("failed")})
	got := pub.ExpectClosed(5 * time.Second)
	if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.UnspecifiedError {
		t.Fatalf("publish whose write failed: got %v, want DISCONNECT 0x80 and no PUBACK", got)
	}
	pub = mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	if rc := publish(3, "refused"); rc != packet.QuotaExceeded {
		t.Fatalf("PUBACK while the store fails: 0x%02X, want 0x97", byte(rc))
	}
	old := mqtttest.Dial(t, addr, packet.V311)
	old.Connect(&packet.Connect{ClientID: "old", CleanStart: true})
	old.Send(&packet.Publish{Topic: "f/x", QoS: 1, PacketID: 1, Payload: []byte("old")})
	if got := old.ExpectClosed(2 * time.Second); len(got) != 0 {
		t.Fatalf("3.1.1 publisher while the store fails got %v, want a plain close", got)
	}
	f.on.Store(false)
	pid := uint16(10)
	mqtttest.Eventually(t, 10*time.Second, func() bool { pid++; return publish(pid, fmt.Sprint("after-", pid)) == packet.Success })

	s.Shutdown(context.Background())
	d = openT(t, dir, DiskOptions{MinFree: -1})
	_, addr = brokertest.Start(t, broker.Options{Store: d, Logger: discard()})
	sub = mqtttest.Dial(t, addr, packet.V5)
	if ack := sub.Connect(&packet.Connect{ClientID: "keeper", Properties: expiry}); !ack.SessionPresent {
		t.Fatal("keeper's session lost")
	}
	for len(acked) > 0 {
		m, err := sub.Read(5 * time.Second)
		if err != nil {
			t.Fatalf("after restart, acknowledged messages missing: %v (%v)", acked, err)
		}
		if p, ok := m.(*packet.Publish); ok {
			delete(acked, string(p.Payload))
			sub.Send(&packet.Puback{PacketID: p.PacketID})
		}
	}
}
