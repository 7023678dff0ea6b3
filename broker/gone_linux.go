//go:build linux && !roost_portable

package broker

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the peer of rc's socket closed its side (FIN)
// or reset it, without waiting and without reading: poll with a zero
// timeout. Bytes still unread do not hide a FIN from POLLRDHUP (the peer
// shut down its writing side), which is Linux's.
func peerClosed(rc syscall.RawConn) bool {
	var closed bool
	err := rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(pfd, 0)
		closed = err == nil && n == 1 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
	})
	return err == nil && closed
}
