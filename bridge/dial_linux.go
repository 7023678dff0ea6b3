//go:build linux

package bridge

import (
	"time"

	"golang.org/x/sys/unix"
)

func setUserTimeout(fd uintptr, ms int) error {
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
}

func checkUserTimeout(time.Duration) error { return nil }
