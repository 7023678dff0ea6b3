package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// batchBytes is how much a publisher writes per system call at most.
const batchBytes = 64 << 10

// stallTimeout is how long a paced publisher waits for its subscribers
// before it writes the outstanding messages off as lost: a broker that drops
// QoS 0 messages would otherwise stop the run.
const stallTimeout = time.Second

// publisher writes PUBLISH packets on one connection. The writer (run) and
// the acknowledgement reader (readAcks) are two goroutines; for QoS 1 and 2
// they share the window under mu.
type publisher struct {
	c    *mconn
	f    *flow
	qos  packet.QoS
	base time.Time // the run's time origin for stamps
	rate float64   // messages/s; 0 unlimited
	pace bool      // wait for the subscribers (flow.limit)

	window   int
	batch    []byte // k copies of the PUBLISH
	pktLen   int
	k        int
	idOff    int // offset of the packet identifier in one copy, QoS > 0
	stampOff int // offset of the payload in one copy

	mu       sync.Mutex
	inflight int
	used     [65536 / 64]uint64 // packet identifiers in flight
	nextID   uint16
	rels     []uint16 // PUBRELs the writer must send (QoS 2)

	// stuckSince is when the writer, waiting for its subscribers, saw
	// their delivery count at stuckAt; see waitProgress.
	stuckSince time.Time
	stuckAt    uint64

	acked  chan struct{} // capacity 1: the window moved or PUBRELs wait
	errs   atomic.Uint64 // acknowledgements with a failure reason code
	stalls atomic.Uint64 // times waitProgress gave up
}

func newPublisher(c *mconn, f *flow, topic string, cfg *Config, base time.Time, rate float64) (*publisher, error) {
	payload := make([]byte, cfg.Size)
	for i := stampSize; i < len(payload); i++ {
		payload[i] = 'x'
	}
	pub := &packet.Publish{Topic: topic, QoS: cfg.QoS, Payload: payload}
	if cfg.QoS > 0 {
		pub.PacketID = 1
	}
	one, err := pub.Encode(nil, cfg.Protocol)
	if err != nil {
		return nil, fmt.Errorf("encoding PUBLISH: %w", err)
	}
	h, err := packet.ParseFixedHeader(one)
	if err != nil {
		return nil, err
	}
	p := &publisher{
		c: c, f: f, qos: cfg.QoS, base: base, rate: rate, pace: !cfg.Flat,
		window: cfg.Window, pktLen: len(one), k: max(1, batchBytes/len(one)),
		idOff:    h.HeaderLen + 2 + len(topic),
		stampOff: len(one) - cfg.Size,
		acked:    make(chan struct{}, 1),
	}
	p.batch = make([]byte, 0, p.k*len(one))
	for range p.k {
		p.batch = append(p.batch, one...)
	}
	return p, nil
}

// threshold is the fewest messages worth a write when the window or the
// subscribers limit us: waiting for a quarter of the window to free up
// keeps writes large without starving the pipeline. A rate-limited
// publisher sends each message when it is due.
func (p *publisher) threshold(n int) int {
	if p.rate > 0 {
		return 1
	}
	return max(1, min(n, p.window/4))
}

// run writes until ctx ends. It returns nil when it stopped because of ctx.
func (p *publisher) run(ctx context.Context) error {
	start := time.Now()
	var sent int64
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var rels []byte
	for ctx.Err() == nil {
		n := p.k
		if p.rate > 0 {
			due := int64(time.Since(start).Seconds()*p.rate) + 1 - sent
			if due <= 0 {
				next := start.Add(time.Duration(float64(sent) / p.rate * float64(time.Second)))
				sleepCtx(ctx, timer, time.Until(next))
				continue
			}
			n = min(n, int(due))
		}
		if p.pace {
			avail := p.f.limit - p.f.outstanding()
			if avail < int64(p.threshold(n)) {
				p.waitProgress(ctx, n)
				continue
			}
			n = min(n, int(avail))
		}
		var err error
		rels, n = p.reserve(n, rels[:0])
		if len(rels) > 0 {
			if _, err = p.c.nc.Write(rels); err != nil {
				return p.writeErr(ctx, err)
			}
		}
		if n == 0 {
			select {
			case <-p.acked:
			case <-ctx.Done():
			}
			continue
		}
		stamp := uint64(time.Since(p.base))
		for i := range n {
			binary.BigEndian.PutUint64(p.batch[i*p.pktLen+p.stampOff:], stamp)
		}
		if w, err := p.c.nc.Write(p.batch[:n*p.pktLen]); err != nil {
			// The packets written in full count: the broker may deliver them.
			p.f.published.Add(uint64(w / p.pktLen))
			return p.writeErr(ctx, err)
		}
		p.f.published.Add(uint64(n))
		sent += int64(n)
	}
	return nil
}

func (p *publisher) writeErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errStopped // the deadline that stopped us
	}
	return fmt.Errorf("publishing: %w", err)
}

// errStopped reports that a writer was interrupted inside a write: its
// connection may hold half a packet and must be closed, not disconnected.
var errStopped = errors.New("load: stopped inside a write")

// waitProgress waits until the subscribers have made progress or the
// window moved. When the flow's subscribers have received nothing for
// stallTimeout, the flow writes off what is outstanding, so a broker that
// drops messages slows the run rather than stops it. It uses no timer of
// its own (timers cost locks on every wait): the run's watchdog opens
// every gate a few times a second so waiters look at the clock.
func (p *publisher) waitProgress(ctx context.Context, n int) {
	ch := p.f.progress.wait()
	if p.f.limit-p.f.outstanding() >= int64(p.threshold(n)) {
		return
	}
	now, seen := time.Now(), p.f.delivered.Load()
	if p.stuckSince.IsZero() || seen != p.stuckAt {
		p.stuckSince, p.stuckAt = now, seen
	} else if now.Sub(p.stuckSince) > stallTimeout {
		if p.f.writeOff(seen) {
			p.stalls.Add(1)
		}
		p.stuckSince = time.Time{}
		return
	}
	select {
	case <-ch:
	case <-p.acked:
	case <-ctx.Done():
	}
}

// reserve takes up to n packet identifiers from the window (QoS 1 and 2),
// writes them into the batch and returns how many it took, or 0 when fewer
// than the threshold are free. It also hands over the PUBRELs to send,
// appended to rels.
func (p *publisher) reserve(n int, rels []byte) ([]byte, int) {
	if p.qos == 0 {
		return rels, n
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range p.rels {
		rels = appendAck(rels, packet.PUBREL, id)
	}
	p.rels = p.rels[:0]
	free := p.window - p.inflight
	if free < p.threshold(n) {
		return rels, 0
	}
	n = min(n, free)
	for i := range n {
		id := p.nextFreeID()
		p.used[id/64] |= 1 << (id % 64)
		binary.BigEndian.PutUint16(p.batch[i*p.pktLen+p.idOff:], id)
	}
	p.inflight += n
	return rels, n
}

// nextFreeID returns the next packet identifier not in flight; the window
// (at most 32768) guarantees there is one.
func (p *publisher) nextFreeID() uint16 {
	for {
		p.nextID++
		if p.nextID == 0 {
			p.nextID = 1 // [MQTT-2.2.1-3]
		}
		if p.used[p.nextID/64]&(1<<(p.nextID%64)) == 0 {
			return p.nextID
		}
	}
}

// release frees id from the window; false if it was not in flight.
func (p *publisher) release(id uint16) bool {
	bit := uint64(1) << (id % 64)
	if p.used[id/64]&bit == 0 {
		return false
	}
	p.used[id/64] &^= bit
	p.inflight--
	return true
}

// readAcks reads what the broker sends a publisher: acknowledgements for
// QoS 1 and 2, nothing for QoS 0 (then it only notices the connection
// ending). It returns the error that ended the connection.
func (p *publisher) readAcks() error {
	for {
		if err := p.c.fill(0); err != nil {
			return err
		}
		if err := p.handleAcks(); err != nil {
			return err
		}
		select {
		case p.acked <- struct{}{}:
		default:
		}
	}
}

func (p *publisher) handleAcks() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		h, body, ok, err := p.c.next()
		if err != nil || !ok {
			return err
		}
		switch h.Type {
		case packet.PUBACK, packet.PUBREC, packet.PUBCOMP:
			id, failed, ok := ackID(body)
			if !ok {
				return fmt.Errorf("%w: short %v", errProtocol, h.Type)
			}
			if failed {
				p.errs.Add(1)
			}
			if h.Type == packet.PUBREC && !failed {
				p.rels = append(p.rels, id) // stays in flight until PUBCOMP
			} else if !p.release(id) {
				return fmt.Errorf("%w: %v for packet identifier %d not in flight", errProtocol, h.Type, id)
			}
		case packet.DISCONNECT:
			return disconnectErr(body)
		}
	}
}

// disconnectErr describes a DISCONNECT from the broker.
func disconnectErr(body []byte) error {
	if len(body) > 0 {
		return fmt.Errorf("broker sent DISCONNECT, reason 0x%02X (%v)", body[0], packet.ReasonCode(body[0]))
	}
	return errors.New("broker sent DISCONNECT")
}

// sleepCtx sleeps for d or until ctx ends, with the caller's timer.
func sleepCtx(ctx context.Context, timer *time.Timer, d time.Duration) {
	if d <= 0 {
		return
	}
	timer.Reset(d)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
}
