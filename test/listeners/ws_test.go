package listeners

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

// wsDial opens a raw WebSocket offering protos.
func wsDial(t *testing.T, url string, h http.Header, protos ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protos, HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	ws, resp, err := d.Dial(url, h)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

func encode(t *testing.T, v packet.Version, ps ...packet.Packet) []byte {
	t.Helper()
	var b []byte
	for _, p := range ps {
		var err error
		if b, err = p.Encode(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// readAll reads binary messages for d and returns their payloads joined.
func readFor(ws *websocket.Conn, d time.Duration) []byte {
	var all []byte
	ws.SetReadDeadline(time.Now().Add(d))
	for {
		typ, m, err := ws.ReadMessage()
		if err != nil {
			return all
		}
		if typ == websocket.BinaryMessage {
			all = append(all, m...)
		}
	}
}

func connect(id string) *packet.Connect {
	return &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V311, CleanStart: true, KeepAlive: 30, ClientID: id}
}

// MQTT packets split across WebSocket messages, several packets in one
// message, and one message split into continuation frames all reach the
// broker as the same byte stream [MQTT-6.0.0-2].
func TestWSFraming(t *testing.T) {
	s := newServer(t)
	tcpAddr := s.serve(s.tcp())
	url := s.ws(listener.WSOptions{})
	// A 16-byte write buffer makes the client send every message longer
	// than that as a first frame and continuation frames.
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, WriteBufferSize: 16}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	conn := encode(t, packet.V311, connect("framing-client-with-a-long-id"))
	sub := encode(t, packet.V311, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "frames/#", Options: packet.SubOptions{QoS: 1}}}})
	ping := encode(t, packet.V311, &packet.Pingreq{})

	// CONNECT one byte per message.
	for i := range conn {
		if err := ws.WriteMessage(websocket.BinaryMessage, conn[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	// SUBSCRIBE and PINGREQ in one message.
	if err := ws.WriteMessage(websocket.BinaryMessage, append(bytes.Clone(sub), ping...)); err != nil {
		t.Fatal(err)
	}
	// Ten PINGREQs and half of one (21 bytes: two frames), then the rest.
	pings := append(bytes.Repeat(ping, 10), ping[0])
	ws.WriteMessage(websocket.BinaryMessage, pings)
	ws.WriteMessage(websocket.BinaryMessage, ping[1:])

	want := []packet.Type{packet.CONNACK, packet.SUBACK}
	for range 12 {
		want = append(want, packet.PINGRESP)
	}
	got := readPackets(t, ws, len(want))
	for i := range want {
		if got[i].Type() != want[i] {
			t.Fatalf("packet %d is %s, want %s", i, got[i].Type(), want[i])
		}
	}

	// A large PUBLISH from TCP arrives whole.
	payload := bytes.Repeat([]byte("x"), 100<<10)
	tcp := dialTCP(t, tcpAddr, "framing-tcp", "")
	tcp.Send(&packet.Publish{Topic: "frames/big", Payload: payload})
	pub, ok := readPackets(t, ws, 1)[0].(*packet.Publish)
	if !ok || !bytes.Equal(pub.Payload, payload) {
		t.Fatalf("got %+v, want the 100 KiB publish", pub)
	}
}

// readPackets reads n packets from the stream of binary messages.
func readPackets(t *testing.T, ws *websocket.Conn, n int) []packet.Packet {
	t.Helper()
	r := packet.NewReader(&msgReader{ws: ws}, 1<<20)
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ps []packet.Packet
	for range n {
		p, err := r.ReadPacket(packet.V311)
		if err != nil {
			t.Fatalf("after %d packets: %v", len(ps), err)
		}
		ps = append(ps, p)
	}
	return ps
}

// msgReader concatenates binary messages.
type msgReader struct {
	ws *websocket.Conn
	r  io.Reader
}

func (m *msgReader) Read(p []byte) (int, error) {
	for {
		if m.r == nil {
			typ, r, err := m.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("server sent a text message")
			}
			m.r = r
		}
		n, err := m.r.Read(p)
		if err == io.EOF {
			m.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// The server answers pings with pongs, and ends the connection with a
// close frame when the client sends one.
func TestWSPingAndClose(t *testing.T) {
	s := newServer(t)
	url := s.ws(listener.WSOptions{})
	ws, _, err := wsDial(t, url, nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	pong := make(chan string, 1)
	ws.SetPongHandler(func(data string) error { pong <- data; return nil })
	ws.WriteMessage(websocket.BinaryMessage, encode(t, packet.V311, connect("pinger")))
	if err := ws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	readPackets(t, ws, 1) // CONNACK; the pong is handled while reading
	go readFor(ws, 3*time.Second)
	select {
	case d := <-pong:
		if d != "hi" {
			t.Errorf("pong %q", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no pong")
	}
	s.waitLog(t, "client connected", "client_id=pinger")
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	// Closing without DISCONNECT is abnormal for MQTT (the will would be
	// sent), but the connection ends cleanly.
	s.waitLog(t, "client_id=pinger", "reason=")
}

// The server's close frame: on shutdown of a 5.0 client the broker sends
// DISCONNECT 0x8B, then a normal closure.
func TestWSServerClose(t *testing.T) {
	s := newServer(t)
	url := s.ws(listener.WSOptions{})
	ws, _, err := wsDial(t, url, nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	c := &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, CleanStart: true, KeepAlive: 30, ClientID: "closer"}
	ws.WriteMessage(websocket.BinaryMessage, encode(t, packet.V5, c))
	r := packet.NewReader(&msgReader{ws: ws}, 1<<20)
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if p, err := r.ReadPacket(packet.V5); err != nil || p.Type() != packet.CONNACK {
		t.Fatalf("got %v, %v", p, err)
	}
	go s.srv.Shutdown(t.Context())
	p, err := r.ReadPacket(packet.V5)
	if d, ok := p.(*packet.Disconnect); !ok || d.ReasonCode != 0x8B {
		t.Fatalf("got %v, %v; want DISCONNECT 0x8B", p, err)
	}
	_, err = r.ReadPacket(packet.V5)
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after DISCONNECT: %v, want close 1000", err)
	}
}

// Text messages are refused [MQTT-6.0.0-1]; a message beyond the limit
// gets 1009.
func TestWSRefusedMessages(t *testing.T) {
	s := newServer(t)
	url := s.ws(listener.WSOptions{MaxMessageSize: 1024})
	for _, tc := range []struct {
		name string
		typ  int
		data []byte
		code int
	}{
		{"text", websocket.TextMessage, encode(t, packet.V311, connect("text")), websocket.CloseUnsupportedData},
		{"too big", websocket.BinaryMessage, make([]byte, 2048), websocket.CloseMessageTooBig},
	} {
		ws, _, err := wsDial(t, url, nil, "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		ws.WriteMessage(tc.typ, tc.data)
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err = ws.ReadMessage()
		if !websocket.IsCloseError(err, tc.code) {
			t.Errorf("%s: got %v, want close %d", tc.name, err, tc.code)
		}
	}
}

// Subprotocols: the server picks one the client offered, never one it did
// not; none offered still connects; only unknown ones are refused.
func TestWSSubprotocols(t *testing.T) {
	s := newServer(t)
	url := s.ws(listener.WSOptions{})
	for _, tc := range []struct {
		offered []string
		want    string // "" = none in the answer; "refused" = HTTP 400
	}{
		{nil, ""},
		{[]string{"mqtt"}, "mqtt"},
		{[]string{"mqttv3.1"}, "mqttv3.1"},
		{[]string{"mqttv3.1", "mqtt"}, "mqttv3.1"},
		{[]string{"mqtt", "mqttv3.1"}, "mqtt"},
		{[]string{"wamp", "mqtt"}, "mqtt"},
		{[]string{"wamp"}, "refused"},
		{[]string{"mqttv5", "chat"}, "refused"},
	} {
		ws, resp, err := wsDial(t, url, nil, tc.offered...)
		if tc.want == "refused" {
			if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%q: got %v, %v; want 400", tc.offered, resp, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), "is MQTT") {
				t.Errorf("%q: refusal says %q", tc.offered, body)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.offered, err)
			continue
		}
		if ws.Subprotocol() != tc.want {
			t.Errorf("%q: server chose %q, want %q", tc.offered, ws.Subprotocol(), tc.want)
		}
		// And MQTT works on it.
		ws.WriteMessage(websocket.BinaryMessage, encode(t, packet.V311, connect("")))
		if p := readPackets(t, ws, 1)[0]; p.Type() != packet.CONNACK {
			t.Errorf("%q: got %s", tc.offered, p.Type())
		}
	}
}

// Paths, plain HTTP requests and origins get clear refusals.
func TestWSRefusals(t *testing.T) {
	s := newServer(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(s.ws(listener.WSOptions{Paths: []string{"/mqtt", "/ws"}, AllowedOrigins: []string{"https://app.example.com"}}), "ws://"), "/mqtt")
	anyAddr := strings.TrimSuffix(strings.TrimPrefix(s.ws(listener.WSOptions{AnyPath: true}), "ws://"), "/mqtt")
	for _, tc := range []struct {
		url    string
		origin string
		status int
		body   string
	}{
		{"ws://" + addr + "/", "", 404, `no MQTT endpoint at "/"; this listener serves MQTT over WebSocket at /mqtt, /ws`},
		{"ws://" + addr + "/ws", "", 101, ""},
		{"ws://" + addr + "/mqtt", "https://app.example.com", 101, ""},
		{"ws://" + addr + "/mqtt", "https://evil.example", 403, `origin "https://evil.example" is not allowed`},
		{"ws://" + anyAddr + "/anything/at/all", "https://evil.example", 101, ""},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		_, resp, err := wsDial(t, tc.url, h, "mqtt")
		if resp == nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s origin %q: %d %q, want %d %q", tc.url, tc.origin, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	resp, err := http.Get("http://" + addr + "/mqtt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "MQTT over WebSocket endpoint") {
		t.Errorf("plain GET: %d %q", resp.StatusCode, body)
	}
}

// Behind a trusted HTTP proxy the broker logs the forwarded address;
// from anyone else the header is ignored.
func TestWSForwardedFor(t *testing.T) {
	s := newServer(t)
	trusted := s.ws(listener.WSOptions{TrustedProxies: mustPrefixes("127.0.0.0/8")})
	untrusted := s.ws(listener.WSOptions{TrustedProxies: mustPrefixes("10.0.0.0/8")})
	for _, tc := range []struct{ url, id, want string }{
		{trusted, "xff-trusted", "remote=198.51.100.7:0"},
		{untrusted, "xff-untrusted", "remote=127.0.0.1:"},
	} {
		ws, _, err := wsDial(t, tc.url, http.Header{"X-Forwarded-For": {"203.0.113.1, 198.51.100.7"}}, "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		ws.WriteMessage(websocket.BinaryMessage, encode(t, packet.V311, connect(tc.id)))
		readPackets(t, ws, 1)
		s.waitLog(t, "client connected", tc.want, "client_id="+tc.id)
	}
}

// A client that opens a TCP connection and sends nothing does not hold up
// the upgrade of the next one.
func TestWSStalledHandshake(t *testing.T) {
	s := newServer(t)
	url := s.ws(listener.WSOptions{HandshakeTimeout: time.Second})
	host, port, _ := splitHostPort(t, url)
	stalled, err := net.Dial("tcp", net.JoinHostPort(host, itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, _, err := wsDial(t, url, nil, "mqtt"); err != nil {
		t.Fatal(err)
	}
	// The stalled one is cut off after the handshake timeout.
	stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stalled.Read(make([]byte, 1)); err == nil || errors.Is(err, timeoutErr(err)) {
		t.Fatalf("stalled conn: %v, want it closed", err)
	}
}
