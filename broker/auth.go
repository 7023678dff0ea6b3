package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"

	"github.com/roost-mqtt/roost/packet"
)

// Authenticator decides whether a client may connect. It is called once per
// CONNECT, from that connection's goroutine, and may block (an HTTP hook),
// bounded by ctx.
type Authenticator interface {
	// Authenticate returns nil to accept the client, ErrBadCredentials
	// for a wrong or missing username/password (CONNACK 0x86, 3.1.1 code
	// 4), or ErrNotAuthorized or any other error to refuse it (0x87 /
	// code 5; other errors are logged). The text of an error wrapping
	// ErrBadCredentials or ErrNotAuthorized is the reason logged for the
	// refusal and, to MQTT 5 clients that set Request Problem
	// Information, sent as the Reason String: it may say why, but must
	// not reveal what the client may not know.
	Authenticate(ctx context.Context, c *ClientInfo) error
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, c *ClientInfo) error

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, c *ClientInfo) error { return f(ctx, c) }

// Authorizer decides whether a client may use a topic. It is called on the
// hot path (every PUBLISH, every delivery), so implementations should
// answer from memory or a cache. A queued message is asked about again as it
// leaves the queue, with that session's lock held: a slow answer there
// delays every delivery to that session. An Authorizer that cannot answer
// from memory should be a CachedAuthorizer: its Allow is then never called
// in a publisher's goroutine or under a lock.
type Authorizer interface {
	// Allow reports whether client c may do act on topic (a topic name,
	// or for ActionSubscribe the filter as sent, "$share/..." included).
	Allow(ctx context.Context, c *ClientInfo, act Action, topic string) bool
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(ctx context.Context, c *ClientInfo, act Action, topic string) bool

// Allow calls f.
func (f AuthorizerFunc) Allow(ctx context.Context, c *ClientInfo, act Action, topic string) bool {
	return f(ctx, c, act, topic)
}

// Action is what a client wants to do with a topic.
type Action uint8

// Actions checked by an Authorizer.
const (
	// ActionPublish: the client publishes to the topic (also its will,
	// checked when the will is published).
	ActionPublish Action = iota + 1
	// ActionSubscribe: the client subscribes to the filter.
	ActionSubscribe
	// ActionReceive: a message on the topic is delivered to the client
	// (live or retained).
	ActionReceive
)

func (a Action) String() string {
	switch a {
	case ActionPublish:
		return "publish"
	case ActionSubscribe:
		return "subscribe"
	case ActionReceive:
		return "receive"
	}
	return "unknown"
}

// Errors an Authenticator returns.
var (
	ErrBadCredentials = errors.New("bad username or password")
	ErrNotAuthorized  = errors.New("not authorized")
)

// ClientInfo describes a client to an Authenticator or Authorizer. It must
// not be modified.
type ClientInfo struct {
	ClientID string
	Username string
	// Password is set for Authenticate only; it is cleared afterwards.
	// It is nil when the CONNECT had no password (Password Flag 0) and
	// non-nil, possibly empty, when it had one: the two are different
	// requests [MQTT-3.1.2-18], [MQTT-3.1.2-19] (3.1.1: -20, -21).
	Password   []byte
	Protocol   packet.Version
	RemoteAddr net.Addr
	// Listener names the listener the client came through, when the
	// connection tells it (see ListenerNamer); "" otherwise.
	Listener string
	// TLS is the connection's TLS state, nil for plain connections.
	TLS *tls.ConnectionState
	// CertIdentity is the username a listener took from the verified
	// client certificate (CN or SAN, as configured), "" if none. When set,
	// Username is the same: the certificate wins over CONNECT.
	CertIdentity string
	// Bridge is set when the client announced itself as a mosquitto-style
	// bridge (protocol level 0x83/0x84, see packet.Connect.Bridge).
	Bridge bool

	internal bool // came through Server.DialInternal: trusted
}

// ListenerNamer is implemented by connections that know which listener
// accepted them; the name reaches authentication and the logs.
type ListenerNamer interface{ ListenerName() string }

// CertIdentifier is implemented by connections whose listener maps a
// verified client certificate to a username (its CN or a SAN); ok is false
// when there is no such certificate.
type CertIdentifier interface{ CertIdentity() (name string, ok bool) }

// newClientInfo gathers what the connection can tell about itself.
func newClientInfo(nc net.Conn, p *packet.Connect, id string) *ClientInfo {
	// Username is copied out of the CONNECT (as the client id is): kept as a
	// view, it would keep the whole body alive for the session's life,
	// password and all.
	ci := &ClientInfo{ClientID: id, Username: strings.Clone(p.Username), Password: p.Password,
		Protocol: p.ProtocolVersion, RemoteAddr: nc.RemoteAddr(), Bridge: p.Bridge}
	if p.PasswordFlag && ci.Password == nil {
		ci.Password = []byte{} // present but empty: the decoder gives nil
	}
	if l, ok := nc.(ListenerNamer); ok {
		ci.Listener = l.ListenerName()
	}
	_, ci.internal = nc.(*internalConn)
	// Look through wrappers (listener names, PROXY protocol) for TLS.
	for inner := nc; inner != nil; {
		if t, ok := inner.(interface{ ConnectionState() tls.ConnectionState }); ok {
			st := t.ConnectionState()
			ci.TLS = &st
			break
		}
		u, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = u.NetConn()
	}
	if ci2, ok := nc.(CertIdentifier); ok {
		if name, ok := ci2.CertIdentity(); ok {
			// The listener was configured to take the username from
			// the verified certificate: it replaces what CONNECT says.
			ci.CertIdentity = name
			ci.Username = name
		}
	}
	return ci
}
