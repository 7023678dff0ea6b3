package httpapi

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roost-mqtt/roost/bridge"
)

var (
	descBridgeUp         = bdesc("connected", "1 while the bridge is connected to its remote broker, else 0.")
	descBridgeForwarded  = bdesc("forwarded_total", "Messages the bridge forwarded and the other side took, by direction (out: to the remote).", "direction")
	descBridgeDropped    = bdesc("dropped_total", "Messages the bridge did not forward: QoS 0 while the remote was down, or refused by the receiving side.")
	descBridgeQueued     = bdesc("queued", "Messages waiting in the bridge's local session for the remote (queued and inflight).")
	descBridgeQueueDrops = bdesc("queue_dropped_total", "Messages the bridge's local session dropped at its queue limits.")
	descBridgeReconnects = bdesc("reconnects_total", "Connections to the remote after the first.")
)

func bdesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("roost_bridge_"+name, help, append([]string{"bridge"}, labels...), nil)
}

// bridgeCollector exports Options.Bridges at scrape time.
type bridgeCollector struct{ stats func() []bridge.Stats }

func (c bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBridgeUp, descBridgeForwarded, descBridgeDropped, descBridgeQueued,
		descBridgeQueueDrops, descBridgeReconnects} {
		ch <- d
	}
}

func (c bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		up := 0.0
		if s.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBridgeUp, prometheus.GaugeValue, up, s.Name)
		ch <- prometheus.MustNewConstMetric(descBridgeForwarded, prometheus.CounterValue, float64(s.ForwardedOut), s.Name, "out")
		ch <- prometheus.MustNewConstMetric(descBridgeForwarded, prometheus.CounterValue, float64(s.ForwardedIn), s.Name, "in")
		ch <- prometheus.MustNewConstMetric(descBridgeDropped, prometheus.CounterValue, float64(s.Dropped), s.Name)
		ch <- prometheus.MustNewConstMetric(descBridgeQueued, prometheus.GaugeValue, float64(s.Queued), s.Name)
		ch <- prometheus.MustNewConstMetric(descBridgeQueueDrops, prometheus.CounterValue, float64(s.QueueDropped), s.Name)
		ch <- prometheus.MustNewConstMetric(descBridgeReconnects, prometheus.CounterValue, float64(s.Reconnects), s.Name)
	}
}

type bridgeJSON struct {
	Name         string     `json:"name"`
	Connected    bool       `json:"connected"`
	Server       string     `json:"server,omitempty"`
	ForwardedOut uint64     `json:"forwarded_out"`
	ForwardedIn  uint64     `json:"forwarded_in"`
	Dropped      uint64     `json:"dropped"`
	Queued       int        `json:"queued"`
	QueueDropped uint64     `json:"queue_dropped"`
	Reconnects   uint64     `json:"reconnects"`
	LastError    string     `json:"last_error,omitempty"`
	LastErrorAt  *time.Time `json:"last_error_at,omitempty"`
}

// listBridges answers GET /api/bridges: every bridge's state and figures.
func (h *Handler) listBridges(w http.ResponseWriter, _ *http.Request) {
	out := []bridgeJSON{}
	if h.opts.Bridges != nil {
		for _, s := range h.opts.Bridges() {
			out = append(out, bridgeJSON{Name: s.Name, Connected: s.Connected, Server: s.Server,
				ForwardedOut: s.ForwardedOut, ForwardedIn: s.ForwardedIn, Dropped: s.Dropped, Queued: s.Queued,
				QueueDropped: s.QueueDropped, Reconnects: s.Reconnects, LastError: s.LastError, LastErrorAt: timePtr(s.LastErrorAt)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}
