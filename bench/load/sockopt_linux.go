package load

import "syscall"

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
