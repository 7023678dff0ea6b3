package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// env is a broker on 127.0.0.1:0 with the HTTP handler in front of it.
type env struct {
	t    *testing.T
	srv  *broker.Server
	addr string // MQTT over TCP
	web  *httptest.Server
	opts Options
}

// refuseBad refuses CONNECTs whose username is "bad" with 0x86.
var refuseBad = broker.AuthenticatorFunc(func(_ context.Context, c *broker.ClientInfo) error {
	if c.Username == "bad" {
		return broker.ErrBadCredentials
	}
	return nil
})

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	return newEnvWith(t, opts, broker.Options{Authenticator: refuseBad})
}

// newEnvWith is newEnv with the broker's options.
func newEnvWith(t *testing.T, opts Options, bopts broker.Options) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bopts.Logger, bopts.SysInterval = log, -1
	srv, err := broker.New(bopts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	opts.Logger = log
	e := &env{t: t, srv: srv, addr: ln.Addr().String(), opts: opts}
	e.web = httptest.NewServer(New(srv, opts))
	t.Cleanup(func() {
		e.web.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return e
}

// client connects a raw MQTT client with id (version v, keep alive 30 s).
func (e *env) client(id string, v packet.Version) *mqtttest.Client {
	e.t.Helper()
	c := mqtttest.Dial(e.t, e.addr, v)
	c.Connect(&packet.Connect{ProtocolName: "MQTT", CleanStart: true, KeepAlive: 30, ClientID: id})
	return c
}

// do sends a request with the token (if any) and returns the status and body.
func (e *env) do(method, path, body string, hdr ...string) (int, string) {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.web.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+e.opts.Token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// getJSON GETs path, expects 200 and decodes the body into v.
func (e *env) getJSON(path string, v any) {
	e.t.Helper()
	code, body := e.do("GET", path, "")
	if code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		e.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}
