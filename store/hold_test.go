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
	t.Parallel()
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
	t.Parallel()
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

// BenchmarkDiskHold: 8 goroutines each append one QoS 2 publish's ops
// (the packet id and two deliveries, three Appends) and wait for them, as
// the broker's publishers do, with the store held across the three
// Appends or not. An op is one such publish durable. Holds that overlap
// keep what was appended meanwhile from being committed until the last
// of them is released: this measures what that costs the group commit.
func BenchmarkDiskHold(b *testing.B) {
	for _, held := range []bool{false, true} {
		b.Run(fmt.Sprintf("held=%v", held), func(b *testing.B) {
			d, err := Open(b.TempDir(), DiskOptions{Logger: discard()})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			d.Append(sessionOp("s"))
			q := broker.Op{Kind: broker.OpQueuePut, ClientID: "s", Delivery: broker.StoredDelivery{Msg: msg(1, "t"), QoS: 2}}
			const workers = 8
			var next sync.Mutex
			seq := uint64(0)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < b.N/workers; i++ {
						next.Lock()
						seq += 2
						a, c := q, q
						a.Delivery.Seq, c.Delivery.Seq = seq-1, seq
						next.Unlock()
						if held {
							d.Hold()
						}
						d.Append(broker.Op{Kind: broker.OpInboundPut, ClientID: "s", PacketID: uint16(i)})
						d.Append(a)
						tk := d.Append(c)
						if held {
							d.Release()
						}
						if err := d.Wait(tk); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
