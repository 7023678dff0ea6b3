package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// adoptBound is how long after the kill the survivors may take to adopt
// every session of TestClusterDeadNodeAdoptsThousands (2,300) and publish
// their wills, adopt_after (2 s) included: the adoption itself took 2-5 s
// on the shared 2-core machine (docs/cluster.md); one by one, at about
// 2 s per session under load, it took over an hour.
const adoptBound = 60 * time.Second

// TestClusterDeadNodeAdoptsThousands kills n1 (kill -9) while it holds a
// few thousand sessions:
//   - ad-s0 ... ad-s1999: offline persistent sessions (expiry 600 s), one
//     QoS 1 subscription each; ad-s0 ... ad-s19 have a message queued;
//   - ad-w0 ... ad-w149: persistent, connected at the kill, will without
//     delay; ad-d0 ... ad-d49 the same with a will delay of 3 s;
//   - ad-c0 ... ad-c99: clean sessions (expiry 0) connected at the kill,
//     each with a will (kept in the owner records, cleanwill.go);
//   - ad-x0 ... ad-x99: offline, session expiry 10 s: they expire on their
//     adopters.
//
// The survivors adopt all 2,300 persistent sessions, each exactly once,
// within adoptBound of the kill; the 300 wills come once each; the
// expiring sessions end; a sample of the sessions resumes on n2 with its
// queued message.
func TestClusterDeadNodeAdoptsThousands(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 2,400 sessions")
	}
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 2s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	wills := harness.Connect(t, n3, "ad-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "ad/will/+", QoS: 1})

	long, short, zero, three := uint32(600), uint32(10), uint32(0), uint32(3)
	type kind struct {
		prefix       string
		n            int
		expiry       *uint32
		will, online bool
		delay        uint32
	}
	kinds := []kind{
		{prefix: "ad-s", n: 2000, expiry: &long},
		{prefix: "ad-w", n: 150, expiry: &long, will: true, online: true},
		{prefix: "ad-d", n: 50, expiry: &long, will: true, online: true, delay: three},
		{prefix: "ad-c", n: 100, expiry: &zero, will: true, online: true},
		{prefix: "ad-x", n: 100, expiry: &short}, // last: they must not expire before the kill
	}
	began := time.Now()
	persistent := 0
	for _, k := range kinds {
		if *k.expiry > 0 {
			persistent += k.n
		}
		makeSessions(t, n1, k.n, func(i int) (*paho.Connect, bool) {
			id := fmt.Sprintf("%s%d", k.prefix, i)
			cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 60,
				Properties: &paho.ConnectProperties{SessionExpiryInterval: k.expiry}}
			if k.will {
				cp.WillMessage = &paho.WillMessage{Topic: "ad/will/" + id, QoS: 1, Payload: []byte(id)}
				cp.WillProperties = &paho.WillProperties{WillDelayInterval: &k.delay}
			}
			return cp, k.online
		})
	}
	t.Logf("%d sessions made on n1 in %v", persistent+100, time.Since(began).Round(time.Millisecond))
	pub := harness.Connect(t, n2, "ad-pub")
	for i := range 20 {
		if rc := pub.Pub(t, &paho.Publish{Topic: fmt.Sprintf("ad/t/ad-s%d", i), QoS: 1, Payload: []byte("queued")}); rc != 0 {
			t.Fatalf("publish to ad-s%d: reason 0x%02X", i, rc)
		}
	}

	tc.Kill(n1, syscall.SIGKILL)
	killed := time.Now()
	adopted := func() int {
		return harness.CountLog(n2, `"session of a silent node adopted"`) + harness.CountLog(n3, `"session of a silent node adopted"`)
	}
	harness.Eventually(t, adoptBound, func() error {
		if c := adopted(); c < persistent {
			return fmt.Errorf("%d of %d sessions adopted", c, persistent)
		}
		return nil
	})
	took := time.Since(killed)
	got := map[string]int{}
	for len(got) < 300 {
		p := wills.Next(t, adoptBound-time.Since(killed)+5*time.Second)
		got[string(p.Payload)]++
	}
	t.Logf("all %d sessions adopted %v after the kill (adopt_after 2 s), all 300 wills %v after it",
		persistent, took.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	for _, nd := range []*harness.Node{n2, n3} {
		t.Logf("%s: %d adopted; %s", nd.Name, harness.CountLog(nd, `"session of a silent node adopted"`),
			harness.GrepLog(nd, "records of silent nodes handled"))
	}
	wills.None(t, 4*time.Second)
	for id, c := range got {
		if c != 1 {
			t.Errorf("will of %s published %d times", id, c)
		}
	}
	if c := adopted(); c != persistent {
		t.Errorf("%d adoptions of %d sessions", c, persistent)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if c := harness.CountLog(n2, `"session expired" client_id=ad-x`) + harness.CountLog(n3, `"session expired" client_id=ad-x`); c != 100 {
			return fmt.Errorf("%d of the 100 ad-x sessions expired on the survivors", c)
		}
		return nil
	})
	for i := range 20 {
		c := harness.Resume(t, n2, fmt.Sprintf("ad-s%d", i), long, 30*time.Second)
		if p := c.Next(t, 10*time.Second); string(p.Payload) != "queued" {
			t.Fatalf("ad-s%d got %q, want its queued message", i, p.Payload)
		}
	}
}

// makeSessions connects n clients to nd, 16 at a time, each with the
// CONNECT mk makes for its index, subscribed at QoS 1 to ad/t/<its id>;
// those mk says are not to stay online disconnect normally.
func makeSessions(t *testing.T, nd *harness.Node, n int, mk func(i int) (*paho.Connect, bool)) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, n)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				cp, online := mk(i)
				if err := makeSession(t, nd, cp, online); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	var msgs []string
	for err := range errs {
		msgs = append(msgs, err.Error())
	}
	if len(msgs) > 0 {
		t.Fatalf("%d sessions not made: %s", len(msgs), strings.Join(msgs[:min(5, len(msgs))], "; "))
	}
}

// makeSession makes one session of makeSessions, trying a CONNECT the
// node refuses (it may be busy) up to 3 times.
func makeSession(t *testing.T, nd *harness.Node, cp *paho.Connect, online bool) error {
	var err error
	for range 3 {
		var c *harness.Client
		var ack *paho.Connack
		if c, ack, err = harness.TryConnect(t, nd, cp); err != nil {
			continue
		}
		if ack.ReasonCode != 0 {
			err = fmt.Errorf("%s: CONNACK 0x%02X", cp.ClientID, ack.ReasonCode)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ad/t/" + cp.ClientID, QoS: 1}}})
		cancel()
		if err != nil {
			return fmt.Errorf("%s: subscribe: %w", cp.ClientID, err)
		}
		if !online {
			return c.Disconnect(&paho.Disconnect{})
		}
		return nil
	}
	return err
}
