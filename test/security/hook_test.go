package security

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/auth"
	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/internal/mqtttest"
	"github.com/roost-mqtt/roost/packet"
)

// The HTTP hook decides connects and topics for a real broker; when the
// service is down, clients are refused (fail closed).
func TestHTTPHookBroker(t *testing.T) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Action, Username, Password, Topic string }
		json.NewDecoder(r.Body).Decode(&req)
		allow := false
		switch req.Action {
		case "connect":
			allow = req.Password == "pw-"+req.Username
		case "publish", "subscribe", "receive":
			allow = strings.HasPrefix(req.Topic, req.Username+"/")
		}
		json.NewEncoder(w).Encode(map[string]any{"allow": allow, "reason": "bad_credentials"})
	}))
	defer svc.Close()
	hook := auth.NewHTTPHook(auth.HTTPHookOptions{URL: svc.URL, Timeout: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	addr := start(t, broker.Options{Authenticator: &auth.Authenticator{Hook: hook}, Authorizer: hook})
	connect := func(user, pw string) (*mqtttest.Client, packet.ReasonCode) {
		c := mqtttest.Dial(t, addr, packet.V5)
		c.Send(&packet.Connect{ProtocolVersion: packet.V5, ClientID: user, CleanStart: true,
			UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pw)})
		return c, c.Next(time.Second).(*packet.Connack).ReasonCode
	}
	if _, code := connect("eve", "guess"); code != packet.BadUserNameOrPassword {
		t.Errorf("wrong password: CONNACK 0x%02X", byte(code))
	}
	c, code := connect("dan", "pw-dan")
	if code != 0 {
		t.Fatalf("good password: CONNACK 0x%02X", byte(code))
	}
	c.Subscribe("dan/#", 0)
	c.Send(&packet.Publish{Topic: "eve/x", QoS: 1, PacketID: 1})
	if ack := c.Next(time.Second).(*packet.Puback); ack.ReasonCode != packet.NotAuthorized {
		t.Errorf("publish to eve/x: 0x%02X", byte(ack.ReasonCode))
	}
	c.Send(&packet.Publish{Topic: "dan/x", QoS: 0})
	if got := publishes(c.Collect(300 * time.Millisecond)); len(got) != 1 || got[0] != "dan/x" {
		t.Errorf("delivered %q, want dan/x", got)
	}
	svc.Close()
	if _, code := connect("fay", "pw-fay"); code != packet.NotAuthorized {
		t.Errorf("hook down: CONNACK 0x%02X, want 0x87 (fail closed)", byte(code))
	}
}

// A real broker tells the hook a CONNECT without a password (the request
// has no "password") from one with an empty password ("password": ""),
// MQTT 3.1.1 and 5 alike; this service lets in only the first.
func TestHTTPHookMissingAndEmptyPassword(t *testing.T) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		json.NewDecoder(r.Body).Decode(&req)
		_, has := req["password"]
		allow := req["action"] != "connect" || !has && req["client_id"] == "no-pw" || req["password"] == "" && req["client_id"] == "empty-pw"
		json.NewEncoder(w).Encode(map[string]any{"allow": allow, "reason": "bad_credentials"})
	}))
	defer svc.Close()
	hook := auth.NewHTTPHook(auth.HTTPHookOptions{URL: svc.URL, Timeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	addr := start(t, broker.Options{Authenticator: &auth.Authenticator{Hook: hook}, Authorizer: hook})
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		for _, tc := range []struct {
			id     string
			pwFlag bool
			ok     bool
		}{
			{"no-pw", false, true},
			{"no-pw", true, false},
			{"empty-pw", true, true},
			{"empty-pw", false, false},
		} {
			c := mqtttest.Dial(t, addr, v)
			c.Send(&packet.Connect{ProtocolVersion: v, ClientID: tc.id, CleanStart: true,
				UsernameFlag: true, Username: "u", PasswordFlag: tc.pwFlag})
			ack := c.Next(2 * time.Second).(*packet.Connack)
			if got := ack.ReasonCode == 0; got != tc.ok {
				t.Errorf("v%d %s with Password Flag %v: CONNACK 0x%02X, want accepted=%v", v, tc.id, tc.pwFlag, byte(ack.ReasonCode), tc.ok)
			}
			c.NC.Close()
		}
	}
}
