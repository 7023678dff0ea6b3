package cluster_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/netfault"
)

// The partition tests run the nodes and the clients inside a private
// network namespace (internal/netfault re-runs the test there) and cut
// the nodes' addresses apart with nftables. The clients dial unbound, from
// 127.0.0.1, which no cut touches: a client reaches whichever node it
// dials, as a client on that node's side of the partition would.

// TestClusterPartition cuts one node of three off (both ways, packets
// dropped as by a pulled cable) with clients on every node, then heals.
func TestClusterPartition(t *testing.T) {
	t.Parallel() // see harness_test.go
	nf := netfault.Namespace(t, clustertest.BinEnv+"="+clustertest.Binary(t, false))
	if nf == nil {
		return
	}
	tc := harness.StartCluster(t, 3)
	checkPartition(t, nf, tc, tc.Nodes[:2], tc.Nodes[2:])
}

// TestClusterPartition5 splits five nodes into three and two. The
// replicated objects have five replicas here, so that the side with most
// nodes is the side with most replicas of each: with three replicas on
// five nodes, where the replicas happen to be placed decides which side of
// a 3/2 split can write the ownership records and the retained stream
// (docs/cluster.md).
func TestClusterPartition5(t *testing.T) {
	t.Parallel() // see harness_test.go
	nf := netfault.Namespace(t, clustertest.BinEnv+"="+clustertest.Binary(t, false))
	if nf == nil {
		return
	}
	tc := harness.StartClusterSetup(t, 5, harness.Setup{Config: "cluster:\n  replicas: 5\n"})
	checkPartition(t, nf, tc, tc.Nodes[:3], tc.Nodes[3:])
}

func ips(nodes []*harness.Node) []string {
	var out []string
	for _, nd := range nodes {
		out = append(out, nd.IP)
	}
	return out
}

// checkPartition partitions tc into major and minor, and checks what each
// side's clients see, then heals and checks that the cluster converges.
func checkPartition(t *testing.T, nf *netfault.Net, tc *harness.Cluster, major, minor []*harness.Node) {
	a, b := major[0], major[1] // two majority nodes
	m := minor[0]              // a minority node
	subA := harness.Connect(t, a, "part-sub-a")
	subB := harness.Connect(t, b, "part-sub-b")
	subM := harness.Connect(t, m, "part-sub-m")
	for _, s := range []*harness.Client{subA, subB, subM} {
		s.Sub(t, paho.SubscribeOptions{Topic: "part/#", QoS: 2})
	}
	pubA := harness.Connect(t, a, "part-pub-a")
	pubB := harness.Connect(t, b, "part-pub-b")
	pubM := harness.Connect(t, m, "part-pub-m")
	// Every subscriber is known on every publisher's node: probes reach
	// all three.
	for _, p := range []*harness.Client{pubA, pubB, pubM} {
		harness.Eventually(t, harness.Wait, func() error {
			p.Pub(t, &paho.Publish{Topic: "part/probe", QoS: 1, Payload: []byte("probe")})
			for _, s := range []*harness.Client{subA, subB, subM} {
				if len(s.In) == 0 {
					return fmt.Errorf("%s's probe did not reach %s yet", p.ID, s.ID)
				}
			}
			return nil
		})
	}
	drain := func() {
		for _, s := range []*harness.Client{subA, subB, subM} {
			s.None(t, 100*time.Millisecond)
		}
	}
	drain()
	// A client connected on the minority node before the cut: its id will
	// be claimed on the majority during the partition.
	stale, ack := harness.ConnectWith(t, m, &paho.Connect{ClientID: "part-roamer", CleanStart: true, KeepAlive: 30})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", ack.ReasonCode)
	}

	if err := nf.Partition(ips(major), ips(minor)); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()

	t.Run("InflightForwardsToTheMinorityNotAcknowledgedBeforeItsDrop", func(t *testing.T) {
		// Published right after the cut: the majority nodes still know
		// subM's interest, forward, and get no answer. Neither publish
		// may be acknowledged while the minority node is still counted
		// in, nor refused (it may yet be delivered). Once the node is
		// dropped for silence, a forward still out to it is settled as
		// one routed after the drop (held for its persistent sessions,
		// none here; its clean subscriber misses it), as a route close
		// settles it for a killed node (bench/jepsen/RESULTS.md s941):
		// acknowledged then, or, past forward_timeout first, the
		// connection closed (outcome unknown) and the client sends again.
		var wg sync.WaitGroup
		var rc2, rc1 byte
		var closed2, closed1 bool
		wg.Add(2)
		go func() {
			defer wg.Done()
			rc2, closed2 = pubA.TryPub(t, &paho.Publish{Topic: "part/inflight", QoS: 2, Payload: []byte("inflight2")}, harness.PartitionBound)
		}()
		go func() {
			defer wg.Done()
			rc1, closed1 = pubB.TryPub(t, &paho.Publish{Topic: "part/inflight", QoS: 1, Payload: []byte("inflight1")}, harness.PartitionBound)
		}()
		wg.Wait()
		for _, p := range []struct {
			what   string
			nd     *harness.Node
			rc     byte
			closed bool
		}{{"QoS 2 PUBREC", a, rc2, closed2}, {"QoS 1 PUBACK", b, rc1, closed1}} {
			if p.closed {
				continue
			}
			// The drop is logged before the forward is settled: an
			// answer with no drop in the log came while the node was
			// still counted in.
			if harness.CountLogAll(p.nd, "cluster node gone", "peer="+m.Name) == 0 {
				t.Errorf("publish matching a cut-off node's subscriber: %s 0x%02X from %s before it dropped %s, want none until the drop", p.what, p.rc, p.nd.Name, m.Name)
			}
			if p.rc >= 0x80 {
				t.Errorf("publish matching a cut-off node's subscriber: %s 0x%02X, want no refusal (it may yet be delivered)", p.what, p.rc)
			}
		}
		t.Logf("after the cut: QoS 2 PUBREC 0x%02X (closed %v), QoS 1 PUBACK 0x%02X (closed %v), %v after the cut",
			rc2, closed2, rc1, closed1, time.Since(cut).Round(time.Millisecond))
	})
	// The majority's subscribers got both (local and same-side delivery).
	for _, s := range []*harness.Client{subA, subB} {
		got := map[string]bool{}
		for range 2 {
			got[string(s.Next(t, harness.Wait).Payload)] = true
		}
		if !got["inflight1"] || !got["inflight2"] {
			t.Fatalf("%s got %v, want inflight1 and inflight2", s.ID, got)
		}
	}
	harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, a, "part-pub-a", &pubA) })
	harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, b, "part-pub-b", &pubB) })

	// Each side drops the other's nodes once they are silent (4 s).
	harness.Eventually(t, harness.PartitionBound, func() error {
		for _, nd := range major {
			for _, o := range minor {
				if !harness.GoneFrom(nd, o) {
					return fmt.Errorf("%s still counts on %s", nd.Name, o.Name)
				}
			}
		}
		for _, nd := range minor {
			for _, o := range major {
				if !harness.GoneFrom(nd, o) {
					return fmt.Errorf("%s still counts on %s", nd.Name, o.Name)
				}
			}
		}
		return nil
	})

	t.Run("MajorityExchangesQoS012", func(t *testing.T) {
		// Every acknowledged message reaches the subscribers on the
		// majority, in order; none reaches the minority.
		for i := range 30 {
			qos := byte(i % 3)
			for _, p := range []*harness.Client{pubA, pubB} {
				payload := fmt.Sprintf("%s:%d", p.ID, i)
				if rc := p.Pub(t, &paho.Publish{Topic: "part/major", QoS: qos, Payload: []byte(payload)}); rc != 0 {
					t.Fatalf("%s: QoS %d publish on the majority: 0x%02X", p.ID, qos, rc)
				}
			}
		}
		for _, s := range []*harness.Client{subA, subB} {
			next := map[string]int{}
			for range 60 {
				p := s.Next(t, harness.Wait)
				pub, seq, _ := strings.Cut(string(p.Payload), ":")
				if want := fmt.Sprint(next[pub]); seq != want {
					t.Fatalf("%s: got %q, want %s:%s (order per publisher, nothing lost)", s.ID, p.Payload, pub, want)
				}
				next[pub]++
			}
			s.None(t, 200*time.Millisecond)
		}
		subM.None(t, 200*time.Millisecond)
	})

	t.Run("MinorityDeliversLocally", func(t *testing.T) {
		if rc := pubM.Pub(t, &paho.Publish{Topic: "part/minor", QoS: 1, Payload: []byte("local")}); rc != 0 {
			t.Fatalf("QoS 1 publish with only a local subscriber on the minority: 0x%02X", rc)
		}
		if got := subM.Next(t, harness.Wait); string(got.Payload) != "local" {
			t.Fatalf("got %q", got.Payload)
		}
		subA.None(t, 200*time.Millisecond)
	})

	t.Run("MajorityClaimsAndRetains", func(t *testing.T) {
		// A leader of the ownership records or the retained stream on
		// the minority is replaced by an election among the majority.
		var c *harness.Client
		harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, a, "part-new-a", &c) })
		// The id connected on the minority node moves to the majority.
		harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, b, "part-roamer", &c) })
		harness.Eventually(t, harness.PartitionBound, func() error {
			rc, closed := pubB.TryPublish(t, &paho.Publish{Topic: "part/kept", QoS: 1, Retain: true, Payload: []byte("major")})
			if closed {
				harness.Redial(t, b, "part-pub-b", &pubB)
				return fmt.Errorf("retained publish on the majority: connection closed")
			}
			if rc >= 0x80 {
				return fmt.Errorf("retained publish on the majority: 0x%02X", rc)
			}
			return nil
		})
		for _, nd := range major {
			harness.Eventually(t, harness.PartitionBound, func() error {
				got, err := clustertest.ReadRetained(t, nd.MQTT, "part-ret-"+nd.Name, "part/kept", 300*time.Millisecond)
				if err != nil {
					return err
				}
				if !slices.Equal(got, []string{"part/kept=major"}) {
					return fmt.Errorf("%s: retained %q", nd.Name, got)
				}
				return nil
			})
		}
	})

	t.Run("MinorityRefusesWhatNeedsQuorum", func(t *testing.T) {
		// CONNECT with a client id: closed without a CONNACK (the client
		// tries again), in bounded time, not a hang.
		expectUnclaimed(t, m, &paho.Connect{ClientID: "part-new-m", CleanStart: true, KeepAlive: 30}, 10*time.Second)
		// MQTT 3.1.1 (mosquitto_pub): the same, it does not publish.
		if pb, err := exec.LookPath("mosquitto_pub"); err == nil {
			h, p, _ := net.SplitHostPort(m.MQTT)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, pb, "-h", h, "-p", p, "-V", "mqttv311", "-i", "part-311", "-t", "part/x", "-m", "x").CombinedOutput()
			timedOut := ctx.Err() != nil
			cancel()
			if err == nil || timedOut {
				t.Errorf("mosquitto_pub (3.1.1) on the minority: %v, %q; want it to fail, in bounded time", err, out)
			}
		}
		// A retained QoS 1/2 publish: no PUBREC nor PUBACK (it may take
		// effect after the heal), the connection is closed.
		rc, closed := pubM.TryPublish(t, &paho.Publish{Topic: "part/kept", QoS: 2, Retain: true, Payload: []byte("minor2")})
		if !closed {
			t.Errorf("retained QoS 2 publish on the minority: PUBREC 0x%02X, want none (connection closed)", rc)
		}
		if closed {
			eventuallyAssigned(t, m, &pubM)
		}
		rc, closed = pubM.TryPublish(t, &paho.Publish{Topic: "part/kept", QoS: 1, Retain: true, Payload: []byte("minor1")})
		if !closed {
			t.Errorf("retained QoS 1 publish on the minority: PUBACK 0x%02X, want none", rc)
		}
		if closed {
			eventuallyAssigned(t, m, &pubM)
		}
		// Connected clients are not disturbed.
		select {
		case <-subM.Done():
			t.Error("a subscriber on the minority was disconnected")
		default:
		}
	})

	t.Run("NothingAcknowledgedLostAcrossTheHeal", func(t *testing.T) {
		// QoS 1 and 2 publishes on the majority while the partition
		// heals: every acknowledged one reaches both majority
		// subscribers. (One waiting for a node whose routes are still
		// recovering may fail: the publisher sends it again.)
		// a drops b for silence when b's heartbeats stop for 4 s (b
		// starved at a load of 40-60: "this node did not run for a
		// while", 2-2.7 s); a message matching only a dropped node's
		// clean subscribers is acknowledged without them
		// (docs/cluster.md, "Persistent sessions"), so subB is owed
		// nothing then.
		dropsBefore := harness.CountLogAll(a, "cluster node gone: no heartbeat", "peer="+b.Name)
		var acked []string
		for i := range 40 {
			if i == 10 {
				if err := nf.Heal(); err != nil {
					t.Fatal(err)
				}
			}
			payload := fmt.Sprint("heal:", i)
			rc, closed := pubA.TryPublish(t, &paho.Publish{Topic: "part/heal", QoS: byte(1 + i%2), Payload: []byte(payload)})
			switch {
			case closed:
				harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, a, "part-pub-a", &pubA) })
			case rc == 0:
				acked = append(acked, payload)
			}
		}
		t.Logf("%d of 40 acknowledged across the heal", len(acked))
		for _, s := range []*harness.Client{subA, subB} {
			missing := awaitPayloads(s, acked, harness.PartitionBound)
			drainQuiet(s, time.Second) // QoS 1 again, as QoS 1 allows
			if len(missing) > 0 && s == subB && harness.CountLogAll(a, "cluster node gone: no heartbeat", "peer="+b.Name) > dropsBefore {
				t.Skipf("%s: %d acknowledged not delivered (%q), and %s dropped %s for silence meanwhile: a message matching only a dropped node's clean subscribers is acknowledged without them (docs/cluster.md); the test's premise, two majority nodes hearing each other, did not hold",
					s.ID, len(missing), missing, a.Name, b.Name)
			}
			for _, p := range missing {
				t.Errorf("%s: acknowledged %q lost", s.ID, p)
			}
		}
		drainQuiet(subM, time.Second)
	})

	t.Run("HealConverges", func(t *testing.T) {
		// Interest: probes from each side reach the other again.
		healed := time.Now()
		for i, p := range []*harness.Client{pubA, pubM} {
			nd := []*harness.Node{a, m}[i]
			harness.Eventually(t, harness.PartitionBound, func() error {
				rc, closed := p.TryPublish(t, &paho.Publish{Topic: "part/probe", QoS: 1, Payload: []byte("probe")})
				if closed {
					// Not confirmed by a node whose routes are still
					// recovering: the client connects again.
					eventuallyAssigned(t, nd, &p)
					return fmt.Errorf("probe from %s: connection closed", nd.Name)
				}
				if rc != 0 {
					return fmt.Errorf("%s: PUBACK 0x%02X", p.ID, rc)
				}
				for _, s := range []*harness.Client{subA, subB, subM} {
					if !hasProbe(s) {
						return fmt.Errorf("%s's probe did not reach %s", p.ID, s.ID)
					}
				}
				return nil
			})
			t.Logf("probes from %s reach every subscriber %v after the heal", nd.Name, time.Since(healed).Round(time.Millisecond))
		}
		pubA, pubM = nil, nil
		eventuallyAssigned(t, a, &pubA)
		eventuallyAssigned(t, m, &pubM)
		// Retained: every node has the majority's value.
		for _, nd := range tc.Nodes {
			harness.Eventually(t, harness.PartitionBound, func() error {
				got, err := clustertest.ReadRetained(t, nd.MQTT, "part-ret2-"+nd.Name, "part/kept", 300*time.Millisecond)
				if err != nil {
					return err
				}
				if !slices.Equal(got, []string{"part/kept=major"}) {
					return fmt.Errorf("%s: retained %q after the heal", nd.Name, got)
				}
				return nil
			})
		}
		// Client ids can be claimed on the old minority again.
		var c *harness.Client
		harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, m, "part-new-m", &c) })
		// One connection per client id: the roamer's old connection on
		// the minority node, whose id moved during the partition, is
		// gone once the node is back.
		harness.Eventually(t, harness.PartitionBound, func() error {
			select {
			case <-stale.Done():
				return nil
			default:
				return fmt.Errorf("part-roamer is still connected on %s, and on %s", m.Name, b.Name)
			}
		})
		// Messages flow both ways.
		pubM.Pub(t, &paho.Publish{Topic: "part/after", QoS: 1, Payload: []byte("from-minor")})
		pubA.Pub(t, &paho.Publish{Topic: "part/after", QoS: 2, Payload: []byte("from-major")})
		for _, s := range []*harness.Client{subA, subB, subM} {
			got := []string{string(s.Next(t, harness.Wait).Payload), string(s.Next(t, harness.Wait).Payload)}
			slices.Sort(got)
			if !slices.Equal(got, []string{"from-major", "from-minor"}) {
				t.Errorf("%s got %q after the heal", s.ID, got)
			}
		}
	})
}

// drainQuiet returns the payloads of the messages s receives until none
// has come for quiet (bounded: a subscriber gets at most its inbox's
// capacity).
func drainQuiet(s *harness.Client, quiet time.Duration) []string {
	var got []string
	for range cap(s.In) + 1 {
		select {
		case p := <-s.In:
			got = append(got, string(p.Payload))
		case <-time.After(quiet):
			return got
		}
	}
	return got
}

// awaitPayloads takes s's messages until every payload of want came or
// bound passed, and returns those that did not come. A node delivers
// late what it reads from its held subject after a heal at load (gaps
// of 7 s between deliveries seen), so no quiet time is taken for the
// end.
func awaitPayloads(s *harness.Client, want []string, bound time.Duration) []string {
	got := map[string]bool{}
	missing := func() []string {
		var m []string
		for _, p := range want {
			if !got[p] {
				m = append(m, p)
			}
		}
		return m
	}
	deadline := time.After(bound)
	for len(missing()) > 0 {
		select {
		case p := <-s.In:
			got[string(p.Payload)] = true
		case <-deadline:
			return missing()
		}
	}
	return nil
}

// hasProbe drains s's inbox and reports whether a probe was in it.
func hasProbe(s *harness.Client) bool {
	found := false
	for len(s.In) > 0 {
		if p := <-s.In; string(p.Payload) == "probe" {
			found = true
		}
	}
	return found
}

// eventuallyAssigned reconnects *c to nd with an id the server assigns
// (which needs no ownership record, so works without quorum).
func eventuallyAssigned(t *testing.T, nd *harness.Node, c **harness.Client) {
	t.Helper()
	harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, nd, "", c) })
}

// TestClusterPartitionFencesStaleOwner: a client id connected on a node
// that is cut off is claimed on the majority; the cut rejects (TCP resets)
// so the routes close and the claim's request to let go is lost, not
// buffered. When the node hears the others again it checks its sessions'
// records and takes the stale connection over: one connection per client
// id again.
func TestClusterPartitionFencesStaleOwner(t *testing.T) {
	t.Parallel() // see harness_test.go
	nf := netfault.Namespace(t, clustertest.BinEnv+"="+clustertest.Binary(t, false))
	if nf == nil {
		return
	}
	tc := harness.StartCluster(t, 3)
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	stale := harness.Connect(t, n3, "fence-roamer")
	rejectCut(t, nf, n3, n1)
	var moved *harness.Client
	harness.Eventually(t, harness.PartitionBound, func() error { return harness.Redial(t, n1, "fence-roamer", &moved) })
	healTakesOver(t, nf, stale)
	// The id's connection on the majority is not disturbed.
	select {
	case <-moved.Done():
		t.Error("the connection on the majority ended")
	case <-time.After(200 * time.Millisecond):
	}
}
