package security

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// start runs a broker with opts on 127.0.0.1 and returns its address.
func start(t *testing.T, opts broker.Options) string {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	_, addr := brokertest.Start(t, opts)
	return addr
}

// conn is a raw client connected as user (anonymous if "") with client id.
func conn(t *testing.T, addr string, v packet.Version, user, id string) *mqtttest.Client {
	t.Helper()
	c := mqtttest.Dial(t, addr, v)
	c.Connect(&packet.Connect{ClientID: id, CleanStart: true, UsernameFlag: user != "", Username: user})
	return c
}

// writeFile writes a file in the test's temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// need returns the path of a program the tests cannot do without.
func need(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run ./scripts/test.sh (it installs mosquitto)", name)
	}
	return p
}

// publishes lists the PUBLISH packets among ps by topic.
func publishes(ps []packet.Packet) []string {
	var topics []string
	for _, p := range ps {
		if pub, ok := p.(*packet.Publish); ok {
			topics = append(topics, pub.Topic)
		}
	}
	return topics
}

// mqttDialWill connects client id with a will on topic.
func mqttDialWill(t *testing.T, addr, id, topic string) *mqtttest.Client {
	t.Helper()
	c := mqtttest.Dial(t, addr, packet.V311)
	c.Connect(&packet.Connect{ClientID: id, CleanStart: true, WillFlag: true, WillTopic: topic, WillPayload: []byte(id)})
	return c
}
