package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// fdReserve is how many files beyond its connections the bench process
// keeps for itself (stdio, the JSON file, /proc reads, the runtime).
const fdReserve = 32

// dialParallel is how many connections are set up at once. It stays below
// mosquitto's listen backlog of 100: overflowing a backlog drops SYNs, the
// kernel retries them after a second, and the connect rate would measure
// that instead of the broker.
const dialParallel = 64

// phases, as Progress.Phase reports them.
var phaseNames = [...]string{"connect", "warmup", "measure", "drain", "hold", "restart"}

const (
	phaseConnect = iota
	phaseWarmup
	phaseMeasure
	phaseDrain
	phaseHold
	phaseRestart
)

// Run runs one scenario against the broker at cfg.URL and returns what it
// measured. Every phase is bounded (setup steps by a timeout, the load by
// Warmup and Duration, the drain by a few seconds), so Run returns by
// itself; cancelling ctx stops it early, with the partial Result and the
// context's error. A connection that fails during the load ends the run
// with that error and a partial Result. Configuration errors wrap
// ErrConfig and come with a nil Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.Normalize()
	if err != nil {
		return nil, err
	}
	d, err := newDialer(cfg.URL, cfg.TLS)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, d: d, sd: d, id: fmt.Sprintf("%06x", rand.Uint32()&0xFFFFFF), base: time.Now()}
	if cfg.SubURL != "" {
		if r.sd, err = newDialer(cfg.SubURL, cfg.TLS); err != nil {
			return nil, err
		}
	}
	r.res = r.newResult()
	switch cfg.Scenario {
	case Connections:
		return r.connections(ctx)
	case Causality:
		return r.causality(ctx)
	case Storm:
		return r.storm(ctx)
	}
	return r.traffic(ctx)
}

// runner is the state of one Run.
type runner struct {
	cfg  Config
	d    *dialer
	sd   *dialer   // the subscribers' (Config.SubURL; d without it)
	id   string    // distinguishes this run's client ids and topics
	base time.Time // origin of the payload timestamps
	res  *Result

	phase  atomic.Int32
	conns  atomic.Int64 // open connections, for Progress
	rssMax atomic.Int64
	flows  []*flow
	win    *span
	// brokerCPU is measured with LoadCPU, kept here until BrokerStats
	// is filled in.
	brokerCPU float64
}

func (r *runner) newResult() *Result {
	c := r.cfg
	res := &Result{
		Scenario: c.Scenario, URL: c.URL, Protocol: int(c.Protocol), QoS: int(c.QoS), Size: c.Size,
		Warmup: c.Warmup.Seconds(),
	}
	if c.Scenario != Connections && c.Scenario != Causality && c.Scenario != Storm {
		res.Publishers, res.Subscribers, res.Window, res.Flat = c.Publishers, c.Subscribers, c.Window, c.Flat
		res.Rate, res.SubRate = c.Rate, c.SubRate
	} else {
		res.Warmup = 0
	}
	if c.PID > 0 {
		res.Broker = &BrokerStats{PID: c.PID}
	}
	return res
}

func (r *runner) note(format string, a ...any) {
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, a...))
}

// keepAlive covers the whole run, so the load never needs PINGREQs.
func (r *runner) keepAlive() uint16 {
	s := 2*(r.cfg.Warmup+r.cfg.Duration).Seconds() + 60
	if r.cfg.Scenario == Connections || r.cfg.Scenario == Storm {
		s += float64(r.cfg.Conns) / 100 // opening them takes time too
	}
	return uint16(min(s, 65535))
}

// open dials and connects one client; role names it in the client id.
func (r *runner) open(ctx context.Context, role string, bufSize int, receiveMax uint16) (*mconn, error) {
	c, _, err := r.openAs(ctx, role, bufSize, receiveMax)
	return c, err
}

// openAs is open that also reports the CONNACK's Session Present.
// Subscribers ("s0", "s1", ...) keep their sessions when
// Config.Persistent is set, publishers ("p0", ...) when
// Config.PersistentPublishers is; small buffers (idle connections) dial
// WebSockets with small buffers too.
func (r *runner) openAs(ctx context.Context, role string, bufSize int, receiveMax uint16) (*mconn, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	d := r.d
	sub := strings.HasPrefix(role, "s") && role != "sys"
	if sub {
		d = r.sd
	}
	nc, err := d.dial(ctx, bufSize <= idleBuf)
	if err != nil {
		return nil, false, err
	}
	c := newConn(nc, r.cfg.Protocol, bufSize)
	o := connectOpts{clientID: "rb" + r.id + "-" + role, keepAlive: r.keepAlive(), receiveMax: receiveMax,
		persistent: (sub || strings.HasPrefix(role, "c")) && r.cfg.Persistent ||
			strings.HasPrefix(role, "p") && r.cfg.PersistentPublishers}
	present, err := c.handshake(ctx, o)
	if err != nil {
		nc.Close()
		return nil, false, err
	}
	r.conns.Add(1)
	return c, present, nil
}

// openMany opens n clients dialParallel at a time, calling setup (if not
// nil) on each; on the first error it closes them all.
func (r *runner) openMany(ctx context.Context, n int, role string, bufSize int, receiveMax uint16,
	setup func(ctx context.Context, i int, c *mconn) error) ([]*mconn, error) {
	conns := make([]*mconn, n)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := r.open(ctx, fmt.Sprintf("%s%d", role, i), bufSize, receiveMax)
			if err == nil && setup != nil {
				if err = setup(ctx, i, c); err != nil {
					c.nc.Close()
				}
			}
			if err != nil {
				cancel(fmt.Errorf("%s %d: %w", role, i, err))
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		for _, c := range conns {
			if c != nil {
				c.nc.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// sampler calls Progress and samples the broker's RSS once a second until
// ctx ends.
func (r *runner) sampler(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastPub, lastSub uint64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			pub, sub := r.totals()
			rss := r.sampleRSS()
			if r.cfg.Progress != nil {
				dt := now.Sub(last).Seconds()
				r.cfg.Progress(Progress{
					Scenario: r.cfg.Scenario, Phase: phaseNames[r.phase.Load()], Elapsed: time.Since(r.base),
					Published: pub, Delivered: sub,
					PubRate: float64(pub-lastPub) / dt, SubRate: float64(sub-lastSub) / dt,
					Conns: int(r.conns.Load()), RSSKiB: rss,
				})
			}
			lastPub, lastSub, last = pub, sub, now
		}
	}
}

// sampleRSS reads the broker's RSS (0 when unknown) and keeps the maximum.
func (r *runner) sampleRSS() int64 {
	if r.cfg.PID <= 0 {
		return 0
	}
	rss, err := RSSKiB(r.cfg.PID)
	if err != nil {
		return 0
	}
	for {
		m := r.rssMax.Load()
		if rss <= m || r.rssMax.CompareAndSwap(m, rss) {
			return rss
		}
	}
}

// totals sums published and delivered over the flows.
func (r *runner) totals() (pub, sub uint64) {
	for _, f := range r.flows {
		pub += f.published.Load()
		sub += f.delivered.Load()
	}
	return pub, sub
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// errorOf prefers a real cause over the cancellation that reported it.
func errorOf(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// subQoS is the QoS subscribers ask for: the publishers' QoS, so each
// delivery keeps it.
func (r *runner) subQoS() packet.QoS { return r.cfg.QoS }
