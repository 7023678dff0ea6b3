package auth

import (
	"context"
	"fmt"
	"net"

	"github.com/roost-mqtt/roost/broker"
)

// Username is the name the rules see for c: its certificate identity when
// certAsUser is set and the listener supplied one, else the CONNECT
// username. "" means anonymous.
func Username(c *broker.ClientInfo, certAsUser bool) string {
	if certAsUser && c.CertIdentity != "" {
		return c.CertIdentity
	}
	return c.Username
}

// Authenticator is Roost's broker.Authenticator: anonymous access per
// listener, a password file and an HTTP hook, each optional.
//
// A client is judged by the first of these that applies:
//
//  1. It has a certificate identity and CertIdentityAsUsername is set:
//     accepted (its listener verified the certificate), subject to Hook.
//  2. It sent no username (or an empty one): accepted if anonymous
//     access is on for its listener (and, for a LoopbackOnly listener, it
//     connects from a loopback address), else refused as not authorized.
//  3. Its username is in Passwords: accepted if the password matches,
//     else refused with bad credentials. Hook is not asked.
//  4. Hook is set: Hook decides.
//  5. Passwords is set: refused with bad credentials (unknown user).
//  6. Nothing can check the password: treated as anonymous (rule 2) —
//     the username is unverified, as in mosquitto without a password file.
type Authenticator struct {
	// AllowAnonymous is the default for listeners not in Listeners.
	AllowAnonymous bool
	// Listeners overrides AllowAnonymous per listener name
	// (broker.ClientInfo.Listener).
	Listeners map[string]bool
	// LoopbackOnly names listeners whose anonymous clients, where
	// anonymous access is on, must connect from a loopback address (as
	// broker.ClientInfo.RemoteAddr says: behind the PROXY protocol or a
	// trusted WebSocket proxy, the client's own address).
	LoopbackOnly map[string]bool
	// Passwords, if set, is checked for clients with a username.
	Passwords *PasswordFile
	// Hook, if set, decides for usernames Passwords does not have and
	// for certificate identities.
	Hook broker.Authenticator
	// CertIdentityAsUsername accepts a client certificate's identity as
	// the username (see Username).
	CertIdentityAsUsername bool
}

// Anonymous reports whether clients without a username may connect
// through the named listener.
func (a *Authenticator) Anonymous(listener string) bool {
	if v, ok := a.Listeners[listener]; ok {
		return v
	}
	return a.AllowAnonymous
}

// Authenticate implements broker.Authenticator.
func (a *Authenticator) Authenticate(ctx context.Context, c *broker.ClientInfo) error {
	if a.CertIdentityAsUsername && c.CertIdentity != "" {
		if a.Hook != nil {
			return a.Hook.Authenticate(ctx, c)
		}
		return nil
	}
	if c.Username == "" {
		return a.anonymous(c)
	}
	if a.Passwords != nil && a.Passwords.Has(c.Username) {
		return a.Passwords.Check(c.Username, c.Password)
	}
	switch {
	case a.Hook != nil:
		return a.Hook.Authenticate(ctx, c)
	case a.Passwords != nil:
		return a.Passwords.Check(c.Username, c.Password) // unknown: same cost, same answer
	}
	return a.anonymous(c)
}

// errAnonymous is logged by the broker as the reason for refusing a client
// (it maps to "not authorized").
var errAnonymous = fmt.Errorf("%w: anonymous access is off for this listener", broker.ErrNotAuthorized)

// errAnonymousRemote refuses an anonymous client of a LoopbackOnly
// listener connecting from another machine.
var errAnonymousRemote = fmt.Errorf("%w: anonymous clients are accepted from the broker's own machine only", broker.ErrNotAuthorized)

func (a *Authenticator) anonymous(c *broker.ClientInfo) error {
	switch {
	case !a.Anonymous(c.Listener):
		return errAnonymous
	case a.LoopbackOnly[c.Listener] && !isLoopback(c.RemoteAddr):
		return errAnonymousRemote
	}
	return nil
}

// isLoopback reports whether addr is a loopback address (IPv4-mapped IPv6
// included); an address of unknown form is not.
func isLoopback(addr net.Addr) bool {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case nil:
		return false
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return false
		}
		ip = net.ParseIP(host)
	}
	return ip != nil && ip.IsLoopback()
}

// All is a broker.Authorizer that allows what every one of authorizers
// allows (nil entries are skipped): an ACL file and an HTTP hook together
// must both agree. With none it allows everything. It is a
// broker.CachedAuthorizer: Cached answers at once when every member does
// (members that are not CachedAuthorizers, like ACL, answer from memory) or
// one refuses.
func All(authorizers ...broker.Authorizer) broker.Authorizer {
	var as all
	for _, a := range authorizers {
		if a != nil {
			as = append(as, a)
		}
	}
	if len(as) == 1 {
		return as[0]
	}
	return as
}

type all []broker.Authorizer

func (as all) Allow(ctx context.Context, c *broker.ClientInfo, act broker.Action, topic string) bool {
	for _, a := range as {
		if !a.Allow(ctx, c, act, topic) {
			return false
		}
	}
	return true
}

func (as all) Cached(c *broker.ClientInfo, act broker.Action, topic string) (allow, ok bool) {
	known := true
	for _, a := range as {
		if ca, isCached := a.(broker.CachedAuthorizer); isCached {
			allow, ok := ca.Cached(c, act, topic)
			if ok && !allow {
				return false, true
			}
			known = known && ok
		} else if !a.Allow(context.Background(), c, act, topic) {
			return false, true
		}
	}
	return known, known
}
