package listeners

import (
	"testing"
	"time"

	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

// mqtt.js, configured like the WeChat mini program seed, over ws:// and
// wss:// (trusting the development CA), MQTT 3.1.1 and 5: it subscribes
// after connect, receives a message a TCP client published, and publishes
// one that the TCP client receives.
func TestMQTTjs(t *testing.T) {
	p := newPKI(t)
	s := newServer(t)
	tcpAddr := s.serve(s.tcp())
	wsURL := s.ws(listener.WSOptions{})
	wssURL := s.ws(listener.WSOptions{TLS: p.manager(t, listener.TLSOptions{NextProtos: []string{"http/1.1"}})})
	for _, tc := range []struct {
		name string
		url  string
		v    int
	}{
		{"ws/3.1.1", wsURL, 4},
		{"ws/5", wsURL, 5},
		{"wss/3.1.1", wssURL, 4},
		{"wss/5", wssURL, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in, out := uniq(t, "in"), uniq(t, "out")
			tcp := dialTCP(t, tcpAddr, "tcp-"+tc.name, out)
			js := startNode(t, "js/roundtrip.js", jsonArg(t, map[string]any{
				"url": tc.url, "protocolVersion": tc.v, "ca": p.caFile, "sub": in, "pub": out,
			}))
			js.expect("connect", 10*time.Second)
			js.expect("subscribed", 5*time.Second)
			tcp.Send(&packet.Publish{Topic: in, Payload: []byte("from tcp"), QoS: packet.QoS(1), PacketID: 7})
			if ev := js.expect("message", 5*time.Second); ev.Topic != in || ev.Payload != "from tcp" {
				t.Fatalf("mqtt.js got %+v", ev)
			}
			js.expect("published", 5*time.Second)
			if pub := expectPublish(t, tcp, 5*time.Second); pub.Topic != out || string(pub.Payload) != "echo:from tcp" {
				t.Fatalf("TCP client got %s %q", pub.Topic, pub.Payload)
			}
		})
	}
}

// The seed's options carry port 8084, which overrides the URL's port in
// mqtt.js: with the listener's real port there it connects.
func TestMQTTjsPortOption(t *testing.T) {
	s := newServer(t)
	url := s.ws(listener.WSOptions{})
	_, port, _ := splitHostPort(t, url)
	js := startNode(t, "js/roundtrip.js", jsonArg(t, map[string]any{
		"url": "ws://127.0.0.1:1/mqtt", "port": port, "sub": "x", "pub": "y",
	}))
	js.expect("subscribed", 10*time.Second)
}
