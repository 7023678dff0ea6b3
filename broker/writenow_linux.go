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

// rawReading reads the TCP socket beneath a connection with raw read(2)
// calls (readNow). A reader run takes one from the Server's pool and gives
// it back when it ends, so that neither a read nor a reader run allocates
// one: a closure per read escaped to the heap (about 100 bytes per message
// of a low-rate client), and one rawReading per run was 64 bytes of
// garbage per connection in a connection storm, and per wake-up after.
type rawReading struct {
	rc    syscall.RawConn
	b     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // r.read, bound once
	calls int                   // of fn in this readNow: more than one = it waited
}

// rawReading returns a raw reading of nc, or nil when nc must be read
// through its own Read (see tcpBeneath). Give it back with putRawReading.
func (s *Server) rawReading(nc net.Conn) *rawReading {
	tc := tcpBeneath(nc)
	if tc == nil {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r, _ := s.rawReadings.Get().(*rawReading)
	if r == nil {
		r = new(rawReading)
		r.fn = r.read
	}
	r.rc = rc
	return r
}

// putRawReading gives r (nil: none) back to the pool.
func (s *Server) putRawReading(r *rawReading) {
	if r != nil {
		r.rc, r.b = nil, nil
		s.rawReadings.Put(r)
	}
}

// read is the RawConn.Read callback: false means wait until readable.
func (r *rawReading) read(fd uintptr) bool {
	r.calls++
	for {
		n, e := rawRead(fd, r.b)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until the socket is readable
		}
		r.n, r.errno = n, e
		return true
	}
}

// readNow is Read on the socket with a raw read(2), for the reason
// writeNow gives: a reader that wakes from idle would otherwise wake the
// runtime's monitor thread too, on every message of a low-rate client. It
// waits for data in the netpoller as Read does, and honours the read
// deadline; its errors match Read's as the broker tells them apart (a
// timeout is a net.Error, a closed socket net.ErrClosed, the end of input
// io.EOF, a reset syscall.ECONNRESET).
//
// It always reads before it waits, even when the last read left the socket
// empty and this one will most likely say EAGAIN: RawConn.Read clears the
// socket's readiness before calling back, so bytes that arrived since the
// last read, whose event the netpoller already took, would otherwise wait
// for the next packet or the read deadline (tried: p99 at 1,000 msgs/s 6x
// mosquitto's, docs/bench.md).
func (r *rawReading) readNow(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.b, r.n, r.errno, r.calls = b, 0, 0, 0
	err := r.rc.Read(r.fn)
	r.b = nil
	switch {
	case err != nil:
		return 0, err
	case r.errno != 0:
		return 0, os.NewSyscallError("read", r.errno)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// rawReadingSupported: plain TCP sockets are read with raw system calls.
const rawReadingSupported = true

// waited reports whether the last readNow waited in the netpoller for its
// bytes: the reader was woken, maybe with others (Server.afterWake).
func (r *rawReading) waited() bool { return r.calls > 1 }
