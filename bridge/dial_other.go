//go:build !linux

package bridge

import (
	"errors"
	"time"
)

var errUserTimeout = errors.New("tcp_user_timeout: TCP_USER_TIMEOUT is a Linux socket option")

func setUserTimeout(uintptr, int) error { return errUserTimeout }

func checkUserTimeout(d time.Duration) error {
	if d != 0 {
		return errUserTimeout
	}
	return nil
}
