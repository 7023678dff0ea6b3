//go:build linux && race

package broker

import (
	"errors"
	"syscall"
)

// rawSend and rawRead for the race detector's build: the syscall package's
// Write and Read, which annotate the happens-before edge a socket makes
// (see rawio_linux.go). Write on a socket is send without flags; Go's
// runtime turns the SIGPIPE of a closed peer into EPIPE for sockets.
func rawSend(fd uintptr, b []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), b)
	return max(n, 0), errnoOf(err)
}

func rawRead(fd uintptr, b []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), b)
	return max(n, 0), errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if err == nil || !errors.As(err, &e) {
		return 0
	}
	return e
}
