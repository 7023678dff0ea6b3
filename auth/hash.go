package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Scheme names a password hash format.
type Scheme string

// The password hash formats Roost reads. It writes Argon2id by default;
// SHA512PBKDF2 makes entries mosquitto can read too.
const (
	// Argon2id: "$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH" (PHC string,
	// unpadded base64), the memory-hard hash RFC 9106 recommends.
	Argon2id Scheme = "argon2id"
	// Bcrypt: "$2a$", "$2b$" or "$2y$" entries, cost 10 when written.
	Bcrypt Scheme = "bcrypt"
	// SHA512PBKDF2 is mosquitto_passwd's default since mosquitto 2.0:
	// "$7$ITERATIONS$SALT$HASH", PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte
	// hash, padded base64. Roost writes 210,000 iterations (OWASP 2023);
	// mosquitto_passwd writes 101.
	SHA512PBKDF2 Scheme = "sha512-pbkdf2"
	// SHA512 is mosquitto 1.6's salted SHA-512 ("$6$SALT$HASH"): read
	// only, because one SHA-512 round is far too fast to resist guessing.
	SHA512 Scheme = "sha512"
)

// Argon2id parameters for new hashes: OWASP's smallest recommended memory
// cost, so that a burst of connections does not exhaust memory (19 MiB per
// verification in flight; see verifySlots).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	saltLen      = 16
	pbkdf2Iter   = 210000
	bcryptCost   = 10
)

// ErrHashFormat is returned for a password hash Roost cannot read.
var ErrHashFormat = errors.New("unrecognised password hash")

// Hash returns a new salted hash of password in scheme s, in the text form
// of a password file entry. SHA512 cannot be written.
func Hash(s Scheme, password []byte) (string, error) {
	switch s {
	case Argon2id, "":
		salt := randomBytes(saltLen)
		key := argon2.IDKey(password, salt, argonTime, argonMemory, argonThreads, argonKeyLen)
		return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
			b64raw.EncodeToString(salt), b64raw.EncodeToString(key)), nil
	case Bcrypt:
		h, err := bcrypt.GenerateFromPassword(password, bcryptCost)
		return string(h), err
	case SHA512PBKDF2:
		salt := randomBytes(12) // mosquitto refuses other salt lengths
		key, err := pbkdf2.Key(sha512.New, string(password), salt, pbkdf2Iter, 64)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("$7$%d$%s$%s", pbkdf2Iter, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
	}
	return "", fmt.Errorf("cannot write %q hashes: use argon2id, bcrypt or sha512-pbkdf2", s)
}

var (
	b64    = base64.StdEncoding
	b64raw = base64.RawStdEncoding
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand documents it panics instead)
	return b
}

// hash is a parsed password hash, ready to verify against.
type hash struct {
	scheme Scheme
	salt   []byte
	key    []byte
	iter   int    // PBKDF2 iterations
	m, t   uint32 // Argon2 memory (KiB) and time
	p      uint8  // Argon2 threads
	raw    string // bcrypt's own encoding
}

// parseHash parses the hash part of a password file entry.
func parseHash(s string) (*hash, error) {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2(s)
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return nil, fmt.Errorf("%w: bcrypt: %w", ErrHashFormat, err)
		}
		return &hash{scheme: Bcrypt, raw: s}, nil
	case strings.HasPrefix(s, "$7$"):
		f := strings.Split(s, "$") // "", "7", iterations, salt, hash
		if len(f) != 5 {
			return nil, fmt.Errorf("%w: $7$ wants $7$ITERATIONS$SALT$HASH", ErrHashFormat)
		}
		n, err := strconv.Atoi(f[2])
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: $7$ iterations %q", ErrHashFormat, f[2])
		}
		h, err := saltKey(SHA512PBKDF2, f[3], f[4])
		if err == nil {
			h.iter = n
		}
		return h, err
	case strings.HasPrefix(s, "$6$"):
		f := strings.Split(s, "$") // "", "6", salt, hash
		if len(f) != 4 {
			return nil, fmt.Errorf("%w: $6$ wants $6$SALT$HASH", ErrHashFormat)
		}
		return saltKey(SHA512, f[2], f[3])
	}
	return nil, fmt.Errorf("%w: want $7$ or $6$ (mosquitto), $argon2id$ or $2b$ (bcrypt)", ErrHashFormat)
}

// saltKey decodes mosquitto's padded base64 salt and 64-byte hash.
func saltKey(s Scheme, salt, key string) (*hash, error) {
	h := &hash{scheme: s}
	var err error
	if h.salt, err = b64.DecodeString(salt); err != nil || len(h.salt) == 0 {
		return nil, fmt.Errorf("%w: %s salt is not base64", ErrHashFormat, s)
	}
	if h.key, err = b64.DecodeString(key); err != nil || len(h.key) != sha512.Size {
		return nil, fmt.Errorf("%w: %s hash is not 64 bytes of base64", ErrHashFormat, s)
	}
	return h, nil
}

func parseArgon2(s string) (*hash, error) {
	f := strings.Split(s, "$") // "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	bad := func(what string) (*hash, error) { return nil, fmt.Errorf("%w: argon2id %s", ErrHashFormat, what) }
	if len(f) != 6 {
		return bad("wants $argon2id$v=19$m=M,t=T,p=P$SALT$HASH")
	}
	var v int
	if _, err := fmt.Sscanf(f[2], "v=%d", &v); err != nil || v != argon2.Version {
		return bad("version " + f[2])
	}
	h := &hash{scheme: Argon2id}
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &h.m, &h.t, &h.p); err != nil || h.t == 0 || h.p == 0 || h.m < 8*uint32(h.p) {
		return bad("parameters " + f[3])
	}
	if h.m > 4<<20 { // 4 GiB: a typo, or a file meant to exhaust memory
		return bad("memory above 4 GiB")
	}
	var err error
	if h.salt, err = b64raw.DecodeString(f[4]); err != nil {
		return bad("salt")
	}
	if h.key, err = b64raw.DecodeString(f[5]); err != nil || len(h.key) < 16 {
		return bad("hash")
	}
	return h, nil
}

// cost names what verifying h costs: its scheme and the parameters that
// set the work.
func (h *hash) cost() string {
	switch h.scheme {
	case Argon2id:
		return fmt.Sprintf("%s m=%d t=%d p=%d len=%d", h.scheme, h.m, h.t, h.p, len(h.key))
	case SHA512PBKDF2:
		return fmt.Sprintf("%s i=%d len=%d", h.scheme, h.iter, len(h.key))
	case Bcrypt:
		c, _ := bcrypt.Cost([]byte(h.raw)) // checked by parseHash
		return fmt.Sprintf("%s cost=%d", h.scheme, c)
	}
	return string(h.scheme)
}

// verify reports whether password matches h, in time that does not depend
// on where a mismatch is.
func (h *hash) verify(password []byte) bool {
	var key []byte
	switch h.scheme {
	case Bcrypt:
		return bcrypt.CompareHashAndPassword([]byte(h.raw), password) == nil
	case Argon2id:
		key = argon2.IDKey(password, h.salt, h.t, h.m, h.p, uint32(len(h.key)))
	case SHA512PBKDF2:
		var err error
		if key, err = pbkdf2.Key(sha512.New, string(password), h.salt, h.iter, len(h.key)); err != nil {
			return false
		}
	case SHA512:
		d := sha512.New()
		d.Write(password)
		d.Write(h.salt)
		key = d.Sum(nil)
	}
	return subtle.ConstantTimeCompare(key, h.key) == 1
}
