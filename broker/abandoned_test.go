//go:build linux && !roost_portable

package broker

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/eventually"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// stallClaims is a Cluster whose second claim waits until release is
// closed: a node catching up, or a restored session settling, longer than
// the client waits for its CONNACK.
type stallClaims struct {
	unconfirmedCluster
	n                atomic.Int32
	entered, release chan struct{}
}

func newStallClaims() *stallClaims {
	return &stallClaims{entered: make(chan struct{}), release: make(chan struct{})}
}

func (s *stallClaims) Claim(string) error {
	if s.n.Add(1) == 2 {
		close(s.entered)
		<-s.release
	}
	return nil
}

// goneClaims is stallClaims as a GoneClaimer: after its wait it asks
// whether the client is gone, as the cluster's Node does.
type goneClaims struct{ *stallClaims }

func (g goneClaims) ClaimUnless(id string, gone func() bool) error {
	if err := g.Claim(id); err != nil {
		return err
	}
	if gone() {
		return ErrClientGone
	}
	return nil
}

// A CONNECT whose client closed the connection while the cluster claim
// waited (it gave up on its CONNACK and connected again) must not take the
// session over from the client's next connection when the claim ends:
// the live connection keeps its session, no 0x8E (seed 50 of session 21,
// where two CONNECTs waited for a restored session's settle on one node
// and the older completed last). Both a Cluster with only Claim (the
// broker looks before the takeover) and a GoneClaimer (the cluster looks
// before it claims) are covered.
func TestAbandonedConnectTakesNothingOver(t *testing.T) {
	t.Parallel()
	for _, unless := range []bool{false, true} {
		t.Run(fmt.Sprint("ClaimUnless=", unless), func(t *testing.T) {
			t.Parallel()
			st := newStallClaims()
			var cl Cluster = st
			if unless {
				cl = goneClaims{st}
			}
			srv, addr := startServer(t, Options{Cluster: cl})
			c := dial(t, addr, packet.V5)
			c.Connect(&packet.Connect{ClientID: "sc", Properties: persist})
			c.Subscribe("t", 1)
			c.Send(&packet.Disconnect{})
			c.ExpectClosed(5 * time.Second)

			stale := dial(t, addr, packet.V5)
			stale.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: "sc", Properties: persist, KeepAlive: 30})
			select {
			case <-st.entered:
			case <-time.After(mqtttest.AckBound):
				t.Fatal("the stale CONNECT's claim never started")
			}
			stale.NC.Close() // the client gave up waiting for CONNACK

			live := dial(t, addr, packet.V5)
			if ack := live.Connect(&packet.Connect{ClientID: "sc", Properties: persist, KeepAlive: 30}); !ack.SessionPresent {
				t.Fatal("the client's next connection: session not present")
			}
			close(st.release)
			eventually.True(t, 10*time.Second, func() bool {
				d := srv.Stats().Disconnects
				return d["abandoned"]+d["taken_over"] > 0
			}, "the stale CONNECT did not end after its claim")

			live.Send(&packet.Pingreq{})
			if p, err := live.Read(10 * time.Second); err != nil {
				t.Fatalf("the live connection after the stale claim ended: %v", err)
			} else if _, ok := p.(*packet.Pingresp); !ok {
				t.Fatalf("the live connection got %s, want PINGRESP: the stale CONNECT took the session over", describe(p))
			}
			if d := srv.Stats().Disconnects; d["abandoned"] != 1 || d["taken_over"] != 0 {
				t.Errorf("disconnects %v: want the stale CONNECT abandoned once and nothing taken over", d)
			}
		})
	}
}

func describe(p packet.Packet) string {
	if d, ok := p.(*packet.Disconnect); ok {
		return fmt.Sprintf("DISCONNECT 0x%02X", byte(d.ReasonCode))
	}
	return p.Type().String()
}
