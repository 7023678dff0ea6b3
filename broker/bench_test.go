package broker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/packet"
)

// benchConn is a raw client for benchmarks: a connected socket and a
// buffered reader, with no per-packet checks.
func benchConn(b *testing.B, addr, id string, v packet.Version) (net.Conn, *packet.Reader) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	buf, _ := (&packet.Connect{ProtocolVersion: v, ClientID: id, CleanStart: true}).Encode(nil, v)
	nc.Write(buf)
	r := packet.NewReader(bufio.NewReaderSize(nc, 64<<10), 1<<20)
	if _, err := r.ReadPacket(v); err != nil {
		b.Fatal(err)
	}
	return nc, r
}

// benchRoute measures end-to-end delivery over loopback: pubs publishers
// each send b.N/pubs QoS qos messages of 64 bytes on their own topic; subs
// subscribers to "bench/#" each receive all of them.
func benchRoute(b *testing.B, pubs, subs int, qos packet.QoS) {
	_, addr := startServer(b, Options{MaxQueued: 1 << 20, MaxInflight: 65535})
	var wg sync.WaitGroup
	for i := range subs {
		nc, r := benchConn(b, addr, fmt.Sprint("sub", i), packet.V311)
		s, _ := (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/#", Options: packet.SubOptions{QoS: qos}}}}).Encode(nil, packet.V311)
		nc.Write(s)
		r.ReadPacket(packet.V311)
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := b.N / pubs * pubs
			var acks []byte
			for n := 0; n < want; {
				p, err := r.ReadPacket(packet.V311)
				if err != nil {
					b.Error(err)
					return
				}
				if m, ok := p.(*packet.Publish); ok {
					n++
					if m.QoS == 1 {
						acks, _ = (&packet.Puback{PacketID: m.PacketID}).Encode(acks, packet.V311)
						if len(acks) > 1024 || n == want {
							nc.Write(acks)
							acks = acks[:0]
						}
					}
				}
			}
		}()
	}
	payload := make([]byte, 64)
	b.SetBytes(64)
	b.ResetTimer()
	for i := range pubs {
		nc, r := benchConn(b, addr, fmt.Sprint("pub", i), packet.V311)
		go io.Copy(io.Discard, readerOf(r))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for j := 0; j < b.N/pubs; j++ {
				buf, _ = (&packet.Publish{Topic: fmt.Sprint("bench/", i), QoS: qos, PacketID: uint16(j%65535 + 1), Payload: payload}).Encode(buf, packet.V311)
				if len(buf) > 16<<10 {
					nc.Write(buf)
					buf = buf[:0]
				}
			}
			nc.Write(buf)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatal("benchmark did not finish")
	}
}

// readerOf drains acknowledgements for a publisher.
func readerOf(r *packet.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for {
			if _, err := r.ReadPacket(packet.V311); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr
}

func BenchmarkFanIn8QoS0(b *testing.B)    { benchRoute(b, 8, 1, 0) }
func BenchmarkFanOut100QoS0(b *testing.B) { benchRoute(b, 1, 100, 0) }
func BenchmarkPairQoS1(b *testing.B)      { benchRoute(b, 1, 1, 1) }

// BenchmarkPubackRoundTrip is one client sending a QoS 1 PUBLISH (to a
// topic nobody subscribed to) and waiting for its PUBACK before the next:
// the time from a readable socket to the reader's reply on the wire and
// back. The reader writes the PUBACK itself (conn.reply); before, a
// flusher goroutine started for it wrote it once the reader had read
// again and parked.
func BenchmarkPubackRoundTrip(b *testing.B) {
	_, addr := startServer(b, Options{})
	nc, r := benchConn(b, addr, "rtt", packet.V311)
	payload := make([]byte, 64)
	var buf []byte
	for i := 0; b.Loop(); i++ {
		buf, _ = (&packet.Publish{Topic: "rtt", QoS: 1, PacketID: uint16(i%65535 + 1), Payload: payload}).Encode(buf[:0], packet.V311)
		if _, err := nc.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadPacket(packet.V311); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTakeover measures one client-id takeover of an idle TCP client
// (parked, or with its reader blocked in Read), from the new CONNECT to
// its CONNACK: what settleTakeover adds (kick, read what is pending,
// detach) is in it.
func BenchmarkTakeover(b *testing.B) {
	for _, idle := range []time.Duration{0, 2 * parkIdle} {
		b.Run(fmt.Sprintf("idle=%v", idle), func(b *testing.B) {
			_, addr := startServer(b, Options{})
			benchConn(b, addr, "taken", packet.V311)
			var spent time.Duration
			for b.Loop() {
				if idle > 0 {
					time.Sleep(idle) // outside the measured span below
				}
				start := time.Now()
				benchConn(b, addr, "taken", packet.V311)
				spent += time.Since(start)
			}
			b.ReportMetric(float64(spent.Microseconds())/float64(b.N), "µs/takeover")
		})
	}
}

// BenchmarkConnect measures a connection's set-up, from dial to CONNACK,
// of a 3.1.1 client with a clean session, each closed after its CONNACK.
// With -benchmem and -memprofile it shows what a CONNECT allocates: what
// an idle connection leaves behind beyond its live structs is this
// garbage, until the next GC (broker/DESIGN.md, "Memory per connection").
func BenchmarkConnect(b *testing.B) {
	_, addr := startServer(b, Options{})
	ack := make([]byte, 4) // a 3.1.1 CONNACK
	i := 0
	for b.Loop() {
		i++
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		buf, _ := (&packet.Connect{ProtocolVersion: packet.V311, ClientID: fmt.Sprint("c", i), CleanStart: true, KeepAlive: 60}).Encode(nil, packet.V311)
		nc.Write(buf)
		if _, err := io.ReadFull(nc, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			b.Fatalf("CONNACK % x: %v", ack, err)
		}
		nc.Close()
	}
}
