package testport

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"
)

func TestReserveGivesDistinctListenablePortsBelowTheEphemeralRange(t *testing.T) {
	lo, hi := span()
	if lo == 0 {
		t.Skip("no room beside the ephemeral range on this machine")
	}
	seen := map[int]bool{}
	for range 50 {
		p, err := Reserve("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if p < lo || p >= hi {
			t.Fatalf("port %d outside %d-%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("reserved port %d: %v", p, err)
		}
		ln.Close()
	}
}

func TestLockHeldUntilItsFileCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "4242")
	f, ok, err := lock(path)
	if err != nil || !ok {
		t.Fatalf("first lock: ok %v, %v", ok, err)
	}
	if g, ok, err := lock(path); err != nil || ok {
		if g != nil {
			g.Close()
		}
		t.Fatalf("second lock while the first is held: ok %v, %v; want refused", ok, err)
	}
	f.Close()
	g, ok, err := lock(path)
	if err != nil || !ok {
		t.Fatalf("lock after the holder closed: ok %v, %v", ok, err)
	}
	g.Close()
}

func TestSpanLiesOutsideTheEphemeralRange(t *testing.T) {
	lo, hi := span()
	if lo == 0 {
		t.Skip("no room")
	}
	if lo < 1024 || hi > 65536 || hi-lo < 1024 {
		t.Fatalf("span %d-%d", lo, hi)
	}
}
