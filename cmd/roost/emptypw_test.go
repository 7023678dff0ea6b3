package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// A user whose password file entry is the hash of the empty password (as
// mosquitto_passwd writes for `-b FILE USER ""`) cannot connect: not
// without a password (no Password Flag), not with an empty one. Checked
// with mosquitto_pub and with raw CONNECTs that set exactly those flags,
// for MQTT 3.1.1 and 5.0.
func TestServeEmptyAndMissingPassword(t *testing.T) {
	t.Parallel()
	mosquittoPasswd, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd not installed (Debian mosquitto)")
	}
	mosquittoPub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed (Debian mosquitto-clients)")
	}
	cfg := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\nauth:\n  password_file: passwd\n")
	writeEmptyPasswordFile(t, mosquittoPasswd, filepath.Join(filepath.Dir(cfg), "passwd"))
	// One broker per version: more than 5 failed logins from one address
	// would get the next CONNECTs held (password guessing).
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		emptyPasswordCase(t, mosquittoPub, cfg, v)
	}
}

// writeEmptyPasswordFile has mosquitto_passwd write users "empty", whose
// entry is the hash of the empty password, and "bob" (password bob-pw).
func writeEmptyPasswordFile(t *testing.T, mosquittoPasswd, passwd string) {
	t.Helper()
	if err := os.WriteFile(passwd, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, up := range [][2]string{{"empty", ""}, {"bob", "bob-pw"}} {
		if out, err := exec.Command(mosquittoPasswd, "-b", passwd, up[0], up[1]).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %s: %v: %s", up[0], err, out)
		}
	}
}

// The console and API's Basic authentication (users_from_password_file)
// follows the same rule: "empty" with an empty password is refused.
func TestServeHTTPEmptyPassword(t *testing.T) {
	t.Parallel()
	mosquittoPasswd, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd not installed (Debian mosquitto)")
	}
	cfg := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\nauth:\n  password_file: passwd\n"+
		"http:\n  addr: 127.0.0.1:0\n  users_from_password_file: true\n")
	writeEmptyPasswordFile(t, mosquittoPasswd, filepath.Join(filepath.Dir(cfg), "passwd"))
	b := startServe(t, "--config", cfg, "--memory")
	var base string
	if !eventually(t, 10*time.Second, func() bool {
		m := httpReadyLine.FindStringSubmatch(b.log.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	}) {
		t.Fatalf("no http ready line; log:\n%s", b.log.String())
	}
	for _, tc := range []struct {
		user, pass string
		code       int
	}{{"empty", "", http.StatusUnauthorized}, {"bob", "", http.StatusUnauthorized}, {"bob", "bob-pw", http.StatusOK}} {
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		req.SetBasicAuth(tc.user, tc.pass)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.code {
			t.Errorf("Basic %s:%q: %d, want %d", tc.user, tc.pass, res.StatusCode, tc.code)
		}
	}
}

func emptyPasswordCase(t *testing.T, mosquittoPub, cfg string, v packet.Version) {
	b := startServe(t, "--config", cfg, "--memory")
	host, port, _ := strings.Cut(b.addr, ":")
	pub := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		version := map[packet.Version]string{packet.V311: "mqttv311", packet.V5: "mqttv5"}[v]
		args = append([]string{"-h", host, "-p", port, "-V", version, "-t", "t", "-m", "x", "-q", "1"}, args...)
		out, err := exec.CommandContext(ctx, mosquittoPub, args...).CombinedOutput()
		if err != nil && !strings.Contains(strings.ToLower(string(out)), "bad user name or password") {
			t.Errorf("mosquitto_pub %q: %v: %s", args, err, out)
		}
		return err
	}
	if pub("-u", "empty") == nil {
		t.Errorf("%v: user with the empty password's hash connected without a password", v)
	}
	if pub("-u", "empty", "-P", "") == nil {
		t.Errorf("%v: user with the empty password's hash connected with an empty password", v)
	}
	if pub("-u", "bob") == nil {
		t.Errorf("%v: bob connected without a password", v)
	}
	if pub("-u", "bob", "-P", "bob-pw") != nil {
		t.Errorf("%v: bob with his password refused", v)
	}
	for _, flag := range []bool{false, true} {
		c := mqtttest.Dial(t, b.addr, v)
		c.Send(&packet.Connect{ProtocolVersion: v, ClientID: "raw", CleanStart: true,
			UsernameFlag: true, Username: "empty", PasswordFlag: flag})
		ack, ok := c.Next(5 * time.Second).(*packet.Connack)
		want := packet.BadUserNameOrPassword
		if v == packet.V311 {
			want = 4 // 3.1.1: bad user name or password
		}
		if !ok || ack.ReasonCode != want {
			t.Errorf("%v, password flag %v: %+v, want CONNACK 0x%02X", v, flag, ack, byte(want))
		}
	}
	// mosquitto_pub -P "" sends the Password Flag with no bytes: the log
	// (written as each refused connection closes) tells the two apart.
	counts := func() string {
		log := b.log.String()
		return fmt.Sprintf("no password %d, empty password %d", strings.Count(log, "no password"), strings.Count(log, "empty password"))
	}
	if want := "no password 3, empty password 2"; !eventually(t, 5*time.Second, func() bool { return counts() == want }) {
		t.Errorf("%v: refusals logged: %s, want %s; log:\n%s", v, counts(), want, b.log.String())
	}
}
