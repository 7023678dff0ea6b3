package broker

import (
	"errors"
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// ipLimits tracks connections per client IP address (how many are open, how
// fast new ones arrive) and, in auth, recent authentication failures per
// address and per username. It is consulted once per connection and per
// CONNECT, never per packet.
type ipLimits struct {
	maxConns int     // per IP; 0 = unlimited
	rate     float64 // new connections per second per IP; 0 = unlimited
	burst    float64

	mu    sync.Mutex
	byIP  map[netip.Addr]*ipState
	sweep time.Time
	auth  authThrottle
}

type ipState struct {
	open   int
	tokens float64
	last   time.Time
}

func newIPLimits(maxConns int, rate float64) *ipLimits {
	return &ipLimits{maxConns: maxConns, rate: rate, burst: max(rate*2, 1), byIP: make(map[netip.Addr]*ipState),
		auth: newAuthThrottle(authMaxTracked)}
}

func addrIP(a net.Addr) (netip.Addr, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, ok := netip.AddrFromSlice(ta.IP)
		return ip.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap(), err == nil
}

// counting reports whether admit has anything to enforce. With both limits
// off nothing is tracked, so a connection costs no lock and no map entry.
func (l *ipLimits) counting() bool { return l.maxConns > 0 || l.rate > 0 }

// admit registers a new connection from ip, or explains why it is refused.
func (l *ipLimits) admit(ip netip.Addr, now time.Time) (ok bool, why string) {
	if !l.counting() {
		return true, ""
	}
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
	if !l.counting() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.byIP[ip]; st != nil && st.open > 0 {
		st.open--
	}
}

// maybeSweep drops idle entries once a minute so the map follows the live
// addresses. l.mu must be held.
func (l *ipLimits) maybeSweep(now time.Time) {
	if now.Sub(l.sweep) < time.Minute {
		return
	}
	l.sweep = now
	for ip, st := range l.byIP {
		if st.open == 0 && now.Sub(st.last) > time.Minute {
			delete(l.byIP, ip)
		}
	}
}

// Failed-authentication throttling.
//
// Failures are counted per client address (IPv6: per /64, what one
// subscriber usually gets) and per username, each over a sliding minute.
// Once a key has authFreeTries failures, every further CONNECT carrying it
// is held for a delay *before* its credentials are checked — 1 s, doubling
// to authMaxDelay — whether the password turns out right or wrong. Holding
// the answer for both outcomes matters: delaying only refusals would let a
// guesser give up on any attempt not accepted at once, and would still
// spend a slow hash on every guess. At most authMaxHeld attempts per key
// wait at a time; beyond that a CONNECT is refused at once, unchecked, with
// 0x9F Connection rate exceeded, so a guesser with many connections (many
// addresses against one username) gets about authMaxHeld guesses per
// authMaxDelay instead of one per hash. The price is that while a username
// is under attack its owner's logins are slow or refused too; other users
// are unaffected.
//
// Memory is bounded: each table holds at most authMaxTracked keys
// (usernames are stored as 64-bit hashes, so a long name costs no more than
// a short one); entries idle for a window are swept. When a table is full,
// keys without an entry share one overflow entry, so filling the table with
// made-up usernames throttles the attacker's own further attempts instead of
// letting new ones through unthrottled.
const (
	authFailWindow = time.Minute
	authFreeTries  = 5
	authMaxDelay   = 10 * time.Second
	authMaxHeld    = 4
	authMaxTracked = 10000
)

// failState counts the recent failures of one address or username.
type failState struct {
	failures int
	failedAt time.Time // last failure
	held     int       // attempts now held by authGate
}

// delay is how long the next attempt with this key is held.
func (st *failState) delay(now time.Time) time.Duration {
	if now.Sub(st.failedAt) > authFailWindow {
		st.failures = 0
	}
	if st.failures < authFreeTries {
		return 0
	}
	return min(authMaxDelay, time.Second<<min(st.failures-authFreeTries, 4))
}

// failTable maps keys to failure counts with a size cap. It is guarded by
// ipLimits.mu.
type failTable[K comparable] struct {
	m        map[K]*failState
	overflow failState // for keys that found the table full
	max      int
	swept    time.Time
}

// lookup returns the state for k: its own entry, a new one (when create is
// set and there is room), the shared overflow entry (no room), or nil.
func (t *failTable[K]) lookup(k K, create bool, now time.Time) *failState {
	if st := t.m[k]; st != nil {
		return st
	}
	if len(t.m) >= t.max && now.Sub(t.swept) >= time.Second {
		t.sweep(now)
	}
	if len(t.m) >= t.max {
		return &t.overflow
	}
	if !create {
		return nil
	}
	st := &failState{}
	t.m[k] = st
	return st
}

// sweep drops entries whose failures have expired. An attempt still held
// on a dropped entry (rare: holds are shorter than the window) keeps its
// pointer and releases it harmlessly.
func (t *failTable[K]) sweep(now time.Time) {
	t.swept = now
	for k, st := range t.m {
		if now.Sub(st.failedAt) > authFailWindow {
			delete(t.m, k)
		}
	}
}

// authThrottle holds the failure tables.
type authThrottle struct {
	byIP   failTable[netip.Addr]
	byUser failTable[uint64]
	seed   maphash.Seed
}

func newAuthThrottle(maxTracked int) authThrottle {
	return authThrottle{
		byIP:   failTable[netip.Addr]{m: make(map[netip.Addr]*failState), max: maxTracked},
		byUser: failTable[uint64]{m: make(map[uint64]*failState), max: maxTracked},
		seed:   maphash.MakeSeed(),
	}
}

// authKey is who a CONNECT claims to be, for the throttle: its address
// (valid unless the connection has none) and its username ("" for none,
// which is not tracked by name).
type authKey struct {
	ip   netip.Addr
	user string
}

// failIP is the key an address's failures are counted under: IPv6 by /64.
func failIP(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.Is4In6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// authHold is what authBegin decided for one CONNECT; pass it to authEnd.
type authHold struct {
	ip, user *failState // states found at the start (nil: none), held counted when delay > 0
	delay    time.Duration
}

// Reasons a throttled attempt can give.
var (
	errAuthThrottled = errors.New("too many failed authentications for this address or username; try again later")
	errAuthShutdown  = errors.New("server shutting down")
)

// authBegin looks up k's failures before its credentials are checked. It
// returns how long to hold the attempt, or ok false when authMaxHeld
// attempts for the address or the username are already held: the CONNECT
// is then refused without checking.
func (l *ipLimits) authBegin(k authKey, now time.Time) (h authHold, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := &l.auth
	if now.Sub(a.byUser.swept) > authFailWindow {
		a.byUser.sweep(now)
		a.byIP.sweep(now)
	}
	if k.ip.IsValid() {
		h.ip = a.byIP.lookup(failIP(k.ip), false, now)
	}
	if k.user != "" {
		h.user = a.byUser.lookup(maphash.String(a.seed, k.user), false, now)
	}
	for _, st := range []*failState{h.ip, h.user} {
		if st != nil {
			h.delay = max(h.delay, st.delay(now))
		}
	}
	if h.delay == 0 {
		return h, true
	}
	for _, st := range []*failState{h.ip, h.user} {
		if st != nil && st.held >= authMaxHeld && st.delay(now) > 0 {
			return authHold{}, false
		}
	}
	for _, st := range []*failState{h.ip, h.user} {
		if st != nil {
			st.held++
		}
	}
	return h, true
}

// authEnd finishes an attempt begun with authBegin, recording a failure
// when failed is set. It reports whether this failure started throttling
// the address or the username (for one log line per key, not per attempt).
func (l *ipLimits) authEnd(k authKey, h authHold, failed bool, now time.Time) (ipStarted, userStarted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := &l.auth
	if h.delay > 0 {
		for _, st := range []*failState{h.ip, h.user} {
			if st != nil && st.held > 0 {
				st.held--
			}
		}
	}
	if !failed {
		return false, false
	}
	// Look up again rather than use h: the entry may have been swept, or
	// made room for, since authBegin.
	var ipSt, userSt *failState
	if k.ip.IsValid() {
		ipSt = a.byIP.lookup(failIP(k.ip), true, now)
	}
	if k.user != "" {
		userSt = a.byUser.lookup(maphash.String(a.seed, k.user), true, now)
	}
	return recordFailure(ipSt, now), recordFailure(userSt, now)
}

// recordFailure counts one failure and reports whether it is the one that
// starts throttling.
func recordFailure(st *failState, now time.Time) bool {
	if st == nil {
		return false
	}
	st.delay(now) // expire an old window
	st.failures++
	st.failedAt = now
	return st.failures == authFreeTries
}

// authGate runs before credentials are checked: it holds an attempt from an
// address or for a username that failed often recently (bounded by
// authMaxDelay, cut short by Shutdown), or refuses it at once when too many
// such attempts are already held. Pass the result to authDone.
func (c *conn) authGate(user string) (authHold, error) {
	if c.srv.opts.Authenticator == nil {
		return authHold{}, nil
	}
	h, ok := c.srv.ipl.authBegin(c.authKey(user), time.Now())
	if !ok {
		return h, c.refuse(packet.ConnectionRateExceeded, errAuthThrottled.Error())
	}
	if h.delay == 0 {
		return h, nil
	}
	t := time.NewTimer(h.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return h, nil
	case <-c.srv.ctx.Done():
		c.srv.ipl.authEnd(c.authKey(user), h, false, time.Now())
		return authHold{}, c.refuse(packet.ServerUnavailable, errAuthShutdown.Error())
	}
}

// authDone records the outcome of an attempt let through by authGate. Only
// refusals for the client's credentials (ErrBadCredentials,
// ErrNotAuthorized) count as failures: an auth service that is down must
// not get every client throttled.
func (c *conn) authDone(h authHold, user string, err error) {
	if c.srv.opts.Authenticator == nil {
		return
	}
	failed := errors.Is(err, ErrBadCredentials) || errors.Is(err, ErrNotAuthorized)
	ipStarted, userStarted := c.srv.ipl.authEnd(c.authKey(user), h, failed, time.Now())
	if ipStarted {
		c.logger().Warn("repeated authentication failures from this address; holding its CONNECTs", "failures", authFreeTries)
	}
	if userStarted {
		c.logger().Warn("repeated authentication failures for this username; holding its CONNECTs", "username", user, "failures", authFreeTries)
	}
}

func (c *conn) authKey(user string) authKey {
	k := authKey{user: user}
	if c.hasIP {
		k.ip = c.ip
	}
	return k
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

// reserveConnection takes one of Options.MaxConnections for a CONNECT that
// is about to be authenticated, or reports that none is left. The check and
// the take are one compare-and-swap on the connected count: checked apart
// from attaching the session, as before, a burst of CONNECTs all passed the
// check while the first of them was still being authenticated, and the
// broker ended up over its limit. The place stays taken while the client is
// connected (detach and takeover give it back); releaseConnection returns it
// when the CONNECT fails before attaching.
func (s *Server) reserveConnection() bool {
	limit := int64(s.opts.MaxConnections)
	for {
		n := s.stats.connected.Load()
		if n >= limit {
			return false
		}
		if s.stats.connected.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// releaseConnection gives back a place reserveConnection took for a CONNECT
// that was refused.
func (s *Server) releaseConnection() { s.stats.connected.Add(-1) }
