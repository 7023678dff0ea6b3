//go:build !linux || roost_portable

package broker

import "syscall"

// peerClosed is Linux-only (POLLRDHUP, and the portable build leaves it out
// as it leaves socketPending out); elsewhere a CONNECT is never taken
// for abandoned.
func peerClosed(syscall.RawConn) bool { return false }
