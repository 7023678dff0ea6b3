package broker

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// ipLimits tracks connections per client IP address: how many are open,
// how fast new ones arrive, and recent authentication failures. It is
// consulted once per connection and per failed CONNECT, never per packet.
type ipLimits struct {
	maxConns int     // per IP; 0 = unlimited
	rate     float64 // new connections per second per IP; 0 = unlimited
	burst    float64

	mu    sync.Mutex
	byIP  map[netip.Addr]*ipState
	sweep time.Time
}

type ipState struct {
	open     int
	tokens   float64
	last     time.Time
	failures int       // failed authentications in the current window
	failedAt time.Time // last failure
}

// authFailWindow is how long failed authentications are remembered;
// authFreeTries how many fail without delay.
const (
	authFailWindow = time.Minute
	authFreeTries  = 5
	authMaxDelay   = 10 * time.Second
)

func newIPLimits(maxConns int, rate float64) *ipLimits {
	return &ipLimits{maxConns: maxConns, rate: rate, burst: max(rate*2, 1), byIP: make(map[netip.Addr]*ipState)}
}

func addrIP(a net.Addr) (netip.Addr, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(ta.IP)
		return ip.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap(), err == nil
}

// admit registers a new connection from ip, or explains why it is refused.
func (l *ipLimits) admit(ip netip.Addr, now time.Time) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maybeSweep(now)
	st := l.byIP[ip]
	if st == nil {
		st = &ipState{tokens: l.burst, last: now}
		l.byIP[ip] = st
	}
	if l.maxConns > 0 && st.open >= l.maxConns {
		return false, "too many connections from this address"
	}
	if l.rate > 0 {
		st.tokens = min(l.burst, st.tokens+now.Sub(st.last).Seconds()*l.rate)
		st.last = now
		if st.tokens < 1 {
			return false, "connection rate from this address too high"
		}
		st.tokens--
	}
	st.open++
	return true, ""
}

// release unregisters a connection admitted before.
func (l *ipLimits) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.byIP[ip]; st != nil && st.open > 0 {
		st.open--
	}
}

// authFailed records a failed authentication and returns how long to hold
// back the refusal: nothing for the first few, then doubling up to
// authMaxDelay, which slows password guessing without a ban list.
func (l *ipLimits) authFailed(ip netip.Addr, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.byIP[ip]
	if st == nil {
		st = &ipState{tokens: l.burst, last: now}
		l.byIP[ip] = st
	}
	if now.Sub(st.failedAt) > authFailWindow {
		st.failures = 0
	}
	st.failures++
	st.failedAt = now
	if st.failures <= authFreeTries {
		return 0
	}
	return min(authMaxDelay, time.Second<<min(st.failures-authFreeTries-1, 4))
}

// maybeSweep drops idle entries once a minute so the map follows the live
// addresses. l.mu must be held.
func (l *ipLimits) maybeSweep(now time.Time) {
	if now.Sub(l.sweep) < time.Minute {
		return
	}
	l.sweep = now
	for ip, st := range l.byIP {
		if st.open == 0 && now.Sub(st.last) > time.Minute && now.Sub(st.failedAt) > authFailWindow {
			delete(l.byIP, ip)
		}
	}
}

// tokenBucket limits a rate; one per connection, used by its reader only.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *tokenBucket) allow(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	if b.last.IsZero() {
		b.tokens, b.last = b.burst, now
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
