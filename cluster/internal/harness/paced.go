package harness

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// PublishPaced publishes on topic from *pub, client id id on nd, while
// more(i) says so for message i: QoS 1 and 2 in turn, payloads
// "q<QoS>-<i, six digits>", 20 ms apart as the checker's publishers. A
// publish whose connection closed before its acknowledgement has an
// unknown outcome (counted, not owed; *pub is dialled again); a refusal
// fails the test. It returns the acknowledged payloads.
func PublishPaced(t *testing.T, nd *Node, pub **Client, id, topic string, more func(i int) bool) (acked []string, unknown int) {
	t.Helper()
	for i := 0; more(i); i++ {
		qos := byte(1 + i%2)
		p := fmt.Sprintf("q%d-%06d", qos, i)
		rc, closed := (*pub).TryPublish(t, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(p)})
		switch {
		case closed:
			unknown++
			Eventually(t, 30*time.Second, func() error { return Redial(t, nd, id, pub) })
		case rc >= 0x80:
			t.Fatalf("publish %s refused: 0x%02X", p, rc)
		default:
			acked = append(acked, p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return acked, unknown
}

// CheckQoS2Once fails the test for each QoS 2 payload of PublishPaced's
// ("q2-...") that got counts more than once [MQTT-4.3.3].
func CheckQoS2Once(t *testing.T, got map[string]int) {
	t.Helper()
	var twice []string
	for p, n := range got {
		if n > 1 && p[1] == '2' {
			twice = append(twice, fmt.Sprintf("%s (%d)", p, n))
		}
	}
	slices.Sort(twice)
	if len(twice) > 0 {
		t.Errorf("%d QoS 2 messages delivered more than once: %v", len(twice), twice[:min(len(twice), 20)])
	}
}
