//go:build linux

package broker

import (
	"syscall"
	"unsafe"
)

// Poll bits of <poll.h>; POLLRDHUP (the peer shut down its writing side)
// is Linux's.
const (
	pollErr   = 0x008
	pollHup   = 0x010
	pollRDHup = 0x2000
)

// peerClosed reports whether the peer of rc's socket closed its side (FIN)
// or reset it, without waiting and without reading: ppoll with a zero
// timeout. Bytes still unread do not hide a FIN from POLLRDHUP.
func peerClosed(rc syscall.RawConn) bool {
	var closed bool
	err := rc.Control(func(fd uintptr) {
		pfd := struct {
			fd      int32
			events  int16
			revents int16
		}{fd: int32(fd), events: pollRDHup}
		var ts syscall.Timespec
		n, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		closed = errno == 0 && n == 1 && pfd.revents&(pollRDHup|pollHup|pollErr) != 0
	})
	return err == nil && closed
}
