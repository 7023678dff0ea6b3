package bridge

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

// Config describes one bridge. Zero values mean the defaults given beside
// each field, which are mosquitto's where it has one.
type Config struct {
	// Name identifies the bridge in logs, metrics and default client ids.
	// Required.
	Name string
	// Addresses are the remote broker's URLs (mqtt://, mqtts://, ws://,
	// wss://), tried in order on every connection attempt, so later ones
	// are failovers. At least one is required.
	Addresses []string
	// Version is the protocol spoken to the remote: packet.V5 (default),
	// packet.V311 or packet.V31 (whose client ids are at most 23 bytes).
	Version packet.Version
	// RoundRobin treats the Addresses as equals: after a connection is
	// lost the next one is tried first (mosquitto's round_robin true).
	// Without it the first address is the main one: while connected to
	// another, the bridge checks every PrimaryRetry whether the first
	// accepts TCP connections again and, once it does, reconnects from it,
	// as mosquitto's round_robin false does.
	RoundRobin bool
	// PrimaryRetry is that check's interval. Default 5s.
	PrimaryRetry time.Duration
	// StartOnce connects to the remote until the first connection is up
	// and does not reconnect once it is lost (mosquitto's start_type
	// once); messages then wait in the local session until the bridge is
	// restarted (SIGHUP, admin API, restart).
	StartOnce bool
	// MaxPacketSize drops (and counts) messages forwarded out whose
	// PUBLISH packet would be larger (mosquitto's bridge_max_packet_size);
	// an MQTT 5 remote's own Maximum Packet Size applies as well. 0: no
	// limit.
	MaxPacketSize uint32
	// TCPKeepAlive sets the TCP keep alive probes of the remote connection
	// (mosquitto's bridge_tcp_keepalive). Zero: Go's default.
	TCPKeepAlive net.KeepAliveConfig
	// TCPUserTimeout is how long sent data may stay unacknowledged before
	// the kernel drops the remote connection (TCP_USER_TIMEOUT, Linux
	// only; mosquitto's bridge_tcp_user_timeout). 0: the system's.
	TCPUserTimeout time.Duration
	// ClientID is the client id on the remote broker. Default the host
	// name + "." + Name, as mosquitto's remote_clientid; on a cluster node
	// the host name + "." + Node + "." + Name, so that the nodes' bridges
	// do not take each other's connection over (cluster.go). Set
	// explicitly, it is used as given: nodes running the bridge with the
	// same id then take each other over, endlessly.
	ClientID string
	// LocalClientID is the bridge's session on this broker. Default
	// "local." + ClientID, as mosquitto's local_clientid.
	LocalClientID string
	// Node is the name of this broker's node when it is one of a
	// cluster's ("" on a single node), and Cluster the cluster's name.
	// Every node then runs the bridge: the default client ids include
	// Node, the out rules subscribe here and the in rules on the remote
	// with shared subscriptions so that each message crosses once, and
	// rules along which messages would go round are refused (cluster.go).
	Node, Cluster string
	// Unshared keeps, on a cluster node, the subscriptions of a single
	// node (no shared subscriptions, No Local, no rule refused): for a
	// bridge that runs on one node only, to a remote without shared
	// subscriptions. Run on several nodes, each message crosses once per
	// node. The default client ids still include Node.
	Unshared bool
	// CleanStart starts a new session on the remote at every connection
	// (mosquitto's cleansession). Default false: the remote keeps the
	// subscriptions and what it queued for the bridge while it is away.
	CleanStart bool
	// LocalCleanStart does the same for the local session. Default false,
	// and it should stay so: the local session is where messages wait for
	// the remote (store and forward, see the package doc).
	LocalCleanStart bool
	// SessionExpiry is the MQTT 5 Session Expiry Interval asked of the
	// remote when CleanStart is false. Default: never expire.
	SessionExpiry time.Duration
	// Username and Password are sent to the remote when non-empty.
	Username string
	Password string
	// TLS is used for mqtts:// and wss:// addresses. Default: the system
	// roots and the address's host name.
	TLS *tls.Config
	// RequireOCSP refuses a TLS remote that does not staple a good OCSP
	// response for its certificate (mosquitto's bridge_require_ocsp).
	RequireOCSP bool
	// KeepAlive toward the remote. Default 60s.
	KeepAlive time.Duration
	// Backoff is the reconnect delay. Default Min 5s, Max 30s, jittered:
	// mosquitto's restart_timeout.
	Backoff client.Backoff
	// NoTryPrivate turns off the 3.1.1 bridge bit (mosquitto's
	// try_private false). Ignored for MQTT 5.
	NoTryPrivate bool
	// NoOutgoingRetain clears RETAIN on every message forwarded out, for
	// 3.1.1 brokers that refuse retained messages (mosquitto's
	// bridge_outgoing_retain false).
	NoOutgoingRetain bool
	// BindAddress is the local address the remote connection comes from
	// (mosquitto's bridge_bind_address); "" lets the system choose.
	BindAddress string
	// ReceiveMaximum caps the remote's unacknowledged messages toward the
	// bridge (MQTT 5; mosquitto's bridge_receive_maximum). Default 256.
	ReceiveMaximum uint16
	// NoAttemptUnsubscribe turns off what mosquitto's
	// bridge_attempt_unsubscribe does by default: at each connection,
	// unsubscribe on the remote from the filters of out-only rules, which
	// a session the remote kept may still hold from an earlier
	// configuration where they went both ways or in.
	NoAttemptUnsubscribe bool
	// Notifications publishes the connection state, retained "1" or "0",
	// on NotificationTopic locally and on the remote (there with a will
	// for the "0"), as mosquitto's notifications do.
	Notifications bool
	// NotificationsLocalOnly keeps the notifications on this broker.
	NotificationsLocalOnly bool
	// NotificationTopic. Default "$SYS/broker/connection/" + ClientID +
	// "/state".
	NotificationTopic string
	// Topics are the forwarding rules, in order. At least one is required.
	Topics []Rule
	// State keeps the QoS 2 flows in progress across restarts of the
	// bridge (and, with FileState, of the process). Default: a
	// MemoryState of this Bridge only.
	State *State
	// Logger receives the bridge's logs. Default: discard.
	Logger *slog.Logger
}

// ErrConfig is wrapped by the errors New returns for a bad Config.
var ErrConfig = errors.New("bridge config")

func (c *Config) fill() error {
	if c.Name == "" {
		return fmt.Errorf("%w: a bridge needs a name", ErrConfig)
	}
	if len(c.Addresses) == 0 {
		return fmt.Errorf("%w: bridge %s: no remote address", ErrConfig, c.Name)
	}
	if len(c.Topics) == 0 {
		return fmt.Errorf("%w: bridge %s: no topics", ErrConfig, c.Name)
	}
	for i, r := range c.Topics {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%w: bridge %s: topic %d: %w", ErrConfig, c.Name, i+1, err)
		}
	}
	switch c.Version {
	case 0:
		c.Version = packet.V5
	case packet.V5, packet.V311, packet.V31:
	default:
		return fmt.Errorf("%w: bridge %s: protocol %v not supported (3.1, 3.1.1 or 5.0)", ErrConfig, c.Name, c.Version)
	}
	if err := checkUserTimeout(c.TCPUserTimeout); err != nil {
		return fmt.Errorf("%w: bridge %s: %w", ErrConfig, c.Name, err)
	}
	if c.ClientID == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("%w: bridge %s: no client id given and no host name: %w", ErrConfig, c.Name, err)
		}
		c.ClientID = host + "." + c.Name
		if c.clustered() {
			c.ClientID = host + "." + c.Node + "." + c.Name
		}
	}
	if c.LocalClientID == "" {
		c.LocalClientID = "local." + c.ClientID
	}
	if c.BindAddress != "" && net.ParseIP(c.BindAddress) == nil {
		return fmt.Errorf("%w: bridge %s: bind address %q is not an IP address", ErrConfig, c.Name, c.BindAddress)
	}
	if c.Version == packet.V31 && len(c.ClientID) > 23 {
		return fmt.Errorf("%w: bridge %s: MQTT 3.1 client ids have at most 23 bytes, %q has %d: set the client id", ErrConfig, c.Name, c.ClientID, len(c.ClientID))
	}
	if c.LocalClientID == c.ClientID {
		return fmt.Errorf("%w: bridge %s: local and remote client ids are both %q", ErrConfig, c.Name, c.ClientID)
	}
	if err := c.checkClusterRules(); err != nil {
		return err
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 60 * time.Second
	}
	if c.Backoff.Min == 0 {
		c.Backoff.Min = 5 * time.Second
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = 30 * time.Second
	}
	if c.PrimaryRetry == 0 {
		c.PrimaryRetry = 5 * time.Second
	}
	if c.NotificationTopic == "" {
		c.NotificationTopic = "$SYS/broker/connection/" + c.ClientID + "/state"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.State == nil {
		c.State = MemoryState()
	}
	return nil
}

// Validate checks cfg as New does, without preparing a bridge: for
// callers that must refuse a configuration before stopping the bridge it
// would replace.
func Validate(cfg Config) error { return cfg.fill() }

// Bridge is one running bridge. Its methods are safe for concurrent use.
type Bridge struct {
	cfg    Config
	srv    *broker.Server
	log    *slog.Logger
	local  *client.Client
	remote *client.Client

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	outF, inF *forwarder
	// outDone and inDone are the QoS 2 messages each forwarder sent
	// before a restart, by the packet identifier they came with.
	outDone, inDone *restoredSet
	closeMu         sync.Mutex
	closed          bool
	wg              sync.WaitGroup

	// testStep, set by tests before Start, is called at the steps of a
	// forwarded message where a crash matters ("out published TOPIC",
	// "out completed TOPIC", "in ..."): a test stops the bridge there.
	testStep func(step string)

	primaryMu   sync.Mutex
	primaryStop chan struct{} // closed when the connection watchPrimary watches for ends

	lost     chan struct{} // closed when a remote connection that was up is lost
	lostOnce sync.Once

	// localUp is closed when the local side first connects, localRefused
	// when its first attempt failed (Start).
	localUp, localRefused         chan struct{}
	localUpOnce, localRefusedOnce sync.Once

	connected  atomic.Bool
	server     atomic.Pointer[string]
	everUp     atomic.Bool
	out, in    atomic.Uint64
	dropped    atomic.Uint64
	reconnects atomic.Uint64
	lastErr    atomic.Pointer[errAt]
}

type errAt struct {
	err string
	at  time.Time
}

// New checks cfg and prepares a bridge between srv and the remote broker;
// Start runs it. It returns an error wrapping ErrConfig (or a client
// error) that names the bridge and the faulty field.
func New(srv *broker.Server, cfg Config) (*Bridge, error) {
	return newBridge(srv, nil, cfg)
}

// Between prepares a bridge whose "local" side is not this process's
// broker but another one reached with local (its Servers, TLSConfig,
// credentials and dialer are used; the fields the bridge needs are set
// over it): a bridge between two brokers, as roost bridge runs. Without
// an in-process broker the local session is what local.KeepSession
// says, and Stats has no Queued figures.
func Between(local client.Options, cfg Config) (*Bridge, error) {
	return newBridge(nil, &local, cfg)
}

func newBridge(srv *broker.Server, local *client.Options, cfg Config) (*Bridge, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	b := &Bridge{cfg: cfg, srv: srv, log: cfg.Logger.With("bridge", cfg.Name), lost: make(chan struct{}),
		localUp: make(chan struct{}), localRefused: make(chan struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	lo := b.localOptions()
	if local != nil {
		o := *local
		o.ClientID, o.Version, o.ReceiveMaximum, o.ManualAck = lo.ClientID, packet.V5, lo.ReceiveMaximum, true
		o.OfflineQueue, o.DefaultHandler, o.Logger = lo.OfflineQueue, lo.DefaultHandler, lo.Logger
		o.Store, o.OnRelease, o.OnStatus = lo.Store, lo.OnRelease, lo.OnStatus
		lo = o
	}
	var err error
	if b.local, err = client.New(lo); err != nil {
		return nil, fmt.Errorf("bridge %s: local side: %w", cfg.Name, err)
	}
	if b.remote, err = client.New(b.remoteOptions()); err != nil {
		return nil, fmt.Errorf("bridge %s: remote side: %w", cfg.Name, err)
	}
	b.outDone, b.inDone = newRestoredSet(b.remote.Restored()), newRestoredSet(b.local.Restored())
	b.outF = b.newForwarder("out", b.remote, &b.out)
	b.inF = b.newForwarder("in", b.local, &b.in)
	b.outF.forget = func(tag uint64) { b.remote.Forget(tag) }
	b.inF.forget = func(tag uint64) { b.local.Forget(tag) }
	return b, nil
}

func (b *Bridge) step(s string) {
	if b.testStep != nil {
		b.testStep(s)
	}
}

// Lost is closed the first time a connection to the remote that was up
// is lost (for mosquitto's bridge_reload_type lazy: a changed bridge
// restarts then).
func (b *Bridge) Lost() <-chan struct{} { return b.lost }

// Closed is closed once Close has begun.
func (b *Bridge) Closed() <-chan struct{} { return b.ctx.Done() }

// Connected reports whether the remote connection is up.
func (b *Bridge) Connected() bool { return b.connected.Load() }

// Name returns the bridge's name.
func (b *Bridge) Name() string { return b.cfg.Name }

// LocalClientID returns the client id of the bridge's session on this
// broker (Config.LocalClientID with its default applied).
func (b *Bridge) LocalClientID() string { return b.cfg.LocalClientID }

// localOptions: an MQTT 5 client of this broker through an in-process
// pipe, with a session that outlives the bridge and the process.
func (b *Bridge) localOptions() client.Options {
	return client.Options{
		Servers:  []string{"mqtt://internal:1"},
		ClientID: b.cfg.LocalClientID,
		Version:  packet.V5,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return b.srv.DialInternal("bridge/" + b.cfg.Name), nil
		},
		KeepSession: !b.cfg.LocalCleanStart,
		KeepAlive:   -1, // a pipe in the same process cannot go silent
		// How many messages the broker hands over before the remote
		// acknowledged the first: the forwarding window. The rest stay in
		// the session's durable queue.
		ReceiveMaximum: window,
		ManualAck:      true,
		OfflineQueue:   4 * window,
		// A pipe in the process is refused only while a cluster cannot
		// record the session's owner (no quorum: Start): from 0.5 s up
		// to 15 s between tries then, each of which the broker logs (a
		// lost connection is tried again at once first).
		Reconnect:      client.Backoff{Min: 500 * time.Millisecond, Max: 15 * time.Second},
		DefaultHandler: b.forwardOut,
		// Exactly once for QoS 2 (see the package doc): the messages
		// forwarded in, tagged with the remote's packet identifier...
		Store: taggedOnly{b.cfg.State.In},
		// ...and, once this broker released a message forwarded out,
		// the record of its copy on the remote is not needed any more.
		OnRelease: func(id uint16) { b.outDone.take(uint64(id)); b.remote.Forget(uint64(id)) },
		OnStatus:  b.localStatus,
		Logger:    b.log.With("side", "local"),
	}
}

// localStatus: a local session that was lost (ended meanwhile) takes the
// meaning of the packet identifiers the out records are tagged with. It
// also tells Start how the first attempt went, and says why a local
// connection that was up ended when another connection took the session
// over: on a cluster, most likely another node running this bridge with
// the same local client id (Config.ClientID).
func (b *Bridge) localStatus(st client.Status) {
	switch st.Event {
	case client.Connected:
		if !st.SessionPresent {
			b.outDone.clear(b.remote)
		}
		b.localUpOnce.Do(func() { close(b.localUp) })
	case client.ConnectionLost:
		if st.Err != nil {
			b.noteErr(fmt.Errorf("local side: %w", st.Err))
		}
		var re *client.ReasonError
		if errors.As(st.Err, &re) && re.Code == packet.SessionTakenOver {
			b.log.Error("the bridge's local session was taken over by another connection with its client id; on a cluster, another node runs this bridge with the same local client id: leave client_id unset (its default includes the node name) or give each node its own",
				"local_client_id", b.cfg.LocalClientID)
		}
	case client.Reconnecting:
		b.localRefusedOnce.Do(func() { close(b.localRefused) })
		b.log.Debug("local side not accepted; trying again", "attempt", st.Attempt, "in", st.Delay)
	}
}

func (b *Bridge) remoteOptions() client.Options {
	c := &b.cfg
	o := client.Options{
		Servers:       c.Addresses,
		TLSConfig:     c.TLS,
		ClientID:      c.ClientID,
		Username:      c.Username,
		Password:      c.Password,
		Version:       c.Version,
		KeepAlive:     c.KeepAlive,
		KeepSession:   !c.CleanStart,
		SessionExpiry: c.SessionExpiry,
		Bridge:        !c.NoTryPrivate,
		Reconnect:     c.Backoff,
		// The window inward (a 3.1.1 server applies its own), and room
		// for the outward one while the remote is away.
		ReceiveMaximum: cmp.Or(c.ReceiveMaximum, window),
		ManualAck:      true,
		OfflineQueue:   4 * window,
		// A session kept by the remote still has our subscriptions; one
		// that was lost gets them again (the client's resubscribe).
		DefaultHandler: b.forwardIn,
		Store:          taggedOnly{c.State.Out},
		OnRelease:      func(id uint16) { b.inDone.take(uint64(id)); b.local.Forget(uint64(id)) },
		OnStatus:       b.remoteStatus,
		Logger:         b.log.With("side", "remote"),
	}
	o.RoundRobin = c.RoundRobin
	if c.RequireOCSP {
		tc := &tls.Config{}
		if c.TLS != nil {
			tc = c.TLS.Clone()
		}
		tc.VerifyConnection = verifyOCSP
		o.TLSConfig = tc
	}
	o.DialContext = c.dialer()
	if c.Notifications && !c.NotificationsLocalOnly {
		o.Will = &client.Message{Topic: c.NotificationTopic, Payload: []byte("0"), QoS: 1, Retain: true}
	}
	return o
}

// Start connects both sides and subscribes as the rules say. It returns
// once the local side is up (an in-process connection, so at once); the
// remote side connects and reconnects in the background. A local side
// that is refused (on a cluster node, while the cluster cannot record the
// session's owner: no quorum yet, or a partition) is not an error: the
// bridge logs it and goes on trying in the background, with backoff, and
// starts forwarding once the local side is up; so do subscriptions a
// cluster node refuses at first. It fails if ctx ends before the first
// attempt's outcome, or if a single node refuses the local subscriptions.
func (b *Bridge) Start(ctx context.Context) error {
	b.notifyLocal(false)
	b.local.Start()
	select {
	case <-b.localUp:
	case <-b.localRefused:
		b.noteErr(errors.New("local side: this broker did not accept the bridge's session yet (on a cluster node: no quorum); trying again"))
		b.log.Warn("this broker did not accept the bridge's local session yet (on a cluster node: the cluster cannot record its owner, no quorum); the bridge connects once it can",
			"local_client_id", b.cfg.LocalClientID)
		b.spawn(b.startWhenLocalUp)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bridge %s: local side: %w", b.cfg.Name, ctx.Err())
	}
	if err := b.subscribeLocal(ctx); err != nil {
		if !b.cfg.clustered() || ctx.Err() != nil {
			return err
		}
		// A node that has just started may refuse subscriptions until its
		// retained messages are caught up with the cluster's (0x80).
		b.noteErr(err)
		b.log.Warn("local subscriptions refused (on a cluster node: not caught up with the cluster yet); trying again in the background", "err", err)
		b.spawn(b.startWhenLocalUp)
		return nil
	}
	b.startRemote()
	return nil
}

// startWhenLocalUp finishes Start once the local side is up: subscribes it
// (again after a refusal, backing off) and starts the remote side.
func (b *Bridge) startWhenLocalUp() {
	select {
	case <-b.localUp:
	case <-b.ctx.Done():
		return
	}
	b.log.Info("the bridge's local session is accepted now; starting the bridge", "local_client_id", b.cfg.LocalClientID)
	for n := 0; ; n++ {
		err := b.subscribeLocal(b.ctx)
		if err == nil {
			break
		}
		if b.ctx.Err() != nil {
			return
		}
		b.noteErr(err)
		b.log.Warn("local subscriptions refused; trying again", "err", err, "attempt", n+1)
		t := time.NewTimer(time.Second << min(n, 5)) // 1 s to 32 s
		select {
		case <-t.C:
		case <-b.ctx.Done():
			t.Stop()
			return
		}
	}
	b.startRemote()
}

// startRemote starts the remote side and subscribes it to the in rules.
func (b *Bridge) startRemote() {
	b.remote.Start()
	var subs []client.Subscription
	for _, r := range b.cfg.Topics {
		if r.Direction.in() {
			// No Local and Retain As Published: the remote must not
			// send back what we forwarded, and retained messages stay
			// retained on this side [MQTT-3.8.3-3], [MQTT-3.3.1-12].
			// Retain Handling 1, as on the local side: the remote's
			// retained messages come when the subscription is new, not
			// again at every start of a bridge whose session it kept.
			// On a cluster node the subscription is shared, which
			// cannot have No Local [MQTT-3.8.3-4] (cluster.go).
			subs = append(subs, client.Subscription{Filter: b.cfg.remoteSubFilter(r), QoS: r.QoS, NoLocal: !b.cfg.shared(),
				RetainAsPublished: true, RetainHandling: 1})
		}
	}
	if len(subs) > 0 {
		b.spawn(func() {
			// Waits in the client's offline queue until the remote is up;
			// the client sends it again whenever the remote lost our
			// session.
			if _, err := b.remote.Subscribe(b.ctx, subs...); err != nil && b.ctx.Err() == nil {
				b.noteErr(fmt.Errorf("subscribing on the remote: %w", err))
				if b.cfg.shared() {
					b.log.Error("remote refused a subscription; on a cluster node the bridge subscribes there with shared subscriptions ($share/group/filter), which the remote must support (docs/bridges.md)", "err", err)
				} else {
					b.log.Error("remote refused a subscription", "err", err)
				}
			}
		})
	}
}

// Prepare connects the local side only and subscribes it as the rules
// say, so that the bridge's local session exists and queues what the out
// rules match: for a bridge that starts only when there is something to
// forward (mosquitto's start_type lazy), which Prepare and Close leave
// dormant. Start calls it.
func (b *Bridge) Prepare(ctx context.Context) error {
	b.notifyLocal(false)
	if err := b.local.Connect(ctx); err != nil {
		return fmt.Errorf("bridge %s: local side: %w", b.cfg.Name, err)
	}
	return b.subscribeLocal(ctx)
}

// subscribeLocal subscribes the local session to every out rule and drops
// subscriptions it kept from an earlier configuration.
func (b *Bridge) subscribeLocal(ctx context.Context) error {
	want := map[string]bool{}
	var subs []client.Subscription
	for _, r := range b.cfg.Topics {
		f := b.cfg.localSubFilter(r)
		if !r.Direction.out() || want[f] {
			continue
		}
		// No Local keeps what the bridge brings in from going back out.
		// Retain Handling 1: the retained messages here go to the remote
		// when the subscription is new (a new bridge, or a new rule), so
		// the remote learns the current state; after that the session's
		// queue carries every change. mosquitto instead re-sends them at
		// every connection, which repeats them to the remote's
		// subscribers. On a cluster node the subscription is shared
		// (cluster.go): no No Local [MQTT-3.8.3-4], and no retained
		// messages at subscribe.
		want[f] = true
		subs = append(subs, client.Subscription{Filter: f, QoS: r.QoS, NoLocal: !b.cfg.shared(),
			RetainAsPublished: true, RetainHandling: 1})
	}
	var stale []string
	// With another broker (Between) its session is not ours to see.
	if b.srv != nil {
		if _, held, ok := b.srv.Client(b.cfg.LocalClientID); ok {
			for _, s := range held {
				if !want[s.Filter] {
					stale = append(stale, s.Filter)
				}
			}
		}
	}
	if len(stale) > 0 {
		b.log.Info("dropping subscriptions of an earlier configuration", "filters", stale)
		if _, err := b.local.Unsubscribe(ctx, stale...); err != nil {
			return fmt.Errorf("bridge %s: local unsubscribe: %w", b.cfg.Name, err)
		}
	}
	if len(subs) == 0 {
		return nil
	}
	if _, err := b.local.Subscribe(ctx, subs...); err != nil {
		return fmt.Errorf("bridge %s: local subscribe: %w", b.cfg.Name, err)
	}
	return nil
}

// forwardOut hands a message of this broker to the out forwarder, or
// drops it if it is QoS 0 and the remote is down (at most once: not worth
// holding the queue for).
func (b *Bridge) forwardOut(m *client.Message) {
	if m.QoS == 0 && !b.connected.Load() {
		b.dropped.Add(1)
		return
	}
	if b.cfg.NoOutgoingRetain {
		m.Retain = false
	}
	if b.tooLarge(m) {
		return
	}
	b.outF.handle(m, mapOut(b.cfg.Topics, m.Topic), b.outDone)
}

// forwardIn hands a message of the remote broker to the in forwarder.
func (b *Bridge) forwardIn(m *client.Message) {
	b.inF.handle(m, mapIn(b.cfg.Topics, m.Topic), b.inDone)
}

func (b *Bridge) remoteStatus(st client.Status) {
	switch st.Event {
	case client.Connected:
		if !st.SessionPresent {
			b.inDone.clear(b.local)
		}
		b.server.Store(&st.Server)
		b.connected.Store(true)
		if b.everUp.Swap(true) {
			b.reconnects.Add(1)
		}
		b.log.Info("connected to remote", "server", st.Server, "session_present", st.SessionPresent)
		b.watchPrimary(st.Server)
		b.notify(true)
		if st.SessionPresent { // a new session holds nothing to remove
			b.unsubscribeOutOnly()
		}
	case client.ConnectionLost:
		if st.Err != nil {
			b.noteErr(st.Err)
		}
		b.stopPrimaryWatch()
		if b.connected.Swap(false) {
			b.log.Warn("lost remote connection", "server", st.Server, "err", st.Err)
			var re *client.ReasonError
			if errors.As(st.Err, &re) && re.Code == packet.SessionTakenOver {
				// MQTT 5 says why; a 3.1.1 remote just closes.
				b.log.Error("the remote took the bridge's connection over: another client connected with its client id; on a cluster, another node may run this bridge with the same client_id: leave it unset (its default includes the node name) or give each node its own",
					"client_id", b.cfg.ClientID)
			}
			b.lostOnce.Do(func() { close(b.lost) })
			b.notifyLocal(false)
			if b.cfg.StartOnce {
				b.log.Warn("start_type once: not reconnecting; restart the bridge to forward again")
				b.spawn(func() { b.remote.Disconnect(b.ctx) })
			}
		} else {
			b.log.Debug("remote connection attempt failed", "server", st.Server, "err", st.Err)
		}
	case client.Disconnected:
		b.connected.Store(false)
	}
}

// unsubscribeOutOnly unsubscribes on the remote from the filters only out
// rules name (see Config.NoAttemptUnsubscribe).
func (b *Bridge) unsubscribeOutOnly() {
	if b.cfg.NoAttemptUnsubscribe {
		return
	}
	in := map[string]bool{}
	for _, r := range b.cfg.Topics {
		if r.Direction.in() {
			in[r.RemoteFilter()] = true
		}
	}
	var filters []string
	for _, r := range b.cfg.Topics {
		if f := r.RemoteFilter(); r.Direction == Out && !in[f] {
			filters, in[f] = append(filters, f), true
		}
	}
	if len(filters) == 0 {
		return
	}
	b.spawn(func() {
		if _, err := b.remote.Unsubscribe(b.ctx, filters...); err != nil && b.ctx.Err() == nil {
			b.log.Warn("unsubscribing out-only topics on the remote", "filters", filters, "err", err)
		}
	})
}

// notify publishes the connection state (see Config.Notifications) here
// and, when up, on the remote.
func (b *Bridge) notify(up bool) {
	b.notifyLocal(up)
	if !b.cfg.Notifications || b.cfg.NotificationsLocalOnly || !up {
		return
	}
	b.spawn(func() {
		_, err := b.remote.Publish(b.ctx, client.Message{Topic: b.cfg.NotificationTopic, Payload: []byte("1"), QoS: 1, Retain: true})
		if err != nil && b.ctx.Err() == nil {
			b.log.Warn("publishing the connection notification on the remote", "err", err)
		}
	})
}

func (b *Bridge) notifyLocal(up bool) {
	if !b.cfg.Notifications || b.srv == nil {
		return
	}
	payload := []byte("0")
	if up {
		payload[0] = '1'
	}
	_, err := b.srv.Publish(broker.PublishRequest{Topic: b.cfg.NotificationTopic, Payload: payload, QoS: 1, Retain: true})
	if err != nil {
		b.log.Warn("publishing the connection notification", "err", err)
	}
}

// spawn runs f in a goroutine Close waits for, unless Close has begun.
func (b *Bridge) spawn(f func()) {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	if b.closed {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
}

func (b *Bridge) noteErr(err error) {
	b.lastErr.Store(&errAt{err: err.Error(), at: time.Now()})
}

// Close stops the bridge: both clients disconnect, and what was not yet
// acknowledged to the remote stays in the local session for the next
// start (and in the store, across a restart). It waits for the bridge's
// goroutines or ctx.
func (b *Bridge) Close(ctx context.Context) error {
	b.closeMu.Lock()
	if b.closed {
		b.closeMu.Unlock()
		return nil
	}
	b.closed = true
	b.closeMu.Unlock()
	// The forwarders stop first, acknowledging nothing more: what is in
	// flight stays unacknowledged where it came from, and comes again.
	b.cancel()
	errL := b.local.Disconnect(ctx)
	errR := b.remote.Disconnect(ctx)
	b.notifyLocal(false)
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		<-b.outF.done
		<-b.inF.done
		<-b.local.Done()
		<-b.remote.Done()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("bridge %s: close: %w", b.cfg.Name, ctx.Err())
	}
	return errors.Join(errL, errR)
}

// Stats are a bridge's figures, for metrics and the admin API.
type Stats struct {
	Name      string
	Connected bool
	Server    string // the remote address in use, or last used
	// ForwardedOut and ForwardedIn count messages the other side took.
	ForwardedOut, ForwardedIn uint64
	// Dropped counts messages not forwarded: QoS 0 while the remote is
	// down, and messages the receiving side refused.
	Dropped uint64
	// Reconnects counts connections to the remote after the first.
	Reconnects uint64
	// Queued is what waits in the local session for the remote (queued
	// and inflight), and QueueDropped what that session's queue limits
	// dropped.
	Queued       int
	QueueDropped uint64
	LastError    string
	LastErrorAt  time.Time
}

// Stats returns the bridge's current figures.
func (b *Bridge) Stats() Stats {
	s := Stats{Name: b.cfg.Name, Connected: b.connected.Load(), ForwardedOut: b.out.Load(),
		ForwardedIn: b.in.Load(), Dropped: b.dropped.Load(), Reconnects: b.reconnects.Load()}
	if p := b.server.Load(); p != nil {
		s.Server = *p
	}
	if e := b.lastErr.Load(); e != nil {
		s.LastError, s.LastErrorAt = e.err, e.at
	}
	if b.srv == nil {
		return s
	}
	if cs, _, ok := b.srv.Client(b.cfg.LocalClientID); ok {
		s.Queued, s.QueueDropped = cs.Queued+cs.Inflight, cs.Dropped
	}
	return s
}
