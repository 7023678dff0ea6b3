package jepsen

import (
	"strings"
	"testing"
	"time"
)

// TestExplain: an operation's account names the wall-clock times of the
// node logs, the subscriber's connections with what each got, and the
// events around it with the nodes' log names.
func TestExplain(t *testing.T) {
	start := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	h := &History{Start: start, Nodes: 3}
	h.Subs = []Subscriber{{ID: "ps1", Kind: Persistent, Filter: "t/#", QoS: 2, SubAck: 1}}
	h.Pubs = []PubOp{
		{Client: "pub0", Conn: 1, Node: 2, Topic: "t/1", QoS: 2, Seq: 7, Invoke: 2e9, Return: 2.5e9, Status: OK},
		{Client: "pub0", Conn: 1, Node: 2, Topic: "t/1", QoS: 2, Seq: 8, Invoke: 3e9, Return: 3.5e9, Status: OK},
	}
	h.Deliveries = []Delivery{{Sub: 0, Epoch: 1, Conn: 4, Node: 1, Op: 1, QoS: 2, TopicOK: true, At: 4e9}}
	h.Events = []Event{{At: 2.2e9, Who: "nemesis", What: "kill node 1"}, {At: 40e9, Who: "nemesis", What: "pause node 0"}}
	out, err := Explain(h, "ps1", 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pub0#7 (op 0): QoS 2 on t/1, published on n3 (connection 1), ok, invoked 2.000s (10:00:02.000)",
		"ps1 session 1 connection 4 on n2: 1 deliveries 4.000s (10:00:04.000)",
		"2.200s (10:00:02.200) nemesis: kill node 1 (n2)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "got op 0") || strings.Contains(out, "pause node 0") {
		t.Errorf("a delivery or event that is not op 0's, or outside the window:\n%s", out)
	}
	if _, err := Explain(h, "ps9", 0, time.Second); err == nil {
		t.Error("an unknown subscriber explained")
	}
}
