//go:build unix

package cluster

import (
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// refuser is an address on the node's IP where every connection is
// refused: a TCP socket bound to a port and never listening, so the kernel
// answers a connect with a reset, and no other program can take the port
// while the node runs.
type refuser struct {
	fd   int
	addr string
}

// newRefuser binds a socket to an OS-picked port of ip.
func newRefuser(ip net.IP) (*refuser, error) {
	family, sa := syscall.AF_INET, syscall.Sockaddr(nil)
	if ip4 := ip.To4(); ip4 != nil {
		sa = &syscall.SockaddrInet4{Addr: [4]byte(ip4)}
	} else {
		family, sa = syscall.AF_INET6, &syscall.SockaddrInet6{Addr: [16]byte(ip.To16())}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("cluster: refuser socket: %w", err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("cluster: refuser on %s: %w", ip, err)
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("cluster: refuser on %s: %w", ip, err)
	}
	var port int
	switch a := got.(type) {
	case *syscall.SockaddrInet4:
		port = a.Port
	case *syscall.SockaddrInet6:
		port = a.Port
	}
	return &refuser{fd: fd, addr: net.JoinHostPort(ip.String(), strconv.Itoa(port))}, nil
}

func (r *refuser) Close() error { return syscall.Close(r.fd) }
