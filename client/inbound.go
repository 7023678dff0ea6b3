package client

import (
	"fmt"
	"strings"

	"github.com/roost-mqtt/roost/packet"
)

// handlePacket handles one packet from the server on the reader
// goroutine. It never waits for a handler. A non-nil error means cn was
// closed.
func (c *Client) handlePacket(cn *conn, p packet.Packet) error {
	if c.debug {
		c.opts.Logger.Debug("received", "packet", p.Type(), "id", packetID(p))
	}
	switch p := p.(type) {
	case *packet.Publish:
		return c.onPublish(cn, p)
	case *packet.Puback:
		c.onPuback(p.PacketID, opPublish, 1, Ack{p.ReasonCode, p.Properties})
	case *packet.Pubrec:
		c.onPubrec(cn, p)
	case *packet.Pubrel:
		c.mu.Lock()
		delete(c.sess.inQoS2, p.PacketID)
		c.mu.Unlock()
		if c.opts.OnRelease != nil {
			// Before the PUBCOMP: once it is sent the server may reuse
			// the identifier.
			c.opts.OnRelease(p.PacketID)
		}
		cn.writePacket(&packet.Pubcomp{PacketID: p.PacketID})
	case *packet.Pubcomp:
		c.onPuback(p.PacketID, opPublish, 2, Ack{p.ReasonCode, p.Properties})
	case *packet.Suback:
		c.onSuback(p)
	case *packet.Unsuback:
		c.onUnsuback(p)
	case *packet.Pingresp:
		cn.pingSent.Store(0)
	case *packet.Disconnect:
		err := &ReasonError{Op: "disconnect", Code: p.ReasonCode, Reason: p.Properties.ReasonString}
		cn.close(err)
		return err
	default:
		return cn.protocolError(packet.ProtocolError, fmt.Errorf("client: unexpected %v from server", p.Type()))
	}
	return nil
}

// onPublish resolves a topic alias and hands the message to the
// dispatcher. The acknowledgement is sent after the handlers return:
// PUBACK on the connection the message came by (a resent copy on a later
// connection is acknowledged by its own delivery), PUBREC on the current
// connection. A QoS 2 message whose id is still awaiting PUBREL is not
// delivered again [MQTT-4.3.3].
func (c *Client) onPublish(cn *conn, p *packet.Publish) error {
	if p.Properties.Has(packet.PropTopicAlias) {
		a := p.Properties.TopicAlias
		if p.Topic != "" {
			if t, ok := cn.aliasIn[a]; !ok || t != p.Topic {
				// A copy: p.Topic is a view into the packet, payload
				// included, which the map would keep alive for the
				// connection's life.
				cn.aliasIn[a] = strings.Clone(p.Topic)
			}
		} else if p.Topic = cn.aliasIn[a]; p.Topic == "" {
			return cn.protocolError(packet.TopicAliasInvalid, fmt.Errorf("client: unknown topic alias %d", a))
		}
		p.Properties.Clear(packet.PropTopicAlias)
		p.Properties.TopicAlias = 0
	}
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Dup: p.Dup,
		PacketID: p.PacketID, Properties: p.Properties}
	id := p.PacketID
	if p.QoS < 2 && c.takeResponse(m) {
		if p.QoS == 1 {
			cn.writePacket(&packet.Puback{PacketID: id})
		}
		return nil
	}
	switch p.QoS {
	case 0:
		c.disp.message(m, nil)
	case 1:
		c.disp.message(m, func() { cn.writePacket(&packet.Puback{PacketID: id}) })
	case 2:
		c.mu.Lock()
		handled, seen := c.sess.inQoS2[id]
		if !seen {
			c.sess.inQoS2[id] = false
		}
		c.mu.Unlock()
		switch {
		case seen && handled:
			cn.writePacket(&packet.Pubrec{PacketID: id})
		case !seen:
			c.disp.message(m, func() { c.qos2Handled(id) })
		}
	}
	return nil
}

func (c *Client) qos2Handled(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.sess.inQoS2[id]; !ok {
		return // the session was lost meanwhile
	}
	c.sess.inQoS2[id] = true
	if c.cn != nil {
		c.cn.writePacket(&packet.Pubrec{PacketID: id})
	}
}

// onPuback completes a QoS 1 publish on PUBACK or a QoS 2 one on PUBCOMP.
// A PUBCOMP with Packet Identifier not found (the server lost its session
// after our PUBREL) still completes: the server took the message at PUBREC.
func (c *Client) onPuback(id uint16, kind opKind, qos packet.QoS, ack Ack) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.sess.inflight[id]
	if o == nil || o.kind != kind || o.msg.QoS != qos || (qos == 2 && !o.pubrel) {
		return
	}
	var err error
	if ack.ReasonCode >= 0x80 && !(qos == 2 && ack.ReasonCode == packet.PacketIdentifierNotFound) {
		err = &ReasonError{Op: "publish", Code: ack.ReasonCode, Reason: ack.Properties.ReasonString}
	}
	if o.tag != 0 && o.stored {
		c.keep(o)
	} else {
		c.forget(o)
	}
	o.complete(ack, nil, err)
	c.pump()
}

// onPubrec answers PUBREC with PUBREL [MQTT-4.3.3]; a failure code ends
// the flow there.
func (c *Client) onPubrec(cn *conn, p *packet.Pubrec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.sess.inflight[p.PacketID]
	if o == nil || o.kind != opPublish || o.msg.QoS != 2 {
		rel := &packet.Pubrel{PacketID: p.PacketID}
		if cn.v == packet.V5 {
			rel.ReasonCode = packet.PacketIdentifierNotFound
		}
		cn.writePacket(rel)
		return
	}
	if p.ReasonCode >= 0x80 {
		c.forget(o)
		o.complete(Ack{p.ReasonCode, p.Properties}, nil,
			&ReasonError{Op: "publish", Code: p.ReasonCode, Reason: p.Properties.ReasonString})
		c.pump()
		return
	}
	if !o.pubrel {
		o.pubrel = true
		c.storePut(o)
	}
	cn.writePacket(&packet.Pubrel{PacketID: p.PacketID})
}

func (c *Client) onSuback(p *packet.Suback) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.sess.inflight[p.PacketID]
	if o == nil || o.kind != opSubscribe {
		return
	}
	delete(c.sess.inflight, p.PacketID)
	var err error
	for i, s := range o.subs {
		e := c.sess.subs[s.Filter]
		if i >= len(p.ReasonCodes) || e == nil {
			continue
		}
		if rc := p.ReasonCodes[i]; rc >= 0x80 {
			if !e.acked {
				c.removeSub(s.Filter)
			}
			if err == nil {
				err = &ReasonError{Op: "subscribe", Code: rc, Reason: p.Properties.ReasonString}
			}
		} else {
			e.acked = true
		}
	}
	o.complete(Ack{Properties: p.Properties}, p.ReasonCodes, err)
	c.pump()
}

func (c *Client) onUnsuback(p *packet.Unsuback) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.sess.inflight[p.PacketID]
	if o == nil || o.kind != opUnsubscribe {
		return
	}
	delete(c.sess.inflight, p.PacketID)
	for _, f := range o.filters {
		c.removeSub(f)
	}
	var err error
	for _, rc := range p.ReasonCodes {
		if rc >= 0x80 && rc != packet.NoSubscriptionExisted {
			err = &ReasonError{Op: "unsubscribe", Code: rc, Reason: p.Properties.ReasonString}
			break
		}
	}
	o.complete(Ack{Properties: p.Properties}, p.ReasonCodes, err)
	c.pump()
}

// packetID returns p's packet identifier, 0 if it has none.
func packetID(p packet.Packet) uint16 {
	switch p := p.(type) {
	case *packet.Publish:
		return p.PacketID
	case *packet.Puback:
		return p.PacketID
	case *packet.Pubrec:
		return p.PacketID
	case *packet.Pubrel:
		return p.PacketID
	case *packet.Pubcomp:
		return p.PacketID
	case *packet.Suback:
		return p.PacketID
	case *packet.Unsuback:
		return p.PacketID
	}
	return 0
}
