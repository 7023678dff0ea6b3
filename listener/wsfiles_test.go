package listener_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mqtt/roost/listener"
)

// WSOptions.FileDir (mosquitto's http_dir): plain GETs get the files, a
// path ending in / its index.html; directories are not listed, names do
// not leave the directory, other methods are refused.
func TestWebSocketFiles(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "www")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"www/index.html": "<h1>roost</h1>", "www/app.js": "connect()", "secret.txt": "outside"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := listener.WebSocket(tcp, listener.WSOptions{FileDir: dir})
	defer ln.Close()
	base := "http://" + tcp.Addr().String()
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/", 200, "<h1>roost</h1>"},
		{"GET", "/app.js", 200, "connect()"},
		{"HEAD", "/app.js", 200, ""},
		{"GET", "/sub/", 404, ""},
		{"GET", "/sub", 404, ""},
		{"GET", "/../secret.txt", 404, ""},
		{"GET", "/%2e%2e/secret.txt", 404, ""},
		{"GET", "/missing", 404, ""},
		{"POST", "/app.js", 405, ""},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = tc.path // sent as written, dots included
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || tc.status == 200 && string(body) != tc.body {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
		if strings.Contains(string(body), "outside") {
			t.Errorf("%s %s served a file outside the directory", tc.method, tc.path)
		}
	}
}
