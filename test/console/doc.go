// Package consoletest drives Roost's web console in headless Chromium:
// Debian's /usr/bin/chromium through playwright-core from npm (see
// package.json; scripts/test.sh installs both). The test opens the
// console, finds a client the test connected, publishes from the MQTT
// client page (mqtt.js over the broker's ws:// listener) to a Go
// subscriber, browses a retained message and watches live messages.
//
// ROOST_SCREENSHOTS=DIR keeps the screenshots there; docs/console-*.png
// are made with ROOST_SCREENSHOTS=../../docs.
package consoletest
