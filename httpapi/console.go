package httpapi

import (
	"io/fs"
	"net/http"
)

// contentSecurity keeps the console to its own assets: scripts, styles and
// images come from this server only, and the only other connections are
// the WebSocket ones mqtt.js makes to the broker. mqtt.js runs its timers
// in a worker made from a blob: URL.
const contentSecurity = "default-src 'self'; connect-src 'self' ws: wss:; worker-src 'self' blob:; " +
	"img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// consoleHandler serves the embedded console. Assets are revalidated on
// every load (no-cache) so that a new binary's console is never mixed
// with an old one's cached script.
func consoleHandler(assets fs.FS) http.Handler {
	files := http.FileServerFS(assets)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurity)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}
