// Package listeners tests Roost's TCP, TLS, PROXY protocol and WebSocket
// listeners end to end: a broker runs in-process on 127.0.0.1:0 behind the
// listener package, and real peers connect: mqtt.js under node (ws:// and
// wss://, MQTT 3.1.1 and 5, configured like the WeChat mini program seed),
// mqtt.js's browser build in headless Chromium, a raw WebSocket client for
// frame splitting and the subprotocol matrix, and raw TCP and TLS clients.
//
// The peers are installed by ./scripts/test.sh (npm ci in this directory,
// Chromium from apt). A missing peer fails the test rather than skipping
// it, so a green run means everything was exercised.
package listeners
