// Package httpapi is Roost's HTTP side: Prometheus metrics, health checks,
// a JSON admin API and the embedded web console, all behind one
// http.Handler that cmd/roost serves on --http.
//
// # Reading the broker without slowing it
//
// Nothing here hooks the broker's hot path. The metrics collector calls
// broker.Server.Stats and Clients when Prometheus scrapes and turns the
// snapshot into constant metrics; the console's dashboard polls
// /api/stats every two seconds and computes rates in the browser. A scrape
// costs one walk over the sessions, not a cost per message.
//
// # Access
//
// /healthz and /readyz are open, for load balancers and orchestrators.
// Everything else needs a credential when one is configured: the token
// (as "Authorization: Bearer TOKEN", or as the password of HTTP Basic
// authentication with any user name, which is what a browser prompts
// for), or a user and password checked by a PasswordChecker such as the
// broker's password file. /metrics can be left open with
// Options.MetricsPublic. With neither a token nor users every request is
// allowed: cmd/roost allows that only on a loopback address.
//
// Basic credentials are sent by browsers on their own, so requests that
// change something (POST, DELETE) are refused when their Origin names
// another site, and JSON bodies must say Content-Type: application/json,
// which a cross-site form cannot send without a CORS preflight.
//
// # The console
//
// The console (package console) is static HTML, CSS and JavaScript
// embedded in the binary: nothing is fetched from the internet at run
// time. Its MQTT client and live message pages use mqtt.js's browser build
// over the broker's WebSocket listener, the way a WeChat mini program or
// any web page would; /api/console tells them where that listener is.
package httpapi
