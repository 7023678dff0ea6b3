package auth

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// strAddr is a net.Addr that is not a *net.TCPAddr, as some connection
// wrappers report.
type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

// A LoopbackOnly listener takes anonymous clients from loopback addresses
// only; it does not change anything for clients with credentials, nor for
// other listeners.
func TestLoopbackOnlyAnonymous(t *testing.T) {
	pw, err := ParsePasswords("passwd", []byte(mosquittoFile))
	if err != nil {
		t.Fatal(err)
	}
	a := &Authenticator{Passwords: pw, Listeners: map[string]bool{"local": true, "open": true},
		LoopbackOnly: map[string]bool{"local": true}}
	tcp := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }
	for _, tc := range []struct {
		listener string
		remote   net.Addr
		user, pw string
		want     error
	}{
		{"local", tcp("127.0.0.1"), "", "", nil},
		{"local", tcp("127.8.9.10"), "", "", nil},
		{"local", tcp("::1"), "", "", nil},
		{"local", tcp("::ffff:127.0.0.1"), "", "", nil},
		{"local", strAddr("127.0.0.1:5"), "", "", nil},
		{"local", tcp("10.0.0.7"), "", "", errAnonymousRemote},
		{"local", tcp("2001:db8::1"), "", "", errAnonymousRemote},
		{"local", strAddr("203.0.113.7:5"), "", "", errAnonymousRemote},
		{"local", strAddr("not an address"), "", "", errAnonymousRemote},
		{"local", nil, "", "", errAnonymousRemote},
		{"local", tcp("10.0.0.7"), "alice", "secret", nil},
		{"local", tcp("10.0.0.7"), "alice", "wrong", broker.ErrBadCredentials},
		{"open", tcp("10.0.0.7"), "", "", nil},
		{"other", tcp("127.0.0.1"), "", "", errAnonymous}, // not listed: AllowAnonymous (false)
	} {
		var pass []byte
		if tc.pw != "" {
			pass = []byte(tc.pw)
		}
		err := a.Authenticate(context.Background(), &broker.ClientInfo{ClientID: "c", Listener: tc.listener,
			RemoteAddr: tc.remote, Username: tc.user, Password: pass})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s from %v as %q: %v, want %v", tc.listener, tc.remote, tc.user, err, tc.want)
		}
		if tc.want != nil && !errors.Is(err, broker.ErrNotAuthorized) && !errors.Is(err, broker.ErrBadCredentials) {
			t.Errorf("%s from %v: %v is neither refusal", tc.listener, tc.remote, err)
		}
	}
}
