package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/brokertest"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// heldService is an auth service whose answers to receive questions wait
// until the test opens it (or, while dead, never come); everything else
// is allowed at once. It counts requests by action.
type heldService struct {
	*httptest.Server
	dead     atomic.Bool
	open     chan struct{}
	openOnce sync.Once
	mu       sync.Mutex
	count    map[string]int
}

func newHeldService(t *testing.T) *heldService {
	s := &heldService{open: make(chan struct{}), count: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req hookRequest
		if err := jsonDecode(r, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.count[req.Action]++
		s.mu.Unlock()
		if req.Action == "receive" {
			if s.dead.Load() {
				<-r.Context().Done()
				return
			}
			select {
			case <-s.open:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, `{"allow":%t}`, !strings.HasPrefix(req.Topic, "deny/"))
	}))
	t.Cleanup(func() { s.release(); s.Close() })
	return s
}

func (s *heldService) release() { s.openOnce.Do(func() { close(s.open) }) }

func (s *heldService) requests(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[action]
}

// A broker whose HTTP hook has not answered its subscribers' receive
// questions still acknowledges the publisher and reads its next packets;
// the subscribers get their messages, in order, when the answers come.
// Before, the publisher's goroutine asked the hook once per subscriber, in
// turn, before its PUBACK.
func TestHookFanOutDoesNotHoldPublisher(t *testing.T) {
	svc := newHeldService(t)
	hook := NewHTTPHook(HTTPHookOptions{URL: svc.URL, Logger: quiet})
	addr := startBroker(t, broker.Options{Authorizer: hook})
	const subs = 5
	var clients []*mqtttest.Client
	for i := range subs {
		c := mqtttest.Dial(t, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: fmt.Sprintf("s%d", i), CleanStart: true})
		c.Subscribe("t/#", 1)
		clients = append(clients, c)
	}
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	for i := 1; i <= 3; i++ {
		pub.Send(&packet.Publish{Topic: "t/x", QoS: 1, PacketID: uint16(i), Payload: []byte{byte('0' + i)}})
		if ack, ok := pub.Next(3 * time.Second).(*packet.Puback); !ok || ack.PacketID != uint16(i) {
			t.Fatalf("PUBACK %d while the hook holds every receive question: got %+v", i, ack)
		}
	}
	mqtttest.Eventually(t, 3*time.Second, func() bool { return svc.requests("receive") == subs })
	svc.release()
	for i, c := range clients {
		for n := 1; n <= 3; n++ {
			m, ok := c.Next(3 * time.Second).(*packet.Publish)
			if !ok || m.Payload[0] != byte('0'+n) {
				t.Fatalf("subscriber %d: got %+v, want message %d", i, m, n)
			}
			c.Send(&packet.Puback{PacketID: m.PacketID})
		}
	}
	if n := svc.requests("receive"); n != subs {
		t.Errorf("%d receive questions for %d subscribers of one topic", n, subs)
	}
}

// A hook that stops answering costs one timeout, in a subscriber's own
// goroutine; after that, questions are refused without a request until a
// probe finds it answering again, and the publisher is acknowledged at
// once throughout.
func TestHookDownFailsClosedFast(t *testing.T) {
	svc := newHeldService(t)
	svc.release()
	svc.dead.Store(true)
	logs := &mqtttest.LogBuffer{}
	hook := NewHTTPHook(HTTPHookOptions{URL: svc.URL, Timeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	addr := startBroker(t, broker.Options{Authorizer: hook})
	sub := mqtttest.Dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "sub", CleanStart: true})
	sub.Subscribe("t/#", 1)
	pub := mqtttest.Dial(t, addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	publish := func(id uint16, topic string) {
		t.Helper()
		pub.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: []byte("x")})
		if ack, ok := pub.Next(3 * time.Second).(*packet.Puback); !ok || ack.PacketID != id {
			t.Fatalf("PUBACK %d with the hook down: got %+v", id, ack)
		}
	}
	publish(1, "t/1")
	mqtttest.Eventually(t, 3*time.Second, func() bool { return strings.Contains(logs.String(), "auth hook down") })
	asked := svc.requests("receive")
	for i := uint16(2); i <= 20; i++ {
		publish(i, fmt.Sprintf("t/%d", i))
	}
	if n := svc.requests("receive"); n > asked+1 {
		t.Errorf("%d receive questions sent while the hook was down (before: %d); want at most one probe", n, asked)
	}
	if p, err := sub.Read(100 * time.Millisecond); err == nil {
		t.Fatalf("subscriber got %+v while the hook was down (fail closed)", p)
	}

	svc.dead.Store(false)
	// The next probe (500 ms after the failure) finds it answering.
	id := uint16(21)
	mqtttest.Eventually(t, 5*time.Second, func() bool {
		id++
		publish(id, fmt.Sprintf("t/%d", id))
		p, err := sub.Read(50 * time.Millisecond)
		if err != nil {
			return false
		}
		m := p.(*packet.Publish)
		sub.Send(&packet.Puback{PacketID: m.PacketID})
		return true
	})
	if !strings.Contains(logs.String(), "auth hook answers again") {
		t.Errorf("no log line for the hook's return:\n%s", logs)
	}
}

// While the service is down, Cached gives the failure answer at once (so
// the broker does not even queue the question); FailOpen makes it allow.
func TestHookCachedWhileDown(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		svc := newHeldService(t)
		svc.dead.Store(true)
		h := NewHTTPHook(HTTPHookOptions{URL: svc.URL, Timeout: 100 * time.Millisecond, FailOpen: failOpen, Logger: quiet})
		c := &broker.ClientInfo{ClientID: "c"}
		if _, ok := h.Cached(c, broker.ActionReceive, "a"); ok {
			t.Fatal("Cached knows an answer nobody gave")
		}
		if got := h.Allow(context.Background(), c, broker.ActionReceive, "a"); got != failOpen {
			t.Fatalf("FailOpen %v: Allow with the service down = %v", failOpen, got)
		}
		allow, ok := h.Cached(c, broker.ActionReceive, "b")
		if !ok || allow != failOpen {
			t.Errorf("FailOpen %v: Cached while down = %v, %v; want %v, true", failOpen, allow, ok, failOpen)
		}
		before := svc.requests("receive")
		if got := h.Allow(context.Background(), c, broker.ActionReceive, "b"); got != failOpen || svc.requests("receive") != before {
			t.Errorf("FailOpen %v: Allow while down = %v after %d requests; want %v without one",
				failOpen, got, svc.requests("receive")-before, failOpen)
		}
	}
}

// Identical questions asked together share one request, no more than
// MaxConcurrent receive questions are out at once, and those do not hold up
// other questions.
func TestHookSharesAndBoundsRequests(t *testing.T) {
	svc := newHeldService(t)
	h := NewHTTPHook(HTTPHookOptions{URL: svc.URL, CacheTTL: -1, MaxConcurrent: 2, Logger: quiet})
	ask := func(client, topic string, n int) *sync.WaitGroup {
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !h.Allow(context.Background(), &broker.ClientInfo{ClientID: client}, broker.ActionReceive, topic) {
					t.Errorf("%s %s refused", client, topic)
				}
			}()
		}
		return &wg
	}
	same := ask("c", "a", 10)
	mqtttest.Eventually(t, 2*time.Second, func() bool { return svc.requests("receive") == 1 })
	mqtttest.Eventually(t, 2*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.inflight) == 1
	})
	others := ask("d", "x", 1)
	more := ask("e", "y", 1)
	mqtttest.Eventually(t, 2*time.Second, func() bool { return svc.requests("receive") == 2 })
	// Ten identical questions and two others, all asked: the first and
	// one other are out, the third must wait for one of them.
	mqtttest.Eventually(t, 2*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.inflight) == 3
	})
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
		if n := svc.requests("receive"); n != 2 {
			t.Fatalf("%d requests out with MaxConcurrent 2", n)
		}
		runtime.Gosched()
	}
	// A client's question about itself does not wait behind them.
	if !h.Allow(context.Background(), &broker.ClientInfo{ClientID: "p"}, broker.ActionPublish, "a") {
		t.Error("publish question refused while receive questions filled their tokens")
	}
	svc.release()
	same.Wait()
	others.Wait()
	more.Wait()
	if n := svc.requests("receive"); n != 3 {
		t.Errorf("%d requests for 12 questions of which 10 the same, want 3", n)
	}
}

func jsonDecode(r *http.Request, v any) error { return json.NewDecoder(r.Body).Decode(v) }

// startBroker runs a broker on 127.0.0.1:0 for one test.
func startBroker(t testing.TB, opts broker.Options) string {
	t.Helper()
	opts.Logger = quiet
	_, addr := brokertest.Start(t, opts)
	return addr
}
