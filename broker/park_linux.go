//go:build linux && !roost_portable

package broker

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// parkingSupported: idle connections park (the tests check both ways).
const parkingSupported = true

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
	epfd int
	// f wraps epfd for Go's own netpoller: the loop waits for the epoll
	// instance to become readable there instead of in epoll_wait. A
	// goroutine blocked in a system call keeps its P until the runtime's
	// monitor takes it back, which it checks only every 20 µs to 10 ms;
	// with one P (a broker pinned to one core) every message would wait
	// that long while the loop sat in epoll_wait.
	f  *os.File
	rc syscall.RawConn
	mu sync.Mutex
	// slots holds the registered connections; an id is a slot index in
	// its low 32 bits and a generation in its high ones, so a slot reused
	// by another connection does not answer to the old id. (A slice costs
	// an idle connection 8 bytes where a map cost about 36.)
	slots []*conn
	free  []uint32
	gen   uint32
	done  chan struct{}
	// started is where a reader the loop woke says it runs (wakeNext).
	started chan struct{}
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll") // non-blocking, so pollable
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	p := &poller{epfd: epfd, f: f, rc: rc, done: make(chan struct{}), started: make(chan struct{}, 1)}
	go p.loop()
	return p, nil
}

// close stops the loop and releases the epoll instance. Connections must
// all have finished.
func (p *poller) close() {
	p.f.Close() // the loop's wait returns an error
	<-p.done
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
	var scratch []byte // for discard, made when first needed
	nextSweep := time.Now().Add(sweepEvery)
	for {
		// Wait until the epoll instance has events or the next sweep is
		// due: the deadline ends the wait with a timeout.
		p.f.SetReadDeadline(nextSweep)
		var n int
		err := p.rc.Read(func(fd uintptr) bool {
			var werr syscall.Errno
			n, werr = epollWaitNow(int(fd), events)
			if werr != 0 {
				n = 0
				return werr != syscall.EINTR
			}
			return n > 0 // none ready: wait in the netpoller
		})
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // closed
		}
		woken = woken[:0]
		p.mu.Lock()
		if now := time.Now(); !now.Before(nextSweep) {
			nextSweep = now.Add(sweepEvery)
			ns := now.UnixNano()
			for _, c := range p.slots {
				if c == nil {
					continue
				}
				if at := c.wakeAt.Load(); at != 0 && at <= ns && c.state.Load() == readerParked {
					woken = append(woken, c)
				}
			}
		}
		for _, ev := range events[:n] {
			if c := p.lookup(uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32); c != nil {
				woken = append(woken, c)
			}
		}
		p.mu.Unlock()
		for _, c := range woken {
			if c.state.Load() == readerEnding {
				if scratch == nil {
					scratch = make([]byte, 4096)
				}
				p.discard(c, scratch)
				continue
			}
			if c.wakeNext(p.started) {
				<-p.started
			}
		}
	}
}

// epollWaitNow collects the events epfd has ready without waiting: one
// epoll_pwait(2) with a zero timeout, made as a raw system call. The
// syscall package's EpollWait goes through the runtime's system-call
// bookkeeping, which wakes the runtime's monitor thread (sysmon) when the
// process was idle, and a parked connection's wake-up is exactly that
// moment: sysmon then woke on the broker's core beside the reader it had
// to serve, and spun in 20 µs sleeps for a while after (perf: a sixth of
// the broker's CPU in the causality scenario was sysmon's nanosleep; see
// docs/bench.md, round 6). A call that never blocks needs none of that
// bookkeeping. epoll_pwait rather than epoll_wait: arm64 has only the
// former; a nil signal mask makes them the same.
func epollWaitNow(epfd int, events []syscall.EpollEvent) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	return int(r), e
}

// register gives c an id for its events, in c.parkID.
func (p *poller) register(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var i uint32
	if n := len(p.free); n > 0 {
		i, p.free = p.free[n-1], p.free[:n-1]
	} else {
		i = uint32(len(p.slots))
		p.slots = append(p.slots, nil)
	}
	p.gen++
	if p.gen == 0 {
		p.gen = 1 // ids are never 0
	}
	p.slots[i] = c
	c.parkID = uint64(i) | uint64(p.gen)<<32
}

// lookup returns the connection with id, if it is still registered. p.mu
// must be held.
func (p *poller) lookup(id uint64) *conn {
	if i := uint32(id); int(i) < len(p.slots) {
		if c := p.slots[i]; c != nil && c.parkID == id {
			return c
		}
	}
	return nil
}

// unregister forgets c; a later event for it is ignored. The kernel drops
// the socket from the epoll set when it is closed.
func (p *poller) unregister(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lookup(c.parkID) == c {
		i := uint32(c.parkID)
		p.slots[i] = nil
		p.free = append(p.free, i)
	}
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

// linger arms the socket of c, which Shutdown is ending (shutdown.go), so
// that the loop hears when the client sends more or hangs up.
func (p *poller) linger(rc syscall.RawConn, c *conn) error {
	var armErr error
	if err := rc.Control(func(fd uintptr) { armErr = p.arm(int(fd), c.parkID) }); err != nil {
		return err
	}
	return armErr
}

// discard reads and drops what the client of an ending connection sent,
// as closeGracefully does, and closes the connection once the client
// hung up (or the socket failed); until then it arms the socket again.
func (p *poller) discard(c *conn, buf []byte) {
	tc := tcpBeneath(c.nc)
	if tc == nil {
		c.endNow()
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		c.endNow()
		return
	}
	end := true
	err = rc.Control(func(fd uintptr) {
		for {
			n, errno := rawRead(fd, buf)
			switch {
			case errno == syscall.EINTR:
				continue
			case errno == syscall.EAGAIN:
				end = p.arm(int(fd), c.parkID) != nil
			case errno == 0 && n > 0:
				continue
			}
			return // the end of input, or an error
		}
	})
	if err != nil || end {
		c.endNow()
	}
}
