package cluster_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

// TestClusterDeadNodeWillsAndExpiry kills n1 (kill -9) while it holds:
// ow0, connected, will without delay: nobody reconnects, so a survivor
// adopts the session and publishes the will, once; ow3, connected, will
// delayed 3 s: the client reconnects to n2 at once and resumes its session
// there, so its will is never published; owx, offline, session expiry 3 s:
// adopted, it expires on the survivor.
//
// cluster.adopt_after is 2 s here (default 10 s): what it delays is the
// same either way.
func TestClusterDeadNodeWillsAndExpiry(t *testing.T) {
	t.Parallel() // see harness_test.go
	tc := harness.StartClusterSetup(t, 3, harness.Setup{Config: "cluster:\n  adopt_after: 2s\n"})
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]
	wills := harness.Connect(t, n3, "ow-wills")
	wills.Sub(t, paho.SubscribeOptions{Topic: "ow/will/+", QoS: 1})

	// ow3's will waits 10 s after the adoption: its client reconnects
	// before that however long the cluster takes to serve it again after
	// the kill (elections of what n1 led; 3 s was too short at load 20).
	long, short, ow3Delay := uint32(600), uint32(3), uint32(10)
	for _, c := range []struct {
		id     string
		expiry *uint32
		delay  uint32
	}{{"ow0", &long, 0}, {"ow3", &long, ow3Delay}, {"owx", &short, 0}} {
		cp := &paho.Connect{ClientID: c.id, CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: c.expiry}}
		if c.id != "owx" {
			cp.WillMessage = &paho.WillMessage{Topic: "ow/will/" + c.id, QoS: 1, Payload: []byte(c.id)}
			cp.WillProperties = &paho.WillProperties{WillDelayInterval: &c.delay}
		}
		cl, ack := harness.ConnectWith(t, n1, cp)
		if ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK 0x%02X", c.id, ack.ReasonCode)
		}
		cl.Sub(t, paho.SubscribeOptions{Topic: "ow/t", QoS: 1})
		if c.id == "owx" {
			cl.Disconnect(&paho.Disconnect{})
			tc.WaitLog(n1, `client_id=owx reason="client disconnected normally"`, 1, harness.Wait)
		}
	}

	tc.Kill(n1, syscall.SIGKILL)
	killed := time.Now()
	harness.Eventually(t, 30*time.Second, func() error {
		_, ack, err := harness.TryConnect(t, n2, &paho.Connect{ClientID: "ow3", CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &long}})
		if err != nil {
			return err
		}
		if ack.ReasonCode != 0 || !ack.SessionPresent {
			return fmt.Errorf("ow3 on n2: CONNACK 0x%02X, session present %v", ack.ReasonCode, ack.SessionPresent)
		}
		return nil
	})

	// A survivor adopts ow0 and owx once n1 has been silent long enough.
	p := wills.Next(t, 40*time.Second)
	if string(p.Payload) != "ow0" {
		t.Fatalf("will %q published, want ow0's", p.Payload)
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if harness.CountLog(n2, "client_id=owx")+harness.CountLog(n3, "client_id=owx") == 0 {
			return fmt.Errorf("owx not adopted yet")
		}
		if c := harness.CountLog(n2, `"session expired" client_id=owx`) + harness.CountLog(n3, `"session expired" client_id=owx`); c != 1 {
			return fmt.Errorf("owx expired %d times on the survivors; their logs:\n%s\n%s", c,
				harness.GrepLog(n2, "owx", "cluster:", "silent"), harness.GrepLog(n3, "owx", "cluster:", "silent"))
		}
		return nil
	})
	// Until ow3's delay is long over (counted from the adoption, 2 s
	// after the kill at the earliest), no will may come, nor ow0's again.
	wills.None(t, max(2*time.Second, time.Until(killed.Add(2*time.Second+time.Duration(ow3Delay)*time.Second+2*time.Second))))
	if c := harness.CountLog(n2, `"session of a silent node adopted" node=n2 client_id=ow0`) + harness.CountLog(n3, `"session of a silent node adopted" node=n3 client_id=ow0`); c != 1 {
		t.Errorf("ow0 adopted %d times", c)
	}
	_, ack := harness.ConnectWith(t, n3, &paho.Connect{ClientID: "owx", CleanStart: false, KeepAlive: 30})
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Errorf("owx after its expiry: CONNACK 0x%02X, session present %v; want a new session", ack.ReasonCode, ack.SessionPresent)
	}
}
