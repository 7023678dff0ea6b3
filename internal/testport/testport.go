package testport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// tries bounds the search for one port; the range below the ephemeral
// ports holds thousands, so running out means something is wrong.
const tries = 200

var (
	// reserved keeps the lock files open, and so their locks held, for the
	// life of the process: a port is reserved until the process ends. The
	// reservations belong to the process, not to one test, because the
	// servers a test starts may outlive it by a little (a cleanup's kill).
	mu       sync.Mutex
	reserved []*os.File
)

// Reserve returns a TCP port free on ip that no other process of this
// machine holds through Reserve, and holds it for this process's life.
func Reserve(ip string) (int, error) {
	lo, hi := span()
	if lo == 0 {
		return bindZero(ip)
	}
	dir := filepath.Join(os.TempDir(), "roost-testports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("testport: %w", err)
	}
	for range tries {
		port := lo + rand.IntN(hi-lo)
		f, ok, err := lock(filepath.Join(dir, strconv.Itoa(port)))
		if errors.Is(err, errNoLock) {
			return bindZero(ip)
		}
		if err != nil {
			return 0, fmt.Errorf("testport: %w", err)
		}
		if !ok {
			continue // another process (or this one) holds it
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			f.Close() // in use by something that does not reserve: a fixed-port service
			continue
		}
		ln.Close()
		mu.Lock()
		reserved = append(reserved, f)
		mu.Unlock()
		return port, nil
	}
	return 0, fmt.Errorf("testport: no free port on %s in %d-%d after %d tries", ip, lo, hi, tries)
}

// span is the range ports are chosen from: the 16,384 ports (or as many
// as there are above 1024) below the kernel's ephemeral range, or above
// it when it starts too low. 0, 0 when neither has room: then Reserve
// falls back to bind(":0").
func span() (lo, hi int) {
	elo, ehi := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, err1 := strconv.Atoi(f[0])
			z, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && a <= z {
				elo, ehi = a, z
			}
		}
	}
	const want, floor, ceil = 16384, 1024, 65536
	switch {
	case elo-floor >= 1024:
		return max(floor, elo-want), elo
	case ceil-(ehi+1) >= 1024:
		return ehi + 1, min(ceil, ehi+1+want)
	}
	return 0, 0
}

func bindZero(ip string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("testport: no free port on %s: %w", ip, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var errNoLock = errors.New("testport: no file locks on this platform")
