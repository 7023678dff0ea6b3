package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// hookFanOut is a broker whose Authorizer is an HTTPHook answering after
// delay (with delay < 0: receive questions never, the others after 5 ms),
// one QoS 1 publisher and subs QoS 0 subscribers to "b/#" that count what
// they receive.
type hookFanOut struct {
	pub      *mqtttest.Client
	received atomic.Int64
	requests atomic.Int64
}

func newHookFanOut(b *testing.B, subs int, delay, timeout time.Duration) *hookFanOut {
	f := &hookFanOut{}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		var req hookRequest
		json.NewDecoder(r.Body).Decode(&req)
		switch {
		case delay >= 0:
			time.Sleep(delay)
		case req.Action == "receive":
			<-r.Context().Done() // no answer
			return
		default:
			time.Sleep(5 * time.Millisecond)
		}
		w.Write([]byte(`{"allow":true}`))
	}))
	b.Cleanup(svc.Close)
	hook := NewHTTPHook(HTTPHookOptions{URL: svc.URL, Timeout: timeout, Logger: quiet})
	addr := startBroker(b, broker.Options{Authorizer: hook})
	for i := range subs {
		c := mqtttest.Dial(b, addr, packet.V5)
		c.Connect(&packet.Connect{ClientID: fmt.Sprintf("sub%d", i), CleanStart: true})
		c.Subscribe("b/#", 0)
		go func() {
			for {
				if _, err := c.Read(time.Minute); err != nil {
					return
				}
				f.received.Add(1)
			}
		}()
	}
	f.pub = mqtttest.Dial(b, addr, packet.V5)
	f.pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
	return f
}

// BenchmarkHookFanOut measures, for a 1 → 100 fan-out whose receive checks
// go to an HTTP hook answering in 5 ms, how long the publisher waits for
// its PUBACK (puback-ms) and how long until every subscriber has the
// message (delivered-ms): "cold" publishes each message on a new topic, so
// no answer is cached; "warm" repeats one topic; "dead" repeats one topic
// with a hook that never answers receive questions (timeout 100 ms): the
// publisher's own permission is cached after the first message, the
// subscribers' never are. Run with
//
//	go test -run '^$' -bench HookFanOut -benchtime 20x ./auth/
func BenchmarkHookFanOut(b *testing.B) {
	const subs = 100
	for _, bc := range []struct {
		name           string
		delay, timeout time.Duration
		sameTopic      bool
	}{
		{"cold", 5 * time.Millisecond, 2 * time.Second, false},
		{"warm", 5 * time.Millisecond, 2 * time.Second, true},
		{"dead", -1, 100 * time.Millisecond, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newHookFanOut(b, subs, bc.delay, bc.timeout)
			var acks, done []time.Duration
			b.ResetTimer()
			for i := range b.N {
				topic := fmt.Sprintf("b/%d", i)
				if bc.sameTopic {
					topic = "b/same"
				}
				want := f.received.Load() + subs
				start := time.Now()
				f.pub.Send(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(i%60000 + 1), Payload: []byte("x")})
				if _, ok := f.pub.Next(time.Minute).(*packet.Puback); !ok {
					b.Fatal("no PUBACK")
				}
				acks = append(acks, time.Since(start))
				if bc.delay < 0 {
					continue // nothing is delivered: the hook never allows
				}
				for f.received.Load() < want {
					if time.Since(start) > time.Minute {
						b.Fatalf("message %d reached %d of %d subscribers", i, f.received.Load()-want+subs, subs)
					}
					time.Sleep(100 * time.Microsecond)
				}
				done = append(done, time.Since(start))
			}
			b.StopTimer()
			report(b, "puback", acks)
			report(b, "delivered", done)
			b.ReportMetric(float64(f.requests.Load())/float64(b.N), "hook-req/op")
		})
	}
}

// report adds the median and the maximum of ds, in milliseconds.
func report(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2])/1e6, name+"-p50-ms")
	b.ReportMetric(float64(ds[len(ds)-1])/1e6, name+"-max-ms")
}
