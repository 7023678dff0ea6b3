package listeners

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/memtrim"
	"github.com/roost-mqtt/roost/packet"
)

// The byte stream a client sends reaches the broker's decoder whole and in
// order on every transport, whatever the way it is cut up on the wire and
// whatever the broker does between two pieces: park the idle connection
// (its reader exits and the poller watches the socket), time a read out in
// the middle of a packet or of a TLS record, collect garbage and return
// memory to the OS (memtrim, forced every few milliseconds here).
//
// Each client repeats rounds of: stay idle long enough to be parked, then
// SUBSCRIBE to a long filter of odd UTF-8 (multi-byte characters, '+' and
// '#' levels), PUBLISH a message that matches it (payload of 0 to 70 KB),
// PINGREQ, UNSUBSCRIBE. Every packet is cut into pieces written one by one
// (each its own TLS record or WebSocket message), and beneath the TLS and
// WebSocket framing every write is cut again into TCP segments
// (splitConn), with pauses between pieces of nothing, a yield, a
// millisecond, or longer than the broker's 50 ms park delay. The client
// checks every reply: SUBACK, PUBACK, PINGRESP and UNSUBACK with the right
// packet identifiers and codes, and the message delivered back to it byte
// for byte. A broker that lost, reordered, duplicated or split bytes
// answers with a DISCONNECT (malformed, protocol error), a wrong reply or
// nothing; the test fails on any of these and on a broker log line about
// a bad packet.
//
// The broker parks idle plain TCP and TLS connections; WebSocket ones keep
// their reader (broker/transport.go), and get the splits all the same.
// Half the TLS and WSS clients speak TLS 1.2. Written to hunt the two
// corruptions seen under load in December 2026, it never failed (also
// with -race, on one core shared with a busy loop): both were paho.golang
// writing a packet in pieces from two goroutines (test/soak,
// TestPahoWritesWholePackets). It stays as the guard of the read path.
func TestStreamIntegrityAcrossParkingAndSplits(t *testing.T) {
	s := newServerWith(t, broker.Options{MaxPacketSize: 256 << 10})
	e := serveTransports(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// memtrim as roost serve runs it, but on every look: a collection and
	// a return of free memory every 5 ms while the clients run.
	trimmed := make(chan struct{})
	go func() {
		defer close(trimmed)
		memtrim.Run(ctx, memtrim.Policy{Interval: 5 * time.Millisecond}, s.log)
	}()
	defer func() { cancel(); <-trimmed }()

	const clientsPer, rounds = 4, 8
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	// Half the TLS and WSS clients speak TLS 1.2, whose alert records show
	// their type (crypto/tls reads on into one after a record's data).
	e12 := e
	e12.tlsConf = e.tlsConf.Clone()
	e12.tlsConf.MaxVersion = tls.VersionTLS12
	split := func(nc net.Conn) net.Conn {
		return &splitConn{Conn: nc, rng: rand.New(rand.NewPCG(seed, uint64(nc.LocalAddr().(*net.TCPAddr).Port)))}
	}
	dial, dial12 := e.dialers(split), e12.dialers(split)
	var wg sync.WaitGroup
	errs := make(chan error, 4*clientsPer)
	for _, tr := range []string{"tcp", "tls", "ws", "wss"} {
		for i := range clientsPer {
			d := dial[tr]
			if i >= clientsPer/2 {
				d = dial12[tr]
			}
			nc := d(t)
			t.Cleanup(func() { nc.Close() })
			v := packet.V5
			if i%2 == 1 {
				v = packet.V311
			}
			ic := &integrityClient{nc: nc, r: packet.NewReader(nc, 1<<20), v: v, id: fmt.Sprintf("integrity-%s-%d", tr, i),
				rng: rand.New(rand.NewPCG(seed, uint64(len(tr)*100+i)))}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := ic.run(rounds); err != nil {
					errs <- fmt.Errorf("%s (%v): %w", ic.id, v, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, bad := range []string{"malformed", "bad packet", "protocol error", "panic"} {
		if logs := s.logs.String(); strings.Contains(strings.ToLower(logs), bad) {
			t.Errorf("broker log mentions %q", bad)
		}
	}
}

// splitConn writes each Write in pieces of 1 to 700 bytes, as separate TCP
// segments (Go's TCP connections disable Nagle's algorithm), pausing
// between them as integrityPause does.
type splitConn struct {
	net.Conn
	mu  sync.Mutex
	rng *rand.Rand
}

func (c *splitConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for written < len(b) {
		n := min(len(b)-written, 1+c.rng.IntN(700))
		m, err := c.Conn.Write(b[written : written+n])
		written += m
		if err != nil {
			return written, err
		}
		if written < len(b) {
			integrityPause(c.rng)
		}
	}
	return written, nil
}

// integrityPause waits between two pieces of a packet: mostly not at all
// or a yield, sometimes a millisecond, and one time in twenty longer than
// the broker's park delay (50 ms), so a read times out in mid-packet or
// mid-record.
func integrityPause(rng *rand.Rand) {
	switch x := rng.IntN(20); {
	case x < 10:
	case x < 16:
		time.Sleep(0) // a yield
	case x < 19:
		time.Sleep(time.Millisecond)
	default:
		time.Sleep(60 * time.Millisecond)
	}
}

// integrityClient is one client of TestStreamIntegrityAcrossParkingAndSplits.
type integrityClient struct {
	nc  net.Conn
	r   *packet.Reader
	v   packet.Version
	id  string
	rng *rand.Rand
	pid uint16
}

// replyWithin bounds the wait for each reply; the WebSocket client
// conns end at a read timeout, so a timeout is always a failure.
const replyWithin = 20 * time.Second

func (c *integrityClient) run(rounds int) error {
	if err := c.send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: c.v, CleanStart: true, KeepAlive: 2, ClientID: c.id}); err != nil {
		return err
	}
	p, err := c.read()
	if err != nil {
		return fmt.Errorf("CONNACK: %w", err)
	}
	if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != 0 {
		return fmt.Errorf("want CONNACK 0, got %s", describe(p))
	}
	for round := range rounds {
		// Idle past the park delay: a plain TCP or TLS connection's
		// reader has parked when the next packet starts to arrive.
		time.Sleep(time.Duration(60+c.rng.IntN(200)) * time.Millisecond)
		if err := c.round(round); err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
	}
	return c.send(&packet.Disconnect{})
}

// round subscribes, publishes, pings and unsubscribes, checking each reply.
func (c *integrityClient) round(round int) error {
	topic, filter := oddTopic(c.rng, fmt.Sprintf("it/%s/%d", c.id, round))
	qos := packet.QoS(c.rng.IntN(2))
	if err := c.send(&packet.Subscribe{PacketID: c.nextID(), Subscriptions: []packet.Subscription{{Filter: filter, Options: packet.SubOptions{QoS: 1}}}}); err != nil {
		return err
	}
	if err := c.expect(func(p packet.Packet) bool {
		a, ok := p.(*packet.Suback)
		return ok && a.PacketID == c.pid && len(a.ReasonCodes) == 1 && a.ReasonCodes[0] == 1
	}); err != nil {
		return fmt.Errorf("SUBACK for %d-byte filter: %w", len(filter), err)
	}
	payload := make([]byte, payloadSize(c.rng))
	for i := range payload {
		payload[i] = byte(c.rng.Uint32())
	}
	pub := &packet.Publish{QoS: qos, Topic: topic, Payload: payload}
	if qos > 0 {
		pub.PacketID = c.nextID()
	}
	if err := c.send(pub); err != nil {
		return err
	}
	if err := c.awaitEcho(pub); err != nil {
		return err
	}
	if err := c.send(&packet.Pingreq{}); err != nil {
		return err
	}
	if err := c.expect(func(p packet.Packet) bool { _, ok := p.(*packet.Pingresp); return ok }); err != nil {
		return fmt.Errorf("PINGRESP: %w", err)
	}
	if err := c.send(&packet.Unsubscribe{PacketID: c.nextID(), Filters: []string{filter}}); err != nil {
		return err
	}
	if err := c.expect(func(p packet.Packet) bool { a, ok := p.(*packet.Unsuback); return ok && a.PacketID == c.pid }); err != nil {
		return fmt.Errorf("UNSUBACK: %w", err)
	}
	return nil
}

// awaitEcho waits for pub to come back, byte for byte, and for its PUBACK
// when it is QoS 1 (in either order).
func (c *integrityClient) awaitEcho(pub *packet.Publish) error {
	acked, echoed := pub.QoS == 0, false
	for !acked || !echoed {
		p, err := c.read()
		if err != nil {
			return fmt.Errorf("waiting for the echo of %d bytes (acked %v): %w", len(pub.Payload), acked, err)
		}
		switch p := p.(type) {
		case *packet.Puback:
			if acked || p.PacketID != pub.PacketID || p.ReasonCode >= 0x80 {
				return fmt.Errorf("unexpected %s", describe(p))
			}
			acked = true
		case *packet.Publish:
			if echoed || p.Topic != pub.Topic || !bytes.Equal(p.Payload, pub.Payload) || p.QoS != pub.QoS {
				return fmt.Errorf("unexpected PUBLISH: topic %d bytes (want %d), payload %d bytes (want %d), equal %v, QoS %d",
					len(p.Topic), len(pub.Topic), len(p.Payload), len(pub.Payload), bytes.Equal(p.Payload, pub.Payload), p.QoS)
			}
			echoed = true
			if p.QoS == 1 {
				if err := c.send(&packet.Puback{PacketID: p.PacketID}); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("unexpected %s", describe(p))
		}
	}
	return nil
}

// send encodes p and writes it in one to four pieces, each a Write of its
// own (a TLS record, a WebSocket message), pausing between them.
func (c *integrityClient) send(p packet.Packet) error {
	b, err := p.Encode(nil, c.v)
	if err != nil {
		return err
	}
	cuts := []int{0, len(b)}
	for range c.rng.IntN(4) {
		cuts = append(cuts, c.rng.IntN(len(b)+1))
	}
	slices.Sort(cuts)
	for i := 1; i < len(cuts); i++ {
		if cuts[i] == cuts[i-1] {
			continue
		}
		if i > 1 {
			integrityPause(c.rng)
		}
		if _, err := c.nc.Write(b[cuts[i-1]:cuts[i]]); err != nil {
			return fmt.Errorf("write %s: %w", p.Type(), err)
		}
	}
	return nil
}

func (c *integrityClient) read() (packet.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(replyWithin))
	return c.r.ReadPacket(c.v)
}

// expect reads one packet and checks it with ok.
func (c *integrityClient) expect(ok func(packet.Packet) bool) error {
	p, err := c.read()
	if err != nil {
		return err
	}
	if !ok(p) {
		return fmt.Errorf("unexpected %s", describe(p))
	}
	return nil
}

func (c *integrityClient) nextID() uint16 {
	c.pid++
	if c.pid == 0 {
		c.pid = 1
	}
	return c.pid
}

// describe names a packet for a failure message, with the reason of a
// DISCONNECT.
func describe(p packet.Packet) string {
	if d, ok := p.(*packet.Disconnect); ok {
		return fmt.Sprintf("DISCONNECT 0x%02X %q", byte(d.ReasonCode), d.Properties.ReasonString)
	}
	return fmt.Sprintf("%s %+v", p.Type(), p)
}

// oddRunes make topic levels of one to four bytes per character.
var oddRunes = []rune("aZ09_-. é水𝄞Ωж€")

// oddTopic returns a topic under prefix with up to 40 levels of odd
// characters (up to about 3 KB) and a filter that matches it: the topic
// itself, the topic with one level (not the prefix) replaced by '+', or a
// leading part of it followed by '#'.
func oddTopic(rng *rand.Rand, prefix string) (topic, filter string) {
	levels := []string{prefix}
	for range rng.IntN(40) {
		var b strings.Builder
		for range rng.IntN(25) {
			b.WriteRune(oddRunes[rng.IntN(len(oddRunes))])
		}
		levels = append(levels, b.String())
	}
	topic = strings.Join(levels, "/")
	switch rng.IntN(3) {
	case 0:
		return topic, topic
	case 1:
		if len(levels) > 1 {
			f := append([]string(nil), levels...)
			f[1+rng.IntN(len(levels)-1)] = "+"
			return topic, strings.Join(f, "/")
		}
		return topic, topic
	default:
		return topic, strings.Join(levels[:1+rng.IntN(len(levels))], "/") + "/#"
	}
}

// payloadSize is mostly small, sometimes up to 70 KB (larger than the
// broker's first read buffer, several TLS records and TCP segments).
func payloadSize(rng *rand.Rand) int {
	if rng.IntN(4) == 0 {
		return rng.IntN(70 << 10)
	}
	return rng.IntN(300)
}
