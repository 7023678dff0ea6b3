package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/packet"
)

// Listing limits: a broker can hold millions of sessions, and a browser
// tab cannot show them.
const (
	defaultLimit = 500
	maxLimit     = 10000
	maxBody      = 1 << 20 // bytes of a publish request
)

func (h *Handler) routeAPI() {
	api := func(pattern string, f http.HandlerFunc) { h.mux.Handle(pattern, h.private(f)) }
	api("GET /api/stats", h.getStats)
	api("GET /api/console", h.getConsole)
	api("GET /api/clients", h.listClients)
	api("GET /api/clients/{id}", h.getClient)
	api("DELETE /api/clients/{id}", h.disconnectClient)
	api("GET /api/subscriptions", h.listSubscriptions)
	api("GET /api/retained", h.listRetained)
	api("DELETE /api/retained", h.deleteRetained)
	api("POST /api/publish", h.publish)
	api("GET /api/bridges", h.listBridges)
	api("GET /api/bridges/{name}", h.getBridge)
	api("POST /api/bridges", h.addBridge)
	api("PUT /api/bridges/{name}", h.putBridge)
	api("DELETE /api/bridges/{name}", h.deleteBridge)
	api("GET /api/cluster", h.getCluster)
}

// writeJSON writes v with status code; errors writing go nowhere useful.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// apiError is every error response's body.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{msg})
}

// limitParam reads ?limit=, defaulting to defaultLimit, capped at maxLimit.
func limitParam(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, errors.New("limit: want a positive integer")
	}
	return min(n, maxLimit), nil
}

// statsJSON is /api/stats: what the dashboard draws.
type statsJSON struct {
	Time             time.Time         `json:"time"`
	UptimeSeconds    float64           `json:"uptime_seconds"`
	Connected        int64             `json:"connected"`
	MaxConnected     int64             `json:"max_connected"`
	ConnectsTotal    uint64            `json:"connects_total"`
	Sessions         int               `json:"sessions"`
	MessagesReceived [3]uint64         `json:"messages_received"` // by QoS
	MessagesSent     [3]uint64         `json:"messages_sent"`
	BytesReceived    uint64            `json:"bytes_received"`
	BytesSent        uint64            `json:"bytes_sent"`
	Dropped          map[string]uint64 `json:"dropped"`
	Disconnects      map[string]uint64 `json:"disconnects"`
	Inflight         int               `json:"inflight"`
	Queued           int               `json:"queued"`
	Retained         int               `json:"retained"`
	Subscriptions    int               `json:"subscriptions"`
}

func (h *Handler) getStats(w http.ResponseWriter, _ *http.Request) {
	st := h.srv.Stats()
	out := statsJSON{Time: time.Now().UTC(), UptimeSeconds: st.Uptime.Seconds(), Connected: st.Connected,
		MaxConnected: st.MaxConnected, ConnectsTotal: st.ConnectsTotal, Sessions: st.Sessions,
		MessagesReceived: st.MessagesReceived, MessagesSent: st.MessagesSent, BytesReceived: st.BytesReceived,
		BytesSent: st.BytesSent, Dropped: make(map[string]uint64), Disconnects: st.Disconnects,
		Inflight: st.Inflight, Queued: st.Queued, Retained: st.Retained, Subscriptions: st.Subscriptions}
	for why, n := range st.Dropped {
		out.Dropped[why.String()] = n
	}
	writeJSON(w, http.StatusOK, out)
}

// consoleJSON tells the console where the broker's WebSocket listeners are.
type consoleJSON struct {
	WebSockets []string `json:"websockets"`
}

func (h *Handler) getConsole(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, consoleJSON{WebSockets: append([]string{}, h.opts.WebSockets...)})
}

// clientJSON is one session in the admin API.
type clientJSON struct {
	ClientID       string     `json:"client_id"`
	Username       string     `json:"username,omitempty"`
	Connected      bool       `json:"connected"`
	Address        string     `json:"address,omitempty"` // of the current or last connection
	Listener       string     `json:"listener,omitempty"`
	Protocol       string     `json:"protocol,omitempty"`
	KeepAlive      uint16     `json:"keep_alive"` // seconds
	ConnectedSince *time.Time `json:"connected_since,omitempty"`
	DisconnectedAt *time.Time `json:"disconnected_at,omitempty"`
	SessionExpiry  uint32     `json:"session_expiry"` // seconds
	Inflight       int        `json:"inflight"`
	Queued         int        `json:"queued"`
	Subscriptions  int        `json:"subscriptions"`
	Dropped        uint64     `json:"dropped"`
}

func toClientJSON(c broker.ClientSnapshot) clientJSON {
	return clientJSON{ClientID: c.ClientID, Username: c.Username, Connected: c.Connected, Address: c.RemoteAddr,
		Listener: c.Listener, Protocol: c.Protocol, KeepAlive: c.KeepAlive, ConnectedSince: timePtr(c.ConnectedAt),
		DisconnectedAt: timePtr(c.DisconnectedAt), SessionExpiry: c.SessionExpiry, Inflight: c.Inflight,
		Queued: c.Queued, Subscriptions: c.Subscriptions, Dropped: c.Dropped}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// clientList is GET /api/clients: Total counts every match, Clients holds
// the first limit of them in client id order.
type clientList struct {
	Total   int          `json:"total"`
	Clients []clientJSON `json:"clients"`
}

// listClients answers GET /api/clients?q=&connected=&limit=. q matches a
// substring of the client id, username or address, case-insensitively.
func (h *Handler) listClients(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := strings.ToLower(r.URL.Query().Get("q"))
	var connected *bool
	if s := r.URL.Query().Get("connected"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "connected: want true or false")
			return
		}
		connected = &b
	}
	out := clientList{Clients: []clientJSON{}}
	for _, c := range h.srv.Clients() {
		if connected != nil && c.Connected != *connected || q != "" && !clientMatches(c, q) {
			continue
		}
		out.Total++
		if len(out.Clients) < limit {
			out.Clients = append(out.Clients, toClientJSON(c))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func clientMatches(c broker.ClientSnapshot, q string) bool {
	for _, s := range []string{c.ClientID, c.Username, c.RemoteAddr} {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	return false
}

// subscriptionJSON is one subscription in the admin API.
type subscriptionJSON struct {
	ClientID          string `json:"client_id"`
	Filter            string `json:"filter"`
	QoS               uint8  `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	RetainHandling    byte   `json:"retain_handling,omitempty"`
	ID                uint32 `json:"subscription_id,omitempty"`
}

func toSubscriptionJSON(s broker.SubscriptionSnapshot) subscriptionJSON {
	return subscriptionJSON{ClientID: s.ClientID, Filter: s.Filter, QoS: uint8(s.Options.QoS), NoLocal: s.Options.NoLocal,
		RetainAsPublished: s.Options.RetainAsPublished, RetainHandling: s.Options.RetainHandling, ID: s.ID}
}

// clientDetail is GET /api/clients/{id}.
type clientDetail struct {
	Client        clientJSON         `json:"client"`
	Subscriptions []subscriptionJSON `json:"subscriptions"`
}

func (h *Handler) getClient(w http.ResponseWriter, r *http.Request) {
	c, subs, ok := h.srv.Client(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no session with that client id")
		return
	}
	out := clientDetail{Client: toClientJSON(c), Subscriptions: make([]subscriptionJSON, 0, len(subs))}
	for _, s := range subs {
		out.Subscriptions = append(out.Subscriptions, toSubscriptionJSON(s))
	}
	writeJSON(w, http.StatusOK, out)
}

// disconnectClient answers DELETE /api/clients/{id}[?end_session=true]:
// the client is disconnected (MQTT 5: DISCONNECT 0x98) and, with
// end_session, its session is removed too.
func (h *Handler) disconnectClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	end, err := boolParam(r, "end_session")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, _, ok := h.srv.Client(id); !ok {
		writeError(w, http.StatusNotFound, "no session with that client id")
		return
	}
	was := h.srv.DisconnectClient(id, end)
	h.log.Info("http: client disconnected by admin", "client_id", id, "was_connected", was, "end_session", end)
	writeJSON(w, http.StatusOK, map[string]bool{"was_connected": was, "session_ended": end})
}

func boolParam(r *http.Request, name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errors.New(name + ": want true or false")
	}
	return b, nil
}

// listSubscriptions answers GET /api/subscriptions?client=&filter=&limit=:
// client is an exact client id, filter a substring of the filter.
func (h *Handler) listSubscriptions(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var subs []broker.SubscriptionSnapshot
	if id := r.URL.Query().Get("client"); id != "" {
		_, subs, _ = h.srv.Client(id)
	} else {
		subs = h.srv.Subscriptions()
	}
	part := r.URL.Query().Get("filter")
	out := struct {
		Total         int                `json:"total"`
		Subscriptions []subscriptionJSON `json:"subscriptions"`
	}{Subscriptions: []subscriptionJSON{}}
	for _, s := range subs {
		if !strings.Contains(s.Filter, part) {
			continue
		}
		out.Total++
		if len(out.Subscriptions) < limit {
			out.Subscriptions = append(out.Subscriptions, toSubscriptionJSON(s))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// messageJSON is a retained message. Payload holds the payload when it is
// valid UTF-8, PayloadBase64 otherwise.
type messageJSON struct {
	Topic         string     `json:"topic"`
	Payload       *string    `json:"payload,omitempty"`
	PayloadBase64 string     `json:"payload_base64,omitempty"`
	Size          int        `json:"size"`
	QoS           uint8      `json:"qos"`
	Received      *time.Time `json:"received,omitempty"`
	Expires       *time.Time `json:"expires,omitempty"`
}

func toMessageJSON(m *broker.Message) messageJSON {
	out := messageJSON{Topic: m.Topic, Size: len(m.Payload), QoS: uint8(m.QoS), Received: timePtr(m.Created()),
		Expires: timePtr(m.Expires())}
	if utf8.Valid(m.Payload) {
		s := string(m.Payload)
		out.Payload = &s
	} else {
		out.PayloadBase64 = base64.StdEncoding.EncodeToString(m.Payload)
	}
	return out
}

// listRetained answers GET /api/retained?filter=&limit= (filter defaults
// to #, which does not match $-topics [MQTT-4.7.2-1]).
func (h *Handler) listRetained(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		filter = "#"
	}
	msgs, err := h.srv.RetainedMessages(filter, limit)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out := struct {
		Messages []messageJSON `json:"messages"`
	}{Messages: make([]messageJSON, 0, len(msgs))}
	for _, m := range msgs {
		out.Messages = append(out.Messages, toMessageJSON(m))
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteRetained answers DELETE /api/retained?topic=.
func (h *Handler) deleteRetained(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("topic") {
		writeError(w, http.StatusBadRequest, "topic: required")
		return
	}
	name := q.Get("topic")
	if !h.srv.DeleteRetained(name) {
		writeError(w, http.StatusNotFound, "no retained message on that topic")
		return
	}
	h.log.Info("http: retained message deleted by admin", "topic", name)
	writeJSON(w, http.StatusOK, map[string]bool{"deleted": true})
}

// publishJSON is the body of POST /api/publish. Payload is sent as UTF-8;
// PayloadBase64, if set instead, carries binary payloads.
type publishJSON struct {
	Topic         string  `json:"topic"`
	Payload       *string `json:"payload"`
	PayloadBase64 *string `json:"payload_base64"`
	QoS           uint8   `json:"qos"`
	Retain        bool    `json:"retain"`
	// MessageExpiry is the MQTT 5 Message Expiry Interval in seconds; 0
	// means none.
	MessageExpiry uint32 `json:"message_expiry"`
}

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "want Content-Type: application/json")
		return
	}
	var req publishJSON
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	pr := broker.PublishRequest{Topic: req.Topic, QoS: packet.QoS(req.QoS), Retain: req.Retain}
	switch {
	case req.Payload != nil && req.PayloadBase64 != nil:
		writeError(w, http.StatusBadRequest, "body: payload and payload_base64 are exclusive")
		return
	case req.Payload != nil:
		pr.Payload = []byte(*req.Payload)
	case req.PayloadBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*req.PayloadBase64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "payload_base64: "+err.Error())
			return
		}
		pr.Payload = b
	}
	if req.MessageExpiry > 0 {
		pr.Props.Set(packet.PropMessageExpiry)
		pr.Props.MessageExpiry = req.MessageExpiry
	}
	n, err := h.srv.Publish(pr)
	switch {
	case errors.Is(err, broker.ErrNotRetained):
		// Delivered, so not a failure; but the caller asked for it to be
		// kept and must learn that it was not.
		writeJSON(w, http.StatusOK, map[string]any{"routed": n, "retained": false, "warning": err.Error()})
		return
	case errors.Is(err, broker.ErrBadPublish):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		h.log.Error("http: publish failed", "topic", req.Topic, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"routed": n})
}
