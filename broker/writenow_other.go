//go:build !linux

package broker

import (
	"net"
)

// writeNow is a non-blocking write where the platform has one (Linux);
// elsewhere it writes nothing and the flusher writes everything.
func writeNow(net.Conn, []byte) int { return 0 }

// rawReading needs Linux: Server.rawReading is nil, and connections are
// read through their own Read.
type rawReading struct{}

func (*Server) rawReading(net.Conn) *rawReading { return nil }

func (*Server) putRawReading(*rawReading) {}

func (*rawReading) readNow([]byte) (int, error) { panic("readNow without Server.rawReading") }

// rawReadingSupported: connections are read through their own Read.
const rawReadingSupported = false

func (*rawReading) waited() bool { return false }
