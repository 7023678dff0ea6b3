package cluster

import (
	"bytes"
	"fmt"
	"testing"
)

// A sender's batches read back as the forwards added, in order, with their
// sequences; a batch never passes maxBatch unless one forward alone does.
func TestBatchRoundTrip(t *testing.T) {
	s := &sender{header: appendString(appendString([]byte{batchVersion}, "n1"), "inc1")}
	type entry struct {
		seq, id uint64
		fwd     []byte
	}
	var want []entry
	for i := range 300 {
		e := entry{uint64(i % 3), uint64(i * 7 % 5), bytes.Repeat([]byte{byte(i)}, 1000+i)}
		if i == 150 {
			e.fwd = bytes.Repeat([]byte{'x'}, maxBatch+10) // alone
		}
		want = append(want, e)
		s.addID(e.seq, e.id, e.fwd)
	}
	batches, seqs := s.take()
	if len(batches) < 3 {
		t.Fatalf("%d batches for %d KiB", len(batches), 300*1150/1024+maxBatch/1024)
	}
	var got []entry
	for i, b := range batches {
		if len(b) > maxBatch+32 && bytes.Count(b, []byte{'x'}) < maxBatch {
			t.Errorf("batch %d: %d bytes", i, len(b))
		}
		var bs []uint64
		ok := forEachForward(b, func(origin originKey, seq uint64, fwd []byte) {
			if origin.node != "n1" || origin.inc != "inc1" {
				t.Errorf("origin %+v", origin)
			}
			got = append(got, entry{seq, origin.id, fwd})
			if seq != 0 {
				bs = append(bs, seq)
			}
		})
		if !ok {
			t.Fatalf("batch %d malformed", i)
		}
		if fmt.Sprint(bs) != fmt.Sprint(seqs[i]) {
			t.Errorf("batch %d: sequences %v, sender says %v", i, bs, seqs[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d forwards read back, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].seq != want[i].seq || got[i].id != want[i].id || !bytes.Equal(got[i].fwd, want[i].fwd) {
			t.Fatalf("forward %d: seq %d, id %d, %d bytes; want seq %d, id %d, %d bytes", i, got[i].seq, got[i].id, len(got[i].fwd), want[i].seq, want[i].id, len(want[i].fwd))
		}
	}
}

// A batch cut anywhere, or of another version, is reported, never read
// past its end.
func TestBatchMalformed(t *testing.T) {
	s := &sender{header: appendString(appendString([]byte{batchVersion}, "n1"), "i")}
	s.add(7, []byte("hello"))
	s.add(0, []byte("world"))
	b, _ := s.take()
	hdr := len(s.header)
	// Well formed: cut between entries (a shorter batch). Entry: seq,
	// id, length, 5 bytes.
	boundaries := map[int]bool{hdr: true, hdr + 8: true}
	for cut := 1; cut < len(b[0]); cut++ {
		if got := forEachForward(b[0][:cut], func(originKey, uint64, []byte) {}); got != boundaries[cut] {
			t.Errorf("cut at %d of %d: well formed %v, want %v", cut, len(b[0]), got, boundaries[cut])
		}
	}
	if forEachForward(append([]byte{9}, b[0][1:]...), func(originKey, uint64, []byte) {}) {
		t.Error("a batch of another version was read")
	}
}
