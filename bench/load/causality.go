package load

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// causalityTimeout bounds each wait of a causality trial for the broker's
// answer; a broker that does not answer in that time ends the run.
const causalityTimeout = 5 * time.Second

// causality measures arrival order across connections: whether a
// SUBSCRIBE that reached the broker before another connection's PUBLISH to
// the topic took effect first, as it does in a broker that handles events
// in the order they arrive. The spec does not promise it [MQTT-4.6.0]
// orders only one connection's messages), but clients and test suites rely
// on it, and a broker that needs longer than the gap to react to a
// connection waking from idle inverts the two.
//
// One trial, on a pair of connections idle for at least Idle and a broker
// quiet for at least Quiet:
//
//  1. the subscriber writes SUBSCRIBE (QoS 0) to a fresh topic;
//  2. Gap later (a busy wait: sleeps are not that precise) the publisher
//     writes the probe, a QoS 1 PUBLISH to that topic;
//  3. once the probe's PUBACK and the SUBACK are in, the publisher writes a
//     marker, a second QoS 1 PUBLISH to the topic, which the subscription
//     certainly matches;
//  4. the subscriber reads until the marker. The probe arrived before it
//     unless the broker routed the probe before it applied the
//     SUBSCRIBE: an inversion. (One publisher's messages to one topic
//     keep their order [MQTT-4.6.0-5], so the marker cannot overtake a
//     delivered probe.)
//  5. the subscriber unsubscribes, so every trial meets the same broker.
//
// Trials rotate over Pairs pairs of connections, so each pair idles Idle
// while the run takes about Quiet plus a few round trips per trial, and
// they cycle through the gaps so that drifts of a shared machine hit
// every gap alike.
func (r *runner) causality(ctx context.Context) (*Result, error) {
	c := r.cfg
	st := &CausalityStats{Idle: c.Idle.Seconds(), Quiet: c.Quiet.Seconds(), Pairs: c.Pairs}
	r.res.Causality = st
	subs, err := r.openMany(ctx, c.Pairs, "s", 4096, 0, nil)
	if err != nil {
		return r.res, fmt.Errorf("opening subscribers: %w", err)
	}
	defer closeAll(subs)
	pubs, err := r.openMany(ctx, c.Pairs, "p", 4096, 0, nil)
	if err != nil {
		return r.res, fmt.Errorf("opening publishers: %w", err)
	}
	defer closeAll(pubs)
	if r.res.Broker != nil {
		r.res.Broker.RSSBeforeKiB = r.sampleRSS()
	}

	gaps := make([]*gapRun, len(c.Gaps))
	for i, g := range c.Gaps {
		gaps[i] = &gapRun{gap: g, puback: newHistogram()}
	}
	lastUsed := make([]time.Time, c.Pairs) // zero: the connections just opened, idle enough
	opened := time.Now()
	for i := range lastUsed {
		lastUsed[i] = opened
	}
	r.phase.Store(phaseMeasure)
	cpu := startCPU(c.PID)
	lastEnd := time.Now()
	nextProgress := lastEnd.Add(time.Second)
	total := c.Trials * len(gaps)
	for n := 0; n < total; n++ {
		pair := n % c.Pairs
		g := gaps[n%len(gaps)]
		wait := max(time.Until(lastUsed[pair].Add(c.Idle)), time.Until(lastEnd.Add(c.Quiet)))
		if wait > 0 && !sleep(ctx, wait) {
			break
		}
		topic := fmt.Sprintf("roost-bench/%s/causality/%d/%d", r.id, pair, n)
		inOrder, err := g.trial(subs[pair], pubs[pair], topic)
		if err != nil {
			st.Gaps = summarizeGaps(gaps)
			r.res.LoadCPU, r.brokerCPU = cpu.stop()
			return r.res, fmt.Errorf("trial %d (gap %v): %w", n, g.gap, err)
		}
		if !inOrder {
			g.inversions++
		}
		g.trials++
		lastEnd = time.Now()
		lastUsed[pair] = lastEnd
		if r.cfg.Progress != nil && lastEnd.After(nextProgress) {
			nextProgress = lastEnd.Add(time.Second)
			r.progressTrials(gaps)
		}
	}
	r.res.LoadCPU, r.brokerCPU = cpu.stop()
	st.Gaps = summarizeGaps(gaps)
	if b := r.res.Broker; b != nil {
		b.RSSAfterKiB = r.sampleRSS()
		b.RSSMaxKiB = r.rssMax.Load()
		b.CPU = r.brokerCPU
	}
	return r.res, ctx.Err()
}

func closeAll(cs []*mconn) {
	for _, c := range cs {
		c.disconnect()
	}
}

func (r *runner) progressTrials(gaps []*gapRun) {
	var trials, inv uint64
	for _, g := range gaps {
		trials += uint64(g.trials)
		inv += uint64(g.inversions)
	}
	r.cfg.Progress(Progress{Scenario: Causality, Phase: "measure", Elapsed: time.Since(r.base),
		Published: trials, Delivered: trials - inv})
}

// gapRun is what the trials at one gap found.
type gapRun struct {
	gap                time.Duration
	trials, inversions int
	gapSum             time.Duration // achieved gaps, summed
	// puback is the time from the probe's write to its PUBACK: how fast
	// the broker answers a connection waking from idle. (The SUBACK's
	// time is not measured: the busy wait for the gap keeps this process
	// from reading it when it comes.)
	puback *histogram
}

// trial runs one trial (see causality) and reports whether the probe
// arrived: the SUBSCRIBE took effect first.
func (g *gapRun) trial(sub, pub *mconn, topic string) (inOrder bool, err error) {
	subscribe, err := (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: topic}}}).Encode(nil, sub.v)
	if err != nil {
		return false, err
	}
	probe, err := (&packet.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: []byte("probe")}).Encode(nil, pub.v)
	if err != nil {
		return false, err
	}
	deadline := time.Now().Add(causalityTimeout)
	sub.nc.SetWriteDeadline(deadline)
	pub.nc.SetWriteDeadline(deadline)
	if _, err := sub.nc.Write(subscribe); err != nil {
		return false, fmt.Errorf("SUBSCRIBE: %w", err)
	}
	t0 := time.Now()
	for time.Since(t0) < g.gap {
		// Busy: a timer would add its own wake-up latency to the gap.
	}
	t1 := time.Now()
	if _, err := pub.nc.Write(probe); err != nil {
		return false, fmt.Errorf("probe PUBLISH: %w", err)
	}
	g.gapSum += t1.Sub(t0)

	// The subscriber's side is read concurrently, so the PUBACK is read
	// as soon as it comes.
	var wg sync.WaitGroup
	var subErr error
	var probeFirst, sawMarker bool
	subacked := make(chan struct{}, 1)
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		probeFirst, sawMarker, subErr = readTrial(sub, deadline, subacked)
	})
	if err := expectAck(pub, packet.PUBACK, 1, deadline); err != nil {
		pub.nc.SetReadDeadline(time.Now()) // nothing more comes; let the reader go
		sub.nc.SetReadDeadline(time.Now())
		wg.Wait()
		return false, fmt.Errorf("probe PUBACK: %w", err)
	}
	g.puback.record(int64(time.Since(t1)))
	// The marker goes once the subscription is certainly in place.
	select {
	case <-subacked:
	case <-done: // the subscriber's reading failed (it ends by the deadline)
		select {
		case <-subacked:
		default:
			return false, fmt.Errorf("no SUBACK: %w", subErr)
		}
	}
	marker, err := (&packet.Publish{QoS: 1, PacketID: 2, Topic: topic, Payload: []byte("marker")}).Encode(nil, pub.v)
	if err != nil {
		return false, err
	}
	if _, err := pub.nc.Write(marker); err != nil {
		return false, fmt.Errorf("marker PUBLISH: %w", err)
	}
	if err := expectAck(pub, packet.PUBACK, 2, deadline); err != nil {
		sub.nc.SetReadDeadline(time.Now())
		wg.Wait()
		return false, fmt.Errorf("marker PUBACK: %w", err)
	}
	wg.Wait()
	if subErr != nil || !sawMarker {
		return false, fmt.Errorf("subscriber: %w", subErr)
	}
	unsub, err := (&packet.Unsubscribe{PacketID: 2, Filters: []string{topic}}).Encode(nil, sub.v)
	if err != nil {
		return false, err
	}
	if _, err := sub.nc.Write(unsub); err != nil {
		return false, fmt.Errorf("UNSUBSCRIBE: %w", err)
	}
	if err := expectAck(sub, packet.UNSUBACK, 2, deadline); err != nil {
		return false, fmt.Errorf("UNSUBACK: %w", err)
	}
	return probeFirst, nil
}

// readTrial reads the subscriber's side of a trial until the marker,
// sending on subacked when the SUBACK is in.
func readTrial(c *mconn, deadline time.Time, subacked chan<- struct{}) (probe, marker bool, err error) {
	for {
		p, err := c.readPacket(deadline)
		if err != nil {
			return probe, false, err
		}
		switch p := p.(type) {
		case *packet.Suback:
			subacked <- struct{}{}
			if len(p.ReasonCodes) != 1 || p.ReasonCodes[0] >= 0x80 {
				return false, false, fmt.Errorf("subscription refused: SUBACK %v", p.ReasonCodes)
			}
		case *packet.Publish:
			switch string(p.Payload) {
			case "probe":
				probe = true
			case "marker":
				return probe, true, nil
			}
		default:
			return probe, false, fmt.Errorf("%w: %v", errProtocol, p.Type())
		}
	}
}

// expectAck reads packets from c until the acknowledgement of type t for
// packet id, failing on anything else.
func expectAck(c *mconn, t packet.Type, id uint16, deadline time.Time) error {
	p, err := c.readPacket(deadline)
	if err != nil {
		return err
	}
	var got uint16
	switch a := p.(type) {
	case *packet.Puback:
		got = a.PacketID
	case *packet.Unsuback:
		got = a.PacketID
	}
	if p.Type() != t || got != id {
		return fmt.Errorf("%w: %v (id %d) instead of %v for id %d", errProtocol, p.Type(), got, t, id)
	}
	return nil
}

func summarizeGaps(gaps []*gapRun) []GapStats {
	out := make([]GapStats, 0, len(gaps))
	for _, g := range gaps {
		s := GapStats{Gap: float64(g.gap) / 1e3, Trials: g.trials, Inversions: g.inversions,
			Puback: g.puback.stats()}
		if g.trials > 0 {
			s.PerThousand = math.Round(1e4*float64(g.inversions)/float64(g.trials)) / 10
			s.GapMean = float64(g.gapSum) / float64(g.trials) / 1e3
		}
		out = append(out, s)
	}
	return out
}
