package security

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A password file made by mosquitto_passwd, both hash kinds it writes,
// works unchanged; so does an ACL file in mosquitto's syntax.
func TestMosquittoPasswdFile(t *testing.T) {
	bin := need(t, "mosquitto_passwd")
	file := filepath.Join(t.TempDir(), "passwd")
	for _, args := range [][]string{
		{"-c", "-b", file, "alice", "wonder land"},
		{"-b", file, "bob", "hunter2"},
		{"-H", "sha512", "-b", file, "old", "timer"},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %q: %v\n%s", args, err, out)
		}
	}
	pw, err := auth.LoadPasswordFile(file)
	if err != nil {
		t.Fatalf("mosquitto's file: %v", err)
	}
	acl, err := auth.ParseACL("acl", []byte("user alice\ntopic readwrite a/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, broker.Options{Authenticator: &auth.Authenticator{Passwords: pw}, Authorizer: acl})
	for _, tc := range []struct {
		v        packet.Version
		user, pw string
		want     packet.ReasonCode
	}{
		{packet.V311, "alice", "wonder land", 0},
		{packet.V5, "bob", "hunter2", 0},
		{packet.V311, "old", "timer", 0},
		{packet.V311, "alice", "wonderland", packet.Connack311BadUsernameOrPassword},
		{packet.V5, "nobody", "hunter2", packet.BadUserNameOrPassword},
		{packet.V311, "", "", packet.Connack311NotAuthorized}, // anonymous is off by default in an Authenticator
		{packet.V5, "", "", packet.NotAuthorized},
	} {
		c := mqtttest.Dial(t, addr, tc.v)
		c.Send(&packet.Connect{ProtocolVersion: tc.v, ClientID: "c", CleanStart: true,
			UsernameFlag: tc.user != "", Username: tc.user, PasswordFlag: tc.pw != "", Password: []byte(tc.pw)})
		// The check hashes the password (an unknown user's too, at the
		// same cost): seconds under -race on a busy machine, so the
		// bound is for a hang, not a timing.
		ack, ok := c.Next(15 * time.Second).(*packet.Connack)
		if !ok || ack.ReasonCode != tc.want {
			t.Errorf("%v %q/%q: CONNACK %+v, want 0x%02X", tc.v, tc.user, tc.pw, ack, byte(tc.want))
		}
	}
}

// The other way round: mosquitto accepts a $7$ file that roost writes.
func TestMosquittoReadsRoostFile(t *testing.T) {
	pub := need(t, "mosquitto_pub")
	dir := t.TempDir()
	file := filepath.Join(dir, "passwd")
	h, err := auth.Hash(auth.SHA512PBKDF2, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.SetUser(file, "alice", h, true); err != nil {
		t.Fatal(err)
	}
	// The later allow_anonymous wins over mosquittotest's default.
	port := strconv.Itoa(mosquittotest.Start(t, "allow_anonymous false", "password_file "+file).Port)
	run := func(pw string) error {
		return exec.Command(pub, "-h", "127.0.0.1", "-p", port, "-u", "alice", "-P", pw, "-t", "t", "-m", "x").Run()
	}
	mqtttest.Eventually(t, 5*time.Second, func() bool { return run("s3cret") == nil })
	if run("wrong") == nil {
		t.Error("mosquitto accepted a wrong password against roost's entry")
	}
}
