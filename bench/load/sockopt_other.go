//go:build !linux

package load

import (
	"net"
	"syscall"
)

// spreadLoopback is false: other systems (macOS) have only 127.0.0.1.
const spreadLoopback = false

func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }

func setRcvLowat(net.Conn, int) {}
