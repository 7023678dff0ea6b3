package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// userCacheTTL is how long a user and password that passed the password
// file's check are remembered. Password hashes are deliberately slow
// (Argon2id takes tens of milliseconds and 19 MiB), and a browser sends
// Basic credentials with every request, several per dashboard refresh.
const userCacheTTL = time.Minute

// maxCachedUsers bounds the cache; when full it is emptied.
const maxCachedUsers = 64

// authenticator decides whether a request carries a valid credential.
type authenticator struct {
	token [32]byte // sha256 of the token, compared in constant time
	open  bool     // no token and no users: everything is allowed
	users PasswordChecker

	mu   sync.Mutex
	seen map[[32]byte]time.Time // sha256(user NUL password) -> expiry
}

func newAuthenticator(token string, users PasswordChecker) *authenticator {
	a := &authenticator{users: users, open: token == "" && users == nil, seen: make(map[[32]byte]time.Time)}
	if token != "" {
		a.token = sha256.Sum256([]byte(token))
	}
	return a
}

// allow reports whether r carries the token or a valid user and password.
func (a *authenticator) allow(r *http.Request) bool {
	if a.open {
		return true
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return a.tokenOK(tok)
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	if a.tokenOK(pass) {
		return true
	}
	return a.userOK(user, pass)
}

func (a *authenticator) tokenOK(s string) bool {
	if a.token == ([32]byte{}) {
		return false
	}
	h := sha256.Sum256([]byte(s))
	return subtle.ConstantTimeCompare(h[:], a.token[:]) == 1
}

func (a *authenticator) userOK(user, pass string) bool {
	if a.users == nil {
		return false
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	now := time.Now()
	a.mu.Lock()
	exp, hit := a.seen[key]
	a.mu.Unlock()
	if hit && now.Before(exp) {
		return true
	}
	if a.users.Check(user, []byte(pass)) != nil {
		return false
	}
	a.mu.Lock()
	if len(a.seen) >= maxCachedUsers {
		clear(a.seen)
	}
	a.seen[key] = now.Add(userCacheTTL)
	a.mu.Unlock()
	return true
}

// private wraps next so that it runs only for authenticated requests, and
// requests that change something only when they come from this site.
func (h *Handler) private(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.auth.allow(r) {
			// Basic makes browsers prompt; the token goes in the password.
			w.Header().Set("WWW-Authenticate", `Basic realm="Roost", charset="UTF-8"`)
			writeText(w, http.StatusUnauthorized, "unauthorized: send the token (Bearer, or as the Basic password) or a user and password")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r) {
			h.log.Warn("http: cross-site request refused", "method", r.Method, "path", r.URL.Path, "origin", r.Header.Get("Origin"))
			writeText(w, http.StatusForbidden, "cross-site request refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether r's Origin header, if any, names the host r
// was sent to. Browsers send Origin with every POST and DELETE; tools
// such as curl send none and are let through on their credential alone.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}
