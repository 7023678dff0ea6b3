package load

import (
	"net"
	"syscall"
)

// spreadLoopback: Linux routes all of 127.0.0.0/8 to the loopback device,
// so any of those addresses can be a source.
const spreadLoopback = true

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h). With it,
// binding a source address leaves the port to connect(), which can reuse a
// port towards different destinations instead of reserving one per bind.
const ipBindAddressNoPort = 24

// bindNoPort is a net.Dialer Control function setting ipBindAddressNoPort.
// Failing to set it only costs ports, so errors are ignored.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	_ = c.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	return nil
}

// setRcvLowat sets SO_RCVLOWAT on a TCP connection: the kernel wakes the
// reader only once n bytes are buffered (or at once when setting it finds
// that many). Other connections are left alone.
func setRcvLowat(nc net.Conn, n int) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, max(n, 1))
	})
}
