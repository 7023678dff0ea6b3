package config

import (
	"strings"
	"testing"
)

func TestHTTPSection(t *testing.T) {
	c, err := Parse("", []byte("http:\n  addr: 0.0.0.0:8080\n  token: s3cret\n  metrics_public: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := HTTP{Addr: "0.0.0.0:8080", Token: "s3cret", MetricsPublic: true}
	if c.HTTP != want {
		t.Fatalf("got %+v, want %+v", c.HTTP, want)
	}
	if err := c.HTTP.Check(&c.Auth); err != nil {
		t.Fatal(err)
	}
	if d := Default(); d.HTTP.Enabled() {
		t.Fatalf("HTTP on by default: %+v", d.HTTP)
	}
}

func TestHTTPErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"http:\n  addr: 8080\n", `line 2: http.addr: want HOST:PORT`},
		{"http:\n  addr: 127.0.0.1:8080\n  tokn: x\n", `line 3: unknown key "tokn" in http`},
		{"http:\n  metrics_public: yes please\n", `line 2: http.metrics_public: must be true or false`},
	} {
		_, err := Parse("", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestHTTPCheck(t *testing.T) {
	for _, tc := range []struct {
		h    HTTP
		a    Auth
		want string // "" for no error
	}{
		{HTTP{}, Auth{}, ""},
		{HTTP{Addr: "127.0.0.1:8080"}, Auth{}, ""},
		{HTTP{Addr: "localhost:8080"}, Auth{}, ""},
		{HTTP{Addr: "[::1]:8080"}, Auth{}, ""},
		{HTTP{Addr: ":8080"}, Auth{}, "needs http.token"},
		{HTTP{Addr: "0.0.0.0:8080"}, Auth{}, "needs http.token"},
		{HTTP{Addr: "0.0.0.0:8080", Token: "t"}, Auth{}, ""},
		{HTTP{Addr: "0.0.0.0:8080", UsersFromPasswordFile: true}, Auth{}, "needs auth.password_file"},
		{HTTP{Addr: "0.0.0.0:8080", UsersFromPasswordFile: true}, Auth{PasswordFile: "pw"}, ""},
	} {
		err := tc.h.Check(&tc.a)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v %+v: got %v, want %q", tc.h, tc.a, err, tc.want)
		}
	}
}
