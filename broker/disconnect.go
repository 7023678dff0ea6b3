package broker

import "github.com/roost-mqtt/roost/packet"

// handleDisconnect ends the connection at the client's request. Normal
// disconnection discards the will [MQTT-3.14.4-3]; 0x04 asks for it to be
// published. An MQTT 5 client may change the session expiry interval, but
// not from 0 to non-zero [MQTT-3.14.2-2].
func (c *conn) handleDisconnect(p *packet.Disconnect) error {
	if c.version == packet.V5 && p.Properties.Has(packet.PropSessionExpiry) {
		ss := c.sess
		ss.mu.Lock()
		was := ss.expiry
		if was != 0 {
			ss.expiry = min(p.Properties.SessionExpiry, c.srv.opts.MaxSessionExpiry)
		}
		ss.mu.Unlock()
		if was == 0 && p.Properties.SessionExpiry != 0 {
			return protoErr(packet.ProtocolError, "MQTT-3.14.2-2", "session expiry set in DISCONNECT after 0 in CONNECT")
		}
	}
	if c.version == packet.V5 && p.ReasonCode == packet.DisconnectWithWill {
		return errWillDisconnect
	}
	// Discard the will now [MQTT-3.1.2-10], so that a takeover racing
	// with this connection's teardown cannot publish it.
	c.sess.mu.Lock()
	if c.sess.conn == c {
		c.sess.will = nil
	}
	c.sess.mu.Unlock()
	return errNormalDisconnect
}
