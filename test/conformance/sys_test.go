package conformance

import (
	"errors"
	"testing"

	rc "github.com/roost-mqtt/roost/internal/rawclient"
)

// TestMQTT_Sec4_7_2_ClientPublishToSYSIgnored: $SYS is the server's; a
// client's PUBLISH to "$SYS/..." is not delivered to subscribers (section
// 4.7.2: the server SHOULD prevent clients using such topics to exchange
// messages). Dropping the message or closing the publisher are both fine.
func TestMQTT_Sec4_7_2_ClientPublishToSYSIgnored(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		sub := cleanConnect(t, addr, v, "sub")
		sub.subscribe(1, nil, filter("$SYS/forged/#", 0), filter("sync", 0))
		pub := cleanConnect(t, addr, v, "pub")
		pub.sendBad(
			rc.Publish{Version: v, Topic: "$SYS/forged/x", Payload: []byte("forged")}.Bytes(),
			rc.Publish{Version: v, Topic: "$SYS/forged/kept", Retain: true, Payload: []byte("forged")}.Bytes(),
			[]byte{0xC0, 0x00}) // PINGREQ: its answer shows the publishes were processed
		switch p, err := pub.conn.ReadPacket(readTimeout); {
		case err == nil && p.Type == rc.PINGRESP:
		case err == nil && p.Type == rc.DISCONNECT, errors.Is(err, rc.ErrClosed):
			t.Logf("publisher disconnected (%v %v)", p, err)
		default:
			t.Fatalf("publisher got %v (%v), want PINGRESP or a close", p, err)
		}
		other := cleanConnect(t, addr, v, "other")
		other.publish("sync", "after", 0, false, 0)
		sub.receiveTopic("sync", "after")
		sub.quiet(quietPeriod)
		late := cleanConnect(t, addr, v, "late")
		late.sub("$SYS/forged/#", 0)
		late.quiet(quietPeriod) // the retained forgery was not stored
	})
}

// TestMQTT_4_7_2_1_WildcardsDoNotMatchDollarTopics: filters starting with
// a wildcard MUST NOT match topic names starting with '$'; a filter naming
// the '$' level does.
func TestMQTT_4_7_2_1_WildcardsDoNotMatchDollarTopics(t *testing.T) {
	t.Parallel()
	forVersions(t, func(t *testing.T, v byte) {
		addr := startBroker(t, brokerConfig{})
		hash := cleanConnect(t, addr, v, "hash")
		hash.sub("#", 0)
		plus := cleanConnect(t, addr, v, "plus")
		plus.sub("+/x", 0)
		dollar := cleanConnect(t, addr, v, "dollar")
		dollar.sub("$test/#", 0)
		pub := cleanConnect(t, addr, v, "pub")
		pub.publish("$test/x", "hidden", 1, false, 1)
		pub.publish("sync/x", "visible", 1, false, 2)
		dollar.receiveTopic("$test/x", "hidden")
		// Messages from one publisher arrive in order, so "sync/x" coming
		// first shows "$test/x" was not sent.
		hash.receiveTopic("sync/x", "visible")
		plus.receiveTopic("sync/x", "visible")
	})
}
