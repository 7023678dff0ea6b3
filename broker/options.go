package broker

import (
	"log/slog"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// Options configure a Server. The zero value of every field means "use the
// default" listed beside it, so Options{} is a working configuration; use
// DefaultOptions to see the effective values.
type Options struct {
	// Logger receives the server's logs. Default: slog.Default().
	Logger *slog.Logger

	// MaxPacketSize is the largest packet accepted from or sent to a
	// client, in bytes. Default 1 MiB; at most 268,435,460.
	MaxPacketSize uint32
	// ReceiveMaximum is how many QoS 2 publishes a client may have
	// awaiting PUBREL (MQTT 5 Receive Maximum, told to 5.0 clients and
	// enforced for all; QoS 1 publishes are acknowledged as soon as they
	// are routed, so they never pile up). Default 1024.
	ReceiveMaximum uint16
	// MaxInflight caps unacknowledged QoS 1/2 messages the server sends to
	// one client (further bounded by the client's own Receive Maximum).
	// Default 64.
	MaxInflight uint16
	// MaxInflightBytes, when non-zero, also bounds the inflight window by
	// the payload bytes of its messages (mosquitto's max_inflight_bytes):
	// a message is sent while they are below it, so one larger than it
	// still goes out, alone. Default 0: no byte bound.
	MaxInflightBytes int
	// MaxQueued is the most messages held for one session beyond the
	// inflight window (offline, or online but the window is full). When
	// full, the oldest QoS 0 message is dropped first, otherwise the new
	// message is dropped; every drop is counted. Default 1000.
	MaxQueued int
	// MaxQueuedBytes bounds the same queue by topic and payload bytes,
	// with the same drop policy; a message larger than it is never queued.
	// It keeps a few offline sessions with large messages from holding
	// the broker's memory (and disk). Default 64 MiB.
	MaxQueuedBytes int
	// ExpirySweep is how often queued messages of offline sessions are
	// checked against their MQTT 5 Message Expiry; expired ones are
	// removed from memory and the store then, rather than when the client
	// returns, so that both follow live data. Each sweep examines a bounded
	// number of messages and continues where it stopped on the next.
	// Default 30s; negative disables it.
	ExpirySweep time.Duration
	// QueueQoS0 also queues QoS 0 messages for offline persistent
	// sessions. Default false, as in mosquitto.
	QueueQoS0 bool
	// MaxTopicLevels is the most '/'-separated levels in a topic or
	// filter. Default 128.
	MaxTopicLevels int
	// MaxConnections is the most concurrent client connections; further
	// CONNECTs get Server Unavailable / Server Busy. Default 100,000.
	MaxConnections int
	// MaxConnectionsPerIP caps open connections from one client address.
	// Default 0: unlimited, because whole fleets of phones share one
	// carrier NAT address; set it for brokers facing the internet.
	MaxConnectionsPerIP int
	// ConnectRatePerIP caps new connections per second from one address
	// (bursts of twice that are allowed). Default 0: unlimited.
	ConnectRatePerIP float64
	// MaxSubscriptions caps the subscriptions of one session; further
	// filters get SUBACK 0x97 Quota exceeded (0x80 in 3.1.x). Default
	// 10,000.
	MaxSubscriptions int
	// PublishRate caps PUBLISH packets per second from one client (bursts
	// of twice that are allowed); a client above it is disconnected with
	// 0x96 Message rate too high. Default 0: unlimited.
	PublishRate float64
	// ConnectTimeout is how long a new connection has to send CONNECT.
	// Default 10s.
	ConnectTimeout time.Duration
	// CloseLinger bounds how long a connection the broker closes, its
	// last packet (a DISCONNECT) written and its write side ended, reads
	// and discards what the client still sends, so that the client reads
	// that packet before the end rather than a reset (goodbye.go).
	// Default 1s.
	CloseLinger time.Duration
	// ServerKeepAlive, when non-zero, overrides an MQTT 5 client's keep
	// alive (Server Keep Alive in CONNACK). 3.1.x clients cannot be told,
	// so their own keep alive applies.
	ServerKeepAlive uint16
	// MaxKeepAlive, when non-zero, is the longest keep alive a client may
	// use, in seconds (mosquitto's max_keepalive): an MQTT 5 client asking
	// for more, or for 0 (none), is given MaxKeepAlive as Server Keep
	// Alive; an MQTT 3.1.x client, which cannot be told, is refused with
	// CONNACK 0x02 Identifier rejected, as mosquitto refuses it. It bounds
	// how long a vanished client's connection and will linger. Default 0:
	// no cap. ServerKeepAlive, when set, must not exceed it.
	MaxKeepAlive uint16
	// MaxSessionExpiry caps the MQTT 5 Session Expiry Interval a client may
	// ask for, in seconds. Default 0xFFFFFFFF (never expire allowed).
	MaxSessionExpiry uint32
	// PersistentSessionExpiry, when non-zero, is how long, in seconds, an
	// MQTT 3.1.x session with Clean Session 0 is kept after its client
	// disconnected (mosquitto's persistent_client_expiration). The 3.1.1
	// specification keeps such a session until the client cleans it, so a
	// client that connects once with a random client id leaves a session
	// for ever; this is the non-standard way out. Default 0: never expire,
	// as the specification says.
	PersistentSessionExpiry uint32
	// MaxPayloadSize, when non-zero, is the largest PUBLISH payload the
	// server accepts, in bytes (mosquitto's message_size_limit). A larger
	// message is dropped, not routed, but its QoS flow is completed: a QoS
	// 1/2 publish of an MQTT 5 client is answered with 0x83 Implementation
	// specific error, as mosquitto answers it; a 3.1.x client cannot be
	// told. Unlike MaxPacketSize, the connection stays open. Default 0: no
	// limit beyond MaxPacketSize.
	MaxPayloadSize int
	// RefuseEmptyClientID refuses a CONNECT with an empty client id
	// (CONNACK 0x85 Client Identifier not valid; 3.1.1 0x02) instead of
	// assigning one (mosquitto's allow_zero_length_clientid false).
	RefuseEmptyClientID bool
	// AutoIDPrefix starts every client id the server assigns. Default
	// "roost-" (mosquitto's auto_id_prefix, whose default is "auto-").
	AutoIDPrefix string
	// CheckRetainSource sends a retained message to a new subscriber only
	// if the client that published it may still publish on its topic, as
	// the Authorizer says now (mosquitto's check_retain_source, on there
	// by default): revoking a client's write access also withdraws what
	// it retained. A retained message restored from the Store has no
	// known publisher and is sent. Default false.
	CheckRetainSource bool
	// ClientIDPrefix, when set, is what every client id must start with
	// (mosquitto's clientid_prefixes): others are refused with CONNACK
	// 0x87 Not authorized (3.1.1: 5), as mosquitto refuses them.
	ClientIDPrefix string
	// Listeners change some of the above for the clients of one listener,
	// by its name (ListenerNamer), as mosquitto's per_listener_settings
	// and mount_point do. A listener not in the map uses the Options.
	Listeners map[string]ListenerPolicy
	// TopicAliasMaximum is the MQTT 5 Topic Alias Maximum the server
	// accepts from a client. Default 64.
	TopicAliasMaximum uint16
	// SysInterval is how often $SYS topics are published; negative
	// disables them. Default 10s.
	SysInterval time.Duration
	// DisableRetain turns retained messages off (MQTT 5 Retain Available 0).
	DisableRetain bool
	// MaxRetained caps how many topics hold a retained message ($SYS
	// aside), so that a client allowed to publish anywhere cannot fill
	// memory with retained messages on made-up topics. The caps apply to
	// new topics only: replacing or clearing a retained message always
	// works (but see MaxRetainedBytes). A retained PUBLISH over a cap is
	// still delivered to current subscribers like any publish; it is just
	// not kept. It is counted (Stats.RetainedRefused), its first and every
	// 1000th occurrence logged, and the publisher is told only when the
	// publish therefore had no effect at all: an MQTT 5 QoS 1/2 publish that
	// matched no subscription gets PUBACK/PUBREC 0x97 Quota exceeded;
	// otherwise the message was delivered, so the publish succeeded, and a
	// failure code would make clients that retry deliver it twice (see
	// conn.publishCode). Messages restored from the Store at start-up count
	// but are all kept, even over the caps.
	//
	// Default 1,000,000: each retained topic costs about 250-550 bytes of
	// heap besides its bytes (Message, trie nodes; more for deeper
	// topics), so a million is at most about half a GiB of bookkeeping,
	// and it leaves room for ten retained topics for each of MaxConnections'
	// default 100,000 clients, the usual "last known state per device"
	// use. Negative: unlimited.
	MaxRetained int
	// MaxRetainedBytes caps the topic, payload and property bytes
	// (ContentType, ResponseTopic, CorrelationData, User Properties) of
	// all retained messages outside $SYS, with MaxRetained's policy. A
	// replacement may not grow the total beyond it either, or replacing
	// small messages by large ones would defeat it: such a replacement is
	// refused and the topic's older retained message is cleared, since
	// serving it to new subscribers as the latest value would be wrong.
	// Default 1 GiB: with MaxRetained's default, about 1 KiB a topic on
	// average, and a worst case near 1.5 GiB of heap in all. Negative:
	// unlimited.
	MaxRetainedBytes int
	// Store persists sessions and retained messages. Default: none, state
	// lives only in memory.
	Store Store
	// Authenticator checks credentials at CONNECT. Default: none, every
	// client may connect.
	Authenticator Authenticator
	// Authorizer checks publish, subscribe and receive per topic.
	// Default: none, everything is allowed (except publishing to $SYS).
	Authorizer Authorizer
	// Cluster connects the server to the other nodes of a cluster (see
	// Cluster). Default: none, a single node.
	Cluster Cluster
}

// ListenerPolicy is what a listener changes for the clients it accepts.
type ListenerPolicy struct {
	// MountPoint is put before every topic of the listener's clients:
	// the topics they publish to (wills included) and the filters they
	// subscribe to, and it is removed from the topics delivered to them
	// (mosquitto's mount_point). Their clients see only the tree below
	// it, as if it were the whole broker. "" for none; it must be a
	// valid topic prefix without wildcards, usually ending in "/".
	MountPoint string
	// RefuseEmptyClientID and AutoIDPrefix replace the Options' fields
	// of the same names when ClientIDs is set.
	ClientIDs           bool
	RefuseEmptyClientID bool
	AutoIDPrefix        string
	// UsernameAsClientID replaces each client's id by its username (after
	// a certificate identity took its place), so that a client cannot
	// take over another's session by sending its id; a client without a
	// username is refused with 0x87 Not authorized (mosquitto's
	// use_username_as_clientid).
	UsernameAsClientID bool
	// LimitQoS caps the QoS of the listener's clients at MaxQoS
	// (mosquitto's max_qos): MQTT 5 clients are told in CONNACK (Maximum
	// QoS); a will above it is refused with CONNACK 0x9B QoS not
	// supported [MQTT-3.2.2-12], a PUBLISH above it ends the connection
	// (0x9B, section 3.2.2.3.4), and subscriptions are granted at most
	// MaxQoS [MQTT-3.2.2-10]. MaxQoS is 0 or 1.
	LimitQoS bool
	MaxQoS   packet.QoS
	// AliasMaximum, when LimitAliases is set, replaces
	// Options.TopicAliasMaximum for the listener's clients; 0 allows
	// them no topic aliases at all (mosquitto's per-listener
	// max_topic_alias): CONNACK then has no Topic Alias Maximum
	// [MQTT-3.2.2-17].
	LimitAliases bool
	AliasMaximum uint16
}

// DefaultOptions returns Options with every default filled in.
func DefaultOptions() Options {
	var o Options
	o.fill()
	return o
}

func (o *Options) fill() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = 1 << 20
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = 1024
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = 64
	}
	if o.MaxQueued == 0 {
		o.MaxQueued = 1000
	}
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = 64 << 20
	}
	if o.MaxTopicLevels == 0 {
		o.MaxTopicLevels = 128
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = 100000
	}
	if o.MaxSubscriptions == 0 {
		o.MaxSubscriptions = 10000
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.CloseLinger == 0 {
		o.CloseLinger = lingerTimeout
	}
	if o.MaxSessionExpiry == 0 {
		o.MaxSessionExpiry = 0xFFFFFFFF
	}
	if o.TopicAliasMaximum == 0 {
		o.TopicAliasMaximum = 64
	}
	if o.ExpirySweep == 0 {
		o.ExpirySweep = 30 * time.Second
	}
	if o.SysInterval == 0 {
		o.SysInterval = 10 * time.Second
	}
	if o.MaxRetained == 0 {
		o.MaxRetained = 1000000
	}
	if o.MaxRetainedBytes == 0 {
		o.MaxRetainedBytes = 1 << 30
	}
	if o.AutoIDPrefix == "" {
		o.AutoIDPrefix = "roost-"
	}
}
