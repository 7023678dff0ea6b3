package cluster_test

import (
	"fmt"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterDeadNodeCleanWills kills n1 (kill -9) while it holds clean
// sessions (MQTT 5 session expiry 0, MQTT 3.1.1 clean session 1), whose
// wills only their owner records keep (cleanwill.go):
//   - cw-gone (paho.golang, 5) and cw-gone3 (mosquitto_sub, 3.1.1) stay
//     connected until the kill and never come back: a survivor publishes
//     each will once;
//   - cw-back (paho.golang, 5) reconnects to n2 at once after the kill:
//     its old connection ended without a DISCONNECT, its session with it,
//     so its will is due [MQTT-3.1.2-8] as for a takeover on one node:
//     n2, whose claim replaced the record holding it, publishes it, once,
//     and the janitor finds nothing left;
//   - cw-bye DISCONNECTs normally before the kill: no will, ever;
//   - cw-drop (mosquitto_sub, 3.1.1) is killed before the node: n1 itself
//     publishes its will, once, and the survivors must not again.
//
// cluster.adopt_after is 15 s here (default 10 s), so that cw-back's reconnect (which
// waits for the ownership records' leader, if n1 led them) comes first.
func TestClusterDeadNodeCleanWills(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 15s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	wills := harness.Connect(t, n3, "cw-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "cw/will/+", QoS: 1})

	will := func(id string) *paho.WillMessage {
		return &paho.WillMessage{Topic: "cw/will/" + id, QoS: 1, Payload: []byte(id)}
	}
	var bye *harness.Client
	for _, id := range []string{"cw-gone", "cw-back", "cw-bye"} {
		c, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30, WillMessage: will(id)})
		if ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
		}
		if id == "cw-bye" {
			bye = c
		}
	}
	sub3 := func(id string) *exec.Cmd {
		host, port, _ := net.SplitHostPort(n1.MQTT)
		cmd := exec.Command("/usr/bin/mosquitto_sub", "-V", "mqttv311", "-h", host, "-p", port, "-i", id, "-q", "1",
			"-t", "cw/none", "--will-topic", "cw/will/"+id, "--will-payload", id, "--will-qos", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		tc.WaitLog(n1, fmt.Sprintf("client_id=%s", id), 1, 20*time.Second)
		return cmd
	}
	sub3("cw-gone3")
	drop := sub3("cw-drop")

	bye.Disconnect(&paho.Disconnect{})
	tc.WaitLog(n1, `client_id=cw-bye reason="client disconnected normally"`, 1, harness.Wait)
	drop.Process.Signal(syscall.SIGKILL) // no DISCONNECT: n1 publishes the will
	if p := wills.Next(t, 20*time.Second); string(p.Payload) != "cw-drop" {
		t.Fatalf("will %q published, want cw-drop's", p.Payload)
	}
	// n1 forgets the wills of ended connections once it published or
	// dropped them (WillDone): the kill comes after both records were
	// rewritten without them.
	for _, id := range []string{"cw-bye", "cw-drop"} {
		tc.WaitLog(n1, `"cluster: will of an ended connection forgotten" node=n1 client_id=`+id, 1, 20*time.Second)
	}

	tc.Kill(n1, syscall.SIGKILL)
	killed := time.Now()
	harness.Eventually(t, 30*time.Second, func() error {
		_, ack, err := harness.TryConnect(t, n2, &paho.Connect{ClientID: "cw-back", CleanStart: true, KeepAlive: 30})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("cw-back on n2: CONNACK 0x%02X", ack.ReasonCode)
		}
		return nil
	})
	t.Logf("cw-back back on n2 %v after the kill", time.Since(killed).Round(time.Millisecond))

	got := map[string]int{}
	for len(got) < 3 {
		select {
		case p := <-wills.In:
			if string(p.Payload) != "probe" {
				got[string(p.Payload)]++
			}
		case <-time.After(40 * time.Second):
			t.Fatalf("wills after the kill: %v, want cw-gone, cw-gone3 and cw-back; n2 and n3 say:\n%s\n%s", got,
				harness.GrepLog(n2, "will", "cw-"), harness.GrepLog(n3, "will", "cw-"))
		}
	}
	wills.None(t, 3*time.Second)
	if got["cw-gone"] != 1 || got["cw-gone3"] != 1 || got["cw-back"] != 1 || len(got) != 3 {
		t.Errorf("wills published after the kill: %v, want cw-gone, cw-gone3 and cw-back once each", got)
	}
	if c := harness.CountLog(n2, `"will of a replaced record published" node=n2 client_id=cw-back`); c != 1 {
		t.Errorf("cw-back's will published by n2's claim %d times", c)
	}
	for _, id := range []string{"cw-gone", "cw-gone3"} {
		line := `"will of a clean session of a silent node adopted"`
		if c := harness.CountLog(n2, line+" node=n2 client_id="+id+" from=") + harness.CountLog(n3, line+" node=n3 client_id="+id+" from="); c != 1 {
			t.Errorf("%s's will adopted %d times", id, c)
		}
	}
}

// TestClusterRestartedNodeCleanWills kills n1 (kill -9) with two clean
// sessions' clients connected and starts it again at once, within
// cluster.adopt_after (15 s here): the survivors hear n1 again before they
// would adopt its records, so n1 itself publishes the will its record
// kept, once, at its first scan after start. A client that connected to
// n1 again before that scan replaced the record: its claim publishes the
// killed connection's will, once, before the new connection's CONNACK
// (before December 6, 2026 that will was dropped [MQTT-3.1.2-8]), and the
// new connection has its own will.
func TestClusterRestartedNodeCleanWills(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 15s\n"})
	n1, n3 := tc.Nodes[0], tc.Nodes[2]
	wills := harness.Connect(t, n3, "cr-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "cr/will/+", QoS: 1})
	for _, id := range []string{"cr-gone", "cr-back"} {
		_, ack := harness.ConnectWith(t, n1, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			WillMessage: &paho.WillMessage{Topic: "cr/will/" + id, QoS: 1, Payload: []byte(id)}})
		if ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK 0x%02X", id, ack.ReasonCode)
		}
	}
	tc.Kill(n1, syscall.SIGKILL)
	tc.Start(n1)
	var back *harness.Client
	harness.Eventually(t, 30*time.Second, func() error {
		c, ack, err := harness.TryConnect(t, n1, &paho.Connect{ClientID: "cr-back", CleanStart: true, KeepAlive: 30,
			WillMessage: &paho.WillMessage{Topic: "cr/will/cr-back", QoS: 1, Payload: []byte("cr-back-2")}})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 {
			return fmt.Errorf("cr-back on n1: CONNACK 0x%02X", ack.ReasonCode)
		}
		back = c
		return nil
	})
	got := map[string]int{}
	for range 2 {
		got[string(wills.Next(t, 60*time.Second).Payload)]++
	}
	if got["cr-gone"] != 1 || got["cr-back"] != 1 {
		t.Fatalf("wills published %v, want the killed connections' cr-gone and cr-back once each", got)
	}
	wills.None(t, 3*time.Second)
	line := `"will of a clean session of a silent node adopted"`
	if c := harness.CountLog(n1, line+" node=n1 client_id=cr-gone from=n1"); c != 1 {
		t.Errorf("cr-gone's will published by n1 %d times after its restart", c)
	}
	if c := harness.CountLog(n1, `"will of a connection of this node's previous process published" node=n1 client_id=cr-back`); c != 1 {
		t.Errorf("cr-back's killed connection's will published by its claim %d times", c)
	}
	// cr-back's new will is its live connection's: still there.
	back.Disconnect(&paho.Disconnect{ReasonCode: 0x04}) // with will
	if p := wills.Next(t, 20*time.Second); string(p.Payload) != "cr-back-2" {
		t.Fatalf("will %q published, want cr-back's new one", p.Payload)
	}
}
