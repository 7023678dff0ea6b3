//go:build !linux || roost_portable

package broker

import "syscall"

// socketPending is Linux-only (FIONREAD); elsewhere a takeover reads what
// is pending with a short deadline instead (see conn.readPending).
func socketPending(syscall.RawConn) (int, bool) { return 0, false }
