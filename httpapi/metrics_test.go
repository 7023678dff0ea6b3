package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// scrape fetches /metrics and parses it.
func (e *env) scrape() map[string]*dto.MetricFamily {
	e.t.Helper()
	code, body := e.do("GET", "/metrics", "")
	if code != http.StatusOK {
		e.t.Fatalf("/metrics: %d %s", code, body)
	}
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		e.t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// value returns the value of the metric name{labels} (labels as k, v
// pairs); a histogram gives its sample count. Missing: NaN.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return math.NaN()
	}
next:
	for _, m := range mf.Metric {
		have := make(map[string]string)
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return math.NaN()
}

// A scripted workload, then every figure checked on /metrics.
func TestMetricsAfterWorkload(t *testing.T) {
	e := newEnv(t, Options{Token: "t0ken", Store: fakeSize(12345)})

	sub := e.client("sub", packet.V5)
	sub.Subscribe("w/#", 1)
	pub := e.client("pub", packet.V311)
	for i := range 3 {
		pub.Send(&packet.Publish{Topic: "w/zero", Payload: []byte(fmt.Sprint("q0-", i))})
	}
	for i := range 2 {
		pub.Send(&packet.Publish{Topic: "w/one", QoS: 1, PacketID: uint16(i + 1), Payload: []byte("q1")})
		if _, ok := pub.Next(2 * time.Second).(*packet.Puback); !ok {
			t.Fatal("no PUBACK")
		}
	}
	pub.Send(&packet.Publish{Topic: "w/kept", Retain: true, Payload: []byte("retained")})
	// The broker times one delivery in 16 per connection: 32 in all
	// make two samples.
	for range 26 {
		pub.Send(&packet.Publish{Topic: "w/bulk", Payload: []byte("bulk")})
	}
	// The subscriber acknowledges the QoS 1 ones.
	got := 0
	for got < 32 {
		p := sub.Next(2 * time.Second)
		if m, ok := p.(*packet.Publish); ok {
			got++
			if m.QoS == 1 {
				sub.Send(&packet.Puback{PacketID: m.PacketID})
			}
		}
	}
	// One refused CONNECT (0x86) and one normal disconnect.
	bad := mqtttest.Dial(t, e.addr, packet.V5)
	bad.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "bad", Username: "bad", CleanStart: true})
	if ack, ok := bad.Next(2 * time.Second).(*packet.Connack); !ok || ack.ReasonCode != packet.BadUserNameOrPassword {
		t.Fatalf("CONNACK for bad: %+v", ack)
	}
	gone := e.client("gone", packet.V5)
	gone.Send(&packet.Disconnect{})
	gone.ExpectClosed(2 * time.Second)
	mqtttest.Eventually(t, 2*time.Second, func() bool { return e.srv.Stats().Connected == 2 })

	mfs := e.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"roost_connections", nil, 2},
		{"roost_connections_max", nil, 3},
		{"roost_connections_total", nil, 3},
		{"roost_clients_connected", []string{"protocol", "5.0"}, 1},
		{"roost_clients_connected", []string{"protocol", "3.1.1"}, 1},
		{"roost_connects_refused_total", []string{"code", "0x86"}, 1},
		{"roost_disconnects_total", []string{"reason", "normal"}, 1},
		{"roost_sessions", nil, 2},
		{"roost_messages_received_total", []string{"qos", "0"}, 30},
		{"roost_messages_received_total", []string{"qos", "1"}, 2},
		{"roost_messages_received_total", []string{"qos", "2"}, 0},
		{"roost_messages_sent_total", []string{"qos", "0"}, 30},
		{"roost_messages_sent_total", []string{"qos", "1"}, 2},
		{"roost_payload_bytes_received_total", []string{"qos", "0"}, 124}, // 3x4 + 8 + 26x4
		{"roost_payload_bytes_received_total", []string{"qos", "1"}, 4},
		{"roost_payload_bytes_sent_total", []string{"qos", "0"}, 124},
		{"roost_payload_bytes_sent_total", []string{"qos", "1"}, 4},
		{"roost_messages_dropped_total", []string{"reason", "queue_full"}, 0},
		{"roost_messages_inflight", nil, 0},
		{"roost_messages_queued", nil, 0},
		{"roost_retained_messages", nil, 1},
		{"roost_retained_bytes", nil, 14}, // "w/kept" + "retained"
		{"roost_retained_refused_total", nil, 0},
		{"roost_subscriptions", nil, 1},
		{"roost_store_size_bytes", nil, 12345},
		{"roost_delivery_latency_seconds", nil, 2},
	} {
		if got := value(mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"roost_bytes_received_total", "roost_bytes_sent_total", "roost_uptime_seconds"} {
		if v := value(mfs, name); !(v > 0) {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	if mfs["go_goroutines"] == nil || mfs["process_open_fds"] == nil {
		t.Error("Go and process collectors missing")
	}
	// Buckets are cumulative and end at the total.
	h := mfs["roost_delivery_latency_seconds"].Metric[0].Histogram
	var prev uint64
	for _, b := range h.Bucket {
		if b.GetCumulativeCount() < prev {
			t.Fatalf("buckets not cumulative: %v", h.Bucket)
		}
		prev = b.GetCumulativeCount()
	}
	if prev > h.GetSampleCount() || h.GetSampleSum() <= 0 {
		t.Errorf("histogram: last bucket %d, count %d, sum %v", prev, h.GetSampleCount(), h.GetSampleSum())
	}
}

type fakeSize int64

func (f fakeSize) Size() (int64, error) { return int64(f), nil }

// The broker's per-bucket counts become Prometheus's cumulative ones.
func TestLatencyHistogram(t *testing.T) {
	h := broker.Histogram{Bounds: []time.Duration{time.Millisecond, time.Second}, Counts: []uint64{2, 3, 1}, Sum: 3 * time.Second}
	var m dto.Metric
	if err := latencyHistogram(descLatency, h).Write(&m); err != nil {
		t.Fatal(err)
	}
	hist := m.Histogram
	if hist.GetSampleCount() != 6 || hist.GetSampleSum() != 3 {
		t.Fatalf("count %d sum %v", hist.GetSampleCount(), hist.GetSampleSum())
	}
	want := map[float64]uint64{0.001: 2, 1: 5}
	for _, b := range hist.Bucket {
		if want[b.GetUpperBound()] != b.GetCumulativeCount() {
			t.Errorf("bucket %v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want[b.GetUpperBound()])
		}
	}
}
