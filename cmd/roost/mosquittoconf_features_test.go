package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// peer is the broker a feature probe talks to: behaviours where Debian's
// mosquitto 2.0.11 differs from Roost (and from later mosquitto) are
// checked for Roost only.
type peer int

const (
	roostPeer peer = iota
	mosquittoPeer
)

// featureProbe checks the behaviour one test mosquitto.conf configures,
// given its listeners' URLs in file order. notMosquitto says why the file
// is not run in mosquitto too ("" when it is).
type featureProbe struct {
	probe        func(t *testing.T, urls []string, p peer, fx *fixtures)
	notMosquitto string
}

var featureProbes = map[string]featureProbe{
	"keepalive.conf":                    {probe: probeKeepAlive},
	"message_size_limit.conf":           {probe: probeMessageSizeLimit},
	"persistent_client_expiration.conf": {probe: probePersistentExpiration},
	"clientid.conf":                     {probe: probeZeroLengthClientID},
	"auto_id_prefix.conf":               {probe: probeAutoIDPrefix},
	"mount_point.conf":                  {probe: probeMountPoint},
	"tls_capath_subject.conf":           {probe: probeCAPathSubject},
	"tls_ciphers.conf":                  {probe: probeCiphers},
	"tls_version.conf":                  {probe: probeTLSVersion},
	"bind_interface.conf": {probe: probeBindInterface,
		notMosquitto: "mosquittotest waits until every listener takes a connection from this machine, which the other interface's never does"},
	"tls_crlfile.conf": {probe: probeCRL},
	"max_inflight_bytes.conf": {probe: probeMaxInflightBytes,
		notMosquitto: "Debian's mosquitto 2.0.11 sent all three messages before the marker in this probe: its byte bound did not hold as mosquitto.conf(5) describes it"},
	"max_topic_alias.conf": {probe: probeTopicAliases},
	"http_dir.conf":        {probe: probeHTTPDir},
	"check_retain_source.conf": {probe: probeCheckRetainSource,
		notMosquitto: "mosquitto rereads its ACL file on SIGHUP only, which mosquittotest does not send"},
	"max_qos.conf":                  {probe: probeMaxQoS},
	"use_username_as_clientid.conf": {probe: probeUsernameAsClientID},
	"clientid_prefixes.conf":        {probe: probeClientIDPrefixes},
	"per_listener_settings.conf": {probe: probePerListener,
		notMosquitto: "mosquittotest writes allow_anonymous before the file's lines, and mosquitto wants per_listener_settings before any security option"},
}

// fixtures are the files the test confs name as {dir}/..., and the
// client side of their TLS.
type fixtures struct {
	dir      string
	serverCA *x509.CertPool
	alice    tls.Certificate // CN=alice,O=Roost, from a CA in {dir}/cas
	stranger tls.Certificate // from a CA that is not there
	revoked  tls.Certificate // from the same CA as alice, revoked in {dir}/crl.pem
}

// confFixtures writes a password file (alice:secret), an ACL letting
// alice use allowed/# (acl), one giving each certificate subject
// users/SUBJECT/# (subject.acl), a server certificate for 127.0.0.1
// (server.pem, server.key) and a c_rehash'd directory of two client CAs
// (cas).
func confFixtures(t *testing.T) *fixtures {
	dir := t.TempDir()
	// Written by mosquitto_passwd: its 101 PBKDF2 iterations, where
	// roost passwd writes 210,000, keep each check quick under the race
	// detector and a loaded machine.
	writeFixture(t, filepath.Join(dir, "passwd"), "")
	if out, err := exec.Command("mosquitto_passwd", "-b", filepath.Join(dir, "passwd"), "alice", "secret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	writeFixture(t, filepath.Join(dir, "acl"), "user alice\ntopic readwrite allowed/#\n")
	writeFixture(t, filepath.Join(dir, "subject.acl"), "pattern readwrite users/%u/#\n")
	writeFixture(t, filepath.Join(dir, "retain.acl"), retainACL(true))
	if err := os.Mkdir(filepath.Join(dir, "www"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFixture(t, filepath.Join(dir, "www", "index.html"), "<h1>served by the broker</h1>\n")
	fx := &fixtures{dir: dir, serverCA: x509.NewCertPool()}
	newCA := func(name string) *devcert.CA {
		ca, err := devcert.NewCA(name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	issue := func(ca *devcert.CA, l devcert.Leaf) ([]byte, []byte) {
		chain, key, err := ca.Issue(l)
		if err != nil {
			t.Fatal(err)
		}
		return chain, key
	}
	srvCA := newCA("server CA")
	fx.serverCA.AppendCertsFromPEM(srvCA.CertPEM())
	chain, key := issue(srvCA, devcert.Leaf{CommonName: "localhost", Hosts: []string{"127.0.0.1", "localhost"}})
	writeFixture(t, filepath.Join(dir, "server.pem"), string(chain))
	writeFixture(t, filepath.Join(dir, "server.key"), string(key))
	writeFixture(t, filepath.Join(dir, "serverca.pem"), string(srvCA.CertPEM()))
	cas := filepath.Join(dir, "cas")
	if err := os.Mkdir(cas, 0o700); err != nil {
		t.Fatal(err)
	}
	other, clients := newCA("other client CA"), newCA("client CA")
	writeFixture(t, filepath.Join(cas, "other.pem"), string(other.CertPEM()))
	writeFixture(t, filepath.Join(cas, "clients.pem"), string(clients.CertPEM()))
	// mosquitto finds CAs in a capath by their hash links only.
	if out, err := exec.Command("openssl", "rehash", cas).CombinedOutput(); err != nil {
		t.Fatalf("openssl rehash: %v: %s", err, out)
	}
	pair := func(ca *devcert.CA, l devcert.Leaf) tls.Certificate {
		c, err := tls.X509KeyPair(issue(ca, l))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	fx.alice = pair(clients, devcert.Leaf{CommonName: "alice", Organization: []string{"Roost"}, Client: true})
	fx.stranger = pair(newCA("stranger CA"), devcert.Leaf{CommonName: "mallory", Client: true})
	fx.revoked = pair(clients, devcert.Leaf{CommonName: "revoked", Client: true})
	leaf, err := x509.ParseCertificate(fx.revoked.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	crl, err := clients.CRL([]*big.Int{leaf.SerialNumber}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFixture(t, filepath.Join(dir, "crl.pem"), string(crl))
	writeFixture(t, filepath.Join(dir, "alice.pem"), string(certPEM(fx.alice)))
	writeFixture(t, filepath.Join(dir, "alice.key"), string(keyPEM(t, fx.alice)))
	return fx
}

func certPEM(c tls.Certificate) []byte {
	var b []byte
	for _, der := range c.Certificate {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return b
}

func keyPEM(t *testing.T, c tls.Certificate) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// serveConverted renders conf's ports, converts it with roost config
// convert, serves the roost.yaml and returns the listeners' URLs.
func serveConverted(t *testing.T, conf string) []string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		rendered := conf
		for strings.Contains(rendered, "{port}") {
			rendered = strings.Replace(rendered, "{port}", strconv.Itoa(mqtttest.FreePort(t)), 1)
		}
		dir := t.TempDir()
		in := filepath.Join(dir, "mosquitto.conf")
		writeFixture(t, in, rendered)
		code, out, stderr := runCmd(t, "config", "convert", in)
		if code != 0 {
			t.Fatalf("convert: exit %d: %s", code, stderr)
		}
		yml := filepath.Join(dir, "roost.yaml")
		writeFixture(t, yml, out)
		urls := confURLs(rendered)
		code, log, ok := serveFile(t, yml, len(urls))
		if ok {
			return urls
		}
		if strings.Contains(log, "address already in use") && attempt < 5 {
			continue
		}
		t.Fatalf("roost did not start from the converted file (exit %d):\n%s\nlog:\n%s", code, out, log)
	}
}

func hostPort(url string) string { return url[strings.Index(url, "://")+3:] }

// connack sends c's CONNECT and returns the CONNACK.
func connack(t *testing.T, url string, p *packet.Connect) (*mqtttest.Client, *packet.Connack) {
	t.Helper()
	c := mqtttest.Dial(t, hostPort(url), p.ProtocolVersion)
	c.Send(p)
	// Generous: a password check is slow under the race detector.
	ack, ok := c.Next(15 * time.Second).(*packet.Connack)
	if !ok {
		t.Fatalf("%s: no CONNACK", url)
	}
	return c, ack
}

// max_keepalive 30: an MQTT 5 client asking for 120 s is told 30 s; one
// asking for 20 s keeps it; an MQTT 3.1.1 client asking for 120 s is
// refused with 2 by Roost (Debian's mosquitto 2.0.11 accepts it).
func probeKeepAlive(t *testing.T, urls []string, p peer, _ *fixtures) {
	_, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V5, ClientID: "ka5", CleanStart: true, KeepAlive: 120})
	if ack.ReasonCode != 0 || !ack.Properties.Has(packet.PropServerKeepAlive) || ack.Properties.ServerKeepAlive != 30 {
		t.Fatalf("MQTT 5 keep alive 120: CONNACK 0x%02X, Server Keep Alive %d (set %v), want 30", byte(ack.ReasonCode),
			ack.Properties.ServerKeepAlive, ack.Properties.Has(packet.PropServerKeepAlive))
	}
	if _, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V5, ClientID: "ka5b", CleanStart: true, KeepAlive: 20}); ack.Properties.Has(packet.PropServerKeepAlive) {
		t.Fatalf("MQTT 5 keep alive 20 was overridden with %d", ack.Properties.ServerKeepAlive)
	}
	if p == roostPeer {
		if _, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "ka3", CleanStart: true, KeepAlive: 120}); ack.ReasonCode != packet.Connack311IdentifierRejected {
			t.Fatalf("MQTT 3.1.1 keep alive 120: CONNACK %d, want 2", ack.ReasonCode)
		}
	}
	if _, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "ka3b", CleanStart: true, KeepAlive: 30}); ack.ReasonCode != 0 {
		t.Fatalf("MQTT 3.1.1 keep alive 30: CONNACK %d", ack.ReasonCode)
	}
}

// message_size_limit 10: an 11-byte payload is not delivered, its QoS 1
// flow completes (0x83 Implementation specific error for MQTT 5, as
// mosquitto's documentation says, a plain PUBACK for 3.1.1), the
// connection stays open and a 10-byte payload is delivered. Debian's
// mosquitto 2.0.11 answers 0x95 Packet too large, which is not a PUBACK
// reason code (MQTT 5.0 section 3.4.2.1).
func probeMessageSizeLimit(t *testing.T, urls []string, p peer, _ *fixtures) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan string, 10)
	sub := connect(t, ctx, urls[0])
	if _, err := sub.Subscribe(ctx, client.Subscription{Filter: "size/#", QoS: 1, Handler: func(m *client.Message) { got <- m.Topic }}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		c, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: v, ClientID: "big" + v.String(), CleanStart: true, KeepAlive: 30})
		if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
		}
		c.Send(&packet.Publish{Topic: "size/big", Payload: []byte("12345678901"), QoS: 1, PacketID: 1})
		want := packet.ReasonCode(0)
		switch {
		case v == packet.V5 && p == mosquittoPeer:
			want = packet.PacketTooLarge
		case v == packet.V5:
			want = packet.ImplementationSpecificError
		}
		if pa, ok := c.Next(5 * time.Second).(*packet.Puback); !ok || pa.ReasonCode != want {
			t.Fatalf("%v: %+v, want PUBACK 0x%02X", v, pa, byte(want))
		}
		c.Send(&packet.Publish{Topic: "size/ok", Payload: []byte("1234567890"), QoS: 1, PacketID: 2})
		if pa, ok := c.Next(5 * time.Second).(*packet.Puback); !ok || pa.ReasonCode != 0 {
			t.Fatalf("%v: %+v for 10 bytes, want PUBACK 0", v, pa)
		}
		select {
		case topic := <-got:
			if topic != "size/ok" {
				t.Fatalf("%v: delivered %s, want size/ok only", v, topic)
			}
		case <-ctx.Done():
			t.Fatalf("%v: the 10-byte message was not delivered", v)
		}
	}
}

// persistent_client_expiration 2h: a 3.1.1 persistent session is kept
// across a reconnect within the two hours (the expiry itself, which no
// test waits two hours for, is broker TestPersistentSessionExpiry and the
// 2h parse config TestMosquittoClientKeys).
func probePersistentExpiration(t *testing.T, urls []string, _ peer, _ *fixtures) {
	c, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "persist", KeepAlive: 30})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReasonCode)
	}
	c.Send(&packet.Disconnect{})
	c.ExpectClosed(5 * time.Second)
	for i := 0; ; i++ {
		// The broker may not have finished the first connection yet.
		c, ack = connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "persist", KeepAlive: 30})
		if ack.SessionPresent {
			break
		}
		if i == 50 {
			t.Fatal("the persistent session was not kept")
		}
		c.NC.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

// allow_zero_length_clientid false: empty client ids are refused, 0x85
// Client Identifier not valid for MQTT 5 [MQTT-3.1.3-8] (mosquitto sends
// 0x80 Unspecified error) and 2 for 3.1.1; a client with an id connects.
func probeZeroLengthClientID(t *testing.T, urls []string, p peer, _ *fixtures) {
	want := packet.ClientIdentifierNotValid
	if p == mosquittoPeer {
		want = packet.UnspecifiedError
	}
	if _, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V5, CleanStart: true, KeepAlive: 30}); ack.ReasonCode != want {
		t.Fatalf("MQTT 5: CONNACK 0x%02X, want 0x%02X", byte(ack.ReasonCode), byte(want))
	}
	if _, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, CleanStart: true, KeepAlive: 30}); ack.ReasonCode != packet.Connack311IdentifierRejected {
		t.Fatalf("MQTT 3.1.1: CONNACK %d, want 2", ack.ReasonCode)
	}
	if _, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "named", CleanStart: true, KeepAlive: 30}); ack.ReasonCode != 0 {
		t.Fatalf("with a client id: CONNACK %d", ack.ReasonCode)
	}
}

// auto_id_prefix dev-: the id assigned to an MQTT 5 client starts with it.
func probeAutoIDPrefix(t *testing.T, urls []string, _ peer, _ *fixtures) {
	_, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V5, CleanStart: true, KeepAlive: 30})
	if id := ack.Properties.AssignedClientID; ack.ReasonCode != 0 || !strings.HasPrefix(id, "dev-") || len(id) < 10 {
		t.Fatalf("CONNACK 0x%02X, assigned %q, want dev-...", byte(ack.ReasonCode), id)
	}
}

// mount_point tenants/a/ on the second listener, probed with
// mosquitto_sub and mosquitto_pub: its clients' topics gain the prefix,
// and what reaches them loses it, as mosquitto.conf(5) says. (Debian's
// mosquitto 2.0.11 does not take it off: its subscriber sees the whole
// topic.)
func probeMountPoint(t *testing.T, urls []string, p peer, _ *fixtures) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	plain := connect(t, ctx, urls[0])
	outside := make(chan string, 10)
	if _, err := plain.Subscribe(ctx, client.Subscription{Filter: "tenants/#", QoS: 1, Handler: func(m *client.Message) { outside <- m.Topic + " " + string(m.Payload) }}); err != nil {
		t.Fatal(err)
	}
	mounted := hostPort(urls[1])
	host, port, _ := strings.Cut(mounted, ":")
	// mosquitto_sub on the mounted listener, until it has one message.
	sub := mosqTool(t, ctx, "mosquitto_sub", "-h", host, "-p", port, "-t", "#", "-v", "-C", "1", "-q", "1")
	await := func(ch chan string, want string, pub func()) {
		t.Helper()
		tick := time.NewTicker(200 * time.Millisecond) // until the subscription is in place
		defer tick.Stop()
		pub()
		for {
			select {
			case got := <-ch:
				if got == want {
					return
				}
			case <-tick.C:
				pub()
			case <-ctx.Done():
				t.Fatalf("%q never arrived", want)
			}
		}
	}
	want := "cmd/1 go"
	if p == mosquittoPeer {
		want = "tenants/a/cmd/1 go"
	}
	await(sub.lines, want, func() { plain.Publish(ctx, client.Message{Topic: "tenants/a/cmd/1", Payload: []byte("go"), QoS: 1}) })
	pubOut := func() {
		mosqTool(t, ctx, "mosquitto_pub", "-h", host, "-p", port, "-t", "state", "-m", "up", "-q", "1")
	}
	await(outside, "tenants/a/state up", pubOut)
}

// per_listener_settings true: the first listener takes anonymous clients
// and any topic; the second refuses them (5), takes alice with her
// password and applies its ACL (allowed/# only).
func probePerListener(t *testing.T, urls []string, _ peer, _ *fixtures) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	open := connect(t, ctx, urls[0])
	got := make(chan string, 10)
	if _, err := open.Subscribe(ctx, client.Subscription{Filter: "#", QoS: 1, Handler: func(m *client.Message) { got <- m.Topic }}); err != nil {
		t.Fatal(err)
	}
	if _, ack := connack(t, urls[1], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "anon", CleanStart: true, KeepAlive: 30}); ack.ReasonCode != packet.Connack311NotAuthorized {
		t.Fatalf("anonymous on the second listener: CONNACK %d, want 5", ack.ReasonCode)
	}
	if _, ack := connack(t, urls[1], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "eve", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("wrong")}); ack.ReasonCode != packet.Connack311BadUsernameOrPassword {
		t.Fatalf("a wrong password: CONNACK %d, want 4", ack.ReasonCode)
	}
	alice, err := client.New(client.Options{Servers: []string{urls[1]}, Username: "alice", Password: "secret", Version: packet.V5, ConnectTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Connect(ctx); err != nil {
		t.Fatalf("alice: %v", err)
	}
	defer alice.Disconnect(context.Background())
	if _, err := alice.Publish(ctx, client.Message{Topic: "denied/1", QoS: 1}); err == nil {
		t.Fatal("alice published to denied/1, outside her ACL")
	}
	if _, err := alice.Publish(ctx, client.Message{Topic: "allowed/1", QoS: 1}); err != nil {
		t.Fatalf("alice publishing to allowed/1: %v", err)
	}
	select {
	case topic := <-got:
		if topic != "allowed/1" {
			t.Fatalf("the open listener's subscriber got %s, want allowed/1 only", topic)
		}
	case <-ctx.Done():
		t.Fatal("allowed/1 never arrived")
	}
	// The open listener's anonymous client is not bound by that ACL.
	if _, err := open.Publish(ctx, client.Message{Topic: "denied/2", QoS: 1}); err != nil {
		t.Fatalf("anonymous publish on the open listener: %v", err)
	}
}

// toolRun is a mosquitto_sub or mosquitto_pub started by mosqTool.
type toolRun struct{ lines chan string }

// mosqTool runs one of mosquitto's client tools; its output lines
// arrive on lines. mosquitto_pub is waited for (and must succeed);
// mosquitto_sub runs until it exits or the test ends.
func mosqTool(t *testing.T, ctx context.Context, name string, args ...string) *toolRun {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	if name == "mosquitto_pub" {
		if out, err := cmd.CombinedOutput(); err != nil && ctx.Err() == nil {
			t.Errorf("%s %v: %v: %s", name, args, err, out)
		}
		return &toolRun{}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &toolRun{lines: make(chan string, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	return r
}

// tlsClient connects an MQTT 5 client with tlsCfg to url, or returns the
// error.
func tlsClient(t *testing.T, ctx context.Context, url string, tlsCfg *tls.Config) (*client.Client, error) {
	t.Helper()
	c, err := client.New(client.Options{Servers: []string{url}, Version: packet.V5, TLSConfig: tlsCfg, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c, nil
}

// capath, require_certificate, use_subject_as_username: a client whose
// certificate comes from a CA in the directory connects, named by its
// whole subject (CN=alice,O=Roost), which the ACL pattern users/%u/#
// lets use its own tree only; without a certificate, or with one from
// another CA, a client cannot connect. mosquitto_pub with alice's
// certificate is the second client.
func probeCAPathSubject(t *testing.T, urls []string, _ peer, fx *fixtures) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := tlsClient(t, ctx, urls[0], &tls.Config{RootCAs: fx.serverCA}); err == nil {
		t.Fatal("a client without a certificate connected")
	}
	if _, err := tlsClient(t, ctx, urls[0], &tls.Config{RootCAs: fx.serverCA, Certificates: []tls.Certificate{fx.stranger}}); err == nil {
		t.Fatal("a client with a certificate from a CA outside capath connected")
	}
	alice, err := tlsClient(t, ctx, urls[0], &tls.Config{RootCAs: fx.serverCA, Certificates: []tls.Certificate{fx.alice}})
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	const own = "users/CN=alice,O=Roost/"
	got := make(chan string, 10)
	codes, err := alice.Subscribe(ctx, client.Subscription{Filter: own + "#", QoS: 1, Handler: func(m *client.Message) { got <- m.Topic }})
	if err != nil || codes[0] != 1 {
		t.Fatalf("subscribing to %s#: %v %v (the username is not the subject?)", own, codes, err)
	}
	if _, err := alice.Publish(ctx, client.Message{Topic: "users/alice/1", QoS: 1}); err == nil {
		t.Fatal("alice published outside users/CN=alice,O=Roost/")
	}
	host, port, _ := strings.Cut(hostPort(urls[0]), ":")
	mosqTool(t, ctx, "mosquitto_pub", "-h", host, "-p", port, "--cafile", filepath.Join(fx.dir, "serverca.pem"),
		"--cert", filepath.Join(fx.dir, "alice.pem"), "--key", filepath.Join(fx.dir, "alice.key"), "-t", own+"tool", "-m", "hi", "-q", "1")
	select {
	case topic := <-got:
		if topic != own+"tool" {
			t.Fatalf("got %s, want %stool", topic, own)
		}
	case <-ctx.Done():
		t.Fatal("mosquitto_pub's message never arrived")
	}
}

// handshake makes a TLS handshake with url's listener with cfg.
func handshake(url string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", hostPort(url))
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer nc.Close()
	return nc.(*tls.Conn).ConnectionState(), nil
}

// ciphers: a TLS 1.2 client offering only a suite outside the list fails
// the handshake; one offering a listed suite gets it; TLS 1.3 works with
// each of the three suites (ciphers_tls1.3 lists them all); an MQTT client
// makes a round trip.
func probeCiphers(t *testing.T, urls []string, _ peer, fx *fixtures) {
	tls12 := func(suite uint16) *tls.Config {
		return &tls.Config{RootCAs: fx.serverCA, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}}
	}
	if _, err := handshake(urls[0], tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)); err == nil {
		t.Fatal("TLS 1.2 with ECDHE-ECDSA-AES256-GCM-SHA384, not in the list, succeeded")
	}
	for _, suite := range []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256} {
		st, err := handshake(urls[0], tls12(suite))
		if err != nil || st.CipherSuite != suite {
			t.Fatalf("TLS 1.2 with %s: %v, got %s", tls.CipherSuiteName(suite), err, tls.CipherSuiteName(st.CipherSuite))
		}
	}
	if st, err := handshake(urls[0], &tls.Config{RootCAs: fx.serverCA, MinVersion: tls.VersionTLS13}); err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tlsClient(t, ctx, urls[0], &tls.Config{RootCAs: fx.serverCA})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	if _, err := c.Subscribe(ctx, client.Subscription{Filter: "tls/#", QoS: 1, Handler: func(m *client.Message) { got <- m.Topic }}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, client.Message{Topic: "tls/1", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("no round trip over TLS")
	}
}

// tls_version: the tlsv1.3 listener refuses a client that stops at TLS
// 1.2 and takes TLS 1.3; the tlsv1.1 listener takes TLS 1.1 (in Roost:
// Debian's mosquitto, on OpenSSL 3, refuses TLS 1.1 at its default
// security level whatever tls_version says).
func probeTLSVersion(t *testing.T, urls []string, p peer, fx *fixtures) {
	if _, err := handshake(urls[0], &tls.Config{RootCAs: fx.serverCA, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("the tlsv1.3 listener took TLS 1.2")
	}
	if st, err := handshake(urls[0], &tls.Config{RootCAs: fx.serverCA}); err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("the tlsv1.3 listener and TLS 1.3: %v", err)
	}
	if p == roostPeer {
		st, err := handshake(urls[1], &tls.Config{RootCAs: fx.serverCA, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11})
		if err != nil || st.Version != tls.VersionTLS11 {
			t.Fatalf("the tlsv1.1 listener and TLS 1.1: %v (version %x)", err, st.Version)
		}
	}
	if st, err := handshake(urls[1], &tls.Config{RootCAs: fx.serverCA, MaxVersion: tls.VersionTLS12}); err != nil || st.Version != tls.VersionTLS12 {
		t.Fatalf("the tlsv1.1 listener and TLS 1.2: %v", err)
	}
}

// max_qos 1: CONNACK says Maximum QoS 1 to an MQTT 5 client, a QoS 2
// subscription is granted QoS 1, and a QoS 2 PUBLISH gets DISCONNECT 0x9B.
func probeMaxQoS(t *testing.T, urls []string, _ peer, _ *fixtures) {
	c, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V5, ClientID: "q", CleanStart: true, KeepAlive: 30})
	if ack.ReasonCode != 0 || !ack.Properties.Has(packet.PropMaximumQoS) || ack.Properties.MaximumQoS != 1 {
		t.Fatalf("CONNACK 0x%02X, Maximum QoS %d (set %v), want 1", byte(ack.ReasonCode), ack.Properties.MaximumQoS, ack.Properties.Has(packet.PropMaximumQoS))
	}
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "q/#", Options: packet.SubOptions{QoS: 2}}}})
	if sa, ok := c.Next(5 * time.Second).(*packet.Suback); !ok || sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %+v, want QoS 1 granted", sa)
	}
	c.Send(&packet.Publish{Topic: "q/1", QoS: 2, PacketID: 2})
	got := c.ExpectClosed(5 * time.Second)
	if len(got) == 0 {
		t.Fatal("closed without DISCONNECT")
	}
	if d, ok := got[len(got)-1].(*packet.Disconnect); !ok || d.ReasonCode != packet.QoSNotSupported {
		t.Fatalf("got %+v, want DISCONNECT 0x9B", got[len(got)-1])
	}
}

// use_username_as_clientid: alice and bob both send client id "same"
// and stay connected side by side (with the id alone, bob would take
// alice over); mosquitto_sub without a username is refused.
func probeUsernameAsClientID(t *testing.T, urls []string, _ peer, _ *fixtures) {
	login := func(user string) *mqtttest.Client {
		c, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "same", CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: user})
		if ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK %d", user, ack.ReasonCode)
		}
		return c
	}
	alice := login("alice")
	login("bob")
	// alice still has her connection: a PINGREQ is answered.
	alice.Send(&packet.Pingreq{})
	if _, ok := alice.Next(5 * time.Second).(*packet.Pingresp); !ok {
		t.Fatal("alice was taken over by bob sending the same client id")
	}
	host, port, _ := strings.Cut(hostPort(urls[0]), ":")
	out, err := exec.Command("mosquitto_sub", "-h", host, "-p", port, "-t", "x", "-C", "1", "-W", "5").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not authorised") {
		t.Fatalf("mosquitto_sub without a username: %v: %s", err, out)
	}
}

// clientid_prefixes secure-: mosquitto_pub as "mqtt" is refused (not
// authorised); as "secure-client" it publishes.
func probeClientIDPrefixes(t *testing.T, urls []string, _ peer, _ *fixtures) {
	host, port, _ := strings.Cut(hostPort(urls[0]), ":")
	pub := func(id string) (string, error) {
		out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-i", id, "-t", "x", "-m", "y").CombinedOutput()
		return string(out), err
	}
	if out, err := pub("mqtt"); err == nil || !strings.Contains(out, "not authorised") {
		t.Fatalf("client id mqtt: %v: %s", err, out)
	}
	if out, err := pub("secure-client"); err != nil {
		t.Fatalf("client id secure-client: %v: %s", err, out)
	}
}

// crlfile: alice's certificate works, a certificate of the same CA that
// its CRL revokes does not, with our client and with mosquitto_sub.
func probeCRL(t *testing.T, urls []string, _ peer, fx *fixtures) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := tlsClient(t, ctx, urls[0], &tls.Config{RootCAs: fx.serverCA, Certificates: []tls.Certificate{fx.alice}}); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if _, err := tlsClient(t, ctx, urls[0], &tls.Config{RootCAs: fx.serverCA, Certificates: []tls.Certificate{fx.revoked}}); err == nil {
		t.Fatal("a revoked certificate connected")
	}
	host, port, _ := strings.Cut(hostPort(urls[0]), ":")
	out, err := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "--cafile", filepath.Join(fx.dir, "serverca.pem"),
		"--cert", filepath.Join(fx.dir, "alice.pem"), "--key", filepath.Join(fx.dir, "alice.key"), "-t", "crl", "-m", "ok").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub with alice's certificate: %v: %s", err, out)
	}
}

// otherInterface returns an interface that is up and not loopback, ""
// if there is none.
func otherInterface() string {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 {
			return i.Name
		}
	}
	return ""
}

// bind_interface: a client on this machine connects to the listener
// bound to lo, and is refused by the one bound to another interface.
func probeBindInterface(t *testing.T, urls []string, _ peer, _ *fixtures) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	connect(t, ctx, urls[0])
	nc, err := net.DialTimeout("tcp", hostPort(urls[1]), 5*time.Second)
	if err == nil {
		nc.Close()
		t.Fatalf("%s: connected through lo to the listener bound to eth0", urls[1])
	}
}

// max_inflight_bytes 100: a subscriber that does not acknowledge gets two
// 60-byte QoS 1 messages of three (a QoS 0 marker published after them
// arrives after those two); the third follows its first PUBACK.
func probeMaxInflightBytes(t *testing.T, urls []string, _ peer, _ *fixtures) {
	sub, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "slow", CleanStart: true, KeepAlive: 30})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReasonCode)
	}
	sub.Subscribe("b/#", 1)
	pub, _ := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "pub", CleanStart: true, KeepAlive: 30})
	for i := range 3 {
		pub.Send(&packet.Publish{Topic: "b/" + strconv.Itoa(i), Payload: make([]byte, 60), QoS: 1, PacketID: uint16(i + 1)})
		if _, ok := pub.Next(5 * time.Second).(*packet.Puback); !ok {
			t.Fatal("no PUBACK")
		}
	}
	pub.Send(&packet.Publish{Topic: "b/marker"})
	var got []*packet.Publish
	for {
		p, ok := sub.Next(5 * time.Second).(*packet.Publish)
		if !ok {
			t.Fatal("not a PUBLISH")
		}
		if p.Topic == "b/marker" {
			break
		}
		got = append(got, p)
	}
	if len(got) != 2 {
		t.Fatalf("%d messages before the marker, want 2", len(got))
	}
	sub.Send(&packet.Puback{PacketID: got[0].PacketID})
	if p, ok := sub.Next(5 * time.Second).(*packet.Publish); !ok || p.Topic != "b/2" {
		t.Fatalf("after a PUBACK: %+v, want b/2", p)
	}
}

// max_topic_alias: an MQTT 5 client of the first listener is given no
// Topic Alias Maximum and disconnected (0x94) when it uses an alias; one
// of the second is given 10.
func probeTopicAliases(t *testing.T, urls []string, _ peer, _ *fixtures) {
	c, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V5, ClientID: "a0", CleanStart: true, KeepAlive: 30})
	if ack.ReasonCode != 0 || ack.Properties.TopicAliasMaximum != 0 {
		t.Fatalf("first listener: CONNACK 0x%02X, Topic Alias Maximum %d, want none", byte(ack.ReasonCode), ack.Properties.TopicAliasMaximum)
	}
	p := &packet.Publish{Topic: "t"}
	p.Properties.TopicAlias = 1
	p.Properties.Set(packet.PropTopicAlias)
	c.Send(p)
	got := c.ExpectClosed(5 * time.Second)
	if len(got) == 0 {
		t.Fatal("closed without DISCONNECT")
	}
	if d, ok := got[len(got)-1].(*packet.Disconnect); !ok || d.ReasonCode != packet.TopicAliasInvalid {
		t.Fatalf("got %+v, want DISCONNECT 0x94", got[len(got)-1])
	}
	if _, ack := connack(t, urls[1], &packet.Connect{ProtocolVersion: packet.V5, ClientID: "a10", CleanStart: true, KeepAlive: 30}); ack.Properties.TopicAliasMaximum != 10 {
		t.Fatalf("second listener: Topic Alias Maximum %d, want 10", ack.Properties.TopicAliasMaximum)
	}
}

// http_dir: GET /index.html on the WebSocket listener returns the file,
// and an MQTT client still makes a round trip over WebSocket.
func probeHTTPDir(t *testing.T, urls []string, p peer, _ *fixtures) {
	resp, err := http.Get("http://" + hostPort(urls[0]) + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "<h1>served by the broker</h1>\n" {
		t.Fatalf("GET /index.html: %d %q", resp.StatusCode, body)
	}
	probe(t, urls, "")
}

// retainACL is the ACL of check_retain_source.conf: anonymous clients
// read state/# and end; alice writes state/# while canWrite.
func retainACL(canWrite bool) string {
	access := "readwrite"
	if !canWrite {
		access = "read"
	}
	return "topic read state/#\ntopic read end\nuser alice\ntopic " + access + " state/#\ntopic readwrite end\n"
}

// check_retain_source: alice's retained state/a reaches a new subscriber;
// once the ACL (reread when it changes) takes her write access away, it
// does not.
func probeCheckRetainSource(t *testing.T, urls []string, _ peer, fx *fixtures) {
	acl := filepath.Join(fx.dir, "retain.acl")
	alice, ack := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "alice", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("secret")})
	if ack.ReasonCode != 0 {
		t.Fatalf("alice: CONNACK %d", ack.ReasonCode)
	}
	for i, topic := range []string{"state/a", "end"} {
		alice.Send(&packet.Publish{Topic: topic, Payload: []byte("x"), Retain: true, QoS: 1, PacketID: uint16(i + 1)})
		if _, ok := alice.Next(5 * time.Second).(*packet.Puback); !ok {
			t.Fatal("no PUBACK")
		}
	}
	// sees reports whether a new subscriber gets state/a: it subscribes
	// to state/a, then to end, and reads until end's retained message,
	// which comes after state/a's.
	sees := func() bool {
		c, _ := connack(t, urls[0], &packet.Connect{ProtocolVersion: packet.V311, ClientID: "reader", CleanStart: true, KeepAlive: 30})
		defer c.NC.Close()
		for i, f := range []string{"state/a", "end"} {
			c.Send(&packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{{Filter: f}}})
		}
		seen := false
		for {
			switch p := c.Next(5 * time.Second).(type) {
			case *packet.Publish:
				if p.Topic == "end" {
					return seen
				}
				seen = seen || p.Topic == "state/a"
			}
		}
	}
	if !sees() {
		t.Fatal("alice's retained message did not reach a subscriber while she may publish there")
	}
	writeFixture(t, acl, retainACL(false))
	t.Cleanup(func() { writeFixture(t, acl, retainACL(true)) }) // for the next run of the file
	if !eventually(t, 15*time.Second, func() bool { return !sees() }) {
		t.Fatal("alice's retained message still reaches new subscribers after her write access was taken away")
	}
}
