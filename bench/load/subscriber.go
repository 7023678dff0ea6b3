package load

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// subscriber reads deliveries on one connection, acknowledges them and
// records their latency. Its goroutine is the connection's only reader and
// only writer.
type subscriber struct {
	c    *mconn
	f    *flow
	hist *histogram
	win  *span
	base time.Time
	// rateBytes, when > 0, is how many bytes per second the subscriber
	// reads (Overload's slow subscriber); pktLen is one delivery's size,
	// the smallest read worth making.
	rateBytes float64
	pktLen    int
}

// slowTick is how often a slow subscriber reads.
const slowTick = 10 * time.Millisecond

// run reads until the connection fails or its read deadline is moved to
// now (which is how the run stops it).
func (s *subscriber) run(ctx context.Context) error {
	acks := make([]byte, 0, 4096)
	start := time.Now()
	var read int64
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		limit := 0
		if s.rateBytes > 0 {
			allowed := int64(time.Since(start).Seconds()*s.rateBytes) - read
			if allowed < int64(s.pktLen) {
				sleepCtx(ctx, timer, slowTick)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			limit = int(allowed)
		}
		w := s.c.w - s.c.r
		err := s.c.fill(limit)
		read += int64(s.c.w - s.c.r - w)
		now := int64(time.Since(s.base))
		var perr error
		acks, perr = s.parse(now, acks[:0])
		if len(acks) > 0 {
			if _, werr := s.c.nc.Write(acks); werr != nil && err == nil {
				err = werr
			}
		}
		if err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
	}
}

// parse handles every complete packet in the buffer, all of which arrived
// at now, and returns the acknowledgements to send.
func (s *subscriber) parse(now int64, acks []byte) ([]byte, error) {
	lo, hi := s.win.lo.Load(), s.win.hi.Load()
	var n uint64
	var slow int64
	defer func() {
		if n > 0 {
			s.f.deliver(n)
		}
		if slow > 0 {
			s.f.noteSlow(slow)
		}
	}()
	for {
		h, body, ok, err := s.c.next()
		if err != nil || !ok {
			return acks, err
		}
		switch h.Type {
		case packet.PUBLISH:
			id, payload, ok := publishView(h.Flags, body, s.c.v)
			if !ok {
				return acks, fmt.Errorf("%w: malformed PUBLISH", errProtocol)
			}
			n++
			if len(payload) >= stampSize {
				st := int64(binary.BigEndian.Uint64(payload))
				if st >= lo && st < hi {
					s.hist.record(now - st)
				}
				slow = max(slow, now-st)
			}
			switch h.Flags >> 1 & 3 {
			case 1:
				acks = appendAck(acks, packet.PUBACK, id)
			case 2:
				acks = appendAck(acks, packet.PUBREC, id)
			}
		case packet.PUBREL:
			id, _, ok := ackID(body)
			if !ok {
				return acks, fmt.Errorf("%w: short PUBREL", errProtocol)
			}
			acks = appendAck(acks, packet.PUBCOMP, id)
		case packet.DISCONNECT:
			return acks, disconnectErr(body)
		}
	}
}
