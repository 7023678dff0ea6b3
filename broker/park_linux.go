package broker

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// poller watches parked connections with one epoll instance and wakes a
// connection's reader when its socket becomes readable. An idle connection
// then costs no goroutine (its stack would be most of its memory) and no
// read buffer.
//
// Registration is EPOLLONESHOT: one event disarms the socket, so a woken
// connection is never woken twice, and the reader re-arms it when it parks
// again. Events carry a connection id, never a pointer or the descriptor
// alone, so an event for a connection that has since closed (and whose
// descriptor number a new socket may already reuse) finds no entry and is
// ignored.
type poller struct {
	epfd  int
	pipe  [2]int // writing to pipe[1] stops the loop
	mu    sync.Mutex
	conns map[uint64]*conn
	next  uint64
	done  chan struct{}
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	p := &poller{epfd: epfd, conns: make(map[uint64]*conn), done: make(chan struct{})}
	if err := syscall.Pipe2(p.pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // id 0: the stop pipe
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.pipe[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	go p.loop()
	return p, nil
}

func (p *poller) closeFDs() {
	syscall.Close(p.epfd)
	syscall.Close(p.pipe[0])
	syscall.Close(p.pipe[1])
}

// close stops the loop and releases the epoll instance. Connections must
// all have finished.
func (p *poller) close() {
	syscall.Write(p.pipe[1], []byte{0})
	<-p.done
	p.closeFDs()
}

// sweepEvery is how often the loop looks for parked connections whose
// keep alive ran out: a per-connection timer would cost each idle
// connection another 130 bytes, and a keep-alive expiry a quarter of a
// second late is still far inside what the spec asks ("1.5 times").
const sweepEvery = 250 * time.Millisecond

func (p *poller) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	woken := make([]*conn, 0, len(events))
	nextSweep := time.Now().Add(sweepEvery)
	for {
		n, err := syscall.EpollWait(p.epfd, events, int(sweepEvery/time.Millisecond))
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return // EBADF and friends: nothing more will be delivered
		}
		woken = woken[:0]
		stop := false
		p.mu.Lock()
		if now := time.Now(); !now.Before(nextSweep) {
			nextSweep = now.Add(sweepEvery)
			ns := now.UnixNano()
			for _, c := range p.conns {
				if at := c.wakeAt.Load(); at != 0 && at <= ns && c.state.Load() == readerParked {
					woken = append(woken, c)
				}
			}
		}
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				stop = true
				continue
			}
			if c := p.conns[id]; c != nil {
				woken = append(woken, c)
			}
		}
		p.mu.Unlock()
		for _, c := range woken {
			c.wake()
		}
		if stop {
			return
		}
	}
}

// register gives c an id for its events.
func (p *poller) register(c *conn) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.conns[p.next] = c
	return p.next
}

// unregister forgets id; a later event for it is ignored. The kernel drops
// the socket from the epoll set when it is closed.
func (p *poller) unregister(id uint64) {
	p.mu.Lock()
	delete(p.conns, id)
	p.mu.Unlock()
}

// arm asks for one wake-up when fd becomes readable or hangs up. Data that
// is already waiting counts: epoll reports it at once.
func (p *poller) arm(fd int, id uint64) error {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(id)),
		Pad:    int32(uint32(id >> 32)),
	}
	err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	if errors.Is(err, syscall.ENOENT) {
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
		if errors.Is(err, syscall.EEXIST) { // armed meanwhile by a woken reader
			err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
		}
	}
	return err
}
