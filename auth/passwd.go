package auth

import (
	"bufio"
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/roost-mqtt/roost/broker"
)

// PasswordFile holds the users of a password file: one "user:hash" line
// each, blank lines and lines starting with # ignored, the format of
// mosquitto_passwd. It is safe for concurrent use; Reload replaces the
// users at once, so a check sees either the old file or the new one.
type PasswordFile struct {
	file ruleFile[users]
}

// users is one version of a password file.
type users struct {
	byName map[string]*hash
	// decoy is verified for a name not in the file, so that it costs
	// what a user's check costs: the first entry of the scheme and
	// parameters most entries share (the result is thrown away, so a
	// real entry serves). Nil for a file without entries.
	decoy *hash
}

// LoadPasswordFile reads the password file at path. An error names the
// file and line of the first problem.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	p := newPasswordFile(path)
	return p, p.Reload()
}

// ParsePasswords parses a password file's contents; name prefixes errors.
func ParsePasswords(name string, data []byte) (*PasswordFile, error) {
	p := newPasswordFile(name)
	if err := p.file.set(name, data); err != nil {
		return nil, err
	}
	return p, nil
}

func newPasswordFile(path string) *PasswordFile {
	return &PasswordFile{file: ruleFile[users]{path: path, kind: "password file", parse: parsePasswords}}
}

// Path is the file the users come from.
func (p *PasswordFile) Path() string { return p.file.path }

// Reload rereads the file. On error the users loaded before stay in force.
func (p *PasswordFile) Reload() error { return p.file.reload() }

// Len is the number of users.
func (p *PasswordFile) Len() int { return len(p.file.load().byName) }

// Has reports whether the file has an entry for user.
func (p *PasswordFile) Has(user string) bool {
	_, ok := p.file.load().byName[user]
	return ok
}

// Check returns nil if user is in the file and password matches its hash,
// and an error wrapping broker.ErrBadCredentials otherwise. Unknown users
// cost as much time as the users whose hashes have the file's most common
// scheme and parameters (all of them, in a file written by one tool), so
// timing does not tell which names exist.
//
// A missing password (nil: the CONNECT had no Password Flag) and an empty
// one are refused at once, for every user, whatever the file holds: a user
// whose hash is of the empty password, which mosquitto_passwd can write,
// must not log in by sending no password at all. That depends only on what
// the client sent, so answering without a hash reveals nothing.
func (p *PasswordFile) Check(user string, password []byte) error {
	switch {
	case password == nil:
		return errNoPassword
	case len(password) == 0:
		return errEmptyPassword
	}
	u := p.file.load()
	h, ok := u.byName[user]
	verifySlots.acquire()
	defer verifySlots.release()
	if !ok {
		if u.decoy != nil {
			u.decoy.verify(password)
		} else {
			emptyFileDecoy().verify(password)
		}
		return broker.ErrBadCredentials
	}
	if !h.verify(password) {
		return broker.ErrBadCredentials
	}
	return nil
}

// Why Check refused a client without a password; the broker logs them.
var (
	errNoPassword    = fmt.Errorf("%w: no password (users in the password file need one)", broker.ErrBadCredentials)
	errEmptyPassword = fmt.Errorf("%w: empty password (never accepted from the password file)", broker.ErrBadCredentials)
)

// emptyFileDecoy is verified for every name when the file has no entries:
// a new hash at Hash's defaults, what the first user will get. It is made
// on first use: hashing it takes 19 MiB and tens of milliseconds, which
// every process start (even `roost version`) paid when it was made at
// init.
var emptyFileDecoy = sync.OnceValue(func() *hash {
	s, _ := Hash(Argon2id, []byte("decoy"))
	h, _ := parseHash(s)
	return h
})

// verifySlots bounds the slow hashes computed at once: Argon2id takes
// 19 MiB each, and a connection storm must not take the broker's memory
// or every CPU with it. Waiting CONNECTs queue here.
var verifySlots = newSemaphore(max(2, runtime.GOMAXPROCS(0)))

type semaphore chan struct{}

func newSemaphore(n int) semaphore { return make(semaphore, n) }
func (s semaphore) acquire()       { s <- struct{}{} }
func (s semaphore) release()       { <-s }

// parsePasswords reads "user:hash" lines. Unlike mosquitto, which drops a
// bad entry with a log line and keeps the rest, any bad line fails the
// whole file, so that a reload never half-applies.
func parsePasswords(name string, data []byte) (*users, error) {
	u := &users{byName: make(map[string]*hash)}
	var costs costCount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		user, pw, ok := strings.Cut(line, ":")
		user, pw = strings.TrimSpace(user), strings.TrimSpace(pw)
		if !ok || user == "" {
			return nil, fmt.Errorf("%s:%d: want USER:HASH", name, n)
		}
		if _, dup := u.byName[user]; dup {
			return nil, fmt.Errorf("%s:%d: user %q appears twice", name, n, user)
		}
		h, err := parseHash(pw)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: user %q: %w", name, n, user, err)
		}
		u.byName[user] = h
		costs.add(h)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	u.decoy = costs.mostCommon()
	return u, nil
}

// costCount counts a file's hashes by what a check of them costs.
type costCount struct {
	n     map[string]int
	first map[string]*hash // the first hash of each cost
	order []string         // costs in the order they first appear
}

func (c *costCount) add(h *hash) {
	if c.n == nil {
		c.n, c.first = map[string]int{}, map[string]*hash{}
	}
	k := h.cost()
	if c.n[k] == 0 {
		c.first[k] = h
		c.order = append(c.order, k)
	}
	c.n[k]++
}

// mostCommon returns the first hash of the most common cost (of the one
// that appears first, on a tie), nil if none was added.
func (c *costCount) mostCommon() *hash {
	best := ""
	for _, k := range c.order {
		if best == "" || c.n[k] > c.n[best] {
			best = k
		}
	}
	return c.first[best]
}
