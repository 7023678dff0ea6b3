package repro_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// TestReproClaimOvertakenWhileReading: a claim taking a session from the
// stream does not adopt it once the node's owner watcher saw a newer
// claim's record meanwhile. Before, it did: the watcher had found no
// session to fence (it was not in the server yet), and the newer claim's
// request to let go came seconds later (test/jepsen TestClusterFull seed
// 41 run at 06:21: behind other requests' held waits on n1), so the node
// served the client on its older claim meanwhile, a second connection for
// the id in the cluster [MQTT-3.1.4-3], writing ops at an epoch readers
// skip once the new owner wrote: pub0 on n1 for 5 s at epoch 7 with the
// record at n3's 8, the start of that run's 13 QoS 2 duplicates. The
// overtaken fault holds n1's adoption until its watcher saw n2's record;
// delay-release holds n2's request past it.
func TestReproClaimOvertakenWhileReading(t *testing.T) {
	t.Parallel() // see harness.Main
	const id = "ov-sub"
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Fault: "overtaken=" + id + "@n1,delay-release=" + id + "@n2", Config: "cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	const expiry = 300
	harness.OriginSub(t, n3, id, "ov/#")
	tc.Kill(n3, syscall.SIGKILL)
	// n1's request to n3 then finds no responder at once.
	tc.WaitLog(n1, `"cluster node gone: no route" node=n1 peer=n3`, 1, 30*time.Second)

	expiryProp := uint32(expiry)
	cp := func() *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiryProp}}
	}
	type result struct {
		c   *harness.Client
		ack *paho.Connack
		err error
	}
	// The first CONNECT on n1 until its claim reaches the adoption: a
	// read of the session while the partition stream elects a leader
	// after n3's kill fails, and the client tries again. A raw client
	// that waits 60 s for its CONNACK: under load the claim outlasts a
	// usual client's bound, and a client that gave up and connected
	// again would make a newer claim, which may rightly win.
	const held = `"cluster: test fault: the adoption waits for a newer record" node=n1 client_id=` + id
	type answer struct {
		p   packet.Packet
		err error
	}
	var first chan answer
	harness.Eventually(t, 60*time.Second, func() error {
		c := mqtttest.Dial(t, n1.MQTT, packet.V5)
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: id, KeepAlive: 30,
			Properties: packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: expiry}})
		first = make(chan answer, 1)
		go func() {
			p, err := c.Read(60 * time.Second)
			first <- answer{p, err}
		}()
		for harness.CountLog(n1, held) == 0 {
			select {
			case a := <-first:
				return fmt.Errorf("CONNECT on n1 ended before the adoption: %v %v", a.p, a.err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		return nil
	})
	second := make(chan result, 1)
	go func() {
		c, ack, err := harness.TryConnect(t, n2, cp())
		second <- result{c, ack, err}
	}()

	a := <-first
	if ack, ok := a.p.(*packet.Connack); ok && ack.ReasonCode == 0 {
		t.Errorf("n1 accepted %s's CONNECT (Session Present %v) after n2's newer claim was recorded: two connections for the id; n1:\n%s",
			id, ack.SessionPresent, harness.GrepLog(n1, id))
	} else if harness.CountLog(n1, `"cluster: session taken from the stream not adopted: its client id was claimed again meanwhile" node=n1 client_id=`+id) == 0 {
		t.Errorf("n1 refused %s's CONNECT (%v %v) for another reason than n2's claim; n1:\n%s", id, a.p, a.err, harness.GrepLog(n1, id))
	}
	var r result
	r = <-second
	if r.err != nil || r.ack.ReasonCode != 0 {
		// Closed without CONNACK under load: the client tries again,
		// and reads the session from the stream.
		r.c = harness.Resume(t, n2, id, expiry, 60*time.Second)
	} else if !r.ack.SessionPresent {
		t.Fatalf("%s on n2: Session Present 0", id)
	}
	r.c.Disconnect(&paho.Disconnect{})
}
