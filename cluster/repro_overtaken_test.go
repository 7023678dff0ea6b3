package cluster_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
// delay-release holds n2's request past it. Not parallel: the faults are
// in the nodes' environment.
func TestReproClaimOvertakenWhileReading(t *testing.T) {
	const id = "ov-sub"
	t.Setenv("ROOST_TEST_FAULT", "overtaken="+id+"@n1,delay-release="+id+"@n2")
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	writeAtomic(t, cfg, []byte("cluster:\n  adopt_after: 60s\n  forward_timeout: 15s\n"), 0o644)
	tc := startClusterWith(t, 3, "--config", cfg)
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	const expiry = 300
	originSub(t, n3, id, "ov/#")
	tc.kill(n3, syscall.SIGKILL)
	// n1's request to n3 then finds no responder at once.
	tc.waitLog(n1, `"cluster node gone: no route" node=n1 peer=n3`, 1, 30*time.Second)

	expiryProp := uint32(expiry)
	cp := func() *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiryProp}}
	}
	type result struct {
		c   *client
		ack *paho.Connack
		err error
	}
	// The first CONNECT on n1 until its claim reaches the adoption: a
	// read of the session while the partition stream elects a leader
	// after n3's kill fails, and the client tries again.
	const held = `"cluster: test fault: the adoption waits for a newer record" node=n1 client_id=` + id
	var first chan result
	eventually(t, 60*time.Second, func() error {
		first = make(chan result, 1)
		go func() {
			c, ack, err := tryConnect(t, n1, cp())
			first <- result{c, ack, err}
		}()
		for countLog(n1, held) == 0 {
			select {
			case r := <-first:
				return fmt.Errorf("CONNECT on n1 ended before the adoption: %v", r.err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		return nil
	})
	second := make(chan result, 1)
	go func() {
		c, ack, err := tryConnect(t, n2, cp())
		second <- result{c, ack, err}
	}()

	r := <-first
	if r.err == nil && r.ack.ReasonCode == 0 {
		t.Errorf("n1 accepted %s's CONNECT (Session Present %v) after n2's newer claim was recorded: two connections for the id; n1:\n%s",
			id, r.ack.SessionPresent, grepLog(n1, id))
		r.c.Disconnect(&paho.Disconnect{})
	} else if countLog(n1, `"cluster: session taken from the stream not adopted: its client id was claimed again meanwhile" node=n1 client_id=`+id) == 0 {
		t.Errorf("n1 refused %s's CONNECT (%v) for another reason than n2's claim; n1:\n%s", id, r.err, grepLog(n1, id))
	}
	r = <-second
	if r.err != nil || r.ack.ReasonCode != 0 {
		// Closed without CONNACK under load: the client tries again,
		// and reads the session from the stream.
		r.c = resume(t, n2, id, expiry, 60*time.Second)
	} else if !r.ack.SessionPresent {
		t.Fatalf("%s on n2: Session Present 0", id)
	}
	r.c.Disconnect(&paho.Disconnect{})
}
