package netfault

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// InsideEnv is the environment variable that marks a process started by
// Command (or Namespace) inside its private namespace; OuterEnv names the
// network namespace it was started from, which Setup checks it is not in.
const (
	InsideEnv = "ROOST_NETFAULT_INSIDE"
	OuterEnv  = "ROOST_NETFAULT_OUTER"
)

// table and chain hold every rule this package adds.
const (
	table = "roost_netfault"
	chain = "out"
)

// Mode is what a cut does to the packets it matches.
type Mode int

const (
	// Drop discards them silently: connections stall until their ends
	// time out, as across a cut cable or a dead switch.
	Drop Mode = iota
	// Reject answers TCP with a reset (and anything else with ICMP port
	// unreachable): connections fail at once, as to a host that is up
	// but firewalled. TCP resets and ICMP cross a rejecting cut.
	Reject
)

// ErrNotPrivate is returned by Setup in a process that is not in a
// private network namespace of its own: netfault never touches the host's
// firewall.
var ErrNotPrivate = errors.New("netfault: not inside a private network namespace")

// ErrNoNft is returned by Setup when the nft program is missing.
var ErrNoNft = errors.New("netfault: nft not found (Debian package nftables)")

// Net is the firewall of the private namespace this process runs in. Its
// methods are safe for concurrent use; each change is one nft transaction,
// so a cut never exists half-made.
type Net struct {
	nft  string
	log  *slog.Logger
	mu   sync.Mutex
	mode Mode
	cuts []cut // the current rules, for logs and Cuts
}

// cut is packets from an address of from to one of to, dropped or
// rejected. An empty from or to is all of 127.0.0.0/8 except the
// addresses of not (Isolate).
type cut struct {
	from, to, not []netip.Addr
	mode          Mode
}

// Setup prepares the namespace this process runs in: it refuses unless the
// process was started by Command (InsideEnv set) into a network namespace
// other than the one Command ran in and init's, brings the loopback up, and creates an empty rule
// table. log (nil: discarded) gets a line for every change.
func Setup(log *slog.Logger) (*Net, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Getenv(InsideEnv) == "" {
		return nil, fmt.Errorf("%w (%s is not set)", ErrNotPrivate, InsideEnv)
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("netfault: %w", err)
	}
	if outer := os.Getenv(OuterEnv); outer == "" || outer == self {
		return nil, fmt.Errorf("%w (in %s, started from %q)", ErrNotPrivate, self, outer)
	}
	// Process 1's namespace is the host's (when this process may see it).
	if init, err := os.Readlink("/proc/1/ns/net"); err == nil && init == self {
		return nil, fmt.Errorf("%w (in %s, as process 1 is)", ErrNotPrivate, self)
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nft", "/sbin/nft"} {
			if _, serr := os.Stat(p); serr == nil {
				nft, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, ErrNoNft
	}
	if err := loopbackUp(); err != nil {
		return nil, fmt.Errorf("netfault: bringing lo up: %w", err)
	}
	n := &Net{nft: nft, log: log}
	script := fmt.Sprintf("add table inet %s\nadd chain inet %s %s { type filter hook output priority 0; policy accept; }\n", table, table, chain)
	if err := n.run(script); err != nil {
		return nil, err
	}
	return n, nil
}

// loopbackUp sets IFF_UP on lo, as `ip link set lo up` does: a new network
// namespace starts with its loopback down, and 127.0.0.0/8 routes appear
// with it.
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	// struct ifreq: the name (IFNAMSIZ bytes), then a union whose first
	// member here is the short ifr_flags.
	var ifr [40]byte
	copy(ifr[:syscall.IFNAMSIZ], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return fmt.Errorf("SIOCGIFFLAGS: %w", e)
	}
	flags := (*uint16)(unsafe.Pointer(&ifr[syscall.IFNAMSIZ]))
	*flags |= syscall.IFF_UP
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return fmt.Errorf("SIOCSIFFLAGS: %w", e)
	}
	return nil
}

// SetMode sets what later cuts do (Drop, the default, or Reject); the
// current ones keep theirs.
func (n *Net) SetMode(m Mode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mode = m
}

// Partition replaces the current cuts with a partition into groups: every
// packet between two addresses of different groups is cut, both ways.
// Addresses in no group (127.0.0.1, where the test's unbound clients come
// from) keep reaching everyone. An address in two groups, or one that is
// not an IPv4 address, is an error, and nothing changes.
func (n *Net) Partition(groups ...[]string) error {
	gs := make([][]netip.Addr, len(groups))
	seen := map[netip.Addr]bool{}
	for i, g := range groups {
		for _, s := range g {
			a, err := parse(s)
			if err != nil {
				return err
			}
			if seen[a] {
				return fmt.Errorf("netfault: %s is in two groups", a)
			}
			seen[a] = true
			gs[i] = append(gs[i], a)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var cuts []cut
	for i, g := range gs {
		var others []netip.Addr
		for j, h := range gs {
			if j != i {
				others = append(others, h...)
			}
		}
		if len(g) > 0 && len(others) > 0 {
			cuts = append(cuts, cut{from: g, to: others, mode: n.mode})
		}
	}
	return n.replace(cuts, fmt.Sprintf("partition %v", groups))
}

// Isolate adds a cut of addr from every other address of 127.0.0.0/8 but
// 127.0.0.1, both ways: a node alone on its side of a partition, still
// reachable by the test's unbound clients.
func (n *Net) Isolate(addr string) error {
	a, err := parse(addr)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	except := []netip.Addr{a, netip.MustParseAddr("127.0.0.1")}
	self := []netip.Addr{a}
	cuts := append(slices.Clone(n.cuts),
		cut{from: self, not: except, mode: n.mode},
		cut{to: self, not: except, mode: n.mode})
	return n.replace(cuts, "isolate "+addr)
}

// Cut adds a one-way cut: packets from the address from to the address to
// are dropped (or rejected); the other direction still flows. (For TCP
// both directions of a connection fail either way; a one-way cut is for
// protocols, or timeouts, that tell the two apart.)
func (n *Net) Cut(from, to string) error {
	f, err := parse(from)
	if err != nil {
		return err
	}
	d, err := parse(to)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	cuts := append(slices.Clone(n.cuts), cut{from: []netip.Addr{f}, to: []netip.Addr{d}, mode: n.mode})
	return n.replace(cuts, fmt.Sprintf("cut %s -> %s", from, to))
}

// Heal removes every cut.
func (n *Net) Heal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.replace(nil, "heal")
}

// Cuts describes the current cuts, one nft rule each.
func (n *Net) Cuts() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, c := range n.cuts {
		out = append(out, c.rules()...)
	}
	return out
}

// replace makes cuts the chain's whole content in one nft transaction.
func (n *Net) replace(cuts []cut, what string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "flush chain inet %s %s\n", table, chain)
	for _, c := range cuts {
		for _, r := range c.rules() {
			fmt.Fprintf(&b, "add rule inet %s %s %s\n", table, chain, r)
		}
	}
	if err := n.run(b.String()); err != nil {
		return fmt.Errorf("netfault: %s: %w", what, err)
	}
	n.cuts = cuts
	n.log.Info("netfault", "change", what, "rules", len(cuts))
	return nil
}

// rules are c as nft rule statements: one for Drop; for Reject, a reset
// for TCP and an ICMP port unreachable for the rest, and before them the
// two that let those answers (RST, ICMP) through: they are themselves
// packets across the cut, the other way.
func (c cut) rules() []string {
	var b strings.Builder
	if len(c.from) > 0 {
		fmt.Fprintf(&b, "ip saddr %s ", set(c.from))
	} else {
		b.WriteString("ip saddr 127.0.0.0/8 ")
		if len(c.not) > 0 {
			fmt.Fprintf(&b, "ip saddr != %s ", set(c.not))
		}
	}
	if len(c.to) > 0 {
		fmt.Fprintf(&b, "ip daddr %s ", set(c.to))
	} else {
		b.WriteString("ip daddr 127.0.0.0/8 ")
		if len(c.not) > 0 {
			fmt.Fprintf(&b, "ip daddr != %s ", set(c.not))
		}
	}
	match := b.String()
	if c.mode == Reject {
		return []string{match + "tcp flags & rst == rst accept", match + "meta l4proto icmp accept",
			match + "meta l4proto tcp reject with tcp reset", match + "reject"}
	}
	return []string{match + "drop"}
}

// set writes addrs as an nft anonymous set.
func set(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

func parse(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("netfault: %q is not an IPv4 address", s)
	}
	return a, nil
}

// run feeds script to nft -f - (one transaction: all of it or nothing).
func (n *Net) run(script string) error {
	cmd := exec.Command(n.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s (script:\n%s)", err, bytes.TrimSpace(out.Bytes()), script)
	}
	return nil
}
