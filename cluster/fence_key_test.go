package cluster

import (
	"testing"
	"time"
)

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

// TestOwnedElsewhere: a record naming another node, seen here, settles a
// will's owner while it is newer than this node's own claim, and is
// forgotten after epochTTL.
func TestOwnedElsewhere(t *testing.T) {
	o := &owners{epochs: make(map[string]epochAt)}
	if o.ownedElsewhere("c") {
		t.Fatal("nothing seen: owned elsewhere")
	}
	o.epochs["c"] = epochAt{2, time.Now()}
	o.sawOther("c", 3)
	if !o.ownedElsewhere("c") {
		t.Fatal("another node's record at 3, this node's claim at 2: not owned elsewhere")
	}
	o.sawOther("c", 1) // an older record seen late changes nothing
	if !o.ownedElsewhere("c") {
		t.Fatal("an older record made it this node's")
	}
	o.epochs["c"] = epochAt{4, time.Now()} // claimed here again since
	if o.ownedElsewhere("c") {
		t.Fatal("this node's newer claim at 4: owned elsewhere")
	}
	delete(o.epochs, "c")
	o.sweep(time.Now().Add(2 * epochTTL))
	if o.ownedElsewhere("c") {
		t.Fatal("not forgotten after epochTTL")
	}
}

// TestHandoversDropBefore: a claim here that resumes a copy handed over to
// older claims forgets those handovers without their done (the copy is
// the claim's now); newer ones and other ids stay.
func TestHandoversDropBefore(t *testing.T) {
	var h handovers
	for _, k := range []handoverKey{{"a", 3}, {"a", 4}, {"a", 6}, {"b", 3}} {
		h.add(k.id, k.epoch, true, func(bool) { t.Errorf("handover %v ended its session", k) })
	}
	h.dropBefore("a", 5)
	for _, tt := range []struct {
		k    handoverKey
		left bool
	}{{handoverKey{"a", 3}, false}, {handoverKey{"a", 4}, false}, {handoverKey{"a", 6}, true}, {handoverKey{"b", 3}, true}} {
		p := h.take(tt.k)
		if (p != nil) != tt.left {
			t.Errorf("handover %v pending after dropBefore(a, 5): %v, want %v", tt.k, p != nil, tt.left)
		}
		if p != nil {
			p.timer.Stop()
		}
	}
}
