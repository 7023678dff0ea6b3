package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/internal/devcert"
	"github.com/roost-mqtt/roost/internal/mosquittotest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// Each mosquitto.conf in testdata/mosquitto, written from mosquitto's
// documented options, is started by roost serve --config as it is and by
// a real mosquitto, and each listener of each is probed by a client (a
// round trip through it); a bridge configuration is probed through its
// topics against a mosquitto remote.
func TestServeMosquittoConfs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/mosquitto/*.conf")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test configurations: %v", err)
	}
	fixtures := confFixtures(t)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		conf := strings.ReplaceAll(string(src), "{dir}", fixtures.dir)
		if strings.Contains(conf, "{nic}") {
			nic := otherInterface()
			if nic == "" {
				t.Run(name, func(t *testing.T) { t.Skip("this machine has no network interface besides loopback") })
				continue
			}
			conf = strings.ReplaceAll(conf, "{nic}", nic)
		}
		fp, ok := featureProbes[name]
		if !ok {
			t.Run(name, func(t *testing.T) {
				t.Run("roost", func(t *testing.T) { probeRoostConf(t, conf) })
				t.Run("mosquitto", func(t *testing.T) { probeMosquittoConf(t, conf) })
			})
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Run("roost", func(t *testing.T) {
				fp.probe(t, confURLs(serveConf(t, conf)), roostPeer, fixtures)
			})
			// The converted roost.yaml behaves the same.
			t.Run("converted", func(t *testing.T) { fp.probe(t, serveConverted(t, conf), roostPeer, fixtures) })
			if fp.notMosquitto != "" {
				t.Logf("not run in mosquitto: %s", fp.notMosquitto)
				return
			}
			t.Run("mosquitto", func(t *testing.T) {
				m := mosquittotest.Start(t, strings.Split(conf, "\n")...)
				rendered := conf
				for _, p := range m.Ports {
					rendered = strings.Replace(rendered, mosquittotest.PortToken, strconv.Itoa(p), 1)
				}
				fp.probe(t, confURLs(rendered), mosquittoPeer, fixtures)
			})
		})
	}
}

// confURLs returns the client URL of each listener line of a rendered conf.
func confURLs(conf string) []string {
	var urls []string
	lines := strings.Split(conf, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "listener" {
			continue
		}
		ws, tls := false, false
		for _, next := range lines[i+1:] { // the listener's block
			next = strings.TrimSpace(next)
			if strings.HasPrefix(next, "listener ") {
				break
			}
			ws = ws || next == "protocol websockets"
			tls = tls || strings.HasPrefix(next, "certfile ")
		}
		scheme := map[[2]bool]string{{false, false}: "mqtt", {true, false}: "ws", {false, true}: "mqtts", {true, true}: "wss"}[[2]bool{ws, tls}]
		urls = append(urls, scheme+"://127.0.0.1:"+f[1])
	}
	return urls
}

func probeRoostConf(t *testing.T, src string) {
	remote := ""
	if strings.Contains(src, "{remote}") {
		remote = mosquittotest.Start(t).Addr
	}
	conf := serveConf(t, strings.ReplaceAll(src, "{remote}", remote))
	urls := confURLs(conf)
	probe(t, urls, remote)
}

func probeMosquittoConf(t *testing.T, src string) {
	remote := ""
	if strings.Contains(src, "{remote}") {
		remote = mosquittotest.Start(t).Addr
	}
	conf := strings.ReplaceAll(src, "{remote}", remote)
	m := mosquittotest.Start(t, strings.Split(conf, "\n")...)
	// mosquittotest's own listener comes first; the file's follow with
	// its ports in order.
	rendered := conf
	for _, p := range m.Ports {
		rendered = strings.Replace(rendered, mosquittotest.PortToken, strconv.Itoa(p), 1)
	}
	probe(t, confURLs(rendered), remote)
}

// probe makes a round trip through each listener and, with a remote,
// through the bridge topics of bridge.conf.
func probe(t *testing.T, urls []string, remote string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range urls {
		got := make(chan *client.Message, 10)
		c := connect(t, ctx, u)
		if _, err := c.Subscribe(ctx, client.Subscription{Filter: "probe/#", QoS: 1, Handler: func(m *client.Message) { got <- m }}); err != nil {
			t.Fatalf("%s: subscribe: %v", u, err)
		}
		if _, err := c.Publish(ctx, client.Message{Topic: "probe/1", Payload: []byte(u), QoS: 1}); err != nil {
			t.Fatalf("%s: publish: %v", u, err)
		}
		select {
		case m := <-got:
			if string(m.Payload) != u {
				t.Fatalf("%s: got %q", u, m.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("%s: no round trip", u)
		}
	}
	if remote == "" {
		return
	}
	local, far := connect(t, ctx, urls[0]), connect(t, ctx, "mqtt://"+remote)
	atLocal, atFar := make(chan string, 100), make(chan string, 100)
	sub := func(c *client.Client, ch chan string) {
		if _, err := c.Subscribe(ctx, client.Subscription{Filter: "#", QoS: 1, Handler: func(m *client.Message) { ch <- m.Topic }}); err != nil {
			t.Fatal(err)
		}
	}
	sub(local, atLocal)
	sub(far, atFar)
	await := func(ch chan string, topic string, pub func()) {
		t.Helper()
		tick := time.NewTicker(200 * time.Millisecond) // until the bridge is up
		defer tick.Stop()
		pub()
		for {
			select {
			case got := <-ch:
				if got == topic {
					return
				}
			case <-tick.C:
				pub()
			case <-ctx.Done():
				t.Fatalf("%s never arrived", topic)
			}
		}
	}
	publish := func(c *client.Client, topic string) func() {
		return func() { c.Publish(ctx, client.Message{Topic: topic, QoS: 1}) }
	}
	await(atFar, "site1/sensors/t", publish(local, "edge/sensors/t"))
	await(atLocal, "edge/cmd/go", publish(far, "site1/cmd/go"))
	await(atFar, "chat/a", publish(local, "chat/a"))
}

func connect(t *testing.T, ctx context.Context, url string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{Servers: []string{url}, Version: packet.V311, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}

// roost config convert turns each test mosquitto.conf into a roost.yaml
// that roost serve accepts; a YAML file or a refused option is an error.
func TestConfigConvert(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"testdata/mosquitto/basic.conf", "testdata/mosquitto/websockets.conf", "testdata/mosquitto/bridge.conf"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		conf := strings.ReplaceAll(strings.ReplaceAll(string(src), mosquittotest.PortToken, "0"), "{remote}", "127.0.0.1:1")
		dir := t.TempDir()
		in := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(in, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := runCmd(t, "config", "convert", in)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", f, code, stderr)
		}
		yml := filepath.Join(dir, "roost.yaml")
		if err := os.WriteFile(yml, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		var buf strings.Builder
		if _, code, ok := serveConfig([]string{"--config", yml}, &buf); !ok {
			t.Fatalf("%s: roost serve refuses the converted file (exit %d): %s\n%s", f, code, buf.String(), out)
		}
	}
	yml := writeConfig(t, "listeners:\n  - url: mqtt://127.0.0.1:0\n")
	if code, _, stderr := runCmd(t, "config", "convert", yml); code != 1 || !strings.Contains(stderr, "not a mosquitto configuration") {
		t.Errorf("YAML input: exit %d, %s", code, stderr)
	}
	bad := writeConfig(t, "listener 1883\nbridge_psk x\n")
	if code, _, stderr := runCmd(t, "config", "convert", bad); code != 1 || !strings.Contains(stderr, "roost.yaml:2: bridge_psk") {
		t.Errorf("refused option: exit %d, %s", code, stderr)
	}
	if code, _, _ := runCmd(t, "config", "explode"); code != 2 {
		t.Errorf("unknown subcommand: exit %d", code)
	}
}

// Each conf block of docs/migrating.md starts in roost serve (ports and
// files swapped for test ones) and in mosquitto, and a client connects.
func TestMigratingExamples(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```conf\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 2 {
		t.Fatalf("%d conf blocks in docs/migrating.md", len(blocks))
	}
	dir := t.TempDir()
	passwd, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	if code, _, stderr := runCmd(t, "passwd", "-b", "-c", "-H", "sha512-pbkdf2", passwd, "alice", "secret"); code != 0 {
		t.Fatalf("roost passwd: %s", stderr)
	}
	if err := os.WriteFile(acl, []byte("user alice\ntopic readwrite #\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := devcert.NewCA("migrating CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		conf := b[1]
		conf = regexp.MustCompile(`(?m)^listener \d+`).ReplaceAllString(conf, "listener {port} 127.0.0.1")
		conf = regexp.MustCompile(`(?m)^address .*$`).ReplaceAllString(conf, "address 127.0.0.1:1")
		conf = strings.NewReplacer("/etc/mosquitto/passwd", passwd, "/etc/mosquitto/acl", acl,
			"/var/lib/mosquitto/", filepath.Join(dir, fmt.Sprintf("data%d", i))+"/",
			"/etc/mosquitto/certs/cloud-ca.pem", caFile).Replace(conf)
		if !strings.Contains(conf, "listener") {
			conf = "listener {port} 127.0.0.1\nallow_anonymous true\n" + conf
		}
		t.Run(fmt.Sprint("block", i), func(t *testing.T) {
			t.Run("roost", func(t *testing.T) { startConf(t, conf, "alice", "secret") })
			t.Run("mosquitto", func(t *testing.T) {
				// mosquittotest writes allow_anonymous before these lines,
				// and mosquitto wants per_listener_settings before any
				// security option; false is its default anyway.
				conf := strings.Replace(conf, "per_listener_settings false\n", "", 1)
				// It also writes persistence_location, which mosquitto
				// refuses twice.
				conf = regexp.MustCompile(`(?m)^persistence_location .*$`).ReplaceAllString(conf, "")
				m := mosquittotest.Start(t, strings.Split(conf, "\n")...)
				connectAs(t, fmt.Sprintf("mqtt://127.0.0.1:%d", m.Ports[0]), "alice", "secret")
			})
		})
	}
}

// startConf runs roost serve on a mosquitto conf with {port} tokens and
// connects to its first listener with user and password.
func startConf(t *testing.T, conf, user, pass string) {
	conf = serveConf(t, conf)
	connectAs(t, confURLs(conf)[0], user, pass)
}

// serveConf runs roost serve on a mosquitto conf until the test ends, with
// every {port} token replaced by a free port, and returns the conf as run.
// A port taken between picking and binding (by another test's process)
// is retried with new ones, as mosquittotest does.
func serveConf(t *testing.T, src string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		conf := src
		for strings.Contains(conf, mosquittotest.PortToken) {
			conf = strings.Replace(conf, mosquittotest.PortToken, strconv.Itoa(mqtttest.FreePort(t)), 1)
		}
		path := filepath.Join(t.TempDir(), "mosquitto.conf")
		writeFixture(t, path, conf)
		code, log, ok := serveFile(t, path, len(confURLs(conf)))
		if ok {
			return conf
		}
		if strings.Contains(log, "address already in use") && attempt < 5 {
			t.Logf("attempt %d: a port was taken; trying others", attempt)
			continue
		}
		t.Fatalf("roost did not start from the mosquitto.conf (exit %d):\n%s\nlog:\n%s", code, conf, log)
	}
}

// writeFixture writes a fixture through a temporary file and a rename.
func writeFixture(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// serveFile runs roost serve --config path until the test ends. It
// reports whether want listeners became ready; if not, the server has
// exited and code and log say why.
func serveFile(t *testing.T, path string, want int) (code int, log string, ok bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"serve", "--config", path}, stdio{out: io.Discard, err: &stderr}) }()
	exited := false
	ready := eventually(t, 10*time.Second, func() bool {
		select {
		case code = <-exit:
			exited = true
			return true
		default:
		}
		return strings.Count(stderr.String(), "listener ready") == want
	})
	if ready && !exited {
		t.Cleanup(func() {
			cancel()
			if code := <-exit; code != 0 {
				t.Errorf("exit %d; log:\n%s", code, stderr.String())
			}
		})
		return 0, "", true
	}
	cancel()
	if !exited {
		code = <-exit
	}
	return code, stderr.String(), false
}

func connectAs(t *testing.T, url, user, pass string) {
	t.Helper()
	// Generous: roost passwd's 210,000 PBKDF2 iterations take seconds
	// under the race detector on a loaded machine.
	c, err := client.New(client.Options{Servers: []string{url}, Username: user, Password: pass, ConnectTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("%s as %s: %v", url, user, err)
	}
	c.Disconnect(ctx)
}
