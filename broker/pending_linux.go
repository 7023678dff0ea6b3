//go:build linux && !roost_portable

package broker

import (
	"syscall"
	"unsafe"
)

// socketPending returns how many bytes the kernel holds unread for the
// socket beneath rc (FIONREAD); ok is false when that cannot be known.
func socketPending(rc syscall.RawConn) (n int, ok bool) {
	var errno syscall.Errno
	err := rc.Control(func(fd uintptr) {
		var v int32
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v)))
		n = int(v)
	})
	return n, err == nil && errno == 0
}
