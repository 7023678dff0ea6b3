//go:build linux && !race

package broker

import (
	"syscall"
	"unsafe"
)

// rawSend and rawRead are send(2) and read(2) on a non-blocking socket as
// raw system calls (see writeNow). The race detector's build uses the
// syscall package's instead (rawio_race_linux.go), which tell it that a
// read happens after the write that sent the bytes: without that, tests
// that order their steps through sockets report false races.
func rawSend(fd uintptr, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT, 0, 0)
	return int(r), e
}

func rawRead(fd uintptr, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}
