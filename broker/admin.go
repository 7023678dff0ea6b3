package broker

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// ClientSnapshot describes one session and, while it is online, its
// connection, for operators (admin API, console).
type ClientSnapshot struct {
	ClientID       string
	Username       string
	Connected      bool
	RemoteAddr     string // of the current or last connection
	Listener       string
	Protocol       string // "3.1", "3.1.1" or "5.0"
	KeepAlive      uint16 // seconds, as negotiated
	ConnectedAt    time.Time
	DisconnectedAt time.Time // zero while connected
	SessionExpiry  uint32
	Inflight       int
	Queued         int
	Subscriptions  int
	Dropped        uint64
}

// SubscriptionSnapshot is one subscription of one session.
type SubscriptionSnapshot struct {
	ClientID string
	Filter   string // as sent, "$share/group/..." included
	Options  packet.SubOptions
	ID       uint32 // MQTT 5 Subscription Identifier, 0 if none
}

// HasSession reports whether this node holds a session for clientID,
// connected or not.
func (s *Server) HasSession(clientID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[clientID] != nil
}

// Clients returns every session, connected or not, sorted by client id.
func (s *Server) Clients() []ClientSnapshot {
	list := s.sessionList()
	out := make([]ClientSnapshot, 0, len(list))
	for _, ss := range list {
		out = append(out, ss.snapshot())
	}
	slices.SortFunc(out, func(a, b ClientSnapshot) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return out
}

// Client returns one session's snapshot and subscriptions.
func (s *Server) Client(id string) (ClientSnapshot, []SubscriptionSnapshot, bool) {
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil {
		return ClientSnapshot{}, nil, false
	}
	return ss.snapshot(), ss.subscriptions(), true
}

func (ss *session) snapshot() ClientSnapshot {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	cs := ClientSnapshot{ClientID: ss.id, Connected: ss.conn != nil, SessionExpiry: ss.expiry,
		Inflight: len(ss.inflight), Queued: ss.queueLen(), Subscriptions: len(ss.subs), Dropped: ss.dropped,
		DisconnectedAt: unixTime(ss.offlineAt)}
	if info := ss.info.Load(); info != nil {
		cs.Username = info.Username
		cs.Listener = info.Listener
		cs.Protocol = info.Protocol.String()
		if info.RemoteAddr != nil {
			cs.RemoteAddr = info.RemoteAddr.String()
		}
	}
	if c := ss.conn; c != nil {
		cs.KeepAlive = uint16(c.keepAlive * 2 / 3 / time.Second)
		cs.ConnectedAt = time.Unix(0, c.connectedAt)
	}
	return cs
}

func (ss *session) subscriptions() []SubscriptionSnapshot {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]SubscriptionSnapshot, 0, len(ss.subs))
	for _, sub := range ss.subs {
		out = append(out, SubscriptionSnapshot{ClientID: ss.id, Filter: sub.filter, Options: sub.opts, ID: sub.id})
	}
	slices.SortFunc(out, func(a, b SubscriptionSnapshot) int { return cmp.Compare(a.Filter, b.Filter) })
	return out
}

// Subscriptions returns every subscription of every session, sorted by
// client id and filter.
func (s *Server) Subscriptions() []SubscriptionSnapshot {
	var out []SubscriptionSnapshot
	for _, ss := range s.sessionList() {
		out = append(out, ss.subscriptions()...)
	}
	slices.SortFunc(out, func(a, b SubscriptionSnapshot) int {
		return cmp.Or(cmp.Compare(a.ClientID, b.ClientID), cmp.Compare(a.Filter, b.Filter))
	})
	return out
}

// DisconnectClient closes the client's connection (MQTT 5 clients get
// DISCONNECT 0x98 Administrative action; its will is published as for any
// abnormal close). It reports whether the client was connected. With
// endSession the session is removed too, as if it had expired.
func (s *Server) DisconnectClient(id string, endSession bool) bool {
	s.mu.Lock()
	ss := s.sessions[id]
	var c *conn
	if ss != nil {
		ss.mu.Lock()
		c = ss.conn
		if endSession {
			ss.expiry = 0 // the connection's detach ends it
		}
		ss.mu.Unlock()
		if c == nil && endSession {
			if w := s.endSessionLocked(ss); w != nil {
				defer s.publishWill(w)
			}
		}
	}
	s.mu.Unlock()
	if c != nil {
		c.kickOut(kickAdmin)
	}
	return c != nil
}

// RetainedMessages returns up to limit retained messages whose topics match
// filter (limit <= 0: all), sorted by topic (byte order), reading no more
// of the retained store than that. The messages must not be modified.
func (s *Server) RetainedMessages(filter string, limit int) ([]*Message, error) {
	if err := topic.ValidFilter(filter, 0); err != nil {
		return nil, fmt.Errorf("filter %q: %w", filter, err)
	}
	return s.ret.listing(filter, limit), nil
}

// DeleteRetained clears the retained message of a topic and reports
// whether there was one. In a cluster that keeps the retained messages
// (RetainedClearer), the clearing goes to every node, this one included,
// through the cluster's record (see retainPublished): it is not applied
// here if the record did not take it (logged).
func (s *Server) DeleteRetained(name string) bool {
	_, ok := s.ret.msgs.Get(name)
	if ok && !s.clearRetainedInCluster(name) {
		s.ret.set(&Message{Topic: name})
	}
	return ok
}

// ErrBadPublish is returned by Publish for an invalid topic or QoS.
var ErrBadPublish = errors.New("invalid publish")

// ErrNotRetained is returned by Publish when the message was routed but
// could not be kept as retained (Options.MaxRetained or MaxRetainedBytes):
// the count Publish returns is still right.
var ErrNotRetained = errors.New("delivered but not retained")

// PublishRequest is a message the server publishes itself.
type PublishRequest struct {
	Topic   string
	Payload []byte
	QoS     packet.QoS
	Retain  bool
	Props   packet.Properties // PUBLISH properties, Message Expiry included
}

// Publish routes a message from the server itself (admin API, console) as
// if a client had published it: retained when Retain is set, delivered to
// every matching subscription. It returns the number of sessions it was
// routed to, after the store has kept what it must.
func (s *Server) Publish(m PublishRequest) (int, error) {
	if err := topic.ValidName(m.Topic, s.opts.MaxTopicLevels); err != nil {
		return 0, fmt.Errorf("%w: topic %q: %w", ErrBadPublish, m.Topic, err)
	}
	if m.QoS > maxQoS {
		return 0, fmt.Errorf("%w: QoS %d", ErrBadPublish, m.QoS)
	}
	now := time.Now().UnixNano()
	msg := &Message{ID: s.msgID.Add(1), Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain && !s.opts.DisableRetain,
		created: now}
	if m.Props.Present != 0 {
		msg.setProps(&m.Props, now)
	}
	n, t, notRetained, confirm := s.route(msg)
	if err := wait(confirm); err != nil {
		return n, err
	}
	if t != 0 {
		if err := s.opts.Store.Wait(t); err != nil {
			return n, fmt.Errorf("storing message: %w", err)
		}
	}
	if notRetained != nil {
		return n, fmt.Errorf("%w: %w", ErrNotRetained, notRetained)
	}
	return n, nil
}
