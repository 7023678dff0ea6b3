// Package crash kills the real roost binary with SIGKILL while publishers
// load it and persistent subscribers are offline (and one is online,
// mid-way through QoS 2 exchanges), restarts it on the same data
// directory, and checks that every message the broker acknowledged reaches
// every subscriber: QoS 1 at least once, QoS 2 exactly once.
//
// The broker listens on every transport (mqtt, mqtts, ws, wss and mqtt
// behind the PROXY protocol) and the iterations take turns: in each, all
// clients use one transport, so a kill hits TLS records and WebSocket
// frames half sent as well as bare MQTT packets. Any line of a broker
// run's log that reports a panic fails the test.
//
//	go test ./test/crash                       # 20 iterations (4 per transport), about a minute
//	go test ./test/crash -crash.soak=10m -v    # kill and restart for 10 minutes
//
// With -race on 2 shared cores at load ~24, run back to back, the former
// 15 iterations over TCP only took 69 s and these 20 take 64 s: an
// iteration's time goes mostly to starting, draining and stopping the
// broker, and the kill comes at a random 20-500 ms.
package crash

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/internal/brokertest"
	rc "github.com/roost-mqtt/roost/internal/rawclient"
	"github.com/roost-mqtt/roost/internal/roostbin"
	"github.com/roost-mqtt/roost/packet"
)

var (
	soak       = flag.Duration("crash.soak", 0, "run kill/restart iterations for this long instead of -crash.iterations")
	iterations = flag.Int("crash.iterations", 20, "kill/restart iterations of the quick test, taking turns over the transports")
	publishers = flag.Int("crash.publishers", 4, "concurrent publishers")
	syncMode   = flag.String("crash.sync", "always", "the broker's --sync")
)

var (
	bin string          // the roost binary under test
	pki *brokertest.PKI // the certificate of its mqtts:// and wss:// listeners
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "roost-crash-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if pki, err = brokertest.NewPKI(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bin, err = roostbin.Path(false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	roostbin.Cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestCrashLosesNoAcknowledgedMessage(t *testing.T) {
	if testing.Short() && *soak == 0 {
		t.Skip("starts and kills the broker many times")
	}
	cfg := filepath.Join(t.TempDir(), "roost.yaml")
	// Queues must hold everything the publishers send while the
	// subscribers are away: a dropped message would be a policy drop,
	// not a loss.
	if err := os.WriteFile(cfg, []byte(brokerConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(*soak)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	trs := rc.Transports()
	var total stats
	for i := 0; ; i++ {
		if *soak == 0 && i == *iterations || *soak > 0 && time.Now().After(deadline) {
			break
		}
		kill := time.Duration(20+r.IntN(480)) * time.Millisecond
		tr := trs[i%len(trs)]
		s := iteration(t, cfg, filepath.Join(t.TempDir(), "data"), tr, kill)
		t.Logf("iteration %d over %s: killed after %v: %s", i, tr, kill, s)
		total.add(s)
		if t.Failed() {
			break
		}
	}
	t.Logf("total: %s", total)
}

// brokerConfig has the broker listen on every transport, in the order of
// rc.Transports, in which its "listener ready" lines come.
func brokerConfig() string {
	return fmt.Sprintf(`limits: {max_queued: 1000000}
sys_interval: off
listeners:
  - url: mqtt://127.0.0.1:0
  - url: mqtts://127.0.0.1:0
    tls: {cert: %[1]q, key: %[2]q}
  - url: ws://127.0.0.1:0/mqtt
  - url: wss://127.0.0.1:0/mqtt
    tls: {cert: %[1]q, key: %[2]q}
  - url: mqtt://127.0.0.1:0
    name: proxied
    proxy_protocol: true
`, pki.CertFile, pki.KeyFile)
}

type stats struct{ acked1, acked2, delivered, dups int }

func (s *stats) add(o stats) {
	s.acked1 += o.acked1
	s.acked2 += o.acked2
	s.delivered += o.delivered
	s.dups += o.dups
}

func (s stats) String() string {
	return fmt.Sprintf("%d QoS 1 and %d QoS 2 acknowledged; %d deliveries, %d QoS 1 duplicates", s.acked1, s.acked2, s.delivered, s.dups)
}

// iteration runs one start → load → SIGKILL → restart → drain → check,
// every client over transport tr.
func iteration(t *testing.T, cfg, data string, tr rc.Transport, killAfter time.Duration) stats {
	b := start(t, cfg, data, tr)
	subs := []struct {
		id  string
		qos packet.QoS
	}{{"sub-q1", 1}, {"sub-q2", 2}}
	for _, s := range subs {
		c, _ := mustDial(t, b.addr, persistent(s.id, true))
		c.subscribe(t, "load/#", s.qos)
		c.send(&packet.Disconnect{})
		c.waitClosed()
	}
	rec := newRecord()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// A subscriber online during the crash: its inflight PUBLISHes and
	// PUBRELs must be resent after the restart, QoS 2 still exactly once.
	live := newReceiver()
	lc, _ := mustDial(t, b.addr, persistent("sub-live", true))
	lc.subscribe(t, "load/#", 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		live.receive(lc, rec, -1)
	}()
	for p := range *publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publish(ctx, b.addr, p, rec)
		}()
	}
	time.Sleep(killAfter)
	b.kill(t)
	cancel()
	wg.Wait()

	b = start(t, cfg, data, tr)
	defer b.stop(t)
	var st stats
	st.acked1, st.acked2 = rec.counts()
	for _, s := range subs {
		got := drain(t, b.addr, s.id, rec, newReceiver())
		st.add(check(t, s.id, s.qos, rec, got))
	}
	got := drain(t, b.addr, "sub-live", rec, live)
	st.add(check(t, "sub-live", 2, rec, got))
	return st
}

// check compares what a subscriber received with what was acknowledged.
func check(t *testing.T, id string, subQoS packet.QoS, rec *record, got map[string]int) stats {
	t.Helper()
	var st stats
	rec.mu.Lock()
	defer rec.mu.Unlock()
	missing := 0
	for payload, acked := range rec.sent {
		n := got[payload]
		st.delivered += n
		switch q := rec.qos[payload]; {
		case acked && n == 0:
			if missing++; missing <= 5 {
				t.Errorf("%s: acknowledged QoS %d message %q never arrived", id, q, payload)
			}
		case q == 2 && subQoS == 2 && n > 1:
			t.Errorf("%s: QoS 2 message %q arrived %d times", id, payload, n)
		case n > 1:
			st.dups += n - 1
		}
	}
	if missing > 5 {
		t.Errorf("%s: %d acknowledged messages missing in all", id, missing)
	}
	for payload := range got {
		if _, ok := rec.sent[payload]; !ok {
			t.Errorf("%s: received %q, which nobody sent", id, payload)
		}
	}
	return st
}

// record is what the publishers sent and what the broker acknowledged.
type record struct {
	mu   sync.Mutex
	sent map[string]bool // payload → acknowledged (PUBACK, or PUBREC for QoS 2)
	qos  map[string]packet.QoS
}

func newRecord() *record {
	return &record{sent: make(map[string]bool), qos: make(map[string]packet.QoS)}
}

func (r *record) sending(payload string, qos packet.QoS) {
	r.mu.Lock()
	r.sent[payload], r.qos[payload] = false, qos
	r.mu.Unlock()
}

func (r *record) acked(payload string) {
	r.mu.Lock()
	r.sent[payload] = true
	r.mu.Unlock()
}

func (r *record) counts() (q1, q2 int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, acked := range r.sent {
		if acked && r.qos[p] == 1 {
			q1++
		} else if acked {
			q2++
		}
	}
	return q1, q2
}

// publish sends QoS 1 and QoS 2 messages alternately, up to 32 in flight,
// until the connection breaks or ctx ends.
func publish(ctx context.Context, addr string, id int, rec *record) {
	c, _, err := dial(addr, &packet.Connect{ClientID: fmt.Sprintf("pub-%d", id), CleanStart: true, KeepAlive: 60})
	if err != nil {
		return
	}
	defer c.nc.Close()
	context.AfterFunc(ctx, func() { c.nc.Close() })
	window := make(chan uint16, 32)
	for pid := uint16(1); pid <= 32; pid++ {
		window <- pid
	}
	var mu sync.Mutex
	inflight := make(map[uint16]string)
	go func() {
		for {
			p, err := c.r.ReadPacket(c.v)
			if err != nil {
				c.nc.Close()
				return
			}
			switch p := p.(type) {
			case *packet.Puback:
				mu.Lock()
				rec.acked(inflight[p.PacketID])
				mu.Unlock()
				window <- p.PacketID
			case *packet.Pubrec:
				mu.Lock()
				rec.acked(inflight[p.PacketID])
				mu.Unlock()
				c.send(&packet.Pubrel{PacketID: p.PacketID})
			case *packet.Pubcomp:
				window <- p.PacketID
			}
		}
	}()
	for n := 0; ; n++ {
		var pid uint16
		select {
		case pid = <-window:
		case <-ctx.Done():
			return
		}
		qos := packet.QoS(1 + n%2)
		payload := fmt.Sprintf("%d-%d", id, n)
		mu.Lock()
		inflight[pid] = payload
		mu.Unlock()
		rec.sending(payload, qos)
		if c.send(&packet.Publish{Topic: fmt.Sprintf("load/%d", id), QoS: qos, PacketID: pid, Payload: []byte(payload)}) != nil {
			return
		}
	}
}

// drain resumes subscriber id and receives until every acknowledged
// message has arrived and nothing more comes for a moment (or nothing has
// come for 5 s). It returns how many times each payload arrived in all,
// counting what rv received before.
func drain(t *testing.T, addr, id string, rec *record, rv *receiver) map[string]int {
	t.Helper()
	c, ack := mustDial(t, addr, persistent(id, false))
	defer c.nc.Close()
	if !ack.SessionPresent {
		t.Errorf("%s: session not present after restart", id)
	}
	rec.mu.Lock()
	want := 0
	for _, acked := range rec.sent {
		if acked {
			want++
		}
	}
	rec.mu.Unlock()
	rv.receive(c, rec, want)
	return rv.got
}

// receiver is the receiving side of a subscriber's session, kept across
// reconnections as an MQTT client keeps it: QoS 2 packet ids awaiting
// PUBREL, whose repeats are not delivered again.
type receiver struct {
	got      map[string]int // payload → deliveries
	seen     int            // acknowledged payloads received
	awaiting map[uint16]bool
}

func newReceiver() *receiver {
	return &receiver{got: make(map[string]int), awaiting: make(map[uint16]bool)}
}

// receive handles deliveries on c until it breaks or, when want >= 0,
// until want acknowledged payloads were seen and 300 ms pass quietly (or
// 5 s without anything).
func (rv *receiver) receive(c *client, rec *record, want int) {
	// Deliveries before the publisher's acknowledgement were not counted.
	rv.seen = 0
	for payload := range rv.got {
		if rec.isAcked(payload) {
			rv.seen++
		}
	}
	for {
		if want >= 0 {
			idle := 5 * time.Second
			if rv.seen >= want {
				idle = 300 * time.Millisecond
			}
			c.nc.SetReadDeadline(time.Now().Add(idle))
		}
		p, err := c.r.ReadPacket(c.v)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			switch {
			case p.QoS == 1:
				c.send(&packet.Puback{PacketID: p.PacketID})
			case rv.awaiting[p.PacketID]:
				c.send(&packet.Pubrec{PacketID: p.PacketID})
				continue
			default:
				rv.awaiting[p.PacketID] = true
				c.send(&packet.Pubrec{PacketID: p.PacketID})
			}
			if rv.got[string(p.Payload)]++; rv.got[string(p.Payload)] == 1 && rec.isAcked(string(p.Payload)) {
				rv.seen++
			}
		case *packet.Pubrel:
			delete(rv.awaiting, p.PacketID)
			c.send(&packet.Pubcomp{PacketID: p.PacketID})
		}
	}
}

func (r *record) isAcked(payload string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[payload]
}

func persistent(id string, clean bool) *packet.Connect {
	c := &packet.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60}
	c.Properties.SessionExpiry = 3600
	c.Properties.Set(packet.PropSessionExpiry)
	return c
}

// broker is one run of the roost binary.
type broker struct {
	cmd  *exec.Cmd
	addr string // the URL of the listener of the iteration's transport
	log  *strings.Builder
	mu   *sync.Mutex
	done chan struct{}
}

var readyLine = regexp.MustCompile(`msg="listener ready" addr=(\S+)`)

// start runs roost on data, waits for its listeners and picks tr's.
func start(t *testing.T, cfg, data string, tr rc.Transport) *broker {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfg, "--data", data, "--sync", *syncMode)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &broker{cmd: cmd, log: new(strings.Builder), mu: new(sync.Mutex), done: make(chan struct{})}
	trs := rc.Transports()
	ready := make(chan string, len(trs))
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20) // a panic's stack is one long line
		for sc.Scan() {
			b.mu.Lock()
			b.log.WriteString(sc.Text() + "\n")
			b.mu.Unlock()
			if m := readyLine.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m[1]
			}
		}
	}()
	timeout := time.After(10 * time.Second)
	for i := 0; i < len(trs); i++ {
		select {
		case addr := <-ready:
			if trs[i] == tr {
				b.addr = tr.URL(addr)
			}
			continue
		case <-b.done:
		case <-timeout:
		}
		break
	}
	if b.addr != "" {
		return b
	}
	b.kill(t)
	t.Fatalf("roost did not start:\n%s", b.output())
	return nil
}

func (b *broker) output() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// kill ends the broker with SIGKILL. Its log must not report a panic
// (brokertest.FailOnPanic).
func (b *broker) kill(t *testing.T) {
	t.Helper()
	b.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Wait()
	<-b.done
	brokertest.FailOnPanic(t, b.output())
}

// stop shuts the broker down with SIGTERM and checks it exits cleanly.
func (b *broker) stop(t *testing.T) {
	b.cmd.Process.Signal(syscall.SIGTERM)
	waited := make(chan error, 1)
	go func() { waited <- b.cmd.Wait() }()
	select {
	case err := <-waited:
		<-b.done
		if err != nil {
			t.Errorf("roost exited with %v:\n%s", err, b.output())
		}
		brokertest.FailOnPanic(t, b.output())
	case <-time.After(15 * time.Second):
		b.kill(t)
		t.Errorf("roost did not stop on SIGTERM:\n%s", b.output())
	}
}
