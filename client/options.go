package client

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Options configure a Client. The zero value of every field except Servers
// means "use the default" given beside it.
type Options struct {
	// Servers are tried in order on every connection attempt, so later
	// ones act as failover: mqtt://host:1883, mqtts://host:8883,
	// ws://host:8080/mqtt, wss://host/mqtt. tcp://, ssl:// and tls:// are
	// accepted as aliases. At least one is required.
	Servers []string
	// RoundRobin treats the Servers as equals: after a connection to one
	// is lost, the next attempt starts with the one after it (and wraps),
	// instead of with the first (mosquitto's round_robin true).
	RoundRobin bool
	// TLSConfig is used for mqtts:// and wss://. Default: the system roots,
	// ServerName taken from the URL.
	TLSConfig *tls.Config
	// DialContext opens the TCP connection that TLS and WebSocket run
	// over, to addr ("host:port" from the server URL). Set it to go
	// through a proxy (roost pub --proxy uses a SOCKS5 dialer) or to bind
	// a local address. Default: a net.Dialer, and for ws:// and wss:// the
	// HTTP proxy named by the environment (HTTPS_PROXY, NO_PROXY, ...).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// ClientID identifies the session on the server. Default: a random
	// "roost-" identifier, kept for the Client's life so reconnects resume
	// the same session.
	ClientID string
	// Username and Password are sent when non-empty.
	Username string
	Password string
	// Version is the protocol: packet.V5 (default), packet.V311 or
	// packet.V31 (MQTT 3.1: protocol name MQIsdp, level 3, otherwise spoken
	// like 3.1.1; its client ids are 1 to 23 bytes).
	Version packet.Version
	// KeepAlive is the keep alive interval. Default 60s; negative disables
	// it. An MQTT 5 server may override it (Server Keep Alive).
	KeepAlive time.Duration
	// PingTimeout is how long to wait for PINGRESP before the connection
	// is considered lost. Default: the keep alive, at most 30s.
	PingTimeout time.Duration
	// ConnectTimeout bounds one connection attempt to one server: dial, TLS,
	// WebSocket upgrade and CONNACK. Default 10s.
	ConnectTimeout time.Duration

	// KeepSession asks the server to keep the session (subscriptions and
	// undelivered QoS 1/2 messages) while the client is offline: Clean
	// Session 0 in 3.1.1; Clean Start 0 and a Session Expiry Interval in
	// 5.0. Without it, MQTT 5 connections start clean the first time and
	// still resume on reconnect if SessionExpiry is non-zero.
	KeepSession bool
	// SessionExpiry is the MQTT 5 Session Expiry Interval. Default 0, or
	// "never" (0xFFFFFFFF seconds) when KeepSession is set.
	SessionExpiry time.Duration
	// Bridge announces the client as a broker bridging into the server,
	// as mosquitto's bridges do (its try_private option): a 3.1.1 CONNECT
	// carries protocol level 0x84, by which a server such as mosquitto or
	// Roost gives the subscriptions No Local and Retain As Published, so
	// that a two-way bridge does not get its own messages back. A server
	// that refuses that level (CONNACK 1, unacceptable protocol version)
	// is asked again at once with the plain level, and the bit stays off
	// for the Client's life, which is mosquitto's fallback. Ignored for
	// 5.0, whose subscription options say the same per subscription.
	Bridge bool
	// Will is the message the server publishes if the connection is lost
	// without a DISCONNECT. Optional.
	Will *Message
	// ConnectProperties are extra MQTT 5 CONNECT properties (User
	// Property, Request Problem Information, ...). Session Expiry, Receive
	// Maximum, Maximum Packet Size and Topic Alias Maximum are taken from
	// the fields of Options instead.
	ConnectProperties packet.Properties

	// ReceiveMaximum is how many QoS 1/2 messages the server may have
	// unacknowledged towards this client (MQTT 5); it bounds the handler
	// queue for QoS 1/2, see the package doc. Default: not sent (65,535).
	ReceiveMaximum uint16
	// MaxInflight caps the QoS 1/2 publishes sent and not yet acknowledged,
	// on top of the server's Receive Maximum. Default: no cap for 5.0 (the
	// server's Receive Maximum applies), 20 for 3.1.1, whose servers cannot
	// announce theirs (mosquitto's max_inflight_messages is 20 and it drops
	// or disconnects beyond it).
	MaxInflight uint16
	// MaxPacketSize is the largest packet accepted from the server. Default:
	// not sent (no limit).
	MaxPacketSize uint32
	// TopicAliasMaximum is how many topic aliases the server may use
	// towards this client (MQTT 5). Default 0.
	TopicAliasMaximum uint16
	// TopicAliases, when set, makes Publish use MQTT 5 topic aliases up to
	// the server's Topic Alias Maximum: the first PUBLISH to a topic sets an
	// alias, later ones send the alias and an empty topic.
	TopicAliases bool

	// Reconnect configures automatic reconnection.
	Reconnect Backoff
	// NoResubscribe turns off re-sending SUBSCRIBE for every subscription
	// after a reconnect on which the server had no session.
	NoResubscribe bool
	// OfflineQueue is the most operations (publishes, subscribes,
	// unsubscribes) waiting for a connection or for the server's Receive
	// Maximum; when full, Publish and Subscribe fail with ErrQueueFull.
	// Default 1000.
	OfflineQueue int
	// MaxPendingMessages bounds how many QoS 0 messages wait for the
	// handlers; beyond it new QoS 0 messages are dropped and counted (see
	// Stats). QoS 1/2 messages are never dropped: they are bounded by
	// ReceiveMaximum because they are acknowledged only after their
	// handler returns. Default 10,000.
	MaxPendingMessages int
	// Store, when set, persists outgoing QoS 1/2 publishes until they
	// complete, so a new Client with the same Store resends them after a
	// process restart. See FileStore.
	Store Store

	// OnStatus is called on every status change. Optional.
	OnStatus func(Status)
	// OnConnectionUp is called after every successful CONNACK. Optional.
	OnConnectionUp func(*Client, *packet.Connack)
	// OnConnectionDown is called when a connection that was up is lost
	// (err says why) or closed by Disconnect (err is nil). Optional.
	OnConnectionDown func(*Client, error)
	// OnRelease is called with the packet identifier of each PUBREL the
	// server sends, on the reading goroutine, before the PUBCOMP is
	// written: the server has our PUBREC of that QoS 2 message and, after
	// the PUBCOMP, may reuse the identifier. A bridge forgets its record
	// of the message then (Forget). It must not block. Optional.
	OnRelease func(packetID uint16)
	// ManualAck leaves the acknowledgement of received QoS 1 and 2
	// messages to the application, which calls Message.Ack when it is done
	// with one, from any goroutine, after its handler returned if it
	// likes; the handlers no longer acknowledge on return. A message no
	// handler receives is acknowledged at once. Unacknowledged messages
	// count against ReceiveMaximum, so a message never acknowledged
	// stops the flow.
	ManualAck bool
	// DefaultHandler receives messages no subscription handler matches.
	// Optional; unmatched messages are dropped otherwise.
	DefaultHandler MessageHandler

	// Logger receives debug logs. Default: discard.
	Logger *slog.Logger
}

// Backoff is the reconnect delay policy: after the n-th consecutive failed
// attempt (n from 1) the client waits Min*2^(n-1), capped at Max, then
// reduced by a random fraction up to Jitter so a fleet of clients does not
// reconnect in lockstep. When the last server tried refused the CONNECT for a
// reason retrying soon cannot fix (bad credentials, not authorized,
// unsupported protocol version), the wait is Max at once.
type Backoff struct {
	// Min is the first delay. Default 1s.
	Min time.Duration
	// Max caps the delay. Default 2m.
	Max time.Duration
	// Jitter is in [0, 1]. Default 0.5; negative means none.
	Jitter float64
	// MaxAttempts stops the client (Status Disconnected with the last
	// error) after this many consecutive failed attempts. Default 0: never.
	MaxAttempts int
	// Disabled turns reconnection off: a lost connection stops the client.
	Disabled bool
}

func (o *Options) fill() {
	if o.Version == 0 {
		o.Version = packet.V5
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = 65535
		if o.Version != packet.V5 {
			o.MaxInflight = 20
		}
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 60 * time.Second
	}
	if o.PingTimeout == 0 {
		o.PingTimeout = min(max(o.KeepAlive, time.Second), 30*time.Second)
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.ClientID == "" {
		o.ClientID = "roost-" + randomHex(6)
	}
	if o.KeepSession && o.SessionExpiry == 0 {
		o.SessionExpiry = 0xFFFFFFFF * time.Second
	}
	if o.Reconnect.Min == 0 {
		o.Reconnect.Min = time.Second
	}
	if o.Reconnect.Max == 0 {
		o.Reconnect.Max = 2 * time.Minute
	}
	if o.Reconnect.Jitter == 0 {
		o.Reconnect.Jitter = 0.5
	}
	if o.OfflineQueue == 0 {
		o.OfflineQueue = 1000
	}
	if o.MaxPendingMessages == 0 {
		o.MaxPendingMessages = 10000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// delay returns the wait after the n-th consecutive failure (n >= 1).
func (b Backoff) delay(n int, rnd float64) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		d -= time.Duration(float64(d) * min(b.Jitter, 1) * rnd)
	}
	return d
}
