package cluster

import "testing"

// keyID must invert ownerKey for every client id, or a node would fence
// the wrong session (or none) when it watches the owner records.
func FuzzOwnerKeyRoundTrip(f *testing.F) {
	for _, id := range []string{"", "a", "dev-1_x", "a.b/c=d", "ü €", "=41", "\x00\xff"} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		key := ownerKey(id)
		got, err := keyID(key)
		if err != nil || got != id {
			t.Fatalf("keyID(ownerKey(%q)) = %q, %v", id, got, err)
		}
	})
}

func TestKeyIDRefusesOtherKeys(t *testing.T) {
	for _, key := range []string{"", "c", "x.a", "c.=4", "c.=zz", "c.a=4"} {
		if id, err := keyID(key); err == nil {
			t.Errorf("keyID(%q) = %q, want an error", key, id)
		}
	}
}
