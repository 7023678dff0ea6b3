package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// stormRetry is how long a client waits after a failed connection attempt
// before the next one. Real clients back off further; a short fixed retry
// makes the measured time the broker's, not the clients' patience.
const stormRetry = 100 * time.Millisecond

// storm connects Conns persistent-session subscribers, restarts the broker
// (Config.StopBroker, then StartBroker) and measures how long until every
// client is connected again, with its session, and has received a QoS 1
// message published as soon as the new broker accepted a connection.
func (r *runner) storm(ctx context.Context) (*Result, error) {
	c := r.cfg
	st := &StormStats{}
	r.res.Storm = st
	cs := &ConnStats{Requested: c.Conns, Attempted: c.Conns}
	r.capConns(cs, 1) // and the publisher
	st.Clients = cs.Attempted
	topic := "roost-bench/" + r.id + "/storm"

	samplerCtx, stopSampler := context.WithCancel(ctx)
	var samplerDone sync.WaitGroup
	samplerDone.Go(func() { r.sampler(samplerCtx) })
	defer func() { stopSampler(); samplerDone.Wait() }()

	old, err := r.openMany(ctx, st.Clients, "s", idleBuf, 0, func(ctx context.Context, _ int, mc *mconn) error {
		return mc.subscribe(ctx, topic, 1)
	})
	if err != nil {
		return r.res, fmt.Errorf("connecting the clients: %w", err)
	}

	r.phase.Store(phaseRestart)
	// Like real clients, the old connections close once the broker has
	// closed its side: a broker that waits for its clients to hang up
	// (Roost drains a closing socket for up to 1 s) is not held up by
	// clients that do not.
	var closers sync.WaitGroup
	for _, mc := range old {
		closers.Go(func() { hangUpOnEOF(mc) })
	}
	t0 := time.Now()
	since := func() float64 { return time.Since(t0).Seconds() }
	if err := c.StopBroker(ctx); err != nil {
		closeConns(old)
		closers.Wait()
		return r.res, fmt.Errorf("stopping the broker: %w", err)
	}
	st.Stop = since()
	closeConns(old) // dead already; their files are needed for the new ones
	closers.Wait()
	r.conns.Store(0)

	// The clients reconnect from now on, while the broker starts, as
	// clients with a short retry would.
	bound, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	sc := &stormClients{r: r, st: st, t0: t0, topic: topic, conns: make([]*mconn, st.Clients)}
	var wg sync.WaitGroup
	wg.Go(func() { sc.publish(bound) })
	wg.Go(func() { sc.reconnectAll(bound) })
	startErr := c.StartBroker(ctx)
	st.Start = since() - st.Stop
	st.Restart = since()
	if startErr != nil {
		cancel()
	}
	wg.Wait()
	sc.wait.Wait() // the readers end with bound at the latest
	st.Reconnected, st.SessionsLost, st.Received = int(sc.connected.Load()), int(sc.lost.Load()), int(sc.received.Load())
	st.Attempts = sc.attempts.Load()
	if st.Reconnected == st.Clients {
		st.AllConnected = time.Duration(sc.lastConn.Load()).Seconds()
	}
	if st.Received == st.Clients {
		st.AllReceived = time.Duration(sc.lastRecv.Load()).Seconds()
	}
	if p := sc.firstErr.Load(); p != nil {
		st.FirstError = (*p).Error()
	}
	for _, mc := range sc.conns {
		if mc != nil {
			mc.disconnect()
		}
	}
	r.conns.Store(0)
	switch {
	case startErr != nil:
		return r.res, fmt.Errorf("starting the broker: %w", startErr)
	case st.Received < st.Clients:
		r.note("%d of %d clients did not receive the message within %v (%d reconnected, %d without their session)",
			st.Clients-st.Received, st.Clients, c.Duration, st.Reconnected, st.SessionsLost)
	case st.SessionsLost > 0:
		r.note("%d clients found their session gone", st.SessionsLost)
	}
	return r.res, ctx.Err()
}

// stormClients is the state of the clients coming back after a restart.
type stormClients struct {
	r     *runner
	st    *StormStats
	t0    time.Time
	topic string
	conns []*mconn

	wait      sync.WaitGroup // readers waiting for the message
	connected atomic.Int64
	lost      atomic.Int64
	received  atomic.Int64
	attempts  atomic.Int64
	// lastConn and lastRecv are ns since t0.
	lastConn, lastRecv atomic.Int64
	firstErr           atomic.Pointer[error]
}

func (sc *stormClients) fail(err error) { sc.firstErr.CompareAndSwap(nil, &err) }

// retry calls try until it succeeds or ctx ends, stormRetry apart.
func (sc *stormClients) retry(ctx context.Context, try func() error) bool {
	for ctx.Err() == nil {
		sc.attempts.Add(1)
		err := try()
		if err == nil {
			return true
		}
		if ctx.Err() == nil && !isRefused(err) {
			sc.fail(err)
		}
		sleep(ctx, stormRetry)
	}
	return false
}

// publish connects a publisher as soon as the broker accepts one and
// publishes one QoS 1 message to every client's subscription.
func (sc *stormClients) publish(ctx context.Context) {
	var pc *mconn
	if !sc.retry(ctx, func() (err error) { pc, err = sc.r.open(ctx, "pub", 4096, 0); return err }) {
		return
	}
	defer pc.disconnect()
	p := &packet.Publish{Topic: sc.topic, QoS: 1, PacketID: 1, Payload: make([]byte, stampSize)}
	stop := context.AfterFunc(ctx, func() { pc.nc.SetDeadline(time.Now()) })
	defer stop()
	if err := pc.send(p); err != nil {
		sc.fail(fmt.Errorf("publishing: %w", err))
		return
	}
	for {
		ack, err := pc.readPacket(time.Now().Add(setupTimeout))
		if err != nil {
			sc.fail(fmt.Errorf("waiting for the PUBACK: %w", err))
			return
		}
		if ack.Type() == packet.PUBACK {
			sc.st.Published = time.Since(sc.t0).Seconds()
			return
		}
	}
}

// reconnectAll brings every client back, dialParallel at a time.
func (sc *stormClients) reconnectAll(ctx context.Context) {
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range dialParallel {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(sc.conns) {
					return
				}
				sc.reconnect(ctx, i)
			}
		})
	}
	wg.Wait()
}

// reconnect connects client i again and starts its reader.
func (sc *stormClients) reconnect(ctx context.Context, i int) {
	var mc *mconn
	var present bool
	ok := sc.retry(ctx, func() (err error) {
		mc, present, err = sc.r.openAs(ctx, fmt.Sprintf("s%d", i), idleBuf, 0)
		return err
	})
	if !ok {
		return
	}
	sc.conns[i] = mc
	sc.connected.Add(1)
	storeMax(&sc.lastConn, int64(time.Since(sc.t0)))
	if !present {
		// Its subscription is gone with the session: the message
		// cannot come. Counted, not waited for.
		sc.lost.Add(1)
		return
	}
	sc.wait.Go(func() { sc.await(ctx, mc) })
}

// await reads until the message arrives on mc (and acknowledges it) or
// ctx ends.
func (sc *stormClients) await(ctx context.Context, mc *mconn) {
	// The deadline bounds the wait; AfterFunc ends it early when the run
	// is cancelled.
	deadline, _ := ctx.Deadline()
	stop := context.AfterFunc(ctx, func() { mc.nc.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		p, err := mc.readPacket(deadline)
		if err != nil {
			if ctx.Err() == nil {
				sc.fail(fmt.Errorf("waiting for the message: %w", err))
			}
			return
		}
		pub, ok := p.(*packet.Publish)
		if !ok || pub.Topic != sc.topic {
			continue
		}
		if pub.QoS > 0 {
			mc.nc.Write(appendAck(nil, packet.PUBACK, pub.PacketID))
		}
		sc.received.Add(1)
		storeMax(&sc.lastRecv, int64(time.Since(sc.t0)))
		return
	}
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Int64, v int64) {
	for {
		m := a.Load()
		if v <= m || a.CompareAndSwap(m, v) {
			return
		}
	}
}

// isRefused reports whether err is the broker not listening (yet): the
// expected failure while it restarts, so not worth reporting.
func isRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// hangUpOnEOF reads and discards until mc fails (the broker closed it, or
// closeConns did), then closes it.
func hangUpOnEOF(mc *mconn) {
	var b [64]byte
	for {
		if _, err := mc.nc.Read(b[:]); err != nil {
			mc.nc.Close()
			return
		}
	}
}

func closeConns(cs []*mconn) {
	for _, mc := range cs {
		mc.nc.Close()
	}
}
