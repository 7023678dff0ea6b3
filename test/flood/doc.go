// Package flood tests that Roost stays responsive and bounded under
// floods: thousands of connects per second, half-open sockets that never
// finish CONNECT, and a subscriber that stops reading while a publisher
// publishes flat out.
//
// Every test runs a broker in-process on 127.0.0.1:0, talks to it only over
// loopback, is bounded in connection count and duration, and stops by
// itself; the package takes well under a minute under -race on two cores.
// -flood.big runs heavier variants (ten times the connections, longer
// floods) for a machine with time to spare:
//
//	go test -race ./test/flood
//	go test ./test/flood -flood.big -v      # prints rates, memory and drop counts
//
// Connections come from several source addresses (127.0.0.2 and up, all
// loopback on Linux) so that per-address state and ephemeral ports are
// spread as they would be on the internet.
package flood
