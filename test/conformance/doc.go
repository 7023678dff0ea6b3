// Package conformance checks a running MQTT broker against the normative
// statements of MQTT 3.1.1 and 5.0 by speaking raw bytes to it.
//
// Each test is named after the statement it checks: [MQTT-3.1.0-1] becomes
// TestMQTT_3_1_0_1_..., and a 5.0-only rule is TestMQTT5_.... Where a rule
// has no numbered statement the test is named after its section, as in
// TestMQTT5_Sec3_14_2_2_2_.... Where the two versions number the same rule
// differently, the test uses the number given in its doc comment and names
// the other there too.
//
// Packets are written as literal byte slices, or built with the framing
// helpers of internal/rawclient, never with Roost's own packet codec: the
// suite must be able to catch a bug in that codec.
//
// Every test runs over every transport, as subtests named after it:
// TestX/tcp, /tls (mqtts), /ws, /wss and /proxy (TCP with a PROXY protocol
// v1 header before the MQTT bytes), and under each, where both protocol
// versions apply, /v4 and /v5. The harness decides the transport: a test
// wraps its body in forTransports (or forVersions, which includes it), and
// startBroker returns the URL of that transport's listener, which dial
// takes. startBroker fails a test that runs outside forTransports. A close
// by the server means the same on each transport: EOF or a reset, and on
// WebSocket a close frame or the TCP connection ending without one.
// Every test's broker serves all five listeners with one test CA (made in
// TestMain), and any line of its log that reports a panic fails the test.
// The whole matrix (about 1,350 subtests) takes about 17 s with -race on
// two cores, against about 6 s for TCP alone (NOTES.md has the figures).
//
// By default the suite runs an in-process Roost broker per test. Setting
// ROOST_CONFORMANCE_TARGET=mosquitto runs the same tests against a
// mosquitto process per test instead, over TCP and TLS only (see
// NOTES.md); that is how the tests themselves were validated. Known
// mosquitto deviations are listed in NOTES.md.
package conformance
