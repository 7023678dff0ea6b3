//go:build !unix

package cluster

import (
	"fmt"
	"net"
)

// refuser is an address on the node's IP where connections are refused.
// Without Unix sockets to bind and leave unlistened, it is a port that was
// free when the node started (a listener, closed at once); another program
// could take it later.
type refuser struct{ addr string }

func newRefuser(ip net.IP) (*refuser, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &refuser{addr: addr}, nil
}

func (r *refuser) Close() error { return nil }
