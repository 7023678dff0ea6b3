// Package listener makes the network listeners Roost serves MQTT on: plain
// TCP, TCP behind a PROXY protocol header, TLS, and WebSocket over either.
// Each constructor returns a net.Listener whose conns carry the MQTT byte
// stream, so broker.Server.Serve takes all of them alike.
//
// # Layers
//
// A listener is built from the inside out:
//
//	TCP            net.Listen
//	  Limit        optional: refuse conns beyond a per-listener maximum
//	  Proxy        optional: read a PROXY v1/v2 header; RemoteAddr is the client's
//	  TLS          mqtts: crypto/tls with certificates from a CertManager
//	  WebSocket    ws/wss: an http.Server that upgrades and hands out conns
//
// Nothing slow happens in Accept. A PROXY header is read in a goroutine per
// conn and only conns with a valid header are handed out; a TLS handshake
// runs in a goroutine per conn too, and the conn is handed out once it
// ended; WebSocket upgrades run in the http.Server's per-conn goroutines.
// A client that stalls a handshake therefore delays nobody else, every
// handshake has a deadline (handshake_timeout), and the broker's CONNECT
// timeout starts only once the handshakes are done.
//
// # The real client address
//
// The broker logs and limits by conn.RemoteAddr(). Behind a TCP proxy that
// speaks the PROXY protocol, the conn returned by Proxy reports the address
// from the header. Behind an HTTP proxy, a WebSocket listener believes
// X-Forwarded-For (else X-Real-IP) only when the request comes from one of
// the configured trusted proxies; then RemoteAddr is that address with port
// 0, since the header carries no port.
//
// # WebSocket library
//
// The WebSocket layer uses github.com/gorilla/websocket (v1.5.3), chosen
// over github.com/coder/websocket on purpose:
//
//   - The broker stops a connection by moving its read deadline to now, and
//     then still writes a final DISCONNECT (takeover, shutdown). In gorilla a
//     read deadline only fails reads. In coder/websocket any deadline that
//     fires closes the whole connection (documented on its NetConn), so the
//     DISCONNECT would be lost. A gorilla read that timed out does fail
//     every later read, though (and panics after a thousand of them): the
//     broker's transport contract (broker/transport.go) calls such conns
//     "fatal" and never lets their read deadline fire before the keep
//     alive has really run out. A wrapper here that is resumable says so by
//     implementing broker.TransparentConn.
//   - gorilla streams a message through NextReader, so a large packet is
//     never buffered twice, and one Write is one binary message, which is
//     what MQTT over WebSocket wants [MQTT-6.0.0-1]: the broker already
//     batches its output into single writes.
//   - Control frames are handled inside reads: pings get pongs, a close
//     frame gets its reply and ends the stream cleanly (io.EOF). Close and
//     WriteControl may run concurrently with a write.
//   - It has RFC 6455 conformance tests (Autobahn), a per-message read
//     limit, and is already in Roost's module graph.
//
// Compression (permessage-deflate) is off: MQTT payloads are usually small
// or already compressed, and it costs memory per connection.
package listener
