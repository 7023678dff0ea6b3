package auth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

const aclFile = `# anonymous clients
topic read public/#
topic deny public/secret

user alice
topic readwrite alice/#
topic write   shared/in
topic read $SYS/#
pattern read users/%u/inbox

user bob
topic shared/#
topic deny shared/private/#

pattern readwrite devices/%c/#
pattern write users/%u/outbox
pattern deny devices/%c/locked
`

type check struct {
	user, client string
	act          broker.Action
	topic        string
	want         bool
}

const (
	pub = broker.ActionPublish
	sub = broker.ActionSubscribe
	rcv = broker.ActionReceive
)

func TestACLMatrix(t *testing.T) {
	a, err := ParseACL("acl", []byte(aclFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []check{
		// Anonymous: the topic lines before the first user line.
		{"", "anon", rcv, "public/news", true},
		{"", "anon", pub, "public/news", false},
		{"", "anon", rcv, "public/secret", false},
		{"", "anon", sub, "public/#", true},
		{"", "anon", sub, "#", true}, // may receive public/news through it
		{"", "anon", sub, "public/secret", false},
		{"", "anon", sub, "alice/#", false},
		{"", "anon", rcv, "alice/x", false},
		// Patterns apply to anonymous clients too, %c only.
		{"", "anon", pub, "devices/anon/temp", true},
		{"", "anon", pub, "devices/other/temp", false},
		{"", "anon", pub, "users//outbox", false}, // %u skipped without a username
		// alice: her rules, not the anonymous ones, plus patterns.
		{"alice", "a1", pub, "alice/x/y", true},
		{"alice", "a1", rcv, "alice", true}, // "#" also matches the parent
		{"alice", "a1", rcv, "public/news", false},
		{"alice", "a1", pub, "shared/in", true},
		{"alice", "a1", rcv, "shared/in", false},
		{"alice", "a1", rcv, "$SYS/broker/uptime", true},
		{"alice", "a1", sub, "$SYS/#", true},
		{"alice", "a1", rcv, "users/alice/inbox", true}, // a pattern line inside a user section applies to all
		{"bob", "b1", rcv, "users/bob/inbox", true},
		{"alice", "a1", pub, "users/alice/outbox", true},
		{"alice", "a1", pub, "users/bob/outbox", false},
		{"alice", "a1", pub, "devices/a1/x", true},
		{"alice", "a1", pub, "devices/a1/locked", false}, // deny wins
		{"alice", "a1", sub, "devices/a1/locked", false},
		{"alice", "a1", sub, "devices/a1/+", true},
		// bob: bare "topic" is readwrite; deny wins over it.
		{"bob", "b1", pub, "shared/x", true},
		{"bob", "b1", rcv, "shared/x", true},
		{"bob", "b1", rcv, "shared/private/x", false},
		{"bob", "b1", sub, "shared/private/#", false},
		{"bob", "b1", sub, "shared/#", true},
		{"bob", "b1", sub, "$share/g/shared/+", true},
		{"bob", "b1", sub, "$share/g/shared/private/x", false},
		{"bob", "b1", rcv, "$SYS/broker/uptime", false},
		{"bob", "b1", sub, "#", true},
		// Wildcard filters never match $ topics.
		{"bob", "b1", sub, "$SYS/#", false},
		// A user not in the file gets patterns only.
		{"carol", "c1", rcv, "public/news", false},
		{"carol", "c1", pub, "devices/c1/x", true},
		// Dangerous ids get nothing from patterns.
		{"carol", "c+", pub, "devices/c+/x", false},
		{"carol", "#", pub, "devices/#/x", false},
		// A client id with '/' is substituted as text, as in mosquitto.
		{"carol", "c/d", pub, "devices/c/d/x", true},
	} {
		if got := a.Allow(context.Background(), info(tc.user, tc.client), tc.act, tc.topic); got != tc.want {
			t.Errorf("%s (%s) %v %q = %v, want %v", tc.user, tc.client, tc.act, tc.topic, got, tc.want)
		}
	}
}

func info(user, client string) *broker.ClientInfo {
	return &broker.ClientInfo{Username: user, ClientID: client}
}

func TestACLCertIdentity(t *testing.T) {
	a, err := ParseACL("acl", []byte("user dev1\ntopic readwrite dev1/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := &broker.ClientInfo{ClientID: "x", Username: "claimed", CertIdentity: "dev1"}
	if a.Allow(context.Background(), c, pub, "dev1/t") {
		t.Error("certificate identity used without CertIdentityAsUsername")
	}
	a.CertIdentityAsUsername = true
	if !a.Allow(context.Background(), c, pub, "dev1/t") {
		t.Error("certificate identity not used as the username")
	}
}

func TestParseACLErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"topic\n", "acl:1: topic: missing topic filter"},
		{"topic reed a/b\n", "acl:1: topic: unknown access \"reed\""},
		{"\nuser\n", "acl:2: user needs a username"},
		{"topic read a/#/b\n", "acl:1: topic: filter \"a/#/b\""},
		{"pattern read a+/%u\n", "filter \"a+/%u\""},
		{"allow a/b\n", "acl:1: unknown keyword \"allow\""},
	} {
		_, err := ParseACL("acl", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.file, err, tc.want)
		}
	}
	// mosquitto's quirks: a lone word is the filter (readwrite); the filter
	// is the rest of the line, spaces included; tabs separate too.
	a, err := ParseACL("acl", []byte("topic read\ntopic\tread  a b/c \n"))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Allow(context.Background(), info("", "x"), pub, "read") || !a.Allow(context.Background(), info("", "x"), rcv, "a b/c") {
		t.Error("lone-word or spaced filters not parsed as mosquitto does")
	}
}

// matchBytes must agree with topic.Match, the reference.
func TestMatchBytes(t *testing.T) {
	filters := []string{"#", "+", "a", "a/#", "a/+", "+/b", "a/b", "+/+", "a/+/c", "$SYS/#", "+/#", "a/b/#", "/", "/+", "+/"}
	names := []string{"a", "a/b", "a/b/c", "b", "/", "/a", "a/", "$SYS/x", "$SYS", "a//c", "x/b"}
	for _, f := range filters {
		for _, n := range names {
			if got, want := matchBytes([]byte(f), n), topic.Match(f, n); got != want {
				t.Errorf("matchBytes(%q, %q) = %v, topic.Match says %v", f, n, got, want)
			}
		}
	}
}

// overlaps and covers, checked against brute force over a small universe
// of names.
func TestOverlapsCovers(t *testing.T) {
	var names []string
	words := []string{"a", "b", "", "$S"}
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		if depth == 0 {
			return
		}
		for _, w := range words {
			n := w
			if prefix != "" || depth < 4 {
				n = prefix + "/" + w
			}
			if prefix == "" && depth == 4 {
				n = w
			}
			if n != "" {
				names = append(names, n)
			}
			gen(n, depth-1)
		}
	}
	gen("", 4)
	filters := []string{"#", "+", "a", "a/#", "a/+", "+/b", "a/b", "+/+", "a/+/b", "$S/#", "+/#", "a/b/#", "$S", "$S/+", "b/#", "+/+/#"}
	for _, f := range filters {
		for _, g := range filters {
			some, all := false, true
			for _, n := range names {
				mf, mg := topic.Match(f, n), topic.Match(g, n)
				some = some || mf && mg
				if mg && !mf {
					all = false
				}
			}
			if got := overlaps(f, g); got != some {
				t.Errorf("overlaps(%q, %q) = %v, want %v", f, g, got, some)
			}
			if got := covers(f, g); got != all {
				t.Errorf("covers(%q, %q) = %v, want %v", f, g, got, all)
			}
		}
	}
}

func TestACLReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(path, []byte("topic read a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := LoadACLFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := info("", "x")
	if !a.Allow(context.Background(), c, rcv, "a") {
		t.Fatal("a not readable")
	}
	os.WriteFile(path, []byte("topic read b\n"), 0o600)
	if err := a.Reload(); err != nil || a.Allow(context.Background(), c, rcv, "a") || !a.Allow(context.Background(), c, rcv, "b") {
		t.Fatalf("after reload: err %v or old rules", err)
	}
	os.WriteFile(path, []byte("topic sometimes b\n"), 0o600)
	if err := a.Reload(); err == nil || !a.Allow(context.Background(), c, rcv, "b") {
		t.Fatalf("bad file: err %v; old rules must stay", err)
	}
}

// Allow runs per PUBLISH and per delivery: it must not allocate.
func TestACLAllowAllocs(t *testing.T) {
	a, err := ParseACL("acl", []byte(aclFile))
	if err != nil {
		t.Fatal(err)
	}
	c := info("alice", "a1")
	for _, tc := range []struct {
		act broker.Action
		t   string
	}{{pub, "devices/a1/x"}, {rcv, "users/alice/inbox"}, {pub, "nothing/here"}, {rcv, "alice/x"}} {
		n := testing.AllocsPerRun(100, func() { a.Allow(context.Background(), c, tc.act, tc.t) })
		if n != 0 {
			t.Errorf("%v %s: %v allocations", tc.act, tc.t, n)
		}
	}
}

func BenchmarkACLAllow(b *testing.B) {
	var sb strings.Builder
	for i := range 100 {
		fmt.Fprintf(&sb, "user u%d\ntopic readwrite u%d/#\ntopic deny u%d/secret\n", i, i, i)
	}
	sb.WriteString("pattern readwrite devices/%c/#\npattern read users/%u/#\n")
	a, err := ParseACL("acl", []byte(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	c := info("u42", "dev42")
	b.ReportAllocs()
	for b.Loop() {
		a.Allow(context.Background(), c, rcv, "users/u42/inbox/1")
	}
}
