package auth

import (
	"context"
	"errors"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// An entry mosquitto_passwd 2.0 (Debian) writes for `-b FILE empty ""`: the
// hash of the empty password.
const emptyEntry = `empty:$7$101$y1oqAW3IgYlCop5i$fWtAKNovDN9EBY/aGeo0bKmEGIp6H1Dnx4+tUlblTD8n6nihVejOlOUos5rJXeqUu9y8xfNmdHED5daV4ItjdQ==`

// A missing password (no Password Flag: nil) and an empty one are refused
// for every user in the password file, the one whose hash is of the empty
// password included, and for unknown users; the hook still decides for
// users not in the file.
func TestEmptyAndMissingPasswords(t *testing.T) {
	pw, err := ParsePasswords("passwd", []byte(mosquittoFile+emptyEntry+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := pw.file.load().byName["empty"]; h == nil || !h.verify(nil) {
		t.Fatal("the fixture is not a hash of the empty password")
	}
	var hookCalls []string
	hook := broker.AuthenticatorFunc(func(_ context.Context, c *broker.ClientInfo) error {
		hookCalls = append(hookCalls, c.Username)
		return nil
	})
	file := &Authenticator{Passwords: pw}
	withHook := &Authenticator{Passwords: pw, Hook: hook}
	for _, tc := range []struct {
		a        *Authenticator
		user     string
		password []byte // nil: no Password Flag
		want     error
	}{
		{file, "empty", nil, errNoPassword},
		{file, "empty", []byte{}, errEmptyPassword},
		{file, "alice", nil, errNoPassword},
		{file, "alice", []byte{}, errEmptyPassword},
		{file, "alice", []byte("secret"), nil},
		{file, "nobody", nil, errNoPassword},
		{file, "nobody", []byte{}, errEmptyPassword},
		{withHook, "empty", nil, errNoPassword},
		{withHook, "hooked", nil, nil}, // not in the file: the hook decides
	} {
		err := tc.a.Authenticate(context.Background(), &broker.ClientInfo{ClientID: "c", Username: tc.user, Password: tc.password})
		if !errors.Is(err, tc.want) || tc.want != nil && !errors.Is(err, broker.ErrBadCredentials) {
			t.Errorf("%s with password %q (nil=%v): %v, want %v", tc.user, tc.password, tc.password == nil, err, tc.want)
		}
	}
	if len(hookCalls) != 1 || hookCalls[0] != "hooked" {
		t.Errorf("hook asked for %q, want only hooked", hookCalls)
	}
}
