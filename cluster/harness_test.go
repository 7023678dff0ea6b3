package cluster_test

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
	"github.com/roost-mqtt/roost/internal/clustertest"
	"github.com/roost-mqtt/roost/internal/netfault"
)

// The process tests of this package; cluster/internal/harness has what
// they share with cluster/repro's, and why they run harness.FeatureLanes
// at a time.
// This file is the helpers only this package's tests use.

func TestMain(m *testing.M) { harness.Main(m, harness.FeatureLanes) }

// retainedOn subscribes a new client on nd to filter and returns the
// payloads of the retained messages it is sent within d (sorted).
func retainedOn(t *testing.T, nd *harness.Node, id, filter string, d time.Duration) []string {
	t.Helper()
	return clustertest.Retained(t, nd.MQTT, id, filter, d)
}

// readRetainedOn is retainedOn returning an error when the client cannot
// connect or subscribe: for use inside eventually.
func readRetainedOn(t *testing.T, nd *harness.Node, id, filter string, d time.Duration) ([]string, error) {
	t.Helper()
	return clustertest.ReadRetained(t, nd.MQTT, id, filter, d)
}

// rejectCut cuts nd off from the other nodes with a firewall that rejects
// (TCP resets, ICMP), so the routes close at once, and waits until nd and
// peer have dropped each other.
func rejectCut(t *testing.T, nf *netfault.Net, nd, peer *harness.Node) {
	t.Helper()
	nf.SetMode(netfault.Reject)
	if err := nf.Isolate(nd.IP); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, harness.PartitionBound, func() error {
		if !harness.GoneFrom(peer, nd) || !harness.GoneFrom(nd, peer) {
			return fmt.Errorf("%s and %s have not dropped each other yet", peer.Name, nd.Name)
		}
		return nil
	})
}

// healTakesOver heals nf's cut and checks that stale, a connection on the
// node that was cut off whose client id was claimed on the majority
// meanwhile, is still up until then and taken over after it (DISCONNECT
// 0x8E): one connection per client id again.
func healTakesOver(t *testing.T, nf *netfault.Net, stale *harness.Client) {
	t.Helper()
	select {
	case <-stale.Done():
		t.Fatal("the connection on the cut-off node ended during the cut; the test needs it to end only after")
	default:
	}
	if err := nf.Heal(); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-stale.Dis:
		if d.ReasonCode != 0x8E {
			t.Errorf("stale connection got DISCONNECT 0x%02X, want 0x8E Session taken over", d.ReasonCode)
		}
	case <-stale.Done():
		// Closed before its DISCONNECT was read: the server's 0x8E is a
		// courtesy [MQTT-3.1.4-3 asks only that the old connection be
		// closed]; one connection per client id is what counts.
		select {
		case d := <-stale.Dis:
			if d.ReasonCode != 0x8E {
				t.Errorf("stale connection got DISCONNECT 0x%02X, want 0x8E Session taken over", d.ReasonCode)
			}
		default:
			t.Logf("the stale connection was closed without a DISCONNECT it could read")
		}
	case <-time.After(harness.PartitionBound):
		t.Fatal("the stale connection on the formerly cut-off node is still up: two connections for one client id")
	}
}

// tcpConns returns the established IPv4 TCP connections of this machine as
// local and remote HOST:PORT pairs, from /proc/net/tcp.
func tcpConns(t *testing.T) [][2]string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	var out [][2]string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		out = append(out, [2]string{procAddr(f[1]), procAddr(f[2])})
	}
	return out
}

// procAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func procAddr(s string) string {
	ipHex, portHex, _ := strings.Cut(s, ":")
	ip, _ := hex.DecodeString(ipHex)
	port, _ := strconv.ParseUint(portHex, 16, 16)
	if len(ip) != 4 {
		return s
	}
	return net.JoinHostPort(net.IPv4(ip[3], ip[2], ip[1], ip[0]).String(), strconv.Itoa(int(port)))
}
