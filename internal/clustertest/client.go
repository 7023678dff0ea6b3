package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/rawclient"
)

// Probe is the payload of the messages AwaitInterest publishes; Next and
// None skip them.
const Probe = "probe"

// Client is a paho.golang MQTT 5 client whose received messages go to In
// and whose DISCONNECTs from the server go to Dis. Its helper methods take
// the test they may fail, so a client made in one test can serve another.
type Client struct {
	*paho.Client
	// ID is the client id it connected with ("" for one the server
	// assigned).
	ID string
	// In receives every PUBLISH, in arrival order; it holds 1000, and a
	// full In fails the test that connected the client.
	In chan *paho.Publish
	// Dis receives the server's DISCONNECT packets.
	Dis chan *paho.Disconnect
}

// ConnectBound bounds a dial and its CONNACK: longer than a cluster
// node's default forward_timeout (5 s), which bounds its wait for the
// client id's ownership record before it closes the connection without
// a CONNACK.
const ConnectBound = 10 * time.Second

// Connect connects an MQTT 5 client with id and Clean Start to addr and
// fails t unless the CONNACK is a success. It disconnects when t ends.
// A connection closed without a CONNACK, or none within ConnectBound, is
// dialled again (connectTries in all), as any client does: a cluster node
// closes a CONNECT whose client id's ownership it could not record within
// its forward_timeout ("the client will try again", docs/cluster.md), as
// n2 did for TestClusterPausedNode's first subscriber while the new
// cluster's streams were slow to answer at a load of 100.
func Connect(t testing.TB, addr, id string) *Client {
	t.Helper()
	var c *Client
	var ack *paho.Connack
	var err error
	for try := 1; try <= connectTries; try++ {
		if c, ack, err = Dial(t, addr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err == nil {
			break
		}
		t.Logf("connect %s, try %d of %d: %v", id, try, connectTries, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if ack.ReasonCode != 0 {
		t.Fatalf("connect %s to %s: CONNACK 0x%02X", id, addr, ack.ReasonCode)
	}
	return c
}

// connectTries is how many times Connect dials.
const connectTries = 3

// ConnectWith sends cp to addr and returns the client and its CONNACK,
// whatever its code; it fails t if there is no CONNACK at all.
func ConnectWith(t testing.TB, addr string, cp *paho.Connect) (*Client, *paho.Connack) {
	t.Helper()
	c, ack, err := Dial(t, addr, cp)
	if err != nil {
		t.Fatal(err)
	}
	return c, ack
}

// Dial is ConnectWith returning an error, not failing t, when the dial
// fails or no CONNACK comes within ConnectBound: for a server that may be
// unreachable (a paused node, a partition). The connection is closed when
// t ends.
func Dial(t testing.TB, addr string, cp *paho.Connect) (*Client, *paho.Connack, error) {
	t.Helper()
	return DialOver(t, rawclient.Dialer{}, addr, cp)
}

// DialOver is Dial over any transport: target is a URL d dials
// (mqtt://, mqtts://, ws://HOST:PORT/mqtt, wss://...; see
// rawclient.Transport.URL) or a bare HOST:PORT for TCP, and d.TLS says
// which CA the mqtts:// and wss:// servers are verified against. The
// dial and its handshakes are bounded by ConnectBound too.
func DialOver(t testing.TB, d rawclient.Dialer, target string, cp *paho.Connect) (*Client, *paho.Connack, error) {
	t.Helper()
	return dial(t, d, target, cp, nil)
}

// DialSession is Dial keeping the client's session state in st, which
// outlives the connection: a client resuming its session on the same st
// knows the QoS 2 messages it acknowledged with PUBREC on an earlier
// connection and got no PUBREL for, answers their DUP resends with PUBREC
// again and does not deliver them twice [MQTT-4.3.3-10], as a client
// keeping its session state must. A client with a fresh state each
// connection counts such a resend as a second delivery: a node paused
// before it read the PUBREC leaves the message in flight, and the next
// owner sends it again (TestReproGroupGoneHeld in CI, session 28).
// Only one client may use st at a time: wait for the previous one's
// Done before dialling. paho answers the publishes of a client on st
// when they are acknowledged or their context ends, not when the
// connection closes: use it for subscribers.
func DialSession(t testing.TB, addr string, cp *paho.Connect, st *state.State) (*Client, *paho.Connack, error) {
	t.Helper()
	return dial(t, rawclient.Dialer{}, addr, cp, st)
}

// dial is DialOver with the client's session state in st; nil for a
// fresh one, which paho closes when the client ends.
func dial(t testing.TB, d rawclient.Dialer, target string, cp *paho.Connect, st *state.State) (*Client, *paho.Connack, error) {
	t.Helper()
	id, addr := cp.ClientID, target
	dctx, dcancel := context.WithTimeout(context.Background(), ConnectBound)
	conn, err := d.DialConn(dctx, target)
	dcancel()
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	// In holds what a resumed session brings at once: a test that
	// publishes until a resume on a loaded machine queued 1,148 messages
	// for one (TestClusterRestartedNodeSessionResumedElsewhere), and a
	// full inbox drops what the broker delivered.
	c := &Client{ID: id, In: make(chan *paho.Publish, inboxSize), Dis: make(chan *paho.Disconnect, 4)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		// Whole packets on every transport: paho writes a packet as
		// several buffers, one Write each on a TLS or WebSocket conn, and
		// its pinger writes its first PINGREQ right after the CONNACK; on
		// a conn that is no sync.Locker the PINGREQ can land inside the
		// first SUBSCRIBE, which the node then closes as malformed (seen
		// over TLS in TestClusterTransports; test/soak's
		// TestPahoWritesWholePackets shows the mechanism).
		Conn: packets.NewThreadSafeConn(conn),
		// paho.golang bounds every CONNECT, SUBSCRIBE and PUBLISH by
		// PacketTimeout as well as by the caller's context, 10 s by
		// default: Sub's 15 s and TryPub's 12 s were 10 s in effect, and
		// a TLS subscriber's SUBACK at load (a retained sync across the
		// cluster) failed the test at 10 s ("context deadline exceeded",
		// TestClusterTransports/Routing in a suite run). The callers'
		// contexts are the bounds.
		PacketTimeout: packetTimeout,
		Session:       sessionOf(st),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.In <- pr.Packet:
			default:
				t.Errorf("client %s: inbox full", id)
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.Dis <- d:
			default:
			}
		},
		OnClientError: func(error) {},
	})
	// t's end may come while Connect still waits for the CONNACK in
	// another goroutine (harness.ResumeInBackground, a background
	// TryConnect). paho.golang v0.23.0's Disconnect then cancels the
	// client, and a CONNACK read after that starts the client's shutdown
	// while Connect still starts its workers: a data race inside paho
	// (TestCleanupWhileConnecting; bench/jepsen/RESULTS.md paho26). So the
	// cleanup ends a Connect in flight by closing its conn, which paho's
	// Connect handles itself, and disconnects only once Connect returned.
	connected := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-connected:
		default:
			conn.Close()
			<-connected
		}
		c.Disconnect(&paho.Disconnect{})
		conn.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), ConnectBound)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	close(connected)
	if ack == nil {
		conn.Close()
		if err == nil {
			err = fmt.Errorf("no CONNACK")
		}
		return nil, nil, fmt.Errorf("connect %s to %s: %w", id, addr, err)
	}
	return c, ack, nil
}

// sessionOf is st as paho's session manager: nil (paho makes its own)
// for a nil st, which a non-nil interface holding a nil pointer is not.
func sessionOf(st *state.State) session.SessionManager {
	if st == nil {
		return nil
	}
	return st
}

// packetTimeout is paho's own bound on a packet's answer, above every
// bound a caller of Client sets with its context.
const packetTimeout = 2 * time.Minute

// inboxSize is how many messages a Client holds unread before it drops
// (and fails its test): pointers, 80 KiB of channel per client.
const inboxSize = 10000

// Sub subscribes and fails t if the SUBACK does not come within 15s or
// refuses a filter.
func (c *Client) Sub(t testing.TB, opts ...paho.SubscribeOptions) {
	t.Helper()
	// Each try longer than any forward_timeout the tests give the nodes
	// (5 s by default, 15 s or 20 s in some), which bounds each of the
	// waits of a SUBACK (the retained sync, the replication of the
	// session's ops): a node that cannot sync answers 0x80 at that bound.
	// A client tries again; so does this, for SubBound, then fails t with
	// the code rather than leaving the test to guess why nothing came. (A
	// fresh cluster at a load average of 30 answered 0x80 while its
	// retained stream's lease was not renewed; with tries of 15 s, a node
	// with forward_timeout 15 s answered after the try had given up:
	// TestReproClaimChainHeld in a suite run.)
	var last string
	for end := time.Now().Add(SubBound); ; time.Sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), subTry)
		ack, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
		cancel()
		if ack == nil {
			if err == nil {
				err = errors.New("no SUBACK")
			}
			t.Fatalf("%s: subscribe: %v", c.ID, err)
		}
		last = ""
		for i, rc := range ack.Reasons {
			if rc >= 0x80 {
				last = fmt.Sprintf("SUBACK 0x%02X for %q", rc, opts[i].Topic)
				break
			}
		}
		if last == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: %s, for %v", c.ID, last, SubBound)
		}
	}
}

// SubBound bounds Sub's tries.
const SubBound = 60 * time.Second

// subTry bounds one of Sub's tries: past the nodes' forward_timeout plus
// a loaded machine's delay in answering.
const subTry = 30 * time.Second

// Pub publishes p and returns the PUBACK/PUBREC/PUBCOMP reason code (0 for
// QoS 0). It fails t if there is no answer within PubBound.
func (c *Client) Pub(t testing.TB, p *paho.Publish) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), PubBound)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil && r != nil && r.ReasonCode >= 0x80 {
		return r.ReasonCode // paho reports failure codes as errors too
	}
	if err != nil {
		t.Fatalf("%s: publish %q: %v", c.ID, p.Topic, err)
	}
	if r == nil {
		return 0
	}
	return r.ReasonCode
}

// PubBound bounds Pub's wait for an answer: past the longest
// forward_timeout the tests give the nodes (15 s), which bounds a node's
// answer to a message for another node's session, plus a loaded
// machine's delay. It was 10 s, shorter than the 15 s: AwaitInterest's
// probes failed tests at load (TestReproRestoredGroupOrder and
// TestReproUnsettledOpsLate, one pass at load 100, session 32).
const PubBound = 30 * time.Second

// closeWait bounds how long TryPub waits, after a publish failed, for the
// client to report its connection closed.
const closeWait = 5 * time.Second

// TryPub publishes p and returns the reason code of its acknowledgement,
// or closed true when the server closed the connection instead (what a
// broker does with a QoS 1 message it could not confirm). It fails t if
// neither happens within bound.
func (c *Client) TryPub(t testing.TB, p *paho.Publish, bound time.Duration) (rc byte, closed bool) {
	t.Helper()
	type result struct {
		r   *paho.PublishResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound+3*time.Second)
		defer cancel()
		r, err := c.Publish(ctx, p)
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		if res.r != nil {
			return res.r.ReasonCode, false
		}
		if res.err != nil {
			// paho ends a lost connection's session first (a publish
			// then fails: "no connection available") and closes Done
			// only once its workers are done: a publish in between
			// failed the test as if the connection were still up
			// (TestReproOpOrderRollup, the first publish after its
			// node's kill; bench/jepsen/RESULTS.md op25).
			select {
			case <-c.Done():
				return 0, true
			case <-time.After(closeWait):
			}
			t.Fatalf("%s: publish %q: %v", c.ID, p.Topic, res.err)
		}
		return 0, false
	case <-c.Done():
		return 0, true
	case <-time.After(bound):
		t.Fatalf("%s: publish %q neither acknowledged nor its connection closed within %v", c.ID, p.Topic, bound)
		return 0, false
	}
}

// AwaitInterest publishes QoS 1 probes on topic until the server reports
// a matching subscription (PUBACK 0x00 rather than 0x10 No matching
// subscribers): a subscription on another node reaches this one
// asynchronously. Subscribers see the probes (payload Probe) and Next and
// None skip them.
func (c *Client) AwaitInterest(t testing.TB, topic string) {
	t.Helper()
	// As long as one probe may take (PubBound): with 10 s, one slow
	// probe answered 0x10 used the wait up.
	eventually.NoError(t, PubBound, func() error {
		if rc := c.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(Probe)}); rc != 0 {
			return fmt.Errorf("probe on %q: PUBACK 0x%02X", topic, rc)
		}
		return nil
	})
}

// Next returns the next message that is not a probe, failing t if none
// comes within d.
func (c *Client) Next(t testing.TB, d time.Duration) *paho.Publish {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p := <-c.In:
			if string(p.Payload) == Probe {
				continue
			}
			return p
		case <-deadline:
			t.Fatalf("%s: no message within %v", c.ID, d)
			return nil
		}
	}
}

// None fails t if a message other than a probe arrives within d.
func (c *Client) None(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case p := <-c.In:
			if string(p.Payload) != Probe {
				t.Fatalf("%s: unexpected message %q on %q", c.ID, p.Payload, p.Topic)
			}
		case <-deadline:
			return
		}
	}
}

// Retained subscribes a new client with id on addr to filter and returns
// the retained messages it is sent within d, as sorted "topic=payload".
// It fails t if the client cannot connect and subscribe.
func Retained(t testing.TB, addr, id, filter string, d time.Duration) []string {
	t.Helper()
	got, err := ReadRetained(t, addr, id, filter, d)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// ReadRetained is Retained returning an error, not failing t, when the
// client cannot connect (a node without quorum refuses it) or subscribe:
// for use inside eventually.
func ReadRetained(t testing.TB, addr, id, filter string, d time.Duration) ([]string, error) {
	t.Helper()
	c, ack, err := Dial(t, addr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err != nil {
		return nil, err
	}
	defer c.Disconnect(&paho.Disconnect{})
	if ack.ReasonCode != 0 {
		return nil, fmt.Errorf("connect %s to %s: CONNACK 0x%02X", id, addr, ack.ReasonCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		return nil, fmt.Errorf("%s: subscribe: %w", id, err)
	}
	if sa.Reasons[0] >= 0x80 {
		return nil, fmt.Errorf("%s: SUBACK 0x%02X", id, sa.Reasons[0])
	}
	var got []string
	deadline := time.After(d)
	for {
		select {
		case p := <-c.In:
			if p.Retain {
				got = append(got, p.Topic+"="+string(p.Payload))
			}
		case <-deadline:
			slices.Sort(got)
			return got, nil
		}
	}
}
