//go:build !linux

package broker

import "syscall"

// peerClosed is Linux-only (POLLRDHUP); elsewhere a CONNECT is never taken
// for abandoned.
func peerClosed(syscall.RawConn) bool { return false }
