package broker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// isTimeout tells timeouts from other errors as errors.As with a net.Error
// target does, through wrapping and joins, and costs no allocation.
func TestIsTimeout(t *testing.T) {
	// Serial: AllocsPerRun counts the allocations of the whole process.
	// A real deadline on a real socket: the error the reader meets.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now())
	_, deadline := nc.Read(make([]byte, 1))
	if deadline == nil {
		t.Fatal("a read past its deadline returned no error")
	}
	opErr := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"read deadline", deadline, true},
		{"deadline exceeded", os.ErrDeadlineExceeded, true},
		{"wrapped deadline", fmt.Errorf("reading: %w", deadline), true},
		{"joined deadline", errors.Join(io.EOF, deadline), true},
		{"EOF", io.EOF, false},
		{"reset", opErr, false},
		{"wrapped reset", fmt.Errorf("x: %w", opErr), false},
		{"closed", net.ErrClosed, false},
	}
	for _, tc := range cases {
		if got := isTimeout(tc.err); got != tc.want {
			t.Errorf("%s: isTimeout(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
		var ne net.Error
		if as := errors.As(tc.err, &ne) && ne.Timeout(); as != tc.want {
			t.Errorf("%s: errors.As says %v: the case is wrong", tc.name, as)
		}
	}
	if n := testing.AllocsPerRun(100, func() { isTimeout(deadline) }); n != 0 {
		t.Errorf("isTimeout allocates %v times per call", n)
	}
}
