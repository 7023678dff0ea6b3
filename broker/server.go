package broker

import (
	"context"
	"net"
)

// Server is an MQTT broker. Create it with New, hand it listeners with
// Serve, stop it with Shutdown.
type Server struct {
	opts Options
}

// New returns a Server configured by opts.
func New(opts Options) (*Server, error) {
	opts.fill()
	return &Server{opts: opts}, nil
}

// Serve accepts connections on l until Shutdown; it returns
// ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error { panic("not yet") }

// Shutdown stops accepting, sends MQTT 5 clients DISCONNECT 0x8B, flushes
// pending writes and waits for connections to close or ctx to end.
func (s *Server) Shutdown(ctx context.Context) error { panic("not yet") }
