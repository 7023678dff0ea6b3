package client

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A LogStore gives back what was put and not deleted, across a reopen;
// a torn last record (a crash in the middle of a write) is dropped and the
// rest kept; a file mostly of dead records is compacted without losing
// the live ones.
func TestLogStore(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s.log")
	s, err := OpenLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	put := func(seq uint64, released bool) {
		t.Helper()
		if err := s.Put(StoredPublish{Seq: seq, PacketID: uint16(seq), Released: released, Tag: seq + 100,
			Message: Message{Topic: fmt.Sprintf("t/%d", seq), QoS: 2, Payload: []byte("p")}}); err != nil {
			t.Fatal(err)
		}
	}
	put(1, false)
	put(2, false)
	put(1, true) // replaces
	if err := s.Delete(2); err != nil {
		t.Fatal(err)
	}
	put(3, false)
	s.Close()

	// A torn record at the end: half of a Put.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	rec := frame(logPut, 9, []byte("whatever"))
	f.Write(rec[:len(rec)/2])
	f.Close()

	s, err = OpenLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.Load()
	if err != nil || len(recs) != 2 || recs[0].Seq != 1 || !recs[0].Released || recs[0].Tag != 101 || recs[0].Message.Topic != "t/1" ||
		recs[1].Seq != 3 || recs[1].Released {
		t.Fatalf("after reopen: %+v %v", recs, err)
	}
	// Enough churn to pass compactAt: the file shrinks, the live records stay.
	for i := uint64(10); s.size < compactAt-1000; i++ {
		put(i, false)
		if err := s.Delete(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		put(1000, false)
	}
	if s.size >= compactAt {
		t.Fatalf("not compacted: %d bytes", s.size)
	}
	s.Close()
	s, err = OpenLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, _ = s.Load()
	if len(recs) != 3 || recs[0].Seq != 1 || recs[1].Seq != 3 || recs[2].Seq != 1000 {
		t.Fatalf("after compaction: %+v", recs)
	}
}
