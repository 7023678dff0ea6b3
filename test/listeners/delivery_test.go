package listeners

import (
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// The broker writes a delivery from a publisher that is not busy, and a
// reader's own replies (PUBACK, PINGRESP), from the reader goroutine
// itself when the subscriber's output is idle, and leaves the rest to the
// connection's flusher (broker/out.go: flushNowLocked, flushReplies). Plain
// TCP takes the direct send; TLS and WebSocket always go through the
// flusher, one writer at a time. These tests hold every transport to the
// same contract: per-publisher order, nothing lost or doubled, and a
// subscriber that stops reading never holds up the publisher or the
// publisher's other subscribers.

// seqPayload is a payload of size bytes that starts with the publisher's
// number and the message's sequence number.
func seqPayload(pub, seq, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(pub))
	binary.BigEndian.PutUint32(b[4:], uint32(seq))
	return b
}

// connectOn dials one transport and CONNECTs a clean 3.1.1 session as id.
func connectOn(t *testing.T, dial func(t *testing.T) net.Conn, id string) *mqtttest.Client {
	t.Helper()
	c := mqttClient(t, dial(t), packet.V311)
	c.Connect(&packet.Connect{ProtocolName: "MQTT", CleanStart: true, KeepAlive: 60, ClientID: id})
	return c
}

// publishPaced publishes n messages of size bytes as publisher pub to
// topic at qos. The first half goes one packet per read (each PUBLISH
// answered, by its PUBACK or a PINGRESP, before the next is sent: the
// direct-write path); the second half in bursts of 16 written at once
// (the flusher's path). It returns an error instead of failing, so it can
// run on its own goroutine.
func publishPaced(c *mqtttest.Client, pub int, topic string, qos packet.QoS, n, size int, wait time.Duration) error {
	next := uint16(1)
	answer := func() error {
		for {
			p, err := c.Read(wait)
			if err != nil {
				return fmt.Errorf("publisher %d: waiting for an answer: %w", pub, err)
			}
			switch p.(type) {
			case *packet.Puback, *packet.Pingresp:
				return nil
			}
		}
	}
	for i := 0; i < n; {
		burst := 1
		if i >= n/2 {
			burst = min(16, n-i)
		}
		var out []byte
		for range burst {
			p := &packet.Publish{Topic: topic, QoS: qos, Payload: seqPayload(pub, i, size)}
			if qos > 0 {
				p.PacketID = next
				next = next%65535 + 1
			}
			b, err := p.Encode(out, packet.V311)
			if err != nil {
				return err
			}
			out = b
			i++
		}
		if qos == 0 {
			out, _ = (&packet.Pingreq{}).Encode(out, packet.V311)
		}
		if err := c.NC.SetWriteDeadline(time.Now().Add(wait)); err != nil {
			return err
		}
		if _, err := c.NC.Write(out); err != nil {
			return fmt.Errorf("publisher %d: %w", pub, err)
		}
		answers := burst
		if qos == 0 {
			answers = 1
		}
		for range answers {
			if err := answer(); err != nil {
				return err
			}
		}
	}
	return nil
}

// readSeqs reads PUBLISH packets until want of them arrived and returns
// the sequence numbers per publisher, acknowledging QoS 1 ones. It returns
// an error instead of failing, so it can run on its own goroutine.
func readSeqs(c *mqtttest.Client, want int, wait time.Duration) (map[int][]int, error) {
	got := map[int][]int{}
	deadline := time.Now().Add(wait)
	for n := 0; n < want; {
		p, err := c.Read(time.Until(deadline))
		if err != nil {
			return got, fmt.Errorf("after %d of %d messages: %w", n, want, err)
		}
		m, ok := p.(*packet.Publish)
		if !ok {
			continue
		}
		if m.QoS == 1 {
			b, _ := (&packet.Puback{PacketID: m.PacketID}).Encode(nil, packet.V311)
			if _, err := c.NC.Write(b); err != nil {
				return got, err
			}
		}
		if len(m.Payload) < 8 {
			return got, fmt.Errorf("message with a %d-byte payload", len(m.Payload))
		}
		pub, seq := int(binary.BigEndian.Uint32(m.Payload)), int(binary.BigEndian.Uint32(m.Payload[4:]))
		got[pub] = append(got[pub], seq)
		n++
	}
	return got, nil
}

// inOrder fails t unless seqs is 0, 1, ... n-1.
func inOrder(t *testing.T, who string, seqs []int, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Errorf("%s: %d messages, want %d", who, len(seqs), n)
	}
	for i, s := range seqs {
		if s != i {
			t.Errorf("%s: message %d is number %d (order lost, or a message lost or doubled)", who, i, s)
			return
		}
	}
}

// Several publishers, some sending one packet per read and some in bursts,
// at QoS 0 and 1, to one subscriber: every publisher's messages arrive
// once each and in the order sent [MQTT-4.6.0-5], on every transport.
func TestDeliveriesFromSeveralPublishersKeepOrder(t *testing.T) {
	s := newServerWith(t, broker.Options{MaxPacketSize: 256 << 10})
	for name, dial := range transportDialers(t, s) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const pubs, n = 4, 300
			sub := connectOn(t, dial, "order-sub-"+name)
			sub.Subscribe("order/"+name+"/#", 1)
			var wg sync.WaitGroup
			errs := make(chan error, pubs)
			for p := range pubs {
				c := connectOn(t, dial, fmt.Sprintf("order-pub-%s-%d", name, p))
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- publishPaced(c, p, fmt.Sprintf("order/%s/%d", name, p), packet.QoS(p%2), n, 64, 10*time.Second)
				}()
			}
			got, err := readSeqs(sub, pubs*n, 30*time.Second)
			if err != nil {
				t.Error(err)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			for p := range pubs {
				inOrder(t, fmt.Sprintf("publisher %d", p), got[p], n)
			}
		})
	}
}

// smallReadBuffer gives a client's TCP socket a 32 KiB receive buffer, so
// that the broker's writes to it meet a full socket soon. Only for a
// client that never reads: a receive window below the loopback MSS
// reopens only at a zero-window probe, whose backoff grows while the
// client does not read (6-7 s after 8 s idle).
func smallReadBuffer(nc net.Conn) net.Conn {
	nc.(*net.TCPConn).SetReadBuffer(32 << 10)
	return nc
}

// A subscriber whose socket fills (small server send buffers, read only
// after everything was published) makes the direct writes meet a full
// socket: what they cannot send goes to the flusher, which writes it when
// the subscriber reads. Nothing is lost (1.5 MB is far below the 4 MiB
// slow-consumer bound), nothing reordered, and the publisher is answered
// all along.
func TestFullSubscriberSocketFallsBackToFlusher(t *testing.T) {
	s := newServerWith(t, broker.Options{MaxPacketSize: 256 << 10})
	eps := serveTransportsOn(t, s, func(ln net.Listener) net.Listener { return mqtttest.SendBuffer(ln, 16<<10) })
	dialers := eps.dialers(nil)
	for name, dial := range dialers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const n, size = 1500, 1000
			sub := connectOn(t, dial, "fill-sub-"+name)
			sub.Subscribe("fill/"+name, 0)
			pub := connectOn(t, dial, "fill-pub-"+name)
			if err := publishPaced(pub, 0, "fill/"+name, 0, n, size, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			got, err := readSeqs(sub, n, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			inOrder(t, "subscriber", got[0], n)
		})
	}
}

// A subscriber that never reads must not hold up the publisher's reader,
// which writes deliveries itself: once the stuck subscriber's socket is
// full its output waits for its flusher (and past the slow-consumer bound
// is dropped), while the publisher keeps being answered at once and its
// other subscriber keeps getting every message, in order. The stuck
// subscriber's messages, as far as they go, keep their order too.
func TestStuckSubscriberDoesNotHoldUpPublisher(t *testing.T) {
	s := newServerWith(t, broker.Options{MaxPacketSize: 256 << 10})
	eps := serveTransports(t, s)
	smallDialers, dialers := eps.dialers(smallReadBuffer), eps.dialers(nil)
	for name, dial := range dialers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// 19 MB: more than the stuck subscriber's socket buffers, the
			// flusher's write in progress and the 4 MiB slow-consumer
			// bound together, so some of its messages are dropped.
			const n, size = 1200, 16 << 10
			topic := "stuck/" + name
			stuck := connectOn(t, smallDialers[name], "stuck-sub-"+name)
			stuck.Subscribe(topic, 0)
			live := connectOn(t, dial, "live-sub-"+name)
			live.Subscribe(topic, 0)
			pub := connectOn(t, dial, "stuck-pub-"+name)

			var got map[int][]int
			var liveErr error
			done := make(chan struct{})
			go func() {
				defer close(done)
				got, liveErr = readSeqs(live, n, 60*time.Second)
			}()
			// Each answer must come far sooner than the write deadline
			// (30 s) a blocked write to the stuck subscriber would wait.
			start := time.Now()
			if err := publishPaced(pub, 0, topic, 0, n, size, 5*time.Second); err != nil {
				t.Fatalf("publisher held up: %v", err)
			}
			t.Logf("%d messages of %d B published in %v", n, size, time.Since(start).Round(time.Millisecond))
			<-done
			if liveErr != nil {
				t.Fatalf("live subscriber: %v", liveErr)
			}
			inOrder(t, "live subscriber", got[0], n)

			// What the stuck subscriber gets, once it reads: a prefix of
			// the messages, then some of the rest (the others dropped for
			// it), each once and in order.
			var seqs []int
			for {
				p, err := stuck.Read(2 * time.Second)
				if err != nil {
					break // quiet: everything written has been read
				}
				if m, ok := p.(*packet.Publish); ok {
					seqs = append(seqs, int(binary.BigEndian.Uint32(m.Payload[4:])))
				}
			}
			t.Logf("stuck subscriber got %d of %d messages", len(seqs), n)
			if len(seqs) == 0 || len(seqs) >= n {
				t.Errorf("stuck subscriber got %d of %d messages; want some dropped past the slow-consumer bound", len(seqs), n)
			}
			if !sort.IntsAreSorted(seqs) {
				t.Errorf("stuck subscriber's messages out of order: %v", seqs)
			}
			for i := 1; i < len(seqs); i++ {
				if seqs[i] == seqs[i-1] {
					t.Errorf("stuck subscriber got message %d twice", seqs[i])
				}
			}
		})
	}
}
