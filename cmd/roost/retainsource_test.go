package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// check_retain_source across a restart: alice's retained message,
// published with mosquitto_pub, is withdrawn from new subscribers when
// the ACL that the restarted broker reads no longer lets her write its
// topic; bob's, whose access is unchanged, is still served. The broker
// keeps each retained message's publisher in its store, as mosquitto
// keeps it in its database.
func TestServeCheckRetainSourceAcrossRestart(t *testing.T) {
	t.Parallel()
	mosquittoPub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed (Debian mosquitto-clients)")
	}
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	writePasswords(t, passwd, "alice", "a-pw", "bob", "b-pw", "reader", "r-pw")
	acl := filepath.Join(dir, "acl")
	aclFor := func(aliceWrites bool) string {
		access := "readwrite"
		if !aliceWrites {
			access = "read"
		}
		return "user alice\ntopic " + access + " state/#\nuser bob\ntopic readwrite state/#\ntopic readwrite end\n" +
			"user reader\ntopic read state/#\ntopic read end\n"
	}
	writeFixture(t, acl, aclFor(true))
	cfg := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\nstore:\n  data: "+filepath.Join(dir, "data")+
		"\n  ballast: 0\n  min_free: 0\nauth:\n  password_file: "+passwd+"\n  acl_file: "+acl+"\n  check_retain_source: true\n")

	b := startServe(t, "--config", cfg)
	host, port, _ := net.SplitHostPort(b.addr)
	for _, p := range [][3]string{{"alice", "a-pw", "state/a"}, {"bob", "b-pw", "state/b"}, {"bob", "b-pw", "end"}} {
		out, err := exec.Command(mosquittoPub, "-h", host, "-p", port, "-V", "mqttv311", "-i", p[0], "-u", p[0], "-P", p[1],
			"-q", "1", "-r", "-t", p[2], "-m", p[0]).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub %s as %s: %v: %s", p[2], p[0], err, out)
		}
	}
	if got := retainedSeen(t, b.addr); len(got) != 2 || got["state/a"] != "alice" || got["state/b"] != "bob" {
		t.Fatalf("before the restart: retained %v, want state/a from alice and state/b from bob; log:\n%s", got, b.log.String())
	}
	if code := b.stop(); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, b.log.String())
	}

	writeFixture(t, acl, aclFor(false))
	b = startServe(t, "--config", cfg)
	if got := retainedSeen(t, b.addr); len(got) != 1 || got["state/b"] != "bob" {
		t.Fatalf("after the restart with alice's write access taken away: retained %v, want state/b only; log:\n%s", got, b.log.String())
	}
}

// retainedSeen connects as reader with paho.golang, subscribes to state/+
// and then to end, and returns the retained messages of state/+ by topic:
// those of the first SUBSCRIBE come before end's, since the broker handles
// a connection's packets in order.
func retainedSeen(t *testing.T, addr string) map[string]string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *paho.Publish, 16)
	c := paho.NewClient(paho.ClientConfig{ClientID: "reader", Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			msgs <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ca, err := c.Connect(ctx, &paho.Connect{ClientID: "reader", KeepAlive: 30, CleanStart: true,
		UsernameFlag: true, Username: "reader", PasswordFlag: true, Password: []byte("r-pw")}); err != nil {
		t.Fatalf("reader CONNECT: %v %+v", err, ca)
	}
	defer c.Disconnect(&paho.Disconnect{})
	for _, f := range []string{"state/+", "end"} {
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}}}); err != nil {
			t.Fatalf("SUBSCRIBE %s: %v", f, err)
		}
	}
	got := map[string]string{}
	for {
		select {
		case m := <-msgs:
			if m.Topic == "end" {
				return got
			}
			got[m.Topic] = string(m.Payload)
		case <-ctx.Done():
			t.Fatalf("end's retained message did not come; so far %v", got)
		}
	}
}
