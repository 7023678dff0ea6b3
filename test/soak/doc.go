// Package soak holds Roost's soak test: real clients on every transport
// Roost serves stay connected, busy and idle, well past every timeout a
// connection has (the connect timeout, several keep-alive periods, the
// idle time after which a reader parks), and nothing they send is lost.
//
// One `roost serve` process (built with -race when the test is) listens on
// mqtt://, mqtts://, ws:// and wss://, and on each of them again behind the
// PROXY protocol (a forwarder in the test plays HAProxy, writing a v2
// header for TCP and TLS and a v1 header for WebSocket). On each transport
// run, as far as each peer supports it:
//
//   - mqtt.js (the library WeChat mini programs use), also through its own
//     mini program transport (wx:// and wxs://) driven by a stand-in for
//     wx.connectSocket built on a real WebSocket client (js/soak.js);
//   - paho.golang and Roost's own client library;
//   - mosquitto_sub over TCP and TLS (directly and behind the PROXY
//     protocol).
//
// Busy clients publish a numbered QoS 1 message to themselves every 200
// ms and check each comes back exactly once; idle clients only send
// PINGREQ at their keep alive. Every client has a will; a will published,
// a reconnect, a disconnect the client did not ask for, a broker log line
// about a dropped client or any panic fails the test.
//
// The short form runs in the test command (about 30 s of traffic with a 5
// s connect timeout and a 4 s keep alive; the long run in
// bench/soak/RESULTS.md used 2 s for both). The long form is the same test
// with flags, for example an hour with a summary file:
//
//	go test ./test/soak -run TestSoak -timeout 3h -soak.duration 1h -soak.results bench/soak/RESULTS.md
package soak
