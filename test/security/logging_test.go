package security

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// Passwords, payloads (of PUBLISH, wills, malformed packets) and the
// hook's own credentials never reach the log, even at debug level, on
// success or failure.
func TestSecretsNotLogged(t *testing.T) {
	t.Parallel()
	secrets := []string{
		"s3cret-alice", "wrong-guess-123", "hook-pw-456", "hookpass-789",
		"publish-secret-payload", "will-secret-payload", "malformed-secret-payload",
	}
	logs := &mqtttest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	pwFile := writeFile(t, "passwd", "")
	// A single-round SHA-512 entry: quick to check under -race.
	if out, err := exec.Command(need(t, "mosquitto_passwd"), "-H", "sha512", "-b", pwFile, "alice", "s3cret-alice").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	pw, err := auth.LoadPasswordFile(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"allow": tru`)) // a broken answer: logged as a failure
	}))
	u, _ := url.Parse(svc.URL)
	u.User = url.UserPassword("hookuser", "hookpass-789")
	hook := auth.NewHTTPHook(auth.HTTPHookOptions{URL: u.String(), Timeout: 500 * time.Millisecond, Logger: log})

	opts := broker.Options{Logger: log, SysInterval: -1,
		Authenticator: &auth.Authenticator{Passwords: pw, Hook: hook}, Authorizer: auth.All(hook)}
	s, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}()
	addr := ln.Addr().String()

	connect := func(v packet.Version, user, pass string, will bool) (*mqtttest.Client, packet.ReasonCode) {
		c := mqtttest.Dial(t, addr, v)
		p := &packet.Connect{ProtocolVersion: v, ClientID: "c-" + user, CleanStart: true,
			UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pass)}
		if will {
			p.WillFlag, p.WillTopic, p.WillPayload = true, "wills/"+user, []byte("will-secret-payload")
		}
		c.Send(p)
		return c, c.Next(2 * time.Second).(*packet.Connack).ReasonCode
	}
	if _, rc := connect(packet.V5, "alice", "wrong-guess-123", false); rc != packet.BadUserNameOrPassword {
		t.Errorf("wrong password: 0x%02X", byte(rc))
	}
	if _, rc := connect(packet.V311, "bob", "hook-pw-456", false); rc == 0 {
		t.Error("bob accepted by a broken hook")
	}
	alice, rc := connect(packet.V5, "alice", "s3cret-alice", true)
	if rc != 0 {
		t.Fatalf("alice: 0x%02X", byte(rc))
	}
	// The hook is broken, so the publish is refused; it is logged, the
	// payload is not.
	alice.Send(&packet.Publish{Topic: "t/1", QoS: 1, PacketID: 1, Payload: []byte("publish-secret-payload")})
	alice.Next(2 * time.Second)
	// A PUBLISH with a wildcard topic: a bad packet, logged with why.
	alice.Send(&packet.Publish{Topic: "t/ok", Payload: []byte("x")})
	b, _ := (&packet.Publish{Topic: "t/ok", Payload: []byte("malformed-secret-payload")}).Encode(nil, packet.V5)
	b[4] = '#' // "t/ok" -> "#/ok"
	alice.NC.Write(b)
	alice.ExpectClosed(2 * time.Second) // the will is due: published (refused by the hook) and logged
	// The hook service gone: the error names its URL, without the password.
	svc.Close()
	if _, rc := connect(packet.V311, "bob", "hook-pw-456", false); rc == 0 {
		t.Error("bob accepted with the hook down")
	}

	mqtttest.Eventually(t, 2*time.Second, func() bool {
		return strings.Contains(logs.String(), "will") || strings.Contains(logs.String(), "closing connection")
	})
	out := logs.String()
	if testing.Verbose() {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "hook") || strings.Contains(l, "bad packet") {
				t.Log(l)
			}
		}
	}
	for _, want := range []string{"client connected", "auth hook failed", "bad packet"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q: the test did not exercise what it means to", want)
		}
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			i := strings.Index(out, s)
			t.Errorf("log contains the secret %q: …%s…", s, out[max(0, i-200):min(len(out), i+100)])
		}
	}
}
