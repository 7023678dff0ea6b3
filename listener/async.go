package listener

import (
	"errors"
	"net"
	"sync"
)

// asyncListener accepts from inner in its own goroutine, runs prepare on
// each conn in a goroutine of its own and hands out the conns prepare
// returns. A conn whose prepare fails is closed and reported.
type asyncListener struct {
	inner   net.Listener
	prepare func(net.Conn) (net.Conn, error)
	logf    func(string, ...any)

	conns chan net.Conn
	errs  chan error    // accept errors, passed on to Accept unchanged
	done  chan struct{} // closed by Close
	once  sync.Once
	dead  chan struct{} // closed when the accept loop ends; err is then set
	err   error
}

func newAsyncListener(inner net.Listener, prepare func(net.Conn) (net.Conn, error), logf func(string, ...any)) *asyncListener {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	l := &asyncListener{
		inner: inner, prepare: prepare, logf: logf,
		conns: make(chan net.Conn),
		errs:  make(chan error),
		done:  make(chan struct{}),
		dead:  make(chan struct{}),
	}
	go l.loop()
	return l
}

func (l *asyncListener) loop() {
	defer close(l.dead)
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.err = net.ErrClosed
				return
			}
			// Unbuffered: the loop waits until the caller has seen the
			// error, so a caller that backs off slows this loop too.
			select {
			case l.errs <- err:
			case <-l.done:
				l.err = net.ErrClosed
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				continue
			}
			l.err = err
			return
		}
		go l.handshake(c)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (l *asyncListener) handshake(c net.Conn) {
	pc, err := l.prepare(c)
	if err != nil {
		l.logf("connection refused", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	select {
	case l.conns <- pc:
	case <-l.done:
		pc.Close()
	}
}

// Accept returns the next prepared conn. After Close it returns an error
// wrapping net.ErrClosed; when the inner listener fails it returns that
// error.
func (l *asyncListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.dead:
		return nil, l.err
	}
}

// Close stops accepting; conns already returned stay open.
func (l *asyncListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

func (l *asyncListener) Addr() net.Addr { return l.inner.Addr() }
