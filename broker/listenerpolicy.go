package broker

import (
	"fmt"
	"net"
	"strings"

	"github.com/roost-mqtt/roost/packet"

	"github.com/roost-mqtt/roost/topic"
)

// checkPolicies refuses a mount point that is not the start of a topic
// name: with a wildcard, it would turn the client's topics into filters.
func checkPolicies(ps map[string]ListenerPolicy) error {
	for name, p := range ps {
		if p.LimitQoS && p.MaxQoS > maxQoS {
			return fmt.Errorf("broker: listener %q: maximum QoS %d", name, p.MaxQoS)
		}
		if p.MountPoint == "" {
			continue
		}
		if err := topic.ValidName(p.MountPoint+"x", 0); err != nil {
			return fmt.Errorf("broker: listener %q: mount point %q: %w", name, p.MountPoint, err)
		}
	}
	return nil
}

// policy returns the ListenerPolicy of the listener nc came through: the
// zero policy when Options.Listeners has none for it, or nc does not say
// which listener it came through.
func (s *Server) policy(nc net.Conn) ListenerPolicy {
	if len(s.opts.Listeners) == 0 {
		return ListenerPolicy{}
	}
	l, ok := nc.(ListenerNamer)
	if !ok {
		return ListenerPolicy{}
	}
	return s.opts.Listeners[l.ListenerName()]
}

// clientIDRules says whether an empty client id is refused and, if not,
// what the assigned one starts with, for a client of a listener with
// policy p.
func (s *Server) clientIDRules(p ListenerPolicy) (refuse bool, prefix string) {
	if !p.ClientIDs {
		return s.opts.RefuseEmptyClientID, s.opts.AutoIDPrefix
	}
	if p.AutoIDPrefix == "" {
		return p.RefuseEmptyClientID, s.opts.AutoIDPrefix
	}
	return p.RefuseEmptyClientID, p.AutoIDPrefix
}

// newMessage builds the Message of a PUBLISH from this connection's
// client, noting the client as the source of a retained one when
// Options.CheckRetainSource wants it.
func (c *conn) newMessage(p *packet.Publish) *Message {
	m := c.srv.newMessage(p, c.clientID)
	m.inline = c.lone // the reader's: is its client busy (Message.inline)?
	if p.Retain && c.srv.opts.CheckRetainSource {
		m.setSource(c.sess.info.Load())
	}
	return m
}

// retainSourceAllowed reports whether a retained message may go to a
// new subscriber as far as its publisher is concerned: with
// Options.CheckRetainSource, the publisher must still be allowed to
// publish on its topic (mosquitto's check_retain_source). A message
// whose publisher is unknown (the server's own, or stored while the
// option was off or by a version that did not keep publishers) passes.
func (s *Server) retainSourceAllowed(m *Message) bool {
	if !s.opts.CheckRetainSource || m.source() == nil {
		return true
	}
	return s.allowed(m.source(), ActionPublish, m.Topic)
}

// mounted puts the connection's mount point before a filter: after the
// share name of a shared subscription ($share/GROUP/FILTER), since the
// share name is not a topic level.
func (c *conn) mounted(filter string) string {
	if c.mount == "" {
		return filter
	}
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if group, f, ok := strings.Cut(rest, "/"); ok {
			return "$share/" + group + "/" + c.mount + f
		}
	}
	return c.mount + filter
}
