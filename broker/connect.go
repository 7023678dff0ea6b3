package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/roost-mqtt/roost/packet"
	"github.com/roost-mqtt/roost/topic"
)

// errConnectRefused ends a connection whose CONNECT was answered with a
// failure CONNACK.
var errConnectRefused = errors.New("connection refused")

// refuseError carries why CONNECT was refused, for the log.
type refuseError struct {
	code packet.ReasonCode
	why  string
}

func (e *refuseError) Error() string {
	return fmt.Sprintf("CONNECT refused (0x%02X): %s", byte(e.code), e.why)
}
func (e *refuseError) Unwrap() error { return errConnectRefused }

// refuse answers CONNECT with failure code rc (a 5.0 code; 3.1.x clients get
// the nearest 3.1.1 return code) and returns the error that ends the
// connection [MQTT-3.2.2-6/7].
func (c *conn) refuse(rc packet.ReasonCode, why string) error {
	ack := &packet.Connack{ReasonCode: rc}
	if c.version != packet.V5 {
		ack.ReasonCode = packet.ConnackCode311(rc)
	} else if c.problemInfo {
		ack.Properties.ReasonString = why
		ack.Properties.Set(packet.PropReasonString)
	}
	c.send(ack)
	c.srv.stats.noteRefused(rc)
	return &refuseError{code: rc, why: why}
}

// closeUnclaimed ends a connection whose client id the cluster could not
// record as owned here (an election, no quorum, a node still catching
// up): it closes without a CONNACK rather than refusing with 0x88 Server
// unavailable, because the condition passes and clients should try
// again, and mqtt.js (handlers/connack.js) stops reconnecting for good
// after any refusing CONNACK unless reconnectOnConnackError is set, while
// it, paho.mqtt.golang and paho.golang's autopaho all reconnect after a
// closed connection. MQTT 5 lets a server that cannot complete the
// connection close without a CONNACK (section 3.2.2.2: it MAY send one,
// then closes [MQTT-3.2.2-7]); for 3.1.x this departs from a SHOULD
// (section 3.2.2.3: send return code 3), deliberately. Nothing was
// attached: the client's session and queued messages are as they were.
// It is counted as refused with 0x88.
func (c *conn) closeUnclaimed(id string, err error) error {
	c.logger().Warn("closing CONNECT without CONNACK: the cluster did not record this node as the client id's owner; the client will try again",
		"client_id", id, "err", err)
	c.srv.stats.noteRefused(packet.ServerUnavailable)
	return &refuseError{code: packet.ServerUnavailable, why: "cluster unavailable; closed without CONNACK"}
}

// errConnectAbandoned ends a connection whose client closed it before its
// CONNECT was answered.
var errConnectAbandoned = errors.New("CONNECT abandoned: the client closed the connection before CONNACK")

// abandonConnect ends a connection whose client closed it while its CONNECT
// waited (for the cluster): nothing is attached and no CONNACK is sent, so
// that a CONNECT nobody waits for does not take the session over from the
// client's next connection.
func (c *conn) abandonConnect(id, why string) error {
	c.logger().Debug("CONNECT abandoned without CONNACK", "client_id", id, "why", why)
	return errConnectAbandoned
}

// refuseConnect answers a CONNECT that failed to decode, when its protocol
// version is known, with the matching CONNACK code.
func (c *conn) refuseConnect(p *packet.Connect, err error) {
	var pe *packet.Error
	if !errors.As(err, &pe) {
		return
	}
	switch {
	case pe.Code == packet.UnsupportedProtocolVersion:
		// Answer in 3.1.1 form: the client's version is not ours to
		// speak [MQTT-3.1.2-2].
		c.version = packet.V311
		c.send(&packet.Connack{ReasonCode: packet.Connack311BadProtocolVersion})
	case p.ProtocolVersion == packet.V5:
		c.version = packet.V5
		c.send(&packet.Connack{ReasonCode: pe.Code})
	case pe.Code == packet.ClientIdentifierNotValid:
		c.version = p.ProtocolVersion
		c.send(&packet.Connack{ReasonCode: packet.Connack311IdentifierRejected})
	}
}

// connect decodes and handles the connection's first CONNECT. The Connect
// comes from a pool: nothing handleConnect keeps refers to it (it copies
// what it keeps out of it), and a connection storm would otherwise leave
// one of 700 bytes of garbage per client.
func (c *conn) connect(h packet.FixedHeader, body []byte) error {
	p, _ := c.srv.connects.Get().(*packet.Connect)
	if p == nil {
		p = new(packet.Connect)
	}
	defer func() {
		*p = packet.Connect{} // the password and the rest go with it
		c.srv.connects.Put(p)
	}()
	if err := packet.DecodeConnect(h, body, p); err != nil {
		// p holds the protocol level when it was read; zero otherwise,
		// which refuseConnect answers only for an unsupported level.
		c.refuseConnect(p, err)
		return err
	}
	if c.srv.debug {
		c.trace(p)
	}
	return c.handleConnect(p)
}

// handleConnect validates CONNECT, attaches the connection to its session
// (taking over an existing connection with the same client id) and answers
// CONNACK.
func (c *conn) handleConnect(p *packet.Connect) error {
	s := c.srv
	o := &s.opts
	c.version = p.ProtocolVersion
	props := &p.Properties
	if c.version == packet.V5 && props.Has(packet.PropRequestProblemInfo) {
		c.problemInfo = props.RequestProblemInfo == 1
	}
	if c.version == packet.V5 && props.Has(packet.PropMaximumPacketSize) {
		// Binds every packet from here on, a refusing CONNACK included
		// [MQTT-3.1.2-24].
		c.maxOut = props.MaximumPacketSize
	}
	if c.version == packet.V5 && props.Has(packet.PropAuthData) && !props.Has(packet.PropAuthMethod) {
		return c.refuse(packet.ProtocolError, "Authentication Data without Authentication Method (section 3.1.2.11.10)")
	}
	if c.version == packet.V5 && props.Has(packet.PropAuthMethod) {
		return c.refuse(packet.BadAuthenticationMethod, "no authentication methods are configured")
	}

	pol := s.policy(c.nc)
	c.mount, c.maxQoS = pol.MountPoint, maxQoS
	if pol.LimitQoS {
		c.maxQoS = pol.MaxQoS
	}
	c.aliasMaxIn = o.TopicAliasMaximum
	if pol.LimitAliases {
		c.aliasMaxIn = pol.AliasMaximum
	}
	id := strings.Clone(p.ClientID) // not a view that keeps the CONNECT alive
	assigned := false
	if id == "" {
		refuseEmpty, prefix := s.clientIDRules(pol)
		if refuseEmpty {
			// The server MAY refuse instead of assigning [MQTT-3.1.3-6]
			// (5.0: "MAY allow"): mosquitto's allow_zero_length_clientid.
			return c.refuse(packet.ClientIdentifierNotValid, "this server does not assign client ids: send one")
		}
		if c.version == packet.V31 || !p.CleanStart && c.version == packet.V311 {
			return c.refuse(packet.ClientIdentifierNotValid, "empty client id needs clean session [MQTT-3.1.3-8]")
		}
		id = assignClientID(prefix)
		assigned = true
	}
	if c.version == packet.V31 && len(id) > 23 {
		return c.refuse(packet.ClientIdentifierNotValid, "MQTT 3.1 client ids are at most 23 characters")
	}

	if pre := o.ClientIDPrefix; pre != "" && !strings.HasPrefix(id, pre) && !pol.UsernameAsClientID {
		return c.refuse(packet.NotAuthorized, fmt.Sprintf("client ids must start with %q", pre))
	}
	var will *willMsg
	if p.WillFlag && p.WillQoS > c.maxQoS {
		return c.refuse(packet.QoSNotSupported, fmt.Sprintf("will QoS %d is above this listener's maximum QoS %d [MQTT-3.2.2-12]", p.WillQoS, c.maxQoS))
	}
	if p.WillFlag {
		if err := topic.ValidName(p.WillTopic, o.MaxTopicLevels); err != nil {
			if c.version != packet.V5 {
				// A malformed CONNECT: 3.1.x has no return code for it (3,
				// server unavailable, would send the client retrying for
				// ever), so the connection just closes.
				return protoErr(packet.MalformedPacket, "MQTT-4.7.3-1", "will topic %s: %v", clipQuote(p.WillTopic), err)
			}
			return c.refuse(packet.TopicNameInvalid, fmt.Sprintf("will topic %s: %v", clipQuote(p.WillTopic), err))
		}
		if p.WillRetain && o.DisableRetain {
			return c.refuse(packet.RetainNotSupported, "retained messages are disabled")
		}
		will = newWill(p, id)
		will.msg.Topic = c.mount + will.msg.Topic
	}
	if !s.reserveConnection() {
		return c.refuse(packet.ServerBusy, fmt.Sprintf("connection limit %d reached", o.MaxConnections))
	}
	attached := false
	defer func() {
		if !attached {
			s.releaseConnection()
		}
	}()
	info := newClientInfo(c.nc, p, id)
	hold, err := c.authGate(info.Username) // password guessing: limits.go
	if err != nil {
		return err
	}
	err = s.authenticate(info)
	c.authDone(hold, info.Username, err)
	if err != nil {
		// A refusal's text says why (no password, anonymous access off
		// ...): it is logged and, when asked for, the Reason String.
		if errors.Is(err, ErrBadCredentials) {
			return c.refuse(packet.BadUserNameOrPassword, err.Error())
		}
		if errors.Is(err, ErrNotAuthorized) {
			return c.refuse(packet.NotAuthorized, err.Error())
		}
		c.logger().Warn("authentication failed", "username", info.Username, "err", err)
		return c.refuse(packet.NotAuthorized, "not authorized")
	}
	if pol.UsernameAsClientID {
		if info.Username == "" {
			return c.refuse(packet.NotAuthorized, "this listener takes the username as client id, and there is none")
		}
		id, assigned = info.Username, false
		info.ClientID = id
		if will != nil {
			will.msg.From = id
		}
	}
	if will != nil {
		will.info = info
	}

	ack, _ := s.connacks.Get().(*packet.Connack)
	if ack == nil {
		ack = &packet.Connack{}
	}
	defer func() {
		// Encoded into the output by now (attach), or not sent at all.
		*ack = packet.Connack{}
		s.connacks.Put(ack)
	}()
	keepAlive := p.KeepAlive
	expiry := uint32(0)
	c.window = int(o.MaxInflight)
	if c.version == packet.V5 {
		if o.ServerKeepAlive != 0 {
			keepAlive = o.ServerKeepAlive
			ack.Properties.ServerKeepAlive = keepAlive
			ack.Properties.Set(packet.PropServerKeepAlive)
		}
		if props.Has(packet.PropSessionExpiry) {
			expiry = props.SessionExpiry
		}
		if expiry > o.MaxSessionExpiry {
			expiry = o.MaxSessionExpiry
			ack.Properties.SessionExpiry = expiry
			ack.Properties.Set(packet.PropSessionExpiry)
		}
		if props.Has(packet.PropReceiveMaximum) {
			c.window = min(c.window, int(props.ReceiveMaximum))
		}
		if props.Has(packet.PropTopicAliasMaximum) {
			c.aliasMaxOut = props.TopicAliasMaximum
		}
		if assigned {
			ack.Properties.AssignedClientID = id
			ack.Properties.Set(packet.PropAssignedClientID)
		}
		ack.Properties.ReceiveMaximum = o.ReceiveMaximum
		ack.Properties.Set(packet.PropReceiveMaximum)
		ack.Properties.MaximumPacketSize = o.MaxPacketSize
		ack.Properties.Set(packet.PropMaximumPacketSize)
		if c.aliasMaxIn > 0 {
			ack.Properties.TopicAliasMaximum = c.aliasMaxIn
			ack.Properties.Set(packet.PropTopicAliasMaximum)
		}
		if c.maxQoS < maxQoS {
			ack.Properties.MaximumQoS = byte(c.maxQoS)
			ack.Properties.Set(packet.PropMaximumQoS) // [MQTT-3.2.2-9]
		}
		if o.DisableRetain {
			ack.Properties.RetainAvailable = 0
			ack.Properties.Set(packet.PropRetainAvailable)
		}
	} else if !p.CleanStart {
		expiry = neverExpires // 3.1.x persistent sessions last until cleaned
		if o.PersistentSessionExpiry != 0 {
			expiry = o.PersistentSessionExpiry
		}
	}
	if limit := o.MaxKeepAlive; limit != 0 && (keepAlive == 0 || keepAlive > limit) {
		if c.version != packet.V5 {
			// A 3.1.x client cannot be told another keep alive; mosquitto
			// refuses it with 0x02 as well.
			return c.refuse(packet.ClientIdentifierNotValid, fmt.Sprintf("keep alive %d s exceeds the maximum %d s (0 = none is not allowed either)", keepAlive, limit))
		}
		keepAlive = limit
		ack.Properties.ServerKeepAlive = keepAlive
		ack.Properties.Set(packet.PropServerKeepAlive) // [MQTT-3.2.2-21]
	}
	if keepAlive > 0 {
		c.keepAlive = time.Duration(keepAlive) * 1500 * time.Millisecond // [MQTT-3.1.2-24]
	}
	if err := s.storeHealth(); err != nil && (!p.CleanStart || expiry > 0) {
		// A session that outlives the connection is written to the store
		// before CONNACK (attach), and the store cannot take writes: say
		// so with a code the client can act on (connect clean, or later)
		// instead of closing without CONNACK [MQTT-3.2.2-6/7]. 0x97, not
		// 0x88 Server unavailable: the server is up (clean sessions and
		// QoS 0 go on), and QoS 1/2 publishes are refused with 0x97 for
		// the same cause. 3.1.x clients get 0x03 Server unavailable.
		c.logger().Warn("refusing a persistent session: the store cannot take writes", "err", err)
		return c.refuse(packet.QuotaExceeded, "the server cannot store sessions now; connect with a clean session or retry later")
	}

	if c.maxOut > 0 {
		// The client could not take this CONNACK: close without sending
		// it [MQTT-3.1.2-24], before the session is touched.
		if b, err := ack.Encode(nil, c.version); err == nil && len(b) > int(c.maxOut) {
			s.stats.noteRefused(packet.PacketTooLarge)
			return &refuseError{code: packet.PacketTooLarge,
				why: fmt.Sprintf("the client's Maximum Packet Size %d is smaller than the CONNACK (%d bytes) [MQTT-3.1.2-24]", c.maxOut, len(b))}
		}
	}
	if err := s.claim(c, id, assigned, will, expiry); err != nil {
		if errors.Is(err, ErrClientGone) {
			return c.abandonConnect(id, "the client closed the connection while the cluster claim waited")
		}
		return c.closeUnclaimed(id, err)
	}
	if s.opts.Cluster != nil && (!assigned || c.willToken != 0) && c.clientGone() {
		// The claim may have waited long (GoneClaimer); the takeover
		// below would close the connection the client now waits on.
		s.willDone(c, nil)
		return c.abandonConnect(id, "the client closed the connection before the takeover")
	}
	c.clientID = id
	c.connectedAt = time.Now().UnixNano()
	if o.PublishRate > 0 {
		c.pubRate = &tokenBucket{rate: o.PublishRate, burst: 2 * o.PublishRate}
	}
	c.named()
	s.settleTakeover(id)
	present := s.attach(c, id, p.CleanStart, expiry, will, ack, info)
	attached = true
	c.connected = true
	s.stats.noteConnected()
	if s.log.Enabled(context.Background(), slog.LevelInfo) {
		// Checked first: making c's logger costs every connection memory.
		c.logger().Info("client connected", "username", info.Username, "protocol", c.version.String(), "clean_start", p.CleanStart,
			"keep_alive", keepAlive, "session_present", present)
	}
	return nil
}

const neverExpires = 0xFFFFFFFF

func assignClientID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// newWill makes the will of CONNECT p. Its topic, payload and properties
// are copies: views would keep the whole CONNECT alive, password included,
// for as long as the session keeps the will.
func newWill(p *packet.Connect, from string) *willMsg {
	m := &Message{Topic: strings.Clone(p.WillTopic), Payload: bytes.Clone(p.WillPayload), QoS: p.WillQoS, Retain: p.WillRetain, From: from}
	w := &willMsg{msg: m}
	if p.ProtocolVersion == packet.V5 {
		wp := &p.WillProperties
		if wp.Present&^(1<<packet.PropWillDelay) != 0 {
			// Message Expiry stays: it counts from when the will is published.
			props := *wp
			props.Clear(packet.PropWillDelay)
			props.ContentType = strings.Clone(props.ContentType)
			props.ResponseTopic = strings.Clone(props.ResponseTopic)
			props.CorrelationData = bytes.Clone(props.CorrelationData)
			if props.User != nil {
				props.User = make([]packet.UserProperty, len(wp.User))
				for i, u := range wp.User {
					props.User[i] = packet.UserProperty{Key: strings.Clone(u.Key), Value: strings.Clone(u.Value)}
				}
			}
			m.Props = &props
		}
		if wp.Has(packet.PropWillDelay) {
			w.delay = time.Duration(wp.WillDelay) * time.Second
		}
	}
	return w
}

// attach binds c to the session for id, ending or resuming an existing one,
// and sends CONNACK before anything else can be written to c. It returns
// the session-present flag.
func (s *Server) attach(c *conn, id string, clean bool, expiry uint32, will *willMsg, ack *packet.Connack, info *ClientInfo) bool {
	var wills []*willMsg
	s.mu.Lock()
	old := s.sessions[id]
	resumable, quiet := false, false
	if old != nil {
		old.mu.Lock()
		// A session with expiry 0 ends with its network connection, which
		// the takeover is about to close: it cannot be resumed
		// [MQTT-3.1.2-23 / 3.1.1 MQTT-3.1.2-6].
		resumable = !old.ended && old.expiry > 0
		quiet = resumable && !clean && quietResume(old, expiry, will)
		if oc := old.conn; oc != nil {
			// Takeover [MQTT-3.1.4-3]. The old connection's will is
			// published unless the session goes on and the will has a
			// delay: a new connection to the session arrived in time
			// [MQTT-3.1.3-9].
			old.conn = nil
			s.stats.connected.Add(-1)
			if w := old.will; w != nil {
				old.will = nil
				if clean || old.expiry == 0 || w.delay == 0 {
					wills = append(wills, w)
				}
			}
			oc.kickOut(kickTakeover)
		}
		old.mu.Unlock()
	}
	var ss *session
	present := false
	if resumable && !clean {
		ss = old
		present = true
	} else {
		if old != nil {
			if w := s.endSessionLocked(old); w != nil {
				wills = append(wills, w)
			}
		}
		ss = newSession(s, id)
		s.sessions[id] = ss
	}
	ss.mu.Lock()
	ss.stopTimersLocked()
	if ss.will != nil {
		// A delayed will from an earlier connection: a new connection
		// arrived before it was due, so it is not sent [MQTT-3.1.3-9].
		ss.will = nil
	}
	ss.expiry = expiry
	if will != nil {
		will.durable = expiry > 0 && s.opts.Store != nil
	}
	ss.will = will
	ss.info.Store(info)
	ss.offlineAt = 0
	c.sess = ss
	prior := ss.recT
	t := ss.recordSession()
	if quiet {
		// The new record only says "connected" (quietResume): the CONNACK
		// waits for what the store held of the session before it, which
		// is usually durable already, rather than for a sync of its own.
		t, ss.recT = prior, prior
	}
	c.needDurable(t)
	ack.SessionPresent = present && c.version != packet.V31
	c.send(ack)
	ss.conn = c
	// resume asks the Authorizer about what it sends (mayReceive), which
	// may be a hook on the network: not under the server-wide lock.
	s.mu.Unlock()
	if present {
		ss.resume(c)
	}
	ss.mu.Unlock()
	for _, w := range wills {
		s.publishWill(w)
	}
	return present
}

// quietResume reports whether resuming old, with the CONNECT's expiry and
// will, changes nothing that a restart reads from the store, so that its
// CONNACK need not wait for the new record to be synced. The store must
// already hold the session (old.stored; the CONNACK still waits for that
// record, old.recT, should it not be durable yet): Session Present 1 is
// then never sent for a session a crash forgets [MQTT-3.2.2-2]. A crash
// that loses the new record restarts from the one before it, which differs
// only in when the client went offline, and only if:
//   - the session never expires, before and after: with a finite expiry
//     the old record's offline time would start the expiry clock at the
//     client's earlier disconnect instead of at the crash, and a restart
//     could end a session that should have outlived it [MQTT-3.1.2-23];
//   - the old record holds no will (a delayed will, or the will of a
//     connection taken over): restored, it would be published although
//     the client came back in time [MQTT-3.1.3-9], or a second time;
//   - the CONNECT has no will: lost, it would never be published for a
//     connection the crash ended [MQTT-3.1.2-8].
//
// 3.1.x clients with Clean Session 0 and MQTT 5 clients with a Session
// Expiry of 0xFFFFFFFF reconnecting after a restart are such resumes: a
// reconnect storm no longer waits for one fsync round per batch of
// CONNECTs. old.mu must be held.
func quietResume(old *session, expiry uint32, will *willMsg) bool {
	return old.stored && old.expiry == neverExpires && expiry == neverExpires && old.will == nil && will == nil
}

// authenticate runs the Authenticator, if any, bounded by the connect
// timeout, and forgets the password afterwards.
func (s *Server) authenticate(info *ClientInfo) error {
	defer func() { info.Password = nil }()
	if s.opts.Authenticator == nil || info.internal {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.ConnectTimeout)
	defer cancel()
	return s.opts.Authenticator.Authenticate(ctx, info)
}

// allowed asks whether c's client may act on topic. An Authorizer that may
// block (CachedAuthorizer: a remote service) is asked only once the
// replies appended so far are out (conn.reply).
func (c *conn) allowed(act Action, topic string) bool {
	if _, mayBlock := c.srv.opts.Authorizer.(CachedAuthorizer); mayBlock {
		c.flushReplies()
	}
	return c.srv.allowed(c.sess.info.Load(), act, topic)
}

// allowed asks the Authorizer, if any.
func (s *Server) allowed(info *ClientInfo, act Action, topic string) bool {
	if s.opts.Authorizer == nil || info == nil || info.internal {
		return true
	}
	return s.opts.Authorizer.Allow(s.ctx, info, act, topic)
}
