package auth

import (
	"context"

	"github.com/roost-mqtt/roost/broker"
)

// ByListener authenticates and authorizes each client with the rules of
// the listener it came through (broker.ClientInfo.Listener), as
// mosquitto's per_listener_settings true does; clients of other listeners
// get Default and DefaultAuthorizer. A persistent session keeps the
// listener its client last connected through, so its queued messages are
// checked with that listener's rules, as in mosquitto.
type ByListener struct {
	Default        broker.Authenticator
	Authenticators map[string]broker.Authenticator
	// DefaultAuthorizer and Authorizers decide topics; a nil one allows
	// every topic (a listener without an acl_file).
	DefaultAuthorizer broker.Authorizer
	Authorizers       map[string]broker.Authorizer
}

// Authenticate implements broker.Authenticator.
func (b *ByListener) Authenticate(ctx context.Context, c *broker.ClientInfo) error {
	a, ok := b.Authenticators[c.Listener]
	if !ok {
		a = b.Default
	}
	if a == nil {
		return nil
	}
	return a.Authenticate(ctx, c)
}

func (b *ByListener) authorizer(c *broker.ClientInfo) broker.Authorizer {
	if a, ok := b.Authorizers[c.Listener]; ok {
		return a
	}
	return b.DefaultAuthorizer
}

// Allow implements broker.Authorizer.
func (b *ByListener) Allow(ctx context.Context, c *broker.ClientInfo, act broker.Action, topic string) bool {
	a := b.authorizer(c)
	return a == nil || a.Allow(ctx, c, act, topic)
}

// Cached implements broker.CachedAuthorizer: the listener's authorizer
// answers, at once unless it is a CachedAuthorizer that does not know
// (ACL files answer from memory).
func (b *ByListener) Cached(c *broker.ClientInfo, act broker.Action, topic string) (allow, ok bool) {
	switch a := b.authorizer(c).(type) {
	case nil:
		return true, true
	case broker.CachedAuthorizer:
		return a.Cached(c, act, topic)
	default:
		return a.Allow(context.Background(), c, act, topic), true
	}
}
