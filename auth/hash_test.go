package auth

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// Entries written by mosquitto_passwd 2.0.11 (Debian 12): alice/secret with
// the default $7$ (PBKDF2-SHA512, 101 iterations), bob/hunter2 with -H sha512.
const mosquittoFile = `alice:$7$101$RT8VwqIh1fzneYCc$brMQLUnlK5l9C2RxMjm0zifGgvH/67Qc7dJtai2hmKg62n51VK5IbkbNU8DU7MZJE4bCyYRKH+JVqrQtIzmrhA==
bob:$6$WNcCU5WK0Al+//UG$kLRUkk2jsGFOt51sWv2MoZ1KlW7VDaGhgkxBwVYTeVv5h4bkcbL+KugXmhfmqdq1A2bYZVhAPrQVIePfHv1IPw==
`

func TestMosquittoEntries(t *testing.T) {
	p, err := ParsePasswords("passwd", []byte(mosquittoFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pw string
		ok       bool
	}{
		{"alice", "secret", true}, {"alice", "Secret", false}, {"alice", "", false},
		{"bob", "hunter2", true}, {"bob", "secret", false},
		{"carol", "secret", false},
	} {
		err := p.Check(tc.user, []byte(tc.pw))
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, broker.ErrBadCredentials) {
			t.Errorf("Check(%s, %q) = %v, want ok=%v", tc.user, tc.pw, err, tc.ok)
		}
	}
}

func TestHashRoundTrip(t *testing.T) {
	for _, s := range []Scheme{Argon2id, Bcrypt, SHA512PBKDF2} {
		h, err := Hash(s, []byte("pässword"))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		p, err := parseHash(h)
		if err != nil {
			t.Fatalf("%s: parse %q: %v", s, h, err)
		}
		if !p.verify([]byte("pässword")) || p.verify([]byte("password")) {
			t.Errorf("%s: verify wrong for %q", s, h)
		}
		h2, _ := Hash(s, []byte("pässword"))
		if h == h2 {
			t.Errorf("%s: two hashes of one password are equal: not salted", s)
		}
	}
	if _, err := Hash(SHA512, []byte("x")); err == nil {
		t.Error("Hash(SHA512) succeeded; it must not write the fast hash")
	}
}

func TestParsePasswordsErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"alice\n", "f:1: want USER:HASH"},
		{"# c\n\nalice:plain\n", "f:3: user \"alice\": unrecognised password hash"},
		{"a:$7$x$AAAA$BBBB\n", "iterations"},
		{"a:$6$AAAAAAAAAAAAAAAA$QUJD\n", "64 bytes"},
		{"a:$argon2id$v=19$m=1,t=1,p=1$AAAA$BBBB\n", "parameters"},
		{mosquittoFile + "alice:$6$WNcCU5WK0Al+//UG$kLRUkk2jsGFOt51sWv2MoZ1KlW7VDaGhgkxBwVYTeVv5h4bkcbL+KugXmhfmqdq1A2bYZVhAPrQVIePfHv1IPw==\n", "f:3: user \"alice\" appears twice"},
	} {
		_, err := ParsePasswords("f", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.file, err, tc.want)
		}
	}
}

func TestSetDeleteUser(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := SetUser(path, "alice", "x", false); err == nil {
		t.Fatal("SetUser without create on a missing file succeeded")
	}
	// Entries of 101 iterations, mosquitto_passwd's own count: this test
	// is about editing the file, and Hash's 210,000 iterations cost some
	// 5 s per password under -race on a loaded machine (TestHashRoundTrip
	// checks what Hash writes).
	hash := func(pw string) string {
		salt := randomBytes(12)
		key, err := pbkdf2.Key(sha512.New, pw, salt, 101, 64)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("$7$101$%s$%s", b64.EncodeToString(salt), b64.EncodeToString(key))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(SetUser(path, "alice", hash("a1"), true))
	must(os.WriteFile(path, append([]byte("# keep me\n"), must2(os.ReadFile(path))...), 0o600))
	must(SetUser(path, "bob", hash("b1"), false))
	must(SetUser(path, "alice", hash("a2"), false))
	p, err := LoadPasswordFile(path)
	must(err)
	if p.Check("alice", []byte("a2")) != nil || p.Check("bob", []byte("b1")) != nil || p.Check("alice", []byte("a1")) == nil {
		t.Error("after set, set, change: wrong passwords")
	}
	must(DeleteUser(path, "alice"))
	if err := DeleteUser(path, "alice"); !errors.Is(err, ErrNoUser) {
		t.Errorf("deleting twice: %v, want ErrNoUser", err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "# keep me\nbob:$7$") || strings.Count(string(data), "\n") != 2 {
		t.Errorf("file after edits:\n%s", data)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	for _, bad := range []string{"", "a:b", "a\nb", " a"} {
		if SetUser(path, bad, "x", false) == nil {
			t.Errorf("SetUser accepted username %q", bad)
		}
	}
}

func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// An unknown user costs what a user of the file costs: the decoy has the
// scheme and parameters most entries have. It used to be a fresh Argon2id
// hash at Hash's defaults whatever the file held, so with a file of
// mosquitto_passwd entries (PBKDF2 with 101 iterations) an unknown name
// took some thousand times longer than a known one, which told which
// names exist.
func TestDecoyCostsWhatTheFileCosts(t *testing.T) {
	const (
		// "secret" in Argon2id at 8 KiB and one pass, and in bcrypt at
		// cost 4: cheap entries that differ from the mosquitto ones.
		argonCheap = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$fIbdC2xakJ6cNlONBQKde0ZQtJof49m9l+7mj3O30mA"
		bcryptLow  = "$2a$04$yY8Ih9lOrBnurRDaR2Cwdu8n30mrjY52yrqZV.tSN2YqHtSgz9IR2"
	)
	alice, bob := strings.Split(mosquittoFile, "\n")[0], strings.Split(mosquittoFile, "\n")[1]
	for _, tc := range []struct {
		name, file string
		want       string // the decoy's cost()
	}{
		{"mosquitto 2 and 1.6 entries, tie: the first", alice + "\n" + bob + "\n", "sha512-pbkdf2 i=101 len=64"},
		{"mostly $6$", alice + "\n" + bob + "\n" + strings.Replace(bob, "bob:", "carol:", 1) + "\n", "sha512"},
		{"mostly argon2id", "a:" + argonCheap + "\nb:" + bcryptLow + "\nc:" + argonCheap + "\n", "argon2id m=8 t=1 p=1 len=32"},
		{"bcrypt", "# only one\nb:" + bcryptLow + "\n", "bcrypt cost=4"},
	} {
		p, err := ParsePasswords("f", []byte(tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		u := p.file.load()
		if u.decoy == nil || u.decoy.cost() != tc.want {
			t.Errorf("%s: decoy %+v, want one of cost %q", tc.name, u.decoy, tc.want)
			continue
		}
		// The decoy is a real entry, of "secret" in two cases: an
		// unknown name is refused all the same.
		if err := p.Check("nobody", []byte("secret")); !errors.Is(err, broker.ErrBadCredentials) {
			t.Errorf("%s: unknown user: %v, want ErrBadCredentials", tc.name, err)
		}
	}
	empty, err := ParsePasswords("f", []byte("# nobody yet\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := empty.file.load().decoy; d != nil {
		t.Errorf("a file without entries: decoy %+v, want none (Check hashes one at Hash's defaults)", d)
	}
}
