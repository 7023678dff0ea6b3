package conformance

import (
	"fmt"
	"testing"
	"time"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// willConnect connects client id with a will on topic "will/<id>",
// payload "gone", QoS 1. connProps and willProps are 5.0 properties.
func willConnect(t *testing.T, addr string, v byte, id string, retain bool, connProps, willProps []byte) *client {
	t.Helper()
	c, _ := connect(t, addr, rc.Connect{
		Version: v, ClientID: id, Clean: true, KeepAlive: 60, Props: connProps,
		Will: &rc.Will{Topic: "will/" + id, Payload: "gone", QoS: 1, Retain: retain, Props: willProps},
	})
	return c
}

// watcher subscribes to the will of client id, under an id of its own.
func watcher(t *testing.T, addr string, v byte, id string) *client {
	t.Helper()
	w := cleanConnect(t, addr, v, "watcher-"+id)
	w.sub("will/"+id, 1)
	return w
}

// TestMQTT_3_14_4_3_NoWillAfterDisconnect: after a normal DISCONNECT the
// server MUST discard the will without publishing it (in 5.0, for reason
// code 0x00).
func TestMQTT_3_14_4_3_NoWillAfterDisconnect(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		w := watcher(t, addr, v, "polite")
		c := willConnect(t, addr, v, "polite", false, nil, nil)
		c.disconnect()
		w.quiet(2 * quietPeriod)
	})
}

// TestMQTT_3_1_2_8_WillOnAbruptClose: the will MUST be published when the
// connection closes without a DISCONNECT: on a network close, and when the
// server closes it for a protocol error.
func TestMQTT_3_1_2_8_WillOnAbruptClose(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		t.Run("network_close", func(t *testing.T) {
			t.Parallel()
			w := watcher(t, addr, v, "crash")
			c := willConnect(t, addr, v, "crash", false, nil, nil)
			c.drop()
			if m := w.receiveTopic("will/crash", "gone"); m.QoS != 1 {
				t.Fatalf("will delivered at QoS %d, want 1", m.QoS)
			}
		})
		t.Run("protocol_error", func(t *testing.T) {
			t.Parallel()
			w := watcher(t, addr, v, "rude")
			c := willConnect(t, addr, v, "rude", false, nil, nil)
			c.sendBad(rc.Frame(0x36, rc.Str("a"), []byte{0, 1}, noProps(v))) // PUBLISH QoS 3
			c.expectClosed()
			w.receiveTopic("will/rude", "gone")
		})
	})
}

// TestMQTT_3_1_2_17_WillRetain: a will with Will Retain 1 MUST be published
// as a retained message.
func TestMQTT_3_1_2_17_WillRetain(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		w := watcher(t, addr, v, "keeper")
		c := willConnect(t, addr, v, "keeper", true, nil, nil)
		c.drop()
		w.receiveTopic("will/keeper", "gone")
		late := cleanConnect(t, addr, v, "late")
		late.sub("will/#", 1)
		if m := late.receiveTopic("will/keeper", "gone"); !m.Retain {
			t.Fatal("will stored without RETAIN")
		}
	})
}

// TestMQTT5_Sec3_1_3_2_2_WillDelayInterval: the will is published only
// after the Will Delay Interval (1s here) has passed.
func TestMQTT5_Sec3_1_3_2_2_WillDelayInterval(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		w := watcher(t, addr, 5, "slow")
		c := willConnect(t, addr, 5, "slow", false,
			rc.PropU32(rc.PropSessionExpiry, 30), rc.PropU32(rc.PropWillDelay, 1))
		c.drop()
		start := time.Now()
		w.quiet(700 * time.Millisecond)
		w.receiveTopic("will/slow", "gone")
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Fatalf("will published %v after the close, want >= 1s", d)
		}
	})
}

// TestMQTT5_3_1_3_9_WillCancelledByReconnect: if the session is resumed
// before the Will Delay Interval passes, the server MUST NOT send the will.
//
// The resume must come back within the delay for that to hold: on a busy
// machine a WSS resume can take longer, and then the will is due. Such a
// try proves nothing and is made again under a new client id.
func TestMQTT5_3_1_3_9_WillCancelledByReconnect(t *testing.T) {
	t.Parallel()
	const delay = 3 * time.Second
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		for try := 0; try < 5; try++ {
			id := fmt.Sprintf("back%d", try)
			w := watcher(t, addr, 5, id)
			c := willConnect(t, addr, 5, id, false,
				rc.PropU32(rc.PropSessionExpiry, 30), rc.PropU32(rc.PropWillDelay, uint32(delay/time.Second)))
			c.drop()
			dropped := time.Now()
			time.Sleep(200 * time.Millisecond)
			again, ack := connect(t, addr, persistent(5, id))
			if took := time.Since(dropped); took >= delay {
				t.Logf("resume %d took %v, not within the %v will delay: trying again", try, took, delay)
				continue
			}
			if !ack.SessionPresent {
				t.Fatal("Session Present 0 on resume within the session expiry")
			}
			// Quiet until well past the moment the will would have been due.
			w.quiet(time.Until(dropped.Add(delay + 800*time.Millisecond)))
			again.ping()
			return
		}
		t.Fatal("no resume within the will delay in 5 tries: the machine is too slow to tell")
	})
}

// TestMQTT5_Sec3_14_2_1_DisconnectWithWillMessage: DISCONNECT with reason
// code 0x04 asks the server to publish the will anyway.
func TestMQTT5_Sec3_14_2_1_DisconnectWithWillMessage(t *testing.T) {
	t.Parallel()
	forTransports(t, func(t *testing.T) {
		addr := startBroker(t, brokerConfig{})
		w := watcher(t, addr, 5, "leaving")
		c := willConnect(t, addr, 5, "leaving", false, nil, nil)
		c.send([]byte{
			0xE0, 0x02, // DISCONNECT, remaining length 2
			0x04, // reason: Disconnect with Will Message
			0x00, // property length 0
		})
		c.closedAfter()
		w.receiveTopic("will/leaving", "gone")
	})
}
