package broker

// Publisher is who published a retained message, as much of the client
// as Options.CheckRetainSource needs to ask the Authorizer again, later,
// whether that client may still publish on the topic: the identity that
// ACL rules and hooks match on (client id, username, listener), and
// whether it was the server's own trusted client (a bridge,
// Server.DialInternal). mosquitto keeps the same with its retained
// messages (source id, username and listener).
type Publisher struct {
	ClientID string
	Username string
	// Listener names the listener the client came through ("" if none).
	Listener string
	// Internal says the client was the server's own (Server.DialInternal),
	// which every Authorizer check passes.
	Internal bool
}

// Publisher returns the publisher recorded with a retained message, so
// that a Store can keep it across a restart. ok is false when none is:
// Options.CheckRetainSource was off when it was published, or the
// message is not a client's (the server's own, $SYS).
func (m *Message) Publisher() (p Publisher, ok bool) {
	src := m.source()
	if src == nil {
		return Publisher{}, false
	}
	return Publisher{ClientID: src.ClientID, Username: src.Username, Listener: src.Listener,
		Internal: src.internal}, true
}

// SetPublisher records p as the publisher of m: for a Store restoring a
// retained message, before it is routed, so that
// Options.CheckRetainSource still withdraws it once p loses write access
// to its topic. The Authorizer is then asked with
// a ClientInfo of p's fields alone (no address, TLS state or protocol:
// those are gone with the connection).
func (m *Message) SetPublisher(p Publisher) {
	m.setSource(&ClientInfo{ClientID: p.ClientID, Username: p.Username, Listener: p.Listener, internal: p.Internal})
}
