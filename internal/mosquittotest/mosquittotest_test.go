package mosquittotest

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

func dial(t *testing.T, addr string) error {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// Start brings up the default listener and one per {port}; Stop and
// Restart keep the addresses.
func TestStartStopRestart(t *testing.T) {
	b := Start(t, "listener {port} 127.0.0.1", "protocol websockets")
	if len(b.Ports) != 1 {
		t.Fatalf("Ports = %v, want one", b.Ports)
	}
	ws := fmt.Sprintf("127.0.0.1:%d", b.Ports[0])
	for _, a := range []string{b.Addr, ws} {
		if err := dial(t, a); err != nil {
			t.Fatal(err)
		}
	}
	b.Stop(syscall.SIGKILL)
	if err := dial(t, b.Addr); err == nil {
		t.Fatal("still listening after Stop")
	}
	b.Restart(t)
	for _, a := range []string{b.Addr, ws} {
		if err := dial(t, a); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(b.Log.String(), "Opening websockets listen socket") {
		t.Errorf("log has no websockets listener:\n%s", b.Log.String())
	}
}
