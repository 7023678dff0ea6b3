package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

// writePasswords writes a password file with one Argon2id entry per user,
// users being name, password, name, password...: the format roost passwd
// writes, but at the least cost the format allows (8 KiB, one pass)
// rather than roost passwd's 19 MiB and two passes, which cost some 0.5
// CPU-s per hash or check under -race. For the tests that are about who
// may connect, not about the hash: TestPasswd runs roost passwd itself,
// and auth.TestHashRoundTrip checks every scheme at its default cost.
func writePasswords(t *testing.T, path string, users ...string) {
	t.Helper()
	if len(users)%2 != 0 {
		t.Fatalf("writePasswords: %d strings, want name and password pairs", len(users))
	}
	var b strings.Builder
	for i := 0; i < len(users); i += 2 {
		salt := make([]byte, 16)
		rand.Read(salt)
		key := argon2.IDKey([]byte(users[i+1]), salt, 1, 8, 1, 32)
		fmt.Fprintf(&b, "%s:$argon2id$v=%d$m=8,t=1,p=1$%s$%s\n", users[i], argon2.Version,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}
