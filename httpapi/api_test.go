package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

func TestClients(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.client("alpha-1", packet.V5)
	a.Subscribe("a/#", 1)
	a.Subscribe("b/+", 0)
	e.client("beta-2", packet.V311)

	var list clientList
	e.getJSON("/api/clients", &list)
	if list.Total != 2 || len(list.Clients) != 2 || list.Clients[0].ClientID != "alpha-1" {
		t.Fatalf("clients: %+v", list)
	}
	c := list.Clients[0]
	if !c.Connected || c.Protocol != "5.0" || c.KeepAlive != 30 || c.Subscriptions != 2 || c.ConnectedSince == nil ||
		!strings.HasPrefix(c.Address, "127.0.0.1:") {
		t.Errorf("alpha-1: %+v", c)
	}
	e.getJSON("/api/clients?q=BETA", &list)
	if list.Total != 1 || list.Clients[0].ClientID != "beta-2" || list.Clients[0].Protocol != "3.1.1" {
		t.Errorf("search: %+v", list)
	}
	e.getJSON("/api/clients?limit=1", &list)
	if list.Total != 2 || len(list.Clients) != 1 {
		t.Errorf("limit: %+v", list)
	}
	e.getJSON("/api/clients?connected=false", &list)
	if list.Total != 0 {
		t.Errorf("offline: %+v", list)
	}

	var d clientDetail
	e.getJSON("/api/clients/alpha-1", &d)
	if d.Client.ClientID != "alpha-1" || len(d.Subscriptions) != 2 || d.Subscriptions[0].Filter != "a/#" || d.Subscriptions[0].QoS != 1 {
		t.Errorf("detail: %+v", d)
	}
	var subs struct {
		Total         int
		Subscriptions []subscriptionJSON
	}
	e.getJSON("/api/subscriptions?filter=b/", &subs)
	if subs.Total != 1 || subs.Subscriptions[0].Filter != "b/+" || subs.Subscriptions[0].ClientID != "alpha-1" {
		t.Errorf("subscriptions: %+v", subs)
	}
	for path, want := range map[string]int{"/api/clients/nobody": 404, "/api/clients?limit=x": 400, "/api/clients?connected=maybe": 400} {
		if code, body := e.do("GET", path, ""); code != want {
			t.Errorf("GET %s: %d %s, want %d", path, code, body, want)
		}
	}
}

func TestDisconnect(t *testing.T) {
	e := newEnv(t, Options{})
	c := mqtttest.Dial(t, e.addr, packet.V5)
	c.Connect(&packet.Connect{ProtocolName: "MQTT", KeepAlive: 30, ClientID: "victim",
		Properties: packet.Properties{Present: 1 << packet.PropSessionExpiry, SessionExpiry: 300}})

	code, body := e.do("DELETE", "/api/clients/victim", "")
	if code != 200 || !strings.Contains(body, `"was_connected":true`) {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	got := c.ExpectClosed(2 * time.Second)
	if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.AdministrativeAction {
		t.Fatalf("client got %v, want DISCONNECT 0x98", got)
	}
	// The session stays (expiry 300) until end_session.
	var d clientDetail
	e.getJSON("/api/clients/victim", &d)
	if d.Client.Connected {
		t.Fatalf("still connected: %+v", d.Client)
	}
	if code, body := e.do("DELETE", "/api/clients/victim?end_session=true", ""); code != 200 || !strings.Contains(body, `"was_connected":false`) {
		t.Fatalf("end session: %d %s", code, body)
	}
	if code, _ := e.do("GET", "/api/clients/victim", ""); code != 404 {
		t.Fatalf("session not ended: %d", code)
	}
	if code, _ := e.do("DELETE", "/api/clients/victim", ""); code != 404 {
		t.Fatalf("DELETE unknown: %d", code)
	}
}

func TestPublishAndRetained(t *testing.T) {
	e := newEnv(t, Options{})
	sub := e.client("sub", packet.V5)
	sub.Subscribe("dev/#", 1)

	code, body := e.do("POST", "/api/publish", `{"topic":"dev/1/state","payload":"on","qos":1,"retain":true}`)
	if code != 200 || !strings.Contains(body, `"routed":1`) {
		t.Fatalf("publish: %d %s", code, body)
	}
	m, ok := sub.Next(2 * time.Second).(*packet.Publish)
	if !ok || m.Topic != "dev/1/state" || string(m.Payload) != "on" || m.QoS != 1 {
		t.Fatalf("subscriber got %+v", m)
	}
	sub.Send(&packet.Puback{PacketID: m.PacketID})
	if code, body := e.do("POST", "/api/publish", `{"topic":"dev/2/raw","payload_base64":"AP8=","retain":true}`); code != 200 {
		t.Fatalf("publish base64: %d %s", code, body)
	}

	var r struct{ Messages []messageJSON }
	e.getJSON("/api/retained?filter=dev/%2B/%2B", &r)
	if len(r.Messages) != 2 || r.Messages[0].Topic != "dev/1/state" || *r.Messages[0].Payload != "on" || r.Messages[0].QoS != 1 ||
		r.Messages[1].Payload != nil || r.Messages[1].PayloadBase64 != "AP8=" || r.Messages[1].Size != 2 {
		b, _ := json.Marshal(r)
		t.Fatalf("retained: %s", b)
	}
	e.getJSON("/api/retained?limit=1", &r)
	if len(r.Messages) != 1 || r.Messages[0].Topic != "dev/1/state" {
		t.Fatalf("limit 1: %d messages, want the first by topic (dev/1/state)", len(r.Messages))
	}
	if code, body := e.do("DELETE", "/api/retained?topic=dev/1/state", ""); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, _ := e.do("DELETE", "/api/retained?topic=dev/1/state", ""); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
	e.getJSON("/api/retained", &r)
	if len(r.Messages) != 1 || r.Messages[0].Topic != "dev/2/raw" {
		t.Fatalf("after delete: %+v", r.Messages)
	}

	for _, c := range []struct {
		body string
		want int
	}{
		{`{"topic":"a/+","payload":"x"}`, 400},
		{`{"topic":"a","qos":3}`, 400},
		{`{"topic":"a","payload":"x","payload_base64":"eA=="}`, 400},
		{`{"topic":"a","colour":"blue"}`, 400},
		{`{"topic":`, 400},
		{`{"topic":"a","payload_base64":"!!"}`, 400},
	} {
		if code, body := e.do("POST", "/api/publish", c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.body, code, body, c.want)
		}
	}
	if code, _ := e.do("GET", "/api/retained?filter=a/%23/b", ""); code != 400 {
		t.Errorf("bad filter: %d", code)
	}
	if code, _ := e.do("DELETE", "/api/retained", ""); code != 400 {
		t.Errorf("delete without topic: %d", code)
	}
}

func TestStatsAndConsoleConfig(t *testing.T) {
	e := newEnv(t, Options{WebSockets: []string{"ws://0.0.0.0:8083/mqtt"}})
	e.client("one", packet.V5)
	var st statsJSON
	e.getJSON("/api/stats", &st)
	if st.Connected != 1 || st.Sessions != 1 || st.Dropped == nil {
		t.Errorf("stats: %+v", st)
	}
	var cc consoleJSON
	e.getJSON("/api/console", &cc)
	if len(cc.WebSockets) != 1 || cc.WebSockets[0] != "ws://0.0.0.0:8083/mqtt" {
		t.Errorf("console: %+v", cc)
	}
}

type passwords map[string]string

func (p passwords) Check(user string, pw []byte) error {
	if want, ok := p[user]; ok && want == string(pw) {
		return nil
	}
	return errors.New("bad credentials")
}

func TestAuth(t *testing.T) {
	e := newEnv(t, Options{Token: "s3cret", Users: passwords{"ops": "hunter2"}})
	get := func(path string, set func(*http.Request)) int {
		req, _ := http.NewRequest("GET", e.web.URL+path, nil)
		if set != nil {
			set(req)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == 401 && res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", path)
		}
		return res.StatusCode
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	basic := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	for _, c := range []struct {
		name string
		path string
		set  func(*http.Request)
		want int
	}{
		{"healthz open", "/healthz", nil, 200},
		{"readyz open", "/readyz", nil, 200},
		{"metrics closed", "/metrics", nil, 401},
		{"api closed", "/api/clients", nil, 401},
		{"console closed", "/", nil, 401},
		{"bearer", "/api/clients", bearer("s3cret"), 200},
		{"wrong bearer", "/api/clients", bearer("s3cre"), 401},
		{"token as basic password", "/", basic("anyone", "s3cret"), 200},
		{"user", "/metrics", basic("ops", "hunter2"), 200},
		{"wrong password", "/metrics", basic("ops", "hunter3"), 401},
		{"unknown user", "/metrics", basic("dev", "hunter2"), 401},
		{"pprof closed", "/debug/pprof/", nil, 401},
		{"pprof", "/debug/pprof/", bearer("s3cret"), 200},
		{"heap profile", "/debug/pprof/heap", bearer("s3cret"), 200},
		{"cpu profile closed", "/debug/pprof/profile?seconds=1", nil, 401},
	} {
		if got := get(c.path, c.set); got != c.want {
			t.Errorf("%s: GET %s = %d, want %d", c.name, c.path, got, c.want)
		}
	}

	// Changes from another site are refused even with a credential.
	code, _ := e.do("POST", "/api/publish", `{"topic":"x"}`, "Origin", "https://evil.example")
	if code != http.StatusForbidden {
		t.Errorf("cross-site POST: %d", code)
	}
	code, _ = e.do("DELETE", "/api/retained?topic=x", "", "Sec-Fetch-Site", "cross-site")
	if code != http.StatusForbidden {
		t.Errorf("cross-site DELETE: %d", code)
	}
	host := strings.TrimPrefix(e.web.URL, "http://")
	if code, body := e.do("POST", "/api/publish", `{"topic":"x"}`, "Origin", "http://"+host); code != 200 {
		t.Errorf("same-origin POST: %d %s", code, body)
	}
	if code, _ := e.do("POST", "/api/publish", `{"topic":"x"}`, "Content-Type", "text/plain"); code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain POST: %d", code)
	}
}

func TestMetricsPublicAndReady(t *testing.T) {
	var ready atomic.Bool
	e := newEnv(t, Options{Token: "s3cret", MetricsPublic: true, Ready: ready.Load})
	e.opts.Token = "" // requests without credentials from here on
	if code, _ := e.do("GET", "/metrics", ""); code != 200 {
		t.Errorf("public /metrics: %d", code)
	}
	if code, _ := e.do("GET", "/api/stats", ""); code != 401 {
		t.Errorf("/api/stats without token: %d", code)
	}
	if code, _ := e.do("GET", "/readyz", ""); code != 503 {
		t.Errorf("/readyz before ready: %d", code)
	}
	ready.Store(true)
	if code, _ := e.do("GET", "/readyz", ""); code != 200 {
		t.Errorf("/readyz: %d", code)
	}
}

func TestConsoleAssets(t *testing.T) {
	e := newEnv(t, Options{})
	for path, want := range map[string]string{
		"/":                        "<title>Roost console</title>",
		"/app.js":                  "hash-routed",
		"/vendor/mqtt.min.js":      "var mqtt=",
		"/vendor/mqtt.min.js.json": `"version"`,
	} {
		req, _ := http.NewRequest("GET", e.web.URL+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d, want %q in the body", path, res.StatusCode, want)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
}

// A retained publish over the retained limits is delivered, and the answer
// says it was not kept.
func TestPublishNotRetained(t *testing.T) {
	e := newEnvWith(t, Options{Token: "t"}, broker.Options{MaxRetained: 1})
	if code, body := e.do("POST", "/api/publish", `{"topic":"r/1","payload":"a","retain":true}`); code != 200 || strings.Contains(body, "retained") {
		t.Fatalf("first: %d %s", code, body)
	}
	code, body := e.do("POST", "/api/publish", `{"topic":"r/2","payload":"b","retain":true}`)
	if code != 200 || !strings.Contains(body, `"retained":false`) || !strings.Contains(body, "max_retained") {
		t.Fatalf("over the limit: %d %s", code, body)
	}
}
