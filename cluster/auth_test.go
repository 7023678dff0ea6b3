package cluster_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// TestClusterAuthOnEveryNode: with the same password and ACL files on
// every node (docs/cluster.md, "Running three nodes"), a client is
// authenticated by the node it connects to, whichever it is, and a message
// that crosses nodes is checked against the writer's rules on its node and
// the reader's on the reader's: alice may read and write sensors/#, bob
// only read sensors/public/#.
func TestClusterAuthOnEveryNode(t *testing.T) {
	t.Parallel() // see harness_test.go
	dir := t.TempDir()
	for _, u := range [][]string{{"-c", "-b", "passwd", "alice", "secret"}, {"-b", "passwd", "bob", "hunter2"}} {
		cmd := exec.Command(clustertest.Binary(t, false), append([]string{"passwd"}, u...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("roost passwd: %v\n%s", err, out)
		}
	}
	harness.WriteAtomic(t, filepath.Join(dir, "acl"), []byte("user alice\ntopic readwrite sensors/#\n\nuser bob\ntopic read sensors/public/#\n"), 0o600)
	cfg := filepath.Join(dir, "roost.yaml")
	harness.WriteAtomic(t, cfg, []byte("auth:\n  allow_anonymous: false\n  password_file: passwd\n  acl_file: acl\n"), 0o600)
	tc := harness.StartClusterWith(t, 3, "--config", cfg)
	n1, n2, n3 := tc.Nodes[0], tc.Nodes[1], tc.Nodes[2]

	as := func(user, pass, id string) *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
			Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != ""}
	}
	for _, nd := range tc.Nodes {
		for _, c := range []struct {
			cp   *paho.Connect
			want byte
		}{
			{as("", "", "anon-"+nd.Name), 0x87},             // Not authorized
			{as("alice", "wrong", "bad-"+nd.Name), 0x86},    // Bad user name or password
			{as("mallory", "secret", "who-"+nd.Name), 0x86}, // no such user
		} {
			cl, ack, err := harness.TryConnect(t, nd, c.cp)
			if err != nil {
				t.Fatalf("%s: %s: %v", nd.Name, c.cp.ClientID, err)
			}
			if ack.ReasonCode != c.want {
				t.Errorf("%s: %s: CONNACK 0x%02X, want 0x%02X", nd.Name, c.cp.ClientID, ack.ReasonCode, c.want)
			}
			if ack.ReasonCode == 0 {
				cl.Disconnect(&paho.Disconnect{})
			}
		}
	}

	alice, ack := harness.ConnectWith(t, n1, as("alice", "secret", "alice-sub"))
	if ack.ReasonCode != 0 {
		t.Fatalf("alice on n1: CONNACK 0x%02X", ack.ReasonCode)
	}
	alice.Sub(t, paho.SubscribeOptions{Topic: "sensors/#", QoS: 1})
	bob, ack := harness.ConnectWith(t, n2, as("bob", "hunter2", "bob-sub"))
	if ack.ReasonCode != 0 {
		t.Fatalf("bob on n2: CONNACK 0x%02X", ack.ReasonCode)
	}
	bob.Sub(t, paho.SubscribeOptions{Topic: "sensors/public/#", QoS: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A filter bob may not read: refused on his node, whatever others allow.
	// (paho reports a refusal as an error beside the SUBACK.)
	if sa, err := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/private/#", QoS: 1}}}); sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
		t.Errorf("bob subscribing sensors/private/#: %v %v, want SUBACK 0x87", sa, err)
	}

	// A wider filter: granted or refused as the ACL engine decides on
	// subscribe, a delivery on it is checked against bob's read rules on
	// n2 (the private message below must not reach him through it).
	sa, _ := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/+/t", QoS: 1}}})
	wide := sa != nil && len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80
	t.Logf("bob's sensors/+/t: SUBACK %v (granted %v)", sa, wide)

	pub, ack := harness.ConnectWith(t, n3, as("alice", "secret", "alice-pub"))
	if ack.ReasonCode != 0 {
		t.Fatalf("alice on n3: CONNACK 0x%02X", ack.ReasonCode)
	}
	pub.AwaitInterest(t, "sensors/public/t")
	pub.AwaitInterest(t, "sensors/private/t")
	for _, topic := range []string{"sensors/private/t", "sensors/public/t"} {
		if rc := pub.Pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(topic)}); rc != 0 {
			t.Fatalf("alice publishing %s on n3: PUBACK 0x%02X", topic, rc)
		}
	}
	for _, want := range []string{"sensors/private/t", "sensors/public/t"} {
		if m := alice.Next(t, 10*time.Second); m.Topic != want {
			t.Fatalf("alice on n1 got %q, want %q", m.Topic, want)
		}
	}
	// One copy for bob's overlapping subscriptions ([MQTT-3.3.4-2]), and
	// never the private one (None below).
	if m := bob.Next(t, 10*time.Second); m.Topic != "sensors/public/t" {
		t.Fatalf("bob on n2 got %q, want sensors/public/t only", m.Topic)
	}

	// bob may not write: refused on n3, and nothing reaches n1 or n2.
	bobPub, ack := harness.ConnectWith(t, n3, as("bob", "hunter2", "bob-pub"))
	if ack.ReasonCode != 0 {
		t.Fatalf("bob on n3: CONNACK 0x%02X", ack.ReasonCode)
	}
	if rc := bobPub.Pub(t, &paho.Publish{Topic: "sensors/public/t", QoS: 1, Payload: []byte("forged")}); rc != 0x87 {
		t.Errorf("bob publishing on n3: PUBACK 0x%02X, want 0x87", rc)
	}
	alice.None(t, time.Second)
	bob.None(t, time.Second)
}
