package listeners

import (
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/roost-mqtt/roost/listener"
	"github.com/roost-mqtt/roost/packet"
)

const chromiumPath = "/usr/bin/chromium"

// Headless Chromium loads a page that uses mqtt.js's browser build to
// connect over ws://, subscribe and publish; a TCP client closes the loop.
func TestBrowser(t *testing.T) {
	requireTool(t, "node")
	requireNodeModules(t)
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s missing: run ./scripts/test.sh, which installs Chromium (%v)", chromiumPath, err)
	}
	s := newServer(t)
	tcpAddr := s.serve(s.tcp())
	wsURL := s.ws(listener.WSOptions{AllowedOrigins: nil})

	// The page and mqtt.js's browser build, from a server of their own.
	mux := http.NewServeMux()
	mux.HandleFunc("/page.html", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, "js/page.html") })
	mux.HandleFunc("/mqtt.min.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, "node_modules/mqtt/dist/mqtt.min.js")
	})
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(web)
	t.Cleanup(func() { hs.Close() })

	for _, v := range []string{"4", "5"} {
		t.Run("v"+v, func(t *testing.T) {
			in, out := uniq(t, "in"), uniq(t, "out")
			tcp := dialTCP(t, tcpAddr, "tcp-browser-"+v, out)
			q := url.Values{"url": {wsURL}, "sub": {in}, "pub": {out}, "v": {v}}
			b := startNode(t, "js/browser.js", "http://"+web.Addr().String()+"/page.html?"+q.Encode())
			b.expect("connect", 30*time.Second)
			b.expect("subscribed", 5*time.Second)
			tcp.Send(&packet.Publish{Topic: in, Payload: []byte("to the browser")})
			if ev := b.expect("message", 5*time.Second); ev.Payload != "to the browser" {
				t.Fatalf("browser got %+v", ev)
			}
			if pub := expectPublish(t, tcp, 5*time.Second); string(pub.Payload) != "echo:to the browser" {
				t.Fatalf("TCP client got %q", pub.Payload)
			}
			b.expect("done", 10*time.Second)
		})
	}
}
