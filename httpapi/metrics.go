package httpapi

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roost-mqtt/roost/broker"
)

// collector turns broker.Server.Stats and Clients into metrics at scrape
// time; the broker keeps its own atomic counters and pays nothing extra.
type collector struct {
	srv   *broker.Server
	store Sizer // nil if the store cannot tell its size
	log   *slog.Logger
}

func newCollector(srv *broker.Server, store any, log *slog.Logger) *collector {
	c := &collector{srv: srv, log: log}
	if s, ok := store.(Sizer); ok {
		c.store = s
	}
	return c
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("roost_"+name, help, labels, nil)
}

var (
	descUptime       = desc("uptime_seconds", "Seconds since the broker started.")
	descConnected    = desc("connections", "Client connections now (past CONNACK).")
	descMaxConnected = desc("connections_max", "The most client connections at once since start.")
	descConnects     = desc("connections_total", "Client connections accepted (CONNACK success) since start.")
	descByListener   = desc("clients_connected", "Connected clients by listener and protocol version.", "listener", "protocol")
	descRefused      = desc("connects_refused_total", "CONNECTs refused, by MQTT 5 reason code.", "code", "reason")
	descDisconnects  = desc("disconnects_total", "Ended connections by why they ended.", "reason")
	descSessions     = desc("sessions", "Sessions, connected and offline persistent.")
	descExpired      = desc("sessions_expired_total", "Sessions ended by expiry since start.")
	descMsgsIn       = desc("messages_received_total", "PUBLISH packets received from clients, by QoS.", "qos")
	descMsgsOut      = desc("messages_sent_total", "PUBLISH packets sent to clients, by QoS.", "qos")
	descBytesIn      = desc("bytes_received_total", "Bytes received from clients, all packets.")
	descBytesOut     = desc("bytes_sent_total", "Bytes sent to clients, all packets.")
	descPayloadIn    = desc("payload_bytes_received_total", "PUBLISH payload bytes received from clients, by QoS.", "qos")
	descPayloadOut   = desc("payload_bytes_sent_total", "PUBLISH payload bytes sent to clients, by QoS.", "qos")
	descDropped      = desc("messages_dropped_total", "Messages not delivered to a session, by reason.", "reason")
	descInflight     = desc("messages_inflight", "QoS 1 and 2 messages sent and not yet acknowledged, all sessions.")
	descQueued       = desc("messages_queued", "Messages waiting in session queues.")
	descRetained     = desc("retained_messages", "Retained messages.")
	descRetBytes     = desc("retained_bytes", "Topic, payload and property bytes of the retained messages outside $SYS (what max_retained_bytes limits).")
	descRetRefused   = desc("retained_refused_total", "Retained PUBLISHes delivered but not kept because of max_retained or max_retained_bytes.")
	descSubs         = desc("subscriptions", "Subscriptions, all sessions.")
	descStoreSize    = desc("store_size_bytes", "Bytes the store takes on disk.")
	descLatency      = desc("delivery_latency_seconds", "Time from a PUBLISH arriving to its copy being queued for a subscriber's socket.")
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUptime, descConnected, descMaxConnected, descConnects, descByListener,
		descRefused, descDisconnects, descSessions, descExpired, descMsgsIn, descMsgsOut, descBytesIn, descBytesOut, descPayloadIn, descPayloadOut,
		descDropped, descInflight, descQueued, descRetained, descRetBytes, descRetRefused, descSubs, descStoreSize, descLatency} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descUptime, st.Uptime.Seconds())
	gauge(descConnected, float64(st.Connected))
	gauge(descMaxConnected, float64(st.MaxConnected))
	counter(descConnects, st.ConnectsTotal)
	c.collectByListener(ch)
	for code, n := range st.ConnectsRefused {
		counter(descRefused, n, fmt.Sprintf("0x%02X", byte(code)), code.String())
	}
	for why, n := range st.Disconnects {
		counter(descDisconnects, n, why)
	}
	gauge(descSessions, float64(st.Sessions))
	counter(descExpired, st.SessionsExpired)
	for q := range st.MessagesReceived {
		counter(descMsgsIn, st.MessagesReceived[q], strconv.Itoa(q))
		counter(descMsgsOut, st.MessagesSent[q], strconv.Itoa(q))
	}
	for q := range st.PayloadReceived {
		counter(descPayloadIn, st.PayloadReceived[q], strconv.Itoa(q))
		counter(descPayloadOut, st.PayloadSent[q], strconv.Itoa(q))
	}
	counter(descBytesIn, st.BytesReceived)
	counter(descBytesOut, st.BytesSent)
	for why, n := range st.Dropped {
		counter(descDropped, n, why.String())
	}
	gauge(descInflight, float64(st.Inflight))
	gauge(descQueued, float64(st.Queued))
	gauge(descRetained, float64(st.Retained))
	gauge(descRetBytes, float64(st.RetainedBytes))
	counter(descRetRefused, st.RetainedRefused)
	gauge(descSubs, float64(st.Subscriptions))
	if c.store != nil {
		if n, err := c.store.Size(); err != nil {
			c.log.Warn("metrics: store size", "err", err)
		} else {
			gauge(descStoreSize, float64(n))
		}
	}
	ch <- latencyHistogram(descLatency, st.Latency)
}

// collectByListener counts connected clients by listener and protocol. A
// pair with no clients left is absent from the scrape rather than 0;
// Prometheus marks its series stale.
func (c *collector) collectByListener(ch chan<- prometheus.Metric) {
	type key struct{ listener, protocol string }
	n := make(map[key]int)
	for _, cs := range c.srv.Clients() {
		if cs.Connected {
			n[key{cs.Listener, cs.Protocol}]++
		}
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(descByListener, prometheus.GaugeValue, float64(v), k.listener, k.protocol)
	}
}

// latencyHistogram converts h's per-bucket counts into Prometheus's
// cumulative ones, as metric d; h's last bucket is +Inf.
func latencyHistogram(d *prometheus.Desc, h broker.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var total uint64
	for i, n := range h.Counts {
		total += n
		if i < len(h.Bounds) {
			buckets[h.Bounds[i].Seconds()] = total
		}
	}
	return prometheus.MustNewConstHistogram(d, total, h.Sum.Seconds(), buckets)
}
