package brokertest

import (
	"strings"
	"testing"
)

func TestPanicLines(t *testing.T) {
	log := strings.Join([]string{
		`time=T level=INFO msg="client connected" client_id=panic topic=a/panic`,
		`time=T level=ERROR msg="panic while serving connection; closing it" remote=1 panic="repeated read on failed websocket connection" stack="..."`,
		`time=T level=DEBUG msg=received type=PUBLISH topic="don't panic"`,
		`time=T level=ERROR msg="panic in will timer; recovered" client_id=c`,
		`time=T level=ERROR msg=x panic=boom`,
		`panic: runtime error: index out of range [3] with length 3`,
		`fatal error: concurrent map writes`,
		`time=T level=INFO msg=subscribed filter=panic/#`,
	}, "\n")
	got := PanicLines(log)
	want := []int{1, 3, 4, 5, 6}
	lines := strings.Split(log, "\n")
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d: %q", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i] != lines[w] {
			t.Errorf("match %d: %q, want %q", i, got[i], lines[w])
		}
	}
}
