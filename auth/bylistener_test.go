package auth

import (
	"context"
	"errors"
	"testing"

	"github.com/roost-mqtt/roost/broker"
)

// ByListener hands each client to its listener's authenticator and
// authorizer, others to the defaults; a listener whose authorizer is nil
// allows every topic whatever the default says.
func TestByListener(t *testing.T) {
	deny := broker.AuthorizerFunc(func(context.Context, *broker.ClientInfo, broker.Action, string) bool { return false })
	refuse := broker.AuthenticatorFunc(func(context.Context, *broker.ClientInfo) error { return broker.ErrNotAuthorized })
	b := &ByListener{
		Default:           refuse,
		DefaultAuthorizer: deny,
		Authenticators:    map[string]broker.Authenticator{"open": broker.AuthenticatorFunc(func(context.Context, *broker.ClientInfo) error { return nil })},
		Authorizers:       map[string]broker.Authorizer{"open": nil},
	}
	ctx := context.Background()
	open, other := &broker.ClientInfo{Listener: "open"}, &broker.ClientInfo{Listener: "other"}
	if err := b.Authenticate(ctx, open); err != nil {
		t.Errorf("open listener: %v", err)
	}
	if err := b.Authenticate(ctx, other); !errors.Is(err, broker.ErrNotAuthorized) {
		t.Errorf("other listener: %v, want the default's refusal", err)
	}
	if !b.Allow(ctx, open, broker.ActionPublish, "t") {
		t.Error("open listener: topic refused")
	}
	if b.Allow(ctx, other, broker.ActionPublish, "t") {
		t.Error("other listener: topic allowed despite the default")
	}
	if allow, ok := b.Cached(other, broker.ActionReceive, "t"); !ok || allow {
		t.Errorf("Cached for a plain authorizer: %v %v, want an answer at once (false)", allow, ok)
	}
}
