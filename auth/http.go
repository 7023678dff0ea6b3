package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// HTTPHook asks an HTTP service whether a client may connect and whether
// it may use a topic. It is both a broker.Authenticator and a
// broker.Authorizer. The protocol (docs/security.md):
//
//	POST URL  Content-Type: application/json
//	{"action":"connect","client_id":"c1","username":"u","password":"p",
//	 "protocol":5,"remote_addr":"10.0.0.7:53211","listener":"mqtt://:1883",
//	 "tls":true,"cert_identity":"u"}
//	{"action":"publish"|"subscribe"|"receive","client_id":"c1","username":"u",
//	 "listener":"...","topic":"a/b"}
//
// "password" is absent when the CONNECT had no password and "" when it had
// an empty one (MQTT tells the two apart). The service answers 200 with
// {"allow":true} or {"allow":false}; for a
// refused connect it may add "reason":"bad_credentials" (CONNACK 0x86)
// instead of the default not authorized (0x87). Any other status, a body
// that is not that JSON, or no answer within Timeout is a failure: the
// request is refused (fail closed) unless FailOpen is set. Failures are
// logged and not cached; answers are cached for CacheTTL.
//
// A service that does not answer (no connection, or no answer within
// Timeout) is taken to be down: for the next 500 ms every
// question is answered at once with the failure answer (refused, or allowed
// with FailOpen), without a request; then one request probes it, and while
// it keeps failing the wait between probes doubles up to 5 s. The first
// answer it gives again ends that. Identical questions asked while one is
// on its way share its answer, and at most MaxConcurrent receive questions
// and MaxConcurrent others are out at a time.
//
// HTTPHook is a broker.CachedAuthorizer: the broker never waits for it in a
// publisher's goroutine (broker/authq.go).
type HTTPHook struct {
	url      string
	timeout  time.Duration
	ttl      time.Duration
	failOpen bool
	certUser bool
	client   *http.Client
	log      *slog.Logger
	cache    *cache
	health   breaker
	// A token per request out: receive questions (asked for other
	// clients, off their paths) have their own, so a burst of them never
	// holds up a client's question about itself.
	sem, recvSem chan struct{}

	mu       sync.Mutex
	inflight map[cacheKey]*call // questions on their way, by key
}

// call is one question on its way to the service; others asking the same
// wait for it.
type call struct {
	done  chan struct{}
	allow bool // valid once done is closed
}

// HTTPHookOptions configure NewHTTPHook.
type HTTPHookOptions struct {
	URL string
	// Timeout bounds each request. Default 2s.
	Timeout time.Duration
	// CacheTTL is how long answers are remembered: 0 means the default
	// 30s, negative disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the cached answers. Default 100,000.
	CacheSize int
	// FailOpen allows what could not be checked. Default: refuse.
	FailOpen bool
	// MaxConcurrent bounds the requests out at a time, twice over: that
	// many receive questions (which wait for their turn as long as it
	// takes) and that many others (which wait at most Timeout). Default 64.
	MaxConcurrent int
	// CertIdentityAsUsername sends the certificate identity, when there
	// is one, as the username.
	CertIdentityAsUsername bool
	// Client makes the requests. Default: a client with Timeout.
	Client *http.Client
	// Logger receives failures. Default slog.Default().
	Logger *slog.Logger
}

// NewHTTPHook returns a hook posting to o.URL.
func NewHTTPHook(o HTTPHookOptions) *HTTPHook {
	h := &HTTPHook{url: o.URL, timeout: o.Timeout, ttl: o.CacheTTL, failOpen: o.FailOpen,
		certUser: o.CertIdentityAsUsername, client: o.Client, log: o.Logger, inflight: make(map[cacheKey]*call)}
	if h.timeout <= 0 {
		h.timeout = 2 * time.Second
	}
	if h.ttl == 0 {
		h.ttl = 30 * time.Second
	}
	conc := o.MaxConcurrent
	if conc <= 0 {
		conc = 64
	}
	h.sem, h.recvSem = make(chan struct{}, conc), make(chan struct{}, conc)
	if h.client == nil {
		// Keep as many connections to the service open as may be in
		// use at once; the default of 2 would open and close one per
		// request beyond that under a burst of cache misses.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 2 * conc
		h.client = &http.Client{Timeout: h.timeout, Transport: tr}
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.health.log = h.log
	size := o.CacheSize
	if size <= 0 {
		size = 100000
	}
	if h.ttl > 0 {
		h.cache = newCache(size)
	}
	return h
}

// hookRequest is the JSON body posted to the hook.
type hookRequest struct {
	Action   string `json:"action"`
	ClientID string `json:"client_id"`
	Username string `json:"username"`
	// Password is nil when the CONNECT had none (Password Flag 0) and
	// points to "" when it had an empty one: the hook sees "password"
	// absent or "" [MQTT-3.1.2-18], [MQTT-3.1.2-19].
	Password     *string `json:"password,omitempty"`
	Protocol     int     `json:"protocol,omitempty"`
	RemoteAddr   string  `json:"remote_addr,omitempty"`
	Listener     string  `json:"listener,omitempty"`
	TLS          bool    `json:"tls,omitempty"`
	CertIdentity string  `json:"cert_identity,omitempty"`
	Topic        string  `json:"topic,omitempty"`
}

// hookResponse is the JSON answer.
type hookResponse struct {
	Allow  *bool  `json:"allow"`
	Reason string `json:"reason"`
}

// Authenticate implements broker.Authenticator.
func (h *HTTPHook) Authenticate(ctx context.Context, c *broker.ClientInfo) error {
	req := hookRequest{Action: "connect", ClientID: c.ClientID, Username: Username(c, h.certUser),
		Protocol: int(c.Protocol), Listener: c.Listener, TLS: c.TLS != nil, CertIdentity: c.CertIdentity}
	if c.Password != nil {
		pw := string(c.Password)
		req.Password = &pw
	}
	if c.RemoteAddr != nil {
		req.RemoteAddr = c.RemoteAddr.String()
	}
	key := cacheKey{act: 0, user: req.Username, client: c.ClientID, topic: req.Listener + "\x00" + passwordDigest(c.Password)}
	if v, ok := h.cache.get(key); ok {
		return v.err
	}
	resp, err := h.ask(ctx, &req)
	if err != nil {
		if !errors.Is(err, errHookDown) {
			h.log.Warn("auth hook failed", "action", "connect", "client_id", c.ClientID, "err", err)
		}
		if h.failOpen {
			return nil
		}
		return fmt.Errorf("auth hook: %w", err)
	}
	var res error
	if !*resp.Allow {
		res = broker.ErrNotAuthorized
		if resp.Reason == "bad_credentials" {
			res = broker.ErrBadCredentials
		}
	}
	h.cache.put(key, result{err: res}, h.ttl)
	return res
}

// passwordDigest is what a connect's cache key holds of its password: a
// SHA-256, never the password, and a different value for no password at
// all than for an empty one, which the service may answer differently.
func passwordDigest(pw []byte) string {
	if pw == nil {
		return "none"
	}
	sum := sha256.Sum256(pw)
	return string(sum[:])
}

// Allow implements broker.Authorizer. It waits for the service on a cache
// miss, at most Timeout, and not at all while the service is down.
func (h *HTTPHook) Allow(ctx context.Context, c *broker.ClientInfo, act broker.Action, topic string) bool {
	user := Username(c, h.certUser)
	key := cacheKey{act: act, user: user, client: c.ClientID, topic: topic}
	if v, ok := h.cache.get(key); ok {
		return v.allow
	}
	h.mu.Lock()
	if cl, ok := h.inflight[key]; ok {
		h.mu.Unlock()
		select {
		case <-cl.done:
			return cl.allow
		case <-ctx.Done():
			return h.failOpen
		}
	}
	cl := &call{done: make(chan struct{})}
	h.inflight[key] = cl
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.inflight, key)
		h.mu.Unlock()
		close(cl.done)
	}()

	req := hookRequest{Action: act.String(), ClientID: c.ClientID, Username: user, Listener: c.Listener, Topic: topic}
	resp, err := h.ask(ctx, &req)
	if err != nil {
		if !errors.Is(err, errHookDown) {
			h.log.Warn("auth hook failed", "action", req.Action, "client_id", c.ClientID, "topic", topic, "err", err)
		}
		cl.allow = h.failOpen
		return cl.allow
	}
	h.cache.put(key, result{allow: *resp.Allow}, h.ttl)
	cl.allow = *resp.Allow
	return cl.allow
}

// Cached implements broker.CachedAuthorizer: a cached answer, or while the
// service is down the failure answer, at once; ok is false when Allow would
// have to ask the service.
func (h *HTTPHook) Cached(c *broker.ClientInfo, act broker.Action, topic string) (allow, ok bool) {
	key := cacheKey{act: act, user: Username(c, h.certUser), client: c.ClientID, topic: topic}
	if v, ok := h.cache.get(key); ok {
		return v.allow, true
	}
	if h.health.isDown(time.Now()) {
		h.health.refused.Add(1)
		return h.failOpen, true
	}
	return false, false
}

// errHookDown is the failure of a question not sent because the service is
// down (see HTTPHook).
var errHookDown = errors.New("auth hook down: not asked")

// errBadAnswer is an answer that is not 200 with the JSON expected: a
// failure, but one that came at once, so the service is not down.
var errBadAnswer = errors.New("bad answer")

// errBusy is a question not sent because MaxConcurrent requests were out
// for all of Timeout: it says nothing about the service.
var errBusy = errors.New("too many requests out")

// ask posts one question unless the service is down, telling the breaker
// whether it answered. A request cut short by the caller's ctx (the broker
// shutting down) says nothing about the service, and neither does a bad
// answer: it came without a wait.
func (h *HTTPHook) ask(ctx context.Context, body *hookRequest) (*hookResponse, error) {
	probe, ok := h.health.admit(time.Now())
	if !ok {
		h.health.refused.Add(1)
		return nil, errHookDown
	}
	resp, err := h.post(ctx, body)
	switch {
	case err != nil && (ctx.Err() != nil || errors.Is(err, errBusy)):
		h.health.abandon(probe)
	case errors.Is(err, errBadAnswer):
		h.health.report(probe, nil, time.Now())
	default:
		h.health.report(probe, err, time.Now())
	}
	return resp, err
}

// post sends one request, once a token is free, and decodes a valid
// answer. A receive question waits for its token as long as its caller
// lets it (it holds up no client: broker/authq.go); others wait at most
// Timeout.
func (h *HTTPHook) post(ctx context.Context, body *hookRequest) (*hookResponse, error) {
	sem, wait := h.sem, ctx
	if body.Action == broker.ActionReceive.String() {
		sem = h.recvSem
	} else {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(ctx, h.timeout)
		defer cancel()
	}
	select {
	case sem <- struct{}{}:
		defer func() { <-sem }()
	case <-wait.Done():
		return nil, fmt.Errorf("%w: %d for %v", errBusy, cap(sem), h.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: status %s", errBadAnswer, resp.Status)
	}
	var r hookResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadAnswer, err)
	}
	if r.Allow == nil {
		return nil, fmt.Errorf(`%w: no "allow"`, errBadAnswer)
	}
	return &r, nil
}

// cacheKey identifies a question. Struct keys of strings let a lookup
// run without allocating.
type cacheKey struct {
	act                 broker.Action // 0 for connect
	user, client, topic string
}

type result struct {
	allow bool
	err   error
}

type cacheEntry struct {
	result
	expires time.Time
}

// cache remembers answers until they expire. When full, expired entries
// are swept; if that frees nothing, an arbitrary half is dropped.
type cache struct {
	mu  sync.RWMutex
	max int
	m   map[cacheKey]cacheEntry
}

func newCache(max int) *cache { return &cache{max: max, m: make(map[cacheKey]cacheEntry)} }

func (c *cache) get(k cacheKey) (result, bool) {
	if c == nil {
		return result{}, false
	}
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || time.Now().After(e.expires) {
		return result{}, false
	}
	return e.result, true
}

func (c *cache) put(k cacheKey, r result, ttl time.Duration) {
	if c == nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max/2 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[k] = cacheEntry{result: r, expires: now.Add(ttl)}
}

// Backoff between probes of a service that is down.
const (
	probeFirst = 500 * time.Millisecond
	probeMax   = 5 * time.Second
)

// breaker remembers whether the service is down (see HTTPHook).
type breaker struct {
	log     *slog.Logger
	refused atomic.Uint64 // questions answered without a request while down

	mu      sync.Mutex
	down    bool
	retryAt time.Time     // while down: when the next probe may go
	backoff time.Duration // while down: the wait after the last probe
	probing bool          // a probe is out
}

// isDown reports whether a question now would be answered without asking.
func (b *breaker) isDown(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.down && (b.probing || now.Before(b.retryAt))
}

// admit reports whether a request may go now, and whether it is the probe
// of a service that is down.
func (b *breaker) admit(now time.Time) (probe, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.down:
		return false, true
	case b.probing || now.Before(b.retryAt):
		return false, false
	}
	b.probing = true
	return true, true
}

// report takes the outcome of a request.
func (b *breaker) report(probe bool, err error, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	if err == nil {
		if b.down {
			b.down = false
			b.log.Warn("auth hook answers again", "refused_while_down", b.refused.Swap(0))
		}
		return
	}
	switch {
	case !b.down:
		b.down, b.backoff = true, probeFirst
		b.log.Error("auth hook down: answering without it until it answers again", "err", err,
			"retry_in", b.backoff)
	case probe:
		b.backoff = min(2*b.backoff, probeMax)
	default:
		return // a request sent before it went down
	}
	b.retryAt = now.Add(b.backoff)
}

// abandon frees the probe slot of a request the caller gave up on.
func (b *breaker) abandon(probe bool) {
	if probe {
		b.mu.Lock()
		b.probing = false
		b.mu.Unlock()
	}
}
