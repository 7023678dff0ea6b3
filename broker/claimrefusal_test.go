package broker

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// unclaimedCluster is a Cluster that cannot record client-id owners while
// fail is set: an election, no quorum.
type unclaimedCluster struct {
	unconfirmedCluster
	fail atomic.Bool
}

func (u *unclaimedCluster) Claim(string) error {
	if u.fail.Load() {
		return errors.New("injected: no quorum")
	}
	return nil
}

// A CONNECT whose client id the cluster cannot record as owned here is
// closed without a CONNACK, in MQTT 5 and 3.1.1, not refused with 0x88 /
// 3: mqtt.js stops reconnecting after a refusing CONNACK, and the
// condition passes (conn.closeUnclaimed). It is counted as refused 0x88,
// and the same client connects once the cluster can record it, its
// persistent session as it was.
func TestUnclaimedConnectClosedWithoutConnack(t *testing.T) {
	t.Parallel()
	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(fmt.Sprint("v", v), func(t *testing.T) {
			cl := &unclaimedCluster{}
			srv, addr := startServer(t, Options{Cluster: cl})
			c := dial(t, addr, v)
			// 3.1.1: Clean Session 0 is the persistent session.
			c.Connect(&packet.Connect{ClientID: "c", CleanStart: v == packet.V5, Properties: persist})
			c.Subscribe("t", 1)
			c.Send(&packet.Disconnect{})
			c.ExpectClosed(5 * time.Second)

			cl.fail.Store(true)
			c = dial(t, addr, v)
			c.Send(&packet.Connect{ProtocolVersion: v, ClientID: "c", Properties: persist, KeepAlive: 30})
			if got := c.ExpectClosed(5 * time.Second); len(got) != 0 {
				t.Fatalf("got %v, want a close without CONNACK", got)
			}
			if n := srv.Stats().ConnectsRefused[packet.ServerUnavailable]; n != 1 {
				t.Errorf("refused 0x88 counted %d times, want 1", n)
			}

			cl.fail.Store(false)
			c = dial(t, addr, v)
			if ack := c.Connect(&packet.Connect{ClientID: "c", Properties: persist}); !ack.SessionPresent {
				t.Fatal("after the cluster recovered: session not present")
			}
		})
	}
}
