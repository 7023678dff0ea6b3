package main

import (
	"context"
	"fmt"
	"net"
	"syscall"
)

// listenTCP listens on addr, on network interface iface only when iface
// is set (SO_BINDTODEVICE, mosquitto's bind_interface): connections
// arriving through other interfaces are refused by the kernel whatever
// address they are for. Before Linux 5.7 that needs CAP_NET_RAW.
func listenTCP(addr, iface string) (net.Listener, error) {
	if iface == "" {
		return net.Listen("tcp", addr)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, iface)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to interface %s: %w", iface, serr)
		}
		return nil
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}
