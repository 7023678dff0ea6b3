package netfault_test

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/netfault"
)

// echo listens on ip with an OS-picked port and echoes every connection
// until the test ends; it returns the address.
func echo(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// dial connects from the address from (bound, as cluster nodes bind their
// outgoing connections) to to, within d.
func dial(from, to string, d time.Duration) (net.Conn, error) {
	dl := net.Dialer{Timeout: d, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return dl.Dial("tcp", to)
}

// cutBound is how long a dial across a dropped link is given before it
// counts as cut: a dial that works on this loopback takes well under a
// millisecond, and one across a drop never completes.
const cutBound = 400 * time.Millisecond

func mustReach(t *testing.T, from, to string) {
	t.Helper()
	c, err := dial(from, to, 5*time.Second)
	if err != nil {
		t.Fatalf("%s -> %s: %v, want a connection", from, to, err)
	}
	defer c.Close()
	roundTrip(t, c, 5*time.Second)
}

func roundTrip(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("%s -> %s: write: %v", c.LocalAddr(), c.RemoteAddr(), err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("%s -> %s: echo %q, %v", c.LocalAddr(), c.RemoteAddr(), b, err)
	}
}

// mustTimeOut checks that a dial from from to to neither connects nor is
// refused: its packets are dropped.
func mustTimeOut(t *testing.T, from, to string) {
	t.Helper()
	c, err := dial(from, to, cutBound)
	if err == nil {
		c.Close()
		t.Fatalf("%s -> %s connected across a cut", from, to)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s -> %s: %v, want a timeout (dropped, not refused)", from, to, err)
	}
}

// TestPartitionAndHeal: a partition cuts new and established connections
// between its groups, both ways, and nothing else; Heal restores them.
func TestPartitionAndHeal(t *testing.T) {
	n := netfault.Namespace(t)
	if n == nil {
		return
	}
	const a, b, c = "127.0.0.2", "127.0.0.3", "127.0.0.4"
	ea, eb, ec := echo(t, a), echo(t, b), echo(t, c)
	mustReach(t, a, eb)
	established, err := dial(a, eb, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	roundTrip(t, established, 5*time.Second)

	if err := n.Partition([]string{a}, []string{b, c}); err != nil {
		t.Fatal(err)
	}
	mustTimeOut(t, a, eb)
	mustTimeOut(t, b, ea)
	mustTimeOut(t, c, ea)
	mustReach(t, b, ec) // same side
	mustReach(t, c, eb)
	mustReach(t, "127.0.0.1", ea) // in no group
	// The established connection stalls: its bytes are dropped too.
	established.SetDeadline(time.Now().Add(cutBound))
	established.Write([]byte("ping"))
	if _, err := established.Read(make([]byte, 4)); err == nil {
		t.Fatal("an established connection across the partition still carries data")
	}

	if err := n.Heal(); err != nil {
		t.Fatal(err)
	}
	if got := n.Cuts(); len(got) != 0 {
		t.Fatalf("after Heal: %q", got)
	}
	mustReach(t, a, eb)
	mustReach(t, b, ea)
	mustReach(t, c, ea)
}

// TestIsolateCutAndReject: Isolate cuts one address from every other but
// 127.0.0.1; Cut is one way; Reject fails connections at once.
func TestIsolateCutAndReject(t *testing.T) {
	n := netfault.Namespace(t)
	if n == nil {
		return
	}
	const a, b, c = "127.0.0.2", "127.0.0.3", "127.0.0.4"
	ea, eb, ec := echo(t, a), echo(t, b), echo(t, c)

	if err := n.Isolate(c); err != nil {
		t.Fatal(err)
	}
	mustTimeOut(t, a, ec)
	mustTimeOut(t, c, eb)
	mustReach(t, a, eb)
	mustReach(t, "127.0.0.1", ec) // the test's unbound clients
	mustReach(t, c, ec)           // itself
	if err := n.Heal(); err != nil {
		t.Fatal(err)
	}
	mustReach(t, a, ec)

	// One way: a's packets to b are dropped, b's to a are not. A TCP
	// dial from b to a then gets its SYN through but not a's answer:
	// it times out too, which is what one-way loss does to TCP. What
	// goes from b to a still arrives: a datagram shows it.
	if err := n.Cut(a, b); err != nil {
		t.Fatal(err)
	}
	mustTimeOut(t, a, eb)
	mustReach(t, a, ec)
	udpA, err := net.ListenPacket("udp", net.JoinHostPort(a, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer udpA.Close()
	udpB, err := net.ListenPacket("udp", net.JoinHostPort(b, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer udpB.Close()
	if _, err := udpB.WriteTo([]byte("b to a"), udpA.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	udpA.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if k, _, err := udpA.ReadFrom(buf); err != nil || string(buf[:k]) != "b to a" {
		t.Fatalf("b -> a under a one-way cut a -> b: %q, %v", buf[:k], err)
	}
	udpA.WriteTo([]byte("a to b"), udpB.LocalAddr())
	udpB.SetReadDeadline(time.Now().Add(cutBound))
	if k, _, err := udpB.ReadFrom(buf); err == nil {
		t.Fatalf("a -> b crossed a one-way cut: %q", buf[:k])
	}

	// Reject: a reset at once instead of a stall.
	n.SetMode(netfault.Reject)
	if err := n.Partition([]string{a}, []string{b}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = dial(a, eb, 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a -> b across a rejecting partition: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if got := strings.Join(n.Cuts(), "\n"); !strings.Contains(got, "reject with tcp reset") {
		t.Errorf("cuts %q", got)
	}
	// Bad input is an error and changes nothing.
	if err := n.Partition([]string{a}, []string{a}); err == nil {
		t.Error("an address in two groups was accepted")
	}
	if err := n.Isolate("localhost"); err == nil {
		t.Error("Isolate(\"localhost\") was accepted")
	}
	mustReach(t, b, ec)
	_ = ea
}

// TestSetupRefusesOutside: Setup never touches a firewall that is not a
// private namespace's.
func TestSetupRefusesOutside(t *testing.T) {
	if os.Getenv(netfault.InsideEnv) != "" {
		t.Skip("inside a namespace")
	}
	if _, err := netfault.Setup(nil); !errors.Is(err, netfault.ErrNotPrivate) {
		t.Fatalf("Setup outside: %v, want ErrNotPrivate", err)
	}
	t.Setenv(netfault.InsideEnv, "pretend")
	if _, err := netfault.Setup(nil); !errors.Is(err, netfault.ErrNotPrivate) {
		t.Fatalf("Setup with %s set but not %s: %v, want ErrNotPrivate", netfault.InsideEnv, netfault.OuterEnv, err)
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Skip(err)
	}
	t.Setenv(netfault.OuterEnv, self)
	if _, err := netfault.Setup(nil); !errors.Is(err, netfault.ErrNotPrivate) {
		t.Fatalf("Setup in the namespace it claims to come from: %v, want ErrNotPrivate", err)
	}
}
