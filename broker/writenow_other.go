//go:build !linux

package broker

import (
	"net"
	"syscall"
)

// writeNow is a non-blocking write where the platform has one (Linux);
// elsewhere it writes nothing and the flusher writes everything.
func writeNow(net.Conn, []byte) int { return 0 }

// rawReader is nil: readNow needs Linux.
func rawReader(net.Conn) syscall.RawConn { return nil }

func readNow(syscall.RawConn, []byte) (int, error) { panic("readNow without rawReader") }
