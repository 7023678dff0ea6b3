//go:build !linux

package main

import (
	"fmt"
	"net"
)

// listenTCP listens on addr; a network interface (bind_interface) needs
// Linux's SO_BINDTODEVICE.
func listenTCP(addr, iface string) (net.Listener, error) {
	if iface != "" {
		return nil, fmt.Errorf("interface %s: binding to an interface is supported on Linux only", iface)
	}
	return net.Listen("tcp", addr)
}
