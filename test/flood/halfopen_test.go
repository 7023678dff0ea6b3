package flood

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// halfOpen is one way of opening a connection and not finishing CONNECT.
type halfOpen struct {
	name string
	// start writes what the connection sends at once; trickle, if set,
	// keeps sending one byte every 100ms (slowloris) until the broker
	// closes the connection.
	start   func(v packet.Version) []byte
	trickle bool
}

var halfOpens = []halfOpen{
	{name: "silent", start: func(packet.Version) []byte { return nil }},
	{name: "half_fixed_header", start: func(packet.Version) []byte {
		return []byte{0x10, 0x80} // CONNECT, remaining length continues
	}},
	{name: "half_connect", start: func(v packet.Version) []byte {
		b := connectBytes(v)
		return b[:len(b)/2]
	}},
	{name: "long_promise", start: func(packet.Version) []byte {
		return []byte{0x10, 0xE8, 0x07, 0x00, 0x04, 'M'} // claims 1000 bytes, sends 4
	}},
	{name: "slowloris", trickle: true, start: func(v packet.Version) []byte {
		return connectBytes(v)[:1]
	}},
}

func connectBytes(v packet.Version) []byte {
	b, _ := (&packet.Connect{ProtocolVersion: v, ClientID: "half-open", CleanStart: true, KeepAlive: 30}).Encode(nil, v)
	return b
}

// TestHalfOpenSockets: hundreds of TCP connections (thousands with
// -flood.big) that never complete CONNECT — silent, half a header, half a
// packet, a length never delivered, a CONNECT trickled a byte at a time —
// are all closed by the broker's connect timeout, which counts from accept
// and is not renewed by trickling bytes; meanwhile other clients connect
// and get answers at once, and nothing is left over afterwards.
func TestHalfOpenSockets(t *testing.T) {
	const timeout = 700 * time.Millisecond
	s, addr := startBroker(t, broker.Options{ConnectTimeout: timeout})
	vic := newVictim(t, addr, "half-open-victim")
	baseG := runtime.NumGoroutine()
	baseConns := s.Stats().Connected

	n := scale(400)
	type result struct {
		kind   string
		closed time.Duration // from dial to seeing the close; 0 if never
		err    error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		h := halfOpens[i%len(halfOpens)]
		v := []packet.Version{packet.V311, packet.V5}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := dialFrom(srcIP(i, 16), addr)
			if err != nil {
				results <- result{kind: h.name, err: err}
				return
			}
			defer nc.Close()
			opened := time.Now()
			if b := h.start(v); len(b) > 0 {
				nc.Write(b)
			}
			d, err := waitClosed(nc, h, v, opened, timeout+3*time.Second)
			results <- result{kind: h.name, closed: d, err: err}
		}()
	}

	// While they hang, new clients are served promptly.
	for range 10 {
		vic.roundTrip(t, 2*time.Second)
		other := newVictim(t, addr, "during-half-open")
		other.roundTrip(t, 2*time.Second)
		other.c.NC.Close()
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	close(results)
	worst := map[string]time.Duration{}
	for r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.kind, r.err)
			continue
		}
		worst[r.kind] = max(worst[r.kind], r.closed)
	}
	t.Logf("%d half-open connections, all closed within %v; slowest close per kind: %v; victim: %s",
		n, time.Since(start).Round(time.Millisecond), worst, vic.summary())
	for kind, d := range worst {
		if d < timeout-50*time.Millisecond {
			t.Errorf("%s closed after %v, before the %v connect timeout", kind, d, timeout)
		}
	}
	if got := s.Stats().Disconnects["connect_timeout"]; got < uint64(n) {
		t.Errorf("Disconnects[connect_timeout] = %d, want at least %d", got, n)
	}
	mqtttest.Eventually(t, 5*time.Second, func() bool { return s.Stats().Connected == baseConns })
	goroutinesBackTo(t, baseG, 10*time.Second)
}

// waitClosed reads from nc until the broker closes it, trickling the rest
// of a CONNECT a byte at a time if h says so, and returns how long after
// opened the close came. Nothing may be received: a connection that never
// finished CONNECT gets no CONNACK [MQTT-3.1.4-1 needs the whole packet].
func waitClosed(nc net.Conn, h halfOpen, v packet.Version, opened time.Time, within time.Duration) (time.Duration, error) {
	rest := connectBytes(v)[1:]
	buf := make([]byte, 64)
	for {
		if time.Since(opened) > within {
			return 0, errors.New("still open")
		}
		wait := within
		if h.trickle {
			wait = 100 * time.Millisecond
		}
		nc.SetReadDeadline(time.Now().Add(wait))
		n, err := nc.Read(buf)
		switch {
		case n > 0:
			return 0, errors.New("received bytes from a connection that never sent a whole CONNECT")
		case errors.Is(err, os.ErrDeadlineExceeded) && h.trickle:
			// Keep one byte short of a whole CONNECT: the broker must
			// not extend its deadline for bytes that trickle in.
			if len(rest) > 1 {
				nc.Write(rest[:1])
				rest = rest[1:]
			}
		case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
			if errors.Is(err, io.EOF) || isReset(err) {
				return time.Since(opened), nil
			}
			return 0, err
		}
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}
