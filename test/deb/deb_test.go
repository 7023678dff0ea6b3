// Package deb tests Roost's Debian package for real: it builds it with
// scripts/package.sh, installs it with dpkg on this machine, runs the
// service's command line as the roost user the way systemd would (this
// machine has no running systemd), and removes and purges it, checking
// that nothing is left. It needs root and dpkg; it puts the machine back
// as it found it (the roost system user too, if the test created it).
package deb

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/mqtttest"
)

const testVersion = "0.0.0~debtest1"

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs a package: needs root (the test command runs as root in CI)")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("needs dpkg: a Debian or Ubuntu machine")
	}
	if err := exec.Command("dpkg-query", "-W", "roost").Run(); err == nil {
		t.Skip("a roost package is installed on this machine; the test would replace it")
	}
	_, userErr := user.Lookup("roost")
	_, groupErr := user.LookupGroup("roost")
	t.Cleanup(func() {
		// Put the machine back: the package purged, and the system user
		// the package made (and policy leaves) removed if it was not here.
		if exec.Command("dpkg-query", "-W", "roost").Run() == nil {
			exec.Command("dpkg", "--purge", "roost").Run()
		}
		if userErr != nil {
			exec.Command("userdel", "roost").Run()
		}
		if groupErr != nil {
			exec.Command("groupdel", "roost").Run()
		}
	})

	dist := t.TempDir()
	build := exec.Command("../../scripts/package.sh", "amd64")
	// xz at dpkg-deb's default level 6 took 36 of this package's 40 s of
	// CPU (one core, December 2026) to pack a 36 MB binary; level 1 takes
	// 6 s and makes the same xz format, which dpkg reads the same way. The
	// release build keeps the default. DPKG_DEB_COMPRESSOR_LEVEL is read by
	// dpkg-deb 1.21.10 and later; package.sh names the type (-Zxz), not
	// the level.
	build.Env = append(os.Environ(), "ROOST_VERSION="+testVersion, "DIST_DIR="+dist, "DPKG_DEB_COMPRESSOR_LEVEL=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("package.sh: %v\n%s", err, out)
	}
	deb := filepath.Join(dist, "roost_"+testVersion+"_amd64.deb")
	contents := run(t, "dpkg-deb", "--contents", deb)
	run(t, "dpkg", "-i", deb)

	t.Run("files", func(t *testing.T) { checkInstalled(t) })
	t.Run("unit", func(t *testing.T) { checkUnit(t) })
	t.Run("service", func(t *testing.T) { runService(t) })

	run(t, "dpkg", "-r", "roost")
	for _, p := range []string{"/usr/bin/roost", "/lib/systemd/system/roost.service"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s is still there after dpkg -r", p)
		}
	}
	for _, p := range []string{"/etc/roost/roost.yaml", "/var/lib/roost"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("dpkg -r removed %s: the configuration and the data stay until purge", p)
		}
	}
	out := run(t, "dpkg", "--purge", "roost")
	if !strings.Contains(out, "removing /var/lib/roost") {
		t.Errorf("purge does not say it removes the data:\n%s", out)
	}
	for _, line := range strings.Split(contents, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		p := strings.TrimPrefix(f[5], ".")
		if p == "/" || strings.HasSuffix(p, "/") && isShared(p) {
			continue
		}
		if _, err := os.Lstat(strings.TrimSuffix(p, "/")); err == nil {
			t.Errorf("%s is still there after purge", p)
		}
	}
	if _, err := os.Stat("/var/lib/roost"); err == nil {
		t.Error("/var/lib/roost is still there after purge")
	}
}

// isShared says whether a directory of the package is one that other
// packages use too (dpkg leaves those).
func isShared(dir string) bool {
	switch dir {
	case "/etc/", "/lib/", "/lib/systemd/", "/lib/systemd/system/", "/usr/", "/usr/bin/", "/usr/share/", "/usr/share/doc/":
		return true
	}
	return false
}

func checkInstalled(t *testing.T) {
	check := func(path string, mode os.FileMode, owner, group string) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Error(err)
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		u, _ := user.LookupId(fmt.Sprint(st.Uid))
		g, _ := user.LookupGroupId(fmt.Sprint(st.Gid))
		if fi.Mode().Perm() != mode || u == nil || u.Username != owner || g == nil || g.Name != group {
			t.Errorf("%s: %v %v:%v, want %v %s:%s", path, fi.Mode().Perm(), u, g, mode, owner, group)
		}
	}
	check("/usr/bin/roost", 0o755, "root", "root")
	check("/etc/roost", 0o750, "root", "roost")
	check("/etc/roost/roost.yaml", 0o640, "root", "roost")
	check("/var/lib/roost", 0o750, "roost", "roost")
	check("/lib/systemd/system/roost.service", 0o644, "root", "root")
	if out := run(t, "/usr/bin/roost", "version"); !strings.Contains(out, "roost "+testVersion) {
		t.Errorf("roost version says %q, want %s", out, testVersion)
	}
	if out := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "roost"); !strings.Contains(out, "/etc/roost/roost.yaml") {
		t.Errorf("/etc/roost/roost.yaml is not a conffile: %q", out)
	}
	u, err := user.Lookup("roost")
	if err != nil {
		t.Fatal(err)
	}
	if u.HomeDir != "/var/lib/roost" {
		t.Errorf("roost's home is %s", u.HomeDir)
	}
	if pw := run(t, "getent", "passwd", "roost"); !strings.HasSuffix(strings.TrimSpace(pw), ":/usr/sbin/nologin") {
		t.Errorf("roost user can log in: %s", pw)
	}
}

func checkUnit(t *testing.T) {
	unit := readUnit(t)
	for key, want := range map[string]string{
		"Type": "notify", "User": "roost", "Group": "roost", "Restart": "on-failure",
		"ExecReload": "/bin/kill -HUP $MAINPID", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/roost",
		"NoNewPrivileges": "yes", "PrivateTmp": "yes", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
	} {
		if unit[key] != want {
			t.Errorf("roost.service %s=%q, want %q", key, unit[key], want)
		}
	}
	if unit["LimitNOFILE"] == "" {
		t.Error("roost.service sets no LimitNOFILE")
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze is not installed: unit not verified by systemd")
		return
	}
	out, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/roost.service").CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// readUnit reads roost.service's key=value lines (the last of each key).
func readUnit(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("/lib/systemd/system/roost.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			m[k] = v
		}
	}
	return m
}

var readyLine = regexp.MustCompile(`msg="listener ready" addr=(\S+)`)

// service is the unit's ExecStart running as its User and Group, with
// the environment systemd gives a Type=notify service.
type service struct {
	cmd    *exec.Cmd
	logs   *mqtttest.LogBuffer
	notify *net.UnixConn
	addr   string
	exited chan struct{}
}

func startService(t *testing.T, unit map[string]string) *service {
	t.Helper()
	// The roost user must reach the socket, as it reaches systemd's (a
	// test's TempDir is private to root).
	dir, err := os.MkdirTemp("", "roost-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o777)
	args := strings.Fields(unit["ExecStart"])
	// The one change to the unit's command line: a loopback listener on a
	// port the OS picks, so the test takes nobody's port 1883.
	args = append(args, "--listen", "mqtt://127.0.0.1:0")
	setpriv := append([]string{"--reuid=" + unit["User"], "--regid=" + unit["Group"], "--init-groups", "--"}, args...)
	s := &service{cmd: exec.Command("setpriv", setpriv...), logs: new(mqtttest.LogBuffer), notify: nc, exited: make(chan struct{})}
	s.cmd.Dir = "/"
	s.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET=" + sock, "LANG=C.UTF-8"}
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() { s.stop(t); nc.Close() })
	if got := s.next(t); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// The log line was written before READY=1; it may still be in the pipe.
	var m []string
	mqtttest.Eventually(t, 10*time.Second, func() bool {
		m = readyLine.FindStringSubmatch(s.logs.String())
		return m != nil
	})
	s.addr = m[1]
	return s
}

func (s *service) next(t *testing.T) string {
	t.Helper()
	s.notify.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 512)
	n, err := s.notify.Read(b)
	if err != nil {
		t.Fatalf("no notification from the service: %v\n%s", err, s.logs)
	}
	return string(b[:n])
}

// stop does what systemctl stop does: SIGTERM, then wait.
func (s *service) stop(t *testing.T) {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		t.Errorf("the service did not stop within 30 s of SIGTERM")
	}
	if !s.cmd.ProcessState.Success() {
		t.Errorf("the service exited with %v:\n%s", s.cmd.ProcessState, s.logs)
	}
}

func runService(t *testing.T) {
	unit := readUnit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	s := startService(t, unit)
	pub, err := client.New(client.Options{Servers: []string{"mqtt://" + s.addr}, ClientID: "deb-pub"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatalf("connect: %v\n%s", err, s.logs)
	}
	if _, err := pub.Publish(ctx, client.Message{Topic: "deb/state", Payload: []byte("kept"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	pub.Disconnect(ctx)

	// systemctl reload: SIGHUP; the service stays up.
	s.cmd.Process.Signal(syscall.SIGHUP)
	mqtttest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(s.logs.String(), "SIGHUP") })
	select {
	case <-s.exited:
		t.Fatalf("the service exited on SIGHUP:\n%s", s.logs)
	default:
	}
	s.stop(t)
	if !strings.Contains(s.logs.String(), `msg=stopped`) {
		t.Errorf("no clean stop in the log:\n%s", s.logs)
	}
	if files, _ := os.ReadDir("/var/lib/roost"); len(files) == 0 {
		t.Fatal("the service kept nothing in /var/lib/roost")
	}

	// systemctl restart: the retained message survived in /var/lib/roost.
	s2 := startService(t, unit)
	got := make(chan string, 1)
	sub, err := client.New(client.Options{Servers: []string{"mqtt://" + s2.addr}, ClientID: "deb-sub"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(context.Background())
	if _, err := sub.Subscribe(ctx, client.Subscription{Filter: "deb/state", QoS: 1, Handler: func(m *client.Message) {
		select {
		case got <- string(m.Payload):
		default:
		}
	}}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "kept" {
			t.Fatalf("retained payload %q after restart", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the retained message did not survive the restart:\n%s", s2.logs)
	}
}
