package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// plan is who publishes and subscribes where in a traffic scenario.
type plan struct {
	flows []*flow
	pubs  []endpoint
	subs  []endpoint
}

// endpoint is one publisher's topic or one subscriber's filter.
type endpoint struct {
	f     *flow
	topic string
}

func (r *runner) plan() plan {
	c := r.cfg
	prefix := "roost-bench/" + r.id + "/"
	limit := func(pubs int) int64 {
		if c.Flat {
			return 0
		}
		return int64(c.Window) * int64(pubs)
	}
	// The smallest write a paced publisher makes (publisher.threshold).
	wakeRoom := int64(max(1, c.Window/4))
	if c.Rate > 0 {
		wakeRoom = 1
	}
	var p plan
	switch c.Scenario {
	case Pairs:
		for i := range c.Pairs {
			f := &flow{fanout: 1, limit: limit(1)}
			t := fmt.Sprintf("%spair/%d", prefix, i)
			p.flows = append(p.flows, f)
			p.pubs = append(p.pubs, endpoint{f, t})
			p.subs = append(p.subs, endpoint{f, t})
		}
	case FanOut:
		f := &flow{fanout: uint64(c.Subscribers), limit: limit(1)}
		t := prefix + "fan-out"
		p.flows = []*flow{f}
		p.pubs = []endpoint{{f, t}}
		for range c.Subscribers {
			p.subs = append(p.subs, endpoint{f, t})
		}
	default: // FanIn, Latency, Overload: P topics, one wildcard subscriber
		f := &flow{fanout: 1, limit: limit(c.Publishers)}
		p.flows = []*flow{f}
		for i := range c.Publishers {
			p.pubs = append(p.pubs, endpoint{f, fmt.Sprintf("%s%s/%d", prefix, c.Scenario, i)})
		}
		p.subs = []endpoint{{f, prefix + string(c.Scenario) + "/+"}}
	}
	for _, f := range p.flows {
		f.wakeRoom = wakeRoom
	}
	return p
}

// traffic runs the scenarios that publish: connect, warm up, measure,
// stop the publishers, drain, tear down.
func (r *runner) traffic(ctx context.Context) (*Result, error) {
	c := r.cfg
	pl := r.plan()
	r.flows = pl.flows
	need := len(pl.pubs) + len(pl.subs) + 1
	if budget, why := fdBudget(c.FDLimit); need > budget-fdReserve {
		return nil, fmt.Errorf("%w: %d connections need as many files, but %s", ErrConfig, need, why)
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	samplerCtx, stopSampler := context.WithCancel(runCtx)
	var samplerDone sync.WaitGroup
	samplerDone.Go(func() { r.sampler(samplerCtx) })
	defer func() { stopSampler(); samplerDone.Wait() }()
	if r.res.Broker != nil {
		r.res.Broker.RSSBeforeKiB = r.sampleRSS()
	}

	t, err := r.connect(runCtx, pl)
	if err != nil {
		return r.res, err
	}
	t.start(runCtx, cancel)
	var watchdog sync.WaitGroup
	watchCtx, stopWatch := context.WithCancel(runCtx)
	watchdog.Go(func() { r.watchdog(watchCtx) })
	err = r.measure(runCtx, t)
	t.stopPublishers()
	stopWatch()
	watchdog.Wait()
	if err == nil {
		r.phase.Store(phaseDrain)
		r.drain(runCtx, t)
	}
	r.finish(runCtx, t)
	t.teardown()
	r.res.Latency = t.latency()
	if err == nil {
		err = errorOf(runCtx)
	}
	return r.res, err
}

// watchdog opens every flow's gate a few times a second, so publishers
// waiting for their subscribers notice a stall (publisher.waitProgress).
func (r *runner) watchdog(ctx context.Context) {
	t := time.NewTicker(stallTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, f := range r.flows {
				f.progress.open()
			}
		}
	}
}

// trafficConns are the live connections of a traffic run.
type trafficConns struct {
	r        *runner
	subs     []*subscriber
	pubs     []*publisher
	sys      *sysWatcher
	sysBase  int64
	hasSys   bool
	stopping atomic.Bool

	subCtx  context.Context
	stopSub context.CancelFunc
	pubStop context.CancelFunc
	readers sync.WaitGroup // subscribers, ack readers, $SYS
	writers sync.WaitGroup
	cut     []bool // publisher i was stopped inside a write
	lowat   int    // SO_RCVLOWAT of the subscribers, 0 when not set
	// ackLowat is the SO_RCVLOWAT of the publishers, 0 when not set.
	ackLowat int
}

// connect opens the $SYS watcher, the subscribers and then the
// publishers, so nothing is published before every subscription exists.
func (r *runner) connect(ctx context.Context, pl plan) (*trafficConns, error) {
	c := r.cfg
	t := &trafficConns{r: r}
	if c.SysDropped {
		w, err := r.watchSys(ctx)
		if err != nil {
			return nil, fmt.Errorf("$SYS watcher: %w", err)
		}
		t.sys = w
		t.readers.Go(w.run)
		// The retained value, if the broker has published one.
		t.sysBase, t.hasSys = w.value(ctx, -1, 1500*time.Millisecond)
	}
	subBuf := 256 << 10
	if len(pl.subs) > 8 {
		subBuf = 64 << 10
	}
	var recvMax uint16
	if c.QoS > 0 {
		recvMax = 65535 // let the broker's own window apply
	}
	subConns, err := r.openMany(ctx, len(pl.subs), "s", subBuf, recvMax, func(ctx context.Context, i int, mc *mconn) error {
		return mc.subscribe(ctx, pl.subs[i].topic, r.subQoS())
	})
	if err != nil {
		t.closeSys()
		return nil, fmt.Errorf("connecting subscribers: %w", err)
	}
	pubConns, err := r.openMany(ctx, len(pl.pubs), "p", 16<<10, 0, nil)
	if err != nil {
		for _, mc := range subConns {
			mc.nc.Close()
		}
		t.closeSys()
		return nil, fmt.Errorf("connecting publishers: %w", err)
	}
	for i, mc := range subConns {
		s := &subscriber{c: mc, f: pl.subs[i].f, hist: newHistogram(), base: r.base}
		if c.Scenario == Overload {
			s.pktLen = c.Size + len(pl.pubs[0].topic) + 8
			s.rateBytes = c.SubRate * float64(s.pktLen)
		}
		t.subs = append(t.subs, s)
	}
	if c.Scenario == FanIn || c.Scenario == FanOut {
		t.lowat = r.lowat(pl)
		for _, s := range t.subs {
			setRcvLowat(s.c.nc, t.lowat)
		}
	}
	if c.QoS > 0 && c.Rate == 0 {
		// A publisher's acknowledgement reader need not wake before
		// enough acknowledgements (4 bytes each) are in for the writer's
		// smallest write (publisher.threshold = Window/4): it saves a
		// wake-up per PUBACK against brokers that write each one alone.
		// Below the 3/4 window the writer waits for, so it never waits
		// for acknowledgements that cannot come.
		t.ackLowat = c.Window
		for _, mc := range pubConns {
			setRcvLowat(mc.nc, t.ackLowat)
		}
	}
	rate := c.Rate / float64(len(pl.pubs))
	for i, mc := range pubConns {
		p, err := newPublisher(mc, pl.pubs[i].f, pl.pubs[i].topic, &c, r.base, rate)
		if err != nil {
			for _, mc := range append(subConns, pubConns...) {
				mc.nc.Close()
			}
			t.closeSys()
			return nil, err
		}
		t.pubs = append(t.pubs, p)
	}
	t.cut = make([]bool, len(t.pubs))
	return t, nil
}

// start runs every reader and writer; a failure of any of them before
// the teardown cancels the run with its error.
func (t *trafficConns) start(ctx context.Context, cancel context.CancelCauseFunc) {
	fail := func(what string, err error) {
		if err != nil && !t.stopping.Load() {
			cancel(fmt.Errorf("%s: %w", what, err))
		}
	}
	win := newSpan()
	for _, s := range t.subs {
		s.win = win
	}
	t.r.win = win
	t.subCtx, t.stopSub = context.WithCancel(ctx)
	for i, s := range t.subs {
		t.readers.Go(func() { fail(fmt.Sprintf("subscriber %d", i), s.run(t.subCtx)) })
	}
	pubCtx, pubStop := context.WithCancel(ctx)
	t.pubStop = pubStop
	t.r.phase.Store(phaseWarmup)
	for i, p := range t.pubs {
		t.readers.Go(func() { fail(fmt.Sprintf("publisher %d", i), p.readAcks()) })
		stop := context.AfterFunc(pubCtx, func() { p.c.nc.SetWriteDeadline(time.Now()) })
		t.writers.Go(func() {
			defer stop()
			err := p.run(pubCtx)
			if errors.Is(err, errStopped) {
				t.cut[i] = true
				err = nil
			}
			fail(fmt.Sprintf("publisher %d", i), err)
		})
	}
}

// stopPublishers stops the writers and waits for them. The subscribers and
// the publishers' acknowledgement readers then read every byte again,
// however few: the last messages of the run may never add up to the
// low-water mark.
func (t *trafficConns) stopPublishers() {
	t.pubStop()
	t.writers.Wait()
	if t.lowat > 0 {
		for _, s := range t.subs {
			setRcvLowat(s.c.nc, 1)
		}
	}
	if t.ackLowat > 0 {
		for _, p := range t.pubs {
			setRcvLowat(p.c.nc, 1)
		}
	}
}

// lowat is the SO_RCVLOWAT for the subscribers of the throughput
// scenarios. A broker that writes each packet with its own system call
// (mosquitto) would otherwise wake a subscriber for nearly every message,
// and the load generator would spend as much CPU reading as the broker
// spends writing. Waiting for 16 KiB (200 64-byte messages) costs those
// scenarios' latency figures a little, which is why pairs and latency do
// not do it. It stays well below the bytes the pacing window lets
// through, so a subscriber never waits for data that cannot come.
func (r *runner) lowat(pl plan) int {
	lw := 16 << 10
	if f := pl.flows[0]; f.limit > 0 {
		perSub := f.limit * int64(r.cfg.Size+len(pl.subs[0].topic)+8)
		lw = int(min(int64(lw), perSub/8))
	}
	return lw
}

// teardown stops every reader (by moving its read deadline to now, the
// one way to interrupt a blocked Read), waits for them, and then
// disconnects: only once no goroutine uses a connection may another write
// on it.
func (t *trafficConns) teardown() {
	t.stopping.Store(true)
	t.stopSub()
	now := time.Now()
	for _, s := range t.subs {
		s.c.nc.SetReadDeadline(now)
	}
	for _, p := range t.pubs {
		p.c.nc.SetReadDeadline(now)
	}
	if t.sys != nil {
		t.sys.c.nc.SetReadDeadline(now)
	}
	t.readers.Wait()
	for _, s := range t.subs {
		s.c.disconnect()
	}
	for i, p := range t.pubs {
		if t.cut[i] {
			p.c.nc.Close()
		} else {
			p.c.disconnect()
		}
	}
	if t.sys != nil {
		t.sys.c.disconnect()
	}
	t.r.conns.Store(0)
}

func (t *trafficConns) closeSys() {
	if t.sys != nil {
		t.sys.c.nc.SetReadDeadline(time.Now())
		t.readers.Wait()
		t.sys.c.nc.Close()
	}
}

// measure waits out the warm-up and the duration, taking the snapshots
// the rates are computed from.
func (r *runner) measure(ctx context.Context, t *trafficConns) error {
	if !sleep(ctx, r.cfg.Warmup) {
		return errorOf(ctx)
	}
	pub0, sub0 := r.totals()
	cpu := startCPU(r.cfg.PID)
	t0 := time.Now()
	r.win.lo.Store(int64(t0.Sub(r.base)))
	r.phase.Store(phaseMeasure)
	ok := sleep(ctx, r.cfg.Duration)
	pub1, sub1 := r.totals()
	t1 := time.Now()
	r.res.LoadCPU, r.brokerCPU = cpu.stop()
	r.win.hi.Store(int64(t1.Sub(r.base)))
	el := t1.Sub(t0).Seconds()
	r.res.Duration = el
	r.res.Published, r.res.Delivered = pub1-pub0, sub1-sub0
	if el > 0 {
		r.res.PublishRate = float64(r.res.Published) / el
		r.res.DeliverRate = float64(r.res.Delivered) / el
	}
	if !ok {
		return errorOf(ctx)
	}
	return nil
}

// drainFor is how long the drain may take at most when deliveries are
// quick; a slow subscriber (Overload) could take minutes to read what the
// broker queued, and that backlog is the point of the scenario, not
// something to wait for.
func (r *runner) drainFor() time.Duration {
	if r.cfg.Scenario == Overload {
		return time.Second
	}
	return 5 * time.Second
}

// drainStall is how long the drain waits without a delivery or an
// acknowledgement before it gives up when deliveries are quick: 2 s, not
// 0.5, which a 200 KiB message through a broker on a machine at a load
// average of 30 outlasted (a suite run counted 7 of 30 as missing).
const drainStall = 2 * time.Second

// drainCap bounds the drain whatever the deliveries took, so a broker
// that stopped delivering ends the run.
const drainCap = 30 * time.Second

// drainBounds is how long the drain waits without progress (stall) and in
// all (total), given the slowest delivery seen so far. A broker that takes
// 5 s to deliver each 200 KiB message on a loaded machine is slow, not
// losing messages: a fixed 5 s drain counted 5 of 31 such messages as
// missing while they were still on their way. So both bounds grow with
// the slowest delivery (twice it without progress, three times in all),
// up to drainCap; Overload's backlog is not waited for.
func (r *runner) drainBounds(slowest time.Duration) (stall, total time.Duration) {
	stall, total = drainStall, r.drainFor()
	if r.cfg.Scenario == Overload {
		return stall, total
	}
	return min(max(stall, 2*slowest), drainCap), min(max(total, 3*slowest), drainCap)
}

// drain waits until every message published has arrived and every
// publish is acknowledged, until nothing has moved for the stall bound,
// or the total bound passed (drainBounds).
func (r *runner) drain(ctx context.Context, t *trafficConns) {
	start := time.Now()
	var last uint64
	lastMove := start
	for ctx.Err() == nil {
		inflight := 0
		for _, p := range t.pubs {
			p.mu.Lock()
			inflight += p.inflight
			p.mu.Unlock()
		}
		var expected, delivered uint64
		var slowest time.Duration
		for _, f := range r.flows {
			expected += f.published.Load() * f.fanout
			delivered += f.delivered.Load()
			slowest = max(slowest, time.Duration(f.slowest.Load()))
		}
		if delivered >= expected && inflight == 0 {
			return
		}
		if cur := delivered + uint64(inflight)<<32; cur != last {
			last, lastMove = cur, time.Now()
		}
		now := time.Now()
		stall, total := r.drainBounds(slowest)
		if now.Sub(lastMove) > stall || now.Sub(start) > total {
			if r.cfg.Scenario != Overload {
				r.note("the drain gave up with %d deliveries missing and %d publishes unacknowledged (slowest delivery %v)", expected-min(delivered, expected), inflight, slowest.Round(time.Millisecond))
			}
			return
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// finish fills in the totals, latency, broker figures and notes.
func (r *runner) finish(ctx context.Context, t *trafficConns) {
	res := r.res
	for _, f := range r.flows {
		res.PublishedTotal += f.published.Load()
		res.DeliveredTotal += f.delivered.Load()
		res.ExpectedTotal += f.published.Load() * f.fanout
	}
	res.Missing = int64(res.ExpectedTotal) - int64(res.DeliveredTotal)
	var stalls uint64
	for _, p := range t.pubs {
		res.PublishErrors += p.errs.Load()
		stalls += p.stalls.Load()
	}
	if stalls > 0 {
		r.note("publishers waited over %v for their subscribers %d times and wrote those messages off: the broker dropped or held them", stallTimeout, stalls)
	}
	if res.PublishErrors > 0 {
		r.note("%d publishes were refused with a failure reason code", res.PublishErrors)
	}
	if r.cfg.Scenario == Overload && res.Missing > 0 {
		r.note("missing counts messages the broker dropped and those still queued for the slow subscriber when the run ended")
	}
	if res.Broker != nil {
		res.Broker.CPU = r.brokerCPU
		res.Broker.RSSAfterKiB = r.sampleRSS()
		res.Broker.RSSMaxKiB = r.rssMax.Load()
	}
	if t.sys != nil {
		r.finishSys(ctx, t)
	}
}

// latency merges the subscribers' histograms; only after teardown, when
// their goroutines no longer record.
func (t *trafficConns) latency() *LatencyStats {
	h := newHistogram()
	for _, s := range t.subs {
		h.merge(s.hist)
	}
	return h.stats()
}

// finishSys reads the broker's drop count after the load. Brokers publish
// $SYS on a timer, so it waits for an update newer than the end of the
// drain.
func (r *runner) finishSys(ctx context.Context, t *trafficConns) {
	end := int64(time.Since(r.base))
	n, ok := t.sys.value(ctx, end, 3*time.Second)
	if r.res.Broker == nil {
		r.res.Broker = &BrokerStats{}
	}
	switch {
	case ok:
		d := n - max(t.sysBase, 0)
		r.res.Broker.Dropped = &d
	default:
		var zero int64
		r.res.Broker.Dropped = &zero
		r.note("the broker published no %s; taken as no drops (mosquitto publishes it only once it is non-zero)", sysDroppedTopic)
	}
}
