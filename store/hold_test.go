package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

func sessionOp(id string) broker.Op {
	return broker.Op{Kind: broker.OpSessionPut, ClientID: id, Session: broker.StoredSession{ClientID: id, Expiry: 60}}
}

func sessionIDs(t *testing.T, d *Disk) map[string]bool {
	t.Helper()
	st, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range st.Sessions {
		ids[s.ClientID] = true
	}
	return ids
}

// Ops appended while the store is held are not committed until it is
// released, and then together; ops appended before the hold are
// committed meanwhile. Closed while held, the store keeps what came
// before the hold and none of what came after (a crash at that moment
// leaves the same).
func TestDiskHoldCommitsTogether(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{})
	before := d.Append(sessionOp("before"))
	d.Hold()
	held := d.Append(sessionOp("held1"))
	d.Append(sessionOp("held2"))
	if err := d.Wait(before); err != nil {
		t.Fatalf("an op appended before the hold waits for it: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Wait(held) }()
	d.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait for a held op did not return after Release")
	}
	d.Hold()
	after := d.Append(sessionOp("after"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d.Release()
	if err := d.Wait(after); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait for an op appended after the hold, store closed while held: %v, want ErrClosed", err)
	}

	d = openT(t, dir, DiskOptions{})
	defer d.Close()
	got := sessionIDs(t, d)
	want := map[string]bool{"before": true, "held1": true, "held2": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the restart: sessions %v, want %v", got, want)
	}
}

// Overlapping holds from several goroutines, each appending and then
// waiting for its ops after its Release, all finish: a hold never keeps
// the others' ops from being committed once it is released.
func TestDiskHoldsOverlap(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, DiskOptions{})
	const workers, rounds = 4, 100
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				d.Hold()
				d.Append(sessionOp(fmt.Sprintf("w%d-%d-a", w, i)))
				tk := d.Append(sessionOp(fmt.Sprintf("w%d-%d-b", w, i)))
				d.Release()
				if i%10 == 0 {
					// A writer outside any hold, as a QoS 1 publish is.
					d.Append(sessionOp(fmt.Sprintf("w%d-%d-c", w, i)))
				}
				if err := d.Wait(tk); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("Waits after overlapping holds did not all return")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openT(t, dir, DiskOptions{})
	defer d.Close()
	if n, want := len(sessionIDs(t, d)), workers*rounds*2+workers*rounds/10; n != want {
		t.Fatalf("%d sessions after the restart, want %d", n, want)
	}
}
