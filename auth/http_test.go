package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
)

// hookServer answers like a small auth service: user "u" with password
// "p" may connect, "banned" is not authorized, and a client may publish
// only to "u/...". It counts requests.
func hookServer(t *testing.T, n *atomic.Int32) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		var req map[string]any
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		switch req["action"] {
		case "connect":
			switch {
			case req["username"] == "u" && req["password"] == "p":
				w.Write([]byte(`{"allow":true}`))
			case req["username"] == "banned":
				w.Write([]byte(`{"allow":false}`))
			default:
				w.Write([]byte(`{"allow":false,"reason":"bad_credentials"}`))
			}
		case "publish":
			topic, _ := req["topic"].(string)
			json.NewEncoder(w).Encode(map[string]bool{"allow": len(topic) > 2 && topic[:2] == "u/"})
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

var quiet = slog.New(slog.DiscardHandler)

func TestHTTPHook(t *testing.T) {
	var n atomic.Int32
	s := hookServer(t, &n)
	h := NewHTTPHook(HTTPHookOptions{Logger: quiet, URL: s.URL, CacheTTL: time.Minute})
	ctx := context.Background()
	conn := func(user, pw string) error {
		return h.Authenticate(ctx, &broker.ClientInfo{ClientID: "c", Username: user, Password: []byte(pw),
			RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}})
	}
	if err := conn("u", "p"); err != nil {
		t.Errorf("good credentials: %v", err)
	}
	if err := conn("u", "x"); !errors.Is(err, broker.ErrBadCredentials) {
		t.Errorf("bad password: %v", err)
	}
	if err := conn("banned", "p"); !errors.Is(err, broker.ErrNotAuthorized) {
		t.Errorf("banned: %v", err)
	}
	c := &broker.ClientInfo{ClientID: "c", Username: "u"}
	if !h.Allow(ctx, c, broker.ActionPublish, "u/a") || h.Allow(ctx, c, broker.ActionPublish, "v/a") {
		t.Error("publish answers wrong")
	}
	before := n.Load()
	for range 10 {
		h.Allow(ctx, c, broker.ActionPublish, "u/a")
		conn("u", "p")
	}
	if n.Load() != before {
		t.Errorf("%d requests for cached answers", n.Load()-before)
	}
	// The service fails (500 for receive): fail closed, and not cached.
	if h.Allow(ctx, c, broker.ActionReceive, "u/a") {
		t.Error("failed request allowed")
	}
	before = n.Load()
	h.Allow(ctx, c, broker.ActionReceive, "u/a")
	if n.Load() != before+1 {
		t.Error("a failure was cached")
	}
	open := NewHTTPHook(HTTPHookOptions{Logger: quiet, URL: s.URL, FailOpen: true})
	if !open.Allow(ctx, c, broker.ActionReceive, "u/a") {
		t.Error("fail_open: failed request refused")
	}
}

func TestHTTPHookTimeout(t *testing.T) {
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer s.Close()
	defer close(release)
	h := NewHTTPHook(HTTPHookOptions{Logger: quiet, URL: s.URL, Timeout: 100 * time.Millisecond})
	start := time.Now()
	err := h.Authenticate(context.Background(), &broker.ClientInfo{ClientID: "c", Username: "u"})
	if err == nil || errors.Is(err, broker.ErrBadCredentials) {
		t.Errorf("timed-out connect: %v, want a refusal", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v with a 100ms timeout", d)
	}
}

func TestAuthenticator(t *testing.T) {
	pw, err := ParsePasswords("passwd", []byte(mosquittoFile))
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	hook := NewHTTPHook(HTTPHookOptions{Logger: quiet, URL: hookServer(t, &n).URL})
	type tc struct {
		a                  *Authenticator
		listener, user, pw string
		cert               string
		want               error // nil, ErrBadCredentials or ErrNotAuthorized
	}
	open := &Authenticator{AllowAnonymous: true, Listeners: map[string]bool{"closed": false}}
	closed := &Authenticator{Passwords: pw, Listeners: map[string]bool{"lab": true}}
	both := &Authenticator{Passwords: pw, Hook: hook}
	certs := &Authenticator{Passwords: pw, CertIdentityAsUsername: true}
	for i, c := range []tc{
		{open, "", "", "", "", nil},
		{open, "closed", "", "", "", broker.ErrNotAuthorized},
		{open, "", "anyone", "x", "", nil}, // nothing checks passwords: unverified, as mosquitto
		{open, "closed", "anyone", "x", "", broker.ErrNotAuthorized},
		{closed, "", "", "", "", broker.ErrNotAuthorized},
		{closed, "lab", "", "", "", nil},
		{closed, "", "alice", "secret", "", nil},
		{closed, "", "alice", "wrong", "", broker.ErrBadCredentials},
		{closed, "", "carol", "secret", "", broker.ErrBadCredentials},
		{closed, "lab", "carol", "secret", "", broker.ErrBadCredentials},
		{both, "", "bob", "hunter2", "", nil},
		{both, "", "bob", "p", "", broker.ErrBadCredentials}, // the file decides for its users
		{both, "", "u", "p", "", nil},                        // the hook for others
		{both, "", "banned", "p", "", broker.ErrNotAuthorized},
		{certs, "", "", "", "dev1", nil},
		{certs, "", "alice", "wrong", "dev1", nil},
		{closed, "", "", "", "dev1", broker.ErrNotAuthorized}, // identity ignored when not configured
	} {
		err := c.a.Authenticate(context.Background(), &broker.ClientInfo{ClientID: "id", Listener: c.listener,
			Username: c.user, Password: []byte(c.pw), CertIdentity: c.cert})
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("case %d (%s %q/%q cert %q): %v, want %v", i, c.listener, c.user, c.pw, c.cert, err, c.want)
		}
	}
}

func TestAll(t *testing.T) {
	yes := broker.AuthorizerFunc(func(context.Context, *broker.ClientInfo, broker.Action, string) bool { return true })
	no := broker.AuthorizerFunc(func(context.Context, *broker.ClientInfo, broker.Action, string) bool { return false })
	c := info("u", "c")
	if !All(yes, nil, yes).Allow(context.Background(), c, pub, "t") || All(yes, no).Allow(context.Background(), c, pub, "t") {
		t.Error("All is not a conjunction")
	}
}

// A CONNECT without a password and one with an empty password reach the
// hook as different requests ("password" absent, and ""), and their
// answers are cached apart: this service lets in only a client that sent
// no password at all.
func TestHTTPHookMissingAndEmptyPassword(t *testing.T) {
	var asked []string
	var mu sync.Mutex
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pw, has := req["password"]
		got := "absent"
		if has {
			got = fmt.Sprintf("%q", pw)
		}
		mu.Lock()
		asked = append(asked, got)
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"allow": !has, "reason": "bad_credentials"})
	}))
	t.Cleanup(s.Close)
	h := NewHTTPHook(HTTPHookOptions{Logger: quiet, URL: s.URL, CacheTTL: time.Minute})
	conn := func(pw []byte) error {
		return h.Authenticate(context.Background(), &broker.ClientInfo{ClientID: "c", Username: "u", Password: pw})
	}
	for range 2 { // the second round is answered from the cache
		if err := conn(nil); err != nil {
			t.Errorf("no password: %v, want accepted", err)
		}
		if err := conn([]byte{}); !errors.Is(err, broker.ErrBadCredentials) {
			t.Errorf("empty password: %v, want bad credentials", err)
		}
		if err := conn([]byte("p")); !errors.Is(err, broker.ErrBadCredentials) {
			t.Errorf("password p: %v, want bad credentials", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"absent", `""`, `"p"`}; !slices.Equal(asked, want) {
		t.Errorf("the hook was asked %q, want %q", asked, want)
	}
}
