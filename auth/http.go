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
// The service answers 200 with {"allow":true} or {"allow":false}; for a
// refused connect it may add "reason":"bad_credentials" (CONNACK 0x86)
// instead of the default not authorized (0x87). Any other status, a body
// that is not that JSON, or no answer within Timeout is a failure: the
// request is refused (fail closed) unless FailOpen is set. Failures are
// logged and not cached; answers are cached for CacheTTL.
type HTTPHook struct {
	url      string
	timeout  time.Duration
	ttl      time.Duration
	failOpen bool
	certUser bool
	client   *http.Client
	log      *slog.Logger
	cache    *cache
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
		certUser: o.CertIdentityAsUsername, client: o.Client, log: o.Logger}
	if h.timeout <= 0 {
		h.timeout = 2 * time.Second
	}
	if h.ttl == 0 {
		h.ttl = 30 * time.Second
	}
	if h.client == nil {
		h.client = &http.Client{Timeout: h.timeout}
	}
	if h.log == nil {
		h.log = slog.Default()
	}
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
	Action       string `json:"action"`
	ClientID     string `json:"client_id"`
	Username     string `json:"username"`
	Password     string `json:"password,omitempty"`
	Protocol     int    `json:"protocol,omitempty"`
	RemoteAddr   string `json:"remote_addr,omitempty"`
	Listener     string `json:"listener,omitempty"`
	TLS          bool   `json:"tls,omitempty"`
	CertIdentity string `json:"cert_identity,omitempty"`
	Topic        string `json:"topic,omitempty"`
}

// hookResponse is the JSON answer.
type hookResponse struct {
	Allow  *bool  `json:"allow"`
	Reason string `json:"reason"`
}

// Authenticate implements broker.Authenticator.
func (h *HTTPHook) Authenticate(ctx context.Context, c *broker.ClientInfo) error {
	req := hookRequest{Action: "connect", ClientID: c.ClientID, Username: Username(c, h.certUser),
		Password: string(c.Password), Protocol: int(c.Protocol), Listener: c.Listener, TLS: c.TLS != nil,
		CertIdentity: c.CertIdentity}
	if c.RemoteAddr != nil {
		req.RemoteAddr = c.RemoteAddr.String()
	}
	// The cache key holds a digest of the password, never the password.
	sum := sha256.Sum256(c.Password)
	key := cacheKey{act: 0, user: req.Username, client: c.ClientID, topic: req.Listener + "\x00" + string(sum[:])}
	if v, ok := h.cache.get(key); ok {
		return v.err
	}
	resp, err := h.post(ctx, &req)
	if err != nil {
		h.log.Warn("auth hook failed", "action", "connect", "client_id", c.ClientID, "err", err)
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

// Allow implements broker.Authorizer.
func (h *HTTPHook) Allow(ctx context.Context, c *broker.ClientInfo, act broker.Action, topic string) bool {
	user := Username(c, h.certUser)
	key := cacheKey{act: act, user: user, client: c.ClientID, topic: topic}
	if v, ok := h.cache.get(key); ok {
		return v.allow
	}
	req := hookRequest{Action: act.String(), ClientID: c.ClientID, Username: user, Listener: c.Listener, Topic: topic}
	resp, err := h.post(ctx, &req)
	if err != nil {
		h.log.Warn("auth hook failed", "action", req.Action, "client_id", c.ClientID, "topic", topic, "err", err)
		return h.failOpen
	}
	h.cache.put(key, result{allow: *resp.Allow}, h.ttl)
	return *resp.Allow
}

// post sends one request and decodes a valid answer.
func (h *HTTPHook) post(ctx context.Context, body *hookRequest) (*hookResponse, error) {
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
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var r hookResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("bad answer: %w", err)
	}
	if r.Allow == nil {
		return nil, errors.New(`bad answer: no "allow"`)
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
