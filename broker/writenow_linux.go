package broker

import (
	"io"
	"net"
	"os"
	"syscall"
)

// writeNow writes b to the TCP socket beneath nc without waiting: one
// send(2) on the non-blocking socket, made as a raw system call. It returns
// how many bytes went out: 0 when the socket cannot take any now, has
// failed (the flusher, writing the rest, meets the error again and handles
// it) or is not a plain TCP socket beneath transparent wrappers.
//
// A raw call skips the runtime's system-call bookkeeping, which a write
// cannot need here (it never blocks) and which costs a broker that was
// idle a wake-up of the runtime's monitor thread (entersyscall →
// futexwakeup: a quarter of the CPU per message at 1,000 msgs/s, see
// docs/bench.md). MSG_NOSIGNAL: a closed peer is an EPIPE, never a SIGPIPE.
func writeNow(nc net.Conn, b []byte) int {
	tc, ok := writerOf(nc).(*net.TCPConn)
	if !ok || len(b) == 0 {
		return 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	err = rc.Write(func(fd uintptr) bool {
		if r, errno := rawSend(fd, b); errno == 0 {
			n = r
		}
		return true // never wait: what is left is the flusher's
	})
	if err != nil {
		return 0
	}
	return n
}

// rawReader returns the socket readNow reads for nc, or nil when nc must be
// read through its own Read (see tcpBeneath).
func rawReader(nc net.Conn) syscall.RawConn {
	tc := tcpBeneath(nc)
	if tc == nil {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// readNow is Read on the socket of rc with a raw read(2), for the reason
// writeNow gives: a reader that wakes from idle would otherwise wake the
// runtime's monitor thread too, on every message of a low-rate client. It
// waits for data in the netpoller as Read does, and honours the read
// deadline; its errors match Read's as the broker tells them apart (a
// timeout is a net.Error, a closed socket net.ErrClosed, the end of input
// io.EOF, a reset syscall.ECONNRESET).
func readNow(rc syscall.RawConn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n := 0
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		for {
			r, e := rawRead(fd, b)
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until the socket is readable
			}
			n, errno = r, e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
