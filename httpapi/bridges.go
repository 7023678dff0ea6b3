package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
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
	// Source is "file" or "api" (see BridgeEntry) when the admin API can
	// change bridges.
	Source string `json:"source,omitempty"`
}

// listBridges answers GET /api/bridges: every bridge's state and figures.
func (h *Handler) listBridges(w http.ResponseWriter, _ *http.Request) {
	out := []bridgeJSON{}
	if h.opts.Bridges != nil {
		for _, s := range h.opts.Bridges() {
			j := toBridgeJSON(s)
			if h.opts.BridgeAdmin != nil {
				if e, err := h.opts.BridgeAdmin.BridgeConfig(s.Name); err == nil {
					j.Source = e.Source
				}
			}
			out = append(out, j)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func toBridgeJSON(s bridge.Stats) bridgeJSON {
	return bridgeJSON{Name: s.Name, Connected: s.Connected, Server: s.Server,
		ForwardedOut: s.ForwardedOut, ForwardedIn: s.ForwardedIn, Dropped: s.Dropped, Queued: s.Queued,
		QueueDropped: s.QueueDropped, Reconnects: s.Reconnects, LastError: s.LastError, LastErrorAt: timePtr(s.LastErrorAt)}
}

// BridgeAdmin changes the running bridges for the admin API; roost serve's
// bridge set is one. Its errors wrap ErrBridgeNotFound, ErrBridgeExists,
// ErrBridgeFromFile or ErrBridgeInvalid when the request is at fault;
// anything else is the server's fault (a 500).
type BridgeAdmin interface {
	// BridgeConfig returns the entry of the bridge named name.
	BridgeConfig(name string) (BridgeEntry, error)
	// SetBridge starts the bridge body describes (a bridges: entry as a
	// JSON object) under name, replacing the one of that name unless
	// create is set, and keeps it across restarts.
	SetBridge(ctx context.Context, name string, body []byte, create bool) error
	// DeleteBridge stops the bridge named name, ends its local session and
	// forgets it.
	DeleteBridge(ctx context.Context, name string) error
}

// BridgeEntry is a bridge's configuration as the admin API shows it.
type BridgeEntry struct {
	// Source is "file" for a bridge of the configuration file, which the
	// API can only show, or "api" for one it added.
	Source string
	// Config is the entry as a JSON object, without its password.
	Config json.RawMessage
	// HasPassword says a password is set (and kept by a PUT without one).
	HasPassword bool
}

// Errors a BridgeAdmin wraps, and their HTTP statuses.
var (
	ErrBridgeNotFound = errors.New("no such bridge")                   // 404
	ErrBridgeExists   = errors.New("a bridge of that name exists")     // 409
	ErrBridgeFromFile = errors.New("bridge of the configuration file") // 409
	ErrBridgeInvalid  = errors.New("invalid bridge")                   // 400
)

func bridgeStatus(err error) int {
	switch {
	case errors.Is(err, ErrBridgeNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBridgeExists), errors.Is(err, ErrBridgeFromFile):
		return http.StatusConflict
	case errors.Is(err, ErrBridgeInvalid):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// bridgeDetailJSON is GET /api/bridges/{name}.
type bridgeDetailJSON struct {
	bridgeJSON
	Source      string          `json:"source"`
	Config      json.RawMessage `json:"config"`
	HasPassword bool            `json:"has_password"`
}

func (h *Handler) getBridge(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if h.opts.BridgeAdmin == nil {
		writeError(w, http.StatusNotFound, "no bridge "+strconv.Quote(name))
		return
	}
	e, err := h.opts.BridgeAdmin.BridgeConfig(name)
	if err != nil {
		writeError(w, bridgeStatus(err), err.Error())
		return
	}
	out := bridgeDetailJSON{Source: e.Source, Config: e.Config, HasPassword: e.HasPassword, bridgeJSON: bridgeJSON{Name: name}}
	if h.opts.Bridges != nil {
		for _, s := range h.opts.Bridges() {
			if s.Name == name {
				out.bridgeJSON = toBridgeJSON(s)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) addBridge(w http.ResponseWriter, r *http.Request) {
	body, ok := h.bridgeBody(w, r)
	if !ok {
		return
	}
	var named struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &named); err != nil || named.Name == "" {
		writeError(w, http.StatusBadRequest, "want a JSON object with a \"name\"")
		return
	}
	h.setBridge(w, r, named.Name, body, true)
}

func (h *Handler) putBridge(w http.ResponseWriter, r *http.Request) {
	if body, ok := h.bridgeBody(w, r); ok {
		h.setBridge(w, r, r.PathValue("name"), body, false)
	}
}

func (h *Handler) setBridge(w http.ResponseWriter, r *http.Request, name string, body []byte, create bool) {
	if err := h.opts.BridgeAdmin.SetBridge(r.Context(), name, body, create); err != nil {
		h.logBridgeError(r, name, err)
		writeError(w, bridgeStatus(err), err.Error())
		return
	}
	h.log.Info("http: bridge set", "bridge", name, "created", create)
	code := http.StatusOK
	if create {
		code = http.StatusCreated
	}
	writeJSON(w, code, map[string]string{"name": name})
}

func (h *Handler) deleteBridge(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if h.opts.BridgeAdmin == nil {
		writeError(w, http.StatusNotFound, "no bridge "+strconv.Quote(name))
		return
	}
	if err := h.opts.BridgeAdmin.DeleteBridge(r.Context(), name); err != nil {
		h.logBridgeError(r, name, err)
		writeError(w, bridgeStatus(err), err.Error())
		return
	}
	h.log.Info("http: bridge removed", "bridge", name)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) logBridgeError(r *http.Request, name string, err error) {
	if bridgeStatus(err) >= 500 {
		h.log.Error("http: bridge change failed", "method", r.Method, "bridge", name, "err", err)
		return
	}
	h.log.Warn("http: bridge change refused", "method", r.Method, "bridge", name, "err", err)
}

// bridgeBody reads a POST or PUT body: JSON, at most maxBody bytes.
func (h *Handler) bridgeBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if h.opts.BridgeAdmin == nil {
		writeError(w, http.StatusNotImplemented, "bridges cannot be changed here (no bridge admin)")
		return nil, false
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "send the bridge as Content-Type: application/json")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body: "+err.Error())
		return nil, false
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "body is not valid JSON")
		return nil, false
	}
	return body, true
}
