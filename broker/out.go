package broker

import (
	"net"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// A connection's output is a chain of blocks: packets are encoded into the
// last one, and a packet that does not fit starts a new block. The flusher
// takes the whole chain and writes it with one writev. Blocks come from
// pools and go back after the write, so a busy connection neither copies
// its backlog as it grows (as one growing slice would, with a fresh
// zeroed allocation each time it doubles) nor makes garbage. The chain and
// its bookkeeping live in an outState that exists only while there is
// output: an idle connection holds neither blocks nor the state.
const (
	// smallBlock is the first block of a burst: most bursts are a few
	// acknowledgements or messages.
	smallBlock = 2 << 10
	// bigBlock is every further block.
	bigBlock = 32 << 10
)

// outState is a connection's pending output, guarded by conn.outMu. It
// exists while a flusher runs or output waits (flushing implies it).
type outState struct {
	full    [][]byte // full blocks, in order
	fullLen int
	out     []byte // the block being appended to
	// unsent counts PUBLISH packets appended per QoS since the last
	// flush; the flusher moves them to the broker's counters, so the hot
	// path does not bump shared atomics per message.
	unsent      [3]uint64
	unsentBytes [3]uint64
	// confirms are the cluster confirmations the output waits for
	// (needConfirmed), as durable is the store's.
	confirms []func() error
	// durableDone runs once what the output waits for before its next
	// write is durable and confirmed, before that write (afterDurable).
	durableDone []func()
	drained     chan struct{} // closed when the flusher stops, if drain waits
	readWait    chan struct{} // closed when the reader may read on (waitOutput)
}

// outBlock returns an empty block with room for n bytes. The pools hold
// pointers to arrays: a pointer goes into an interface without an
// allocation, where a *[]byte put back would cost one (a slice header of
// garbage per put).
func (s *Server) outBlock(n int, first bool) []byte {
	switch {
	case n <= smallBlock && first:
		if b, ok := s.smallBlocks.Get().(*[smallBlock]byte); ok {
			return b[:0]
		}
		return make([]byte, 0, smallBlock)
	case n <= bigBlock:
		if b, ok := s.bigBlocks.Get().(*[bigBlock]byte); ok {
			return b[:0]
		}
		return make([]byte, 0, bigBlock)
	}
	return make([]byte, 0, n) // a large packet gets a block of its own
}

// putBlock recycles b if it came from a pool.
func (s *Server) putBlock(b []byte) {
	switch cap(b) {
	case smallBlock:
		s.smallBlocks.Put((*[smallBlock]byte)(b[:smallBlock]))
	case bigBlock:
		s.bigBlocks.Put((*[bigBlock]byte)(b[:bigBlock]))
	}
}

// room makes sure c.ob exists and its out can take n more bytes without
// growing. outMu must be held. Encoders append to c.ob.out afterwards; if
// they need more than n after all, append still works, at the cost of a
// copy.
func (c *conn) room(n int) {
	ob := c.ob
	if ob == nil {
		if p, ok := c.srv.outStates.Get().(*outState); ok {
			ob = p
		} else {
			ob = new(outState)
		}
		c.ob = ob
	}
	if cap(ob.out)-len(ob.out) >= n {
		return
	}
	if len(ob.out) > 0 {
		ob.full = append(ob.full, ob.out)
		ob.fullLen += len(ob.out)
	} else if ob.out != nil {
		c.srv.putBlock(ob.out)
	}
	ob.out = c.srv.outBlock(n, len(ob.full) == 0)
}

// pending is the number of bytes waiting for the flusher. outMu must be
// held.
func (c *conn) pending() int {
	if c.ob == nil {
		return 0
	}
	return c.ob.fullLen + len(c.ob.out)
}

// dropOutput forgets everything not yet written. outMu must be held.
func (c *conn) dropOutput() {
	ob := c.ob
	if ob == nil {
		return
	}
	for i, b := range ob.full {
		c.srv.putBlock(b)
		ob.full[i] = nil
	}
	if ob.out != nil {
		c.srv.putBlock(ob.out)
	}
	ob.full, ob.fullLen, ob.out = ob.full[:0], 0, nil
}

// releaseOutState ends c.ob once nothing is pending and no flusher runs,
// waking whoever waits on it. outMu must be held.
func (c *conn) releaseOutState() {
	ob := c.ob
	if ob == nil || c.flushing {
		return
	}
	c.releaseReaderLocked()
	if ob.drained != nil {
		close(ob.drained)
	}
	c.dropOutput()
	c.srv.stats.addSent(&ob.unsent, &ob.unsentBytes) // none unless dropped
	if len(ob.confirms) > 0 {
		// The connection died before writing what waited for them;
		// they must still be called, to release what they wait on.
		go waitConfirms(ob.confirms)
	}
	*ob = outState{}
	c.srv.outStates.Put(ob)
	c.ob = nil
}

// send encodes p into the output and makes sure a flusher runs. A packet
// that cannot be encoded, or is larger than the client's Maximum Packet
// Size [MQTT-3.1.2-24], goes without its Reason String and User Properties,
// which exist to be dropped then [MQTT-3.2.2-19/20, MQTT-3.4.2-2/3, ...];
// if it still does not fit it is not sent, and the log says so.
func (c *conn) send(p packet.Packet) {
	c.outMu.Lock()
	if !c.dead {
		c.appendControlLocked(p)
		c.startFlushLocked()
	}
	c.outMu.Unlock()
}

// reply is send for the reader's answers to what its client sent (PUBACK,
// PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP): it encodes p into the output
// but starts no flusher. The reader writes its replies itself once it has
// handled everything one read brought (flushReplies), with one
// non-blocking send when nothing else is being written, so that an answer
// costs no goroutine start and no switch, and the replies to one read
// leave in one write. Only the reader calls it; before anything that may
// make it wait (a store or cluster wait, an Authorizer that may block) it
// calls flushReplies, so no reply waits for the next packet's handling.
func (c *conn) reply(p packet.Packet) {
	c.outMu.Lock()
	if !c.dead {
		c.appendControlLocked(p)
		c.replied = true
	}
	c.outMu.Unlock()
}

// flushReplies writes what reply appended, or hands it to a flusher: at
// once when no flusher runs, one block holds the output and nothing in it
// waits for the store or the cluster (flushNowLocked). Reader only.
func (c *conn) flushReplies() {
	if !c.replied {
		return
	}
	c.replied = false
	c.outMu.Lock()
	if !c.dead {
		c.flushNowLocked()
	}
	c.outMu.Unlock()
}

// appendControlLocked encodes p onto the output as send describes. outMu
// must be held.
func (c *conn) appendControlLocked(p packet.Packet) {
	c.room(64) // acknowledgements and most control packets
	if !c.appendPacket(p) {
		if q := withoutOptionalProps(p); q == nil || !c.appendPacket(q) {
			c.logger().Warn("packet not sent: it cannot be encoded or exceeds the client's Maximum Packet Size",
				"type", p.Type().String(), "max_packet_size", c.maxOut)
		}
	}
}

// appendPacket encodes p onto the output, and reports whether it is there:
// false when encoding failed or the result is over the client's Maximum
// Packet Size. outMu must be held and c.ob exist.
func (c *conn) appendPacket(p packet.Packet) bool {
	start := len(c.ob.out)
	out, err := p.Encode(c.ob.out, c.version)
	if err != nil || c.maxOut > 0 && len(out)-start > int(c.maxOut) {
		c.ob.out = out[:start]
		return false
	}
	c.ob.out = out
	return true
}

// withoutOptionalProps returns a copy of the control packet p without a
// Reason String and User Properties, or nil when it has neither.
func withoutOptionalProps(p packet.Packet) packet.Packet {
	var props *packet.Properties
	switch x := p.(type) {
	case *packet.Connack:
		y := *x
		p, props = &y, &y.Properties
	case *packet.Puback:
		y := *x
		p, props = &y, &y.Properties
	case *packet.Pubrec:
		y := *x
		p, props = &y, &y.Properties
	case *packet.Pubrel:
		y := *x
		p, props = &y, &y.Properties
	case *packet.Pubcomp:
		y := *x
		p, props = &y, &y.Properties
	case *packet.Suback:
		y := *x
		p, props = &y, &y.Properties
	case *packet.Unsuback:
		y := *x
		p, props = &y, &y.Properties
	case *packet.Disconnect:
		y := *x
		p, props = &y, &y.Properties
	default:
		return nil
	}
	if !props.Has(packet.PropReasonString) && !props.Has(packet.PropUserProperty) {
		return nil
	}
	props.Clear(packet.PropReasonString)
	props.ReasonString = ""
	props.Clear(packet.PropUserProperty)
	props.User = nil
	return p
}

// needDurable makes the next write of this connection wait until store
// ticket t is durable.
func (c *conn) needDurable(t Ticket) {
	if t == 0 {
		return
	}
	c.outMu.Lock()
	c.durable = max(c.durable, t)
	c.outMu.Unlock()
}

// needConfirmed makes the next write of this connection wait until the
// cluster confirmed a forwarded message (Cluster.Forward's wait); a failure
// closes the connection without writing, as a store failure does, so the
// client sends its unacknowledged publishes again.
func (c *conn) needConfirmed(confirm func() error) {
	if confirm == nil {
		return
	}
	c.outMu.Lock()
	c.room(0)
	c.ob.confirms = append(c.ob.confirms, confirm)
	c.outMu.Unlock()
}

// afterDurable has the flusher call f once everything the output waits
// for so far (needDurable, needConfirmed) is durable and confirmed, before
// it writes what was appended meanwhile; f is not called if the
// connection fails first. The reader goes on meanwhile: a QoS 2 id's
// routed mark waits there for its local copies (publishQoS2), where a
// wait in the read loop held a persistent publisher to one message per
// replicated write.
func (c *conn) afterDurable(f func()) {
	c.outMu.Lock()
	if !c.dead {
		c.room(0)
		c.ob.durableDone = append(c.ob.durableDone, f)
	}
	c.outMu.Unlock()
}

// startFlushLocked starts a flusher if none runs. outMu must be held.
func (c *conn) startFlushLocked() {
	if !c.flushing && c.pending() > 0 {
		c.flushing = true
		go c.flush()
	}
}

// flushNowLocked writes c's output from the calling goroutine, at once and
// without waiting, when nothing stands in the way: no flusher runs, one
// block holds all of it, and nothing in it waits for the store or the
// cluster. Whatever it could not write (all of it, when the socket is full
// or the transport is not plain TCP) is left to a flusher, as
// startFlushLocked does. outMu must be held.
//
// It is for a delivery from a publisher that is not busy (Message.inline),
// and for the reader's own replies (flushReplies):
// at a low rate, waking a flusher goroutine to write each message costs a
// goroutine start and a switch, and the write then waits until the
// publisher's reader has found its socket empty and parked. A busy
// publisher's deliveries go through the flusher, which gathers everything
// appended while it writes into one writev.
func (c *conn) flushNowLocked() {
	if c.flushing || c.pending() == 0 {
		return
	}
	if ob := c.ob; c.durable == 0 && len(ob.confirms) == 0 && len(ob.durableDone) == 0 && len(ob.full) == 0 {
		n := writeNow(c.nc, ob.out)
		c.srv.stats.bytesSent.Add(uint64(n))
		if n == len(ob.out) {
			c.releaseOutState() // counts what ob.unsent holds as sent
			return
		}
		// Keep the block (and its pool size class): move the rest to its
		// front.
		ob.out = ob.out[:copy(ob.out, ob.out[n:])]
	}
	c.startFlushLocked()
}

// writerOf returns what the flusher writes to: the TCP socket itself when
// only transparent wrappers (see TransparentConn) sit above it, so that a
// chain of blocks goes out in one writev, which net.Buffers does only for
// the net package's own connections.
func writerOf(nc net.Conn) net.Conn {
	for w := nc; ; {
		switch x := w.(type) {
		case *net.TCPConn:
			return x
		case TransparentConn:
			w = x.NetConn()
		default:
			return nc
		}
	}
}

// flush writes the output until there is none: everything appended while
// a write is in progress leaves in the next single write.
func (c *conn) flush() {
	w := writerOf(c.nc)
	var blocks, iov [][]byte
	for {
		c.outMu.Lock()
		if c.pending() == 0 || c.dead {
			c.flushing = false
			c.releaseOutState()
			c.outMu.Unlock()
			return
		}
		ob := c.ob
		blocks = append(blocks[:0], ob.full...)
		if len(ob.out) > 0 {
			blocks = append(blocks, ob.out)
			ob.out = nil
		}
		clear(ob.full)
		ob.full, ob.fullLen = ob.full[:0], 0
		need := c.durable
		confirms, done := ob.confirms, ob.durableDone
		ob.confirms, ob.durableDone = nil, nil
		sent, sentBytes := ob.unsent, ob.unsentBytes
		ob.unsent, ob.unsentBytes = [3]uint64{}, [3]uint64{}
		c.outMu.Unlock()
		c.srv.stats.addSent(&sent, &sentBytes)

		if err := waitConfirms(confirms); err != nil {
			// Never acknowledge what another node did not confirm, nor
			// refuse it: it may still be delivered (storeFailed).
			c.logger().Warn("closing connection: a forwarded message was not confirmed in time, outcome unknown", "err", err)
			c.outMu.Lock()
			c.dead = true
			c.dropOutput()
			c.outMu.Unlock()
			c.recycle(blocks)
			if out := c.unknownDisconnect(unconfirmedWhy); out != nil {
				c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
				c.nc.Write(out)
			}
			c.nc.Close()
			c.wake() // a parked reader would never see the close
			continue
		}
		if need != 0 {
			if err := c.srv.opts.Store.Wait(need); err != nil {
				// Never acknowledge what the store could not confirm.
				out := c.storeFailed(blocks, err)
				c.recycle(blocks)
				if len(out) > 0 {
					c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
					c.nc.Write(out) // failure CONNACK or DISCONNECT 0x80
				}
				c.outMu.Lock()
				c.dead = true
				c.dropOutput()
				c.outMu.Unlock()
				c.nc.Close()
				c.wake() // a parked reader would never see the close
				continue
			}
		}
		for _, f := range done {
			f()
		}

		c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		var n int64
		var err error
		if len(blocks) == 1 {
			// Most writes fit in the socket: a raw send first (writeNow,
			// which wakes nothing of the runtime), the blocking write
			// only for what it could not take.
			m := writeNow(c.nc, blocks[0])
			if m < len(blocks[0]) {
				var k int
				k, err = w.Write(blocks[0][m:])
				m += k
			}
			n = int64(m)
		} else {
			// WriteTo consumes the slice it is given: hand it a copy so
			// blocks still holds every block to recycle.
			iov = append(iov[:0], blocks...)
			bufs := net.Buffers(iov)
			n, err = bufs.WriteTo(w)
			clear(iov)
		}
		c.srv.stats.bytesSent.Add(uint64(n))
		c.recycle(blocks)
		c.outMu.Lock()
		if c.pending() <= maxOutBuffered/2 {
			c.releaseReaderLocked()
		}
		c.outMu.Unlock()

		if err != nil {
			c.outMu.Lock()
			c.dead = true
			c.dropOutput()
			c.outMu.Unlock()
			c.logger().Debug("write failed; closing", "err", err)
			// Not Close: the reader first reads what the client sent
			// before (a DISCONNECT decides about the will), then ends.
			c.kickOut(kickWriteFailed)
		}
	}
}

// waitConfirms calls every confirmation, even after one failed (each must
// be called once), and returns the first error.
func waitConfirms(confirms []func() error) error {
	var first error
	for _, f := range confirms {
		if err := f(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// recycle returns written blocks to their pools.
func (c *conn) recycle(blocks [][]byte) {
	for i, b := range blocks {
		c.srv.putBlock(b)
		blocks[i] = nil
	}
}

// drain waits until pending output is written, the socket fails, or the
// timeout passes. It reports whether everything was written and the socket
// is still open (and so worth closing gracefully).
func (c *conn) drain(timeout time.Duration) bool {
	t := time.AfterFunc(timeout, func() {
		c.outMu.Lock()
		c.dead = true
		c.outMu.Unlock()
		c.nc.Close() // a write in progress fails, so the flusher stops
	})
	c.outMu.Lock()
	c.startFlushLocked()
	if c.flushing {
		done := make(chan struct{})
		c.ob.drained = done // flushing implies c.ob
		c.outMu.Unlock()
		<-done
		c.outMu.Lock()
	}
	written := !c.dead
	c.dead = true
	c.releaseOutState()
	c.outMu.Unlock()
	return t.Stop() && written
}

// waitOutput holds the reader while the client's unwritten output is over
// maxOutBuffered: a client that sends requests (PINGREQ, QoS 1 PUBLISH,
// SUBSCRIBE) and never reads the answers must not make the broker buffer
// them without bound. Deliveries have their own bound (QoS 0 dropped, QoS
// 1/2 held by the inflight window); this one is for replies. The reader
// goes on once the flusher has written half of it, given up, or c is
// kicked; a kick other than a takeover or a failed write ends it here.
func (c *conn) waitOutput() error {
	c.outMu.Lock()
	if c.pending() <= maxOutBuffered || c.dead || !c.flushing {
		c.outMu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	c.ob.readWait = ch // pending > 0 implies c.ob
	c.outMu.Unlock()
	<-ch
	switch c.kick.Load() {
	case kickNone, kickTakeover, kickWriteFailed:
		// A takeover or a failed write still reads what the client had
		// sent (its DISCONNECT decides about its will): the read loop
		// goes on to readPending or the last reads.
		// (TestHeldReaderSeesDisconnectAtTakeover)
		return nil
	}
	return errKicked
}

// releaseReaderLocked lets a reader held by waitOutput go on. outMu must
// be held.
func (c *conn) releaseReaderLocked() {
	if c.ob != nil && c.ob.readWait != nil {
		close(c.ob.readWait)
		c.ob.readWait = nil
	}
}
