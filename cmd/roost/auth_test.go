package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// roost serve with an auth: section: anonymous clients refused, users
// checked against a password file (in roost passwd's format, at a low
// cost: writePasswords), topics against an ACL file that is reloaded when
// it changes.
func TestServeAuth(t *testing.T) {
	// Serial: it shortens authPollInterval, which every serve reads.
	defer func(d time.Duration) { authPollInterval = d }(authPollInterval)
	authPollInterval = 20 * time.Millisecond
	cfg := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\nauth:\n  allow_anonymous: false\n  password_file: passwd\n  acl_file: acl\n")
	dir := filepath.Dir(cfg) // relative auth files are beside the config file
	acl := filepath.Join(dir, "acl")
	writePasswords(t, filepath.Join(dir, "passwd"), "alice", "secret")
	os.WriteFile(acl, []byte("user alice\ntopic write a\n"), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--config", cfg, "--memory"}, stdio{out: io.Discard, err: &stderr})
	}()
	defer func() { cancel(); <-exit }()
	var addr string
	if !eventually(t, 10*time.Second, func() bool {
		m := readyLine.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}) {
		t.Fatalf("no listener ready line; log:\n%s", stderr.String())
	}

	connect := func(user, pass string) packet.ReasonCode {
		c := mqtttest.Dial(t, addr, packet.V5)
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: "c-" + user, CleanStart: true,
			UsernameFlag: user != "", Username: user, PasswordFlag: pass != "", Password: []byte(pass)})
		return c.Next(mqtttest.AckBound).(*packet.Connack).ReasonCode
	}
	if code := connect("", ""); code != packet.NotAuthorized {
		t.Errorf("anonymous: CONNACK 0x%02X, want 0x87", byte(code))
	}
	if code := connect("alice", "wrong"); code != packet.BadUserNameOrPassword {
		t.Errorf("wrong password: CONNACK 0x%02X, want 0x86", byte(code))
	}
	c := mqtttest.Dial(t, addr, packet.V5)
	c.Connect(&packet.Connect{ClientID: "alice", CleanStart: true, UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("secret")})
	id := uint16(0)
	publish := func(topic string) packet.ReasonCode {
		id++
		c.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: id})
		return c.Next(mqtttest.AckBound).(*packet.Puback).ReasonCode
	}
	if publish("a") >= 0x80 || publish("b") != packet.NotAuthorized {
		t.Fatal("ACL not applied")
	}
	later := time.Now().Add(time.Minute)
	mqtttest.WriteFile(t, acl, []byte("user alice\ntopic write b\n"), later) // atomic: the watcher polls
	if !eventually(t, 5*time.Second, func() bool { return strings.Contains(stderr.String(), "auth file reloaded") }) {
		t.Fatalf("no reload; log:\n%s", stderr.String())
	}
	if publish("b") >= 0x80 {
		t.Error("reloaded ACL not applied to the live connection")
	}
}
