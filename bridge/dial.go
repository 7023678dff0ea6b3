package bridge

import (
	"context"
	"net"
	"syscall"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

// dialer returns the remote connection's dialer: the bind address and TCP
// options of c, or nil (the client's default) without any.
func (c *Config) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.BindAddress == "" && c.TCPKeepAlive == (net.KeepAliveConfig{}) && c.TCPUserTimeout == 0 {
		return nil
	}
	d := &net.Dialer{KeepAliveConfig: c.TCPKeepAlive}
	if c.BindAddress != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.BindAddress)}
	}
	if ms := int(c.TCPUserTimeout.Milliseconds()); ms > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = setUserTimeout(fd, ms) }); err != nil {
				return err
			}
			return serr
		}
	}
	return d.DialContext
}

// tooLarge drops m, counted and logged, if its PUBLISH to the remote
// would exceed Config.MaxPacketSize.
func (b *Bridge) tooLarge(m *client.Message) bool {
	limit := b.cfg.MaxPacketSize
	if limit == 0 {
		return false
	}
	p := &packet.Publish{Topic: mapOut(b.cfg.Topics, m.Topic), QoS: m.QoS, PacketID: 1, Payload: m.Payload}
	if b.cfg.Version == packet.V5 {
		p.Properties = m.Properties
		p.Properties.Clear(packet.PropSubscriptionID)
		p.Properties.SubscriptionIDs = nil
	}
	buf, err := p.Encode(nil, b.cfg.Version)
	if err == nil && uint32(len(buf)) <= limit {
		return false
	}
	b.dropped.Add(1)
	b.log.Warn("message larger than max_packet_size; dropped", "direction", "out", "topic", m.Topic, "size", len(buf), "max", limit)
	m.Ack()
	return true
}
