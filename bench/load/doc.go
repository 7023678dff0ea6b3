// Package load is the load generator behind `roost bench`: it drives an MQTT
// broker with one of a few fixed scenarios and measures what comes out.
//
// # Scenarios
//
//   - FanIn: P publishers, each on its own topic, and one subscriber on a
//     wildcard filter that matches them all. The result is the rate of
//     messages delivered to the subscriber.
//   - FanOut: one publisher and S subscribers on the same topic. The result
//     is deliveries per second, summed over the subscribers.
//   - Pairs: N publisher/subscriber pairs, each on its own topic. The result
//     is messages per second and the latency distribution.
//   - Latency: one publisher at a fixed rate (1,000 msgs/s by default) and
//     one subscriber; the result is the end-to-end latency distribution.
//   - Connections: C idle connections opened in batches and held for the
//     duration; the result is how many succeeded, the connect rate and,
//     when the broker's process is known, its RSS per connection.
//   - Overload: P publishers sending faster than one deliberately slow
//     subscriber reads. The result is what was published, what arrived,
//     the broker's own drop count ($SYS) and its RSS over time.
//   - Causality: arrival order across connections. A SUBSCRIBE on one
//     connection, then, a gap later, a PUBLISH to its topic on another, both
//     idle before; an inversion is a trial whose PUBLISH the broker routed
//     first. The result is inversions per 1,000 trials at each gap.
//
// # Why it does not use the client package
//
// A load generator that costs as much CPU as the broker measures itself.
// The benchmark runs the broker on one core and the load on another, so
// the load speaks MQTT directly with the packet codec and does as little
// per message as it can:
//
//   - A publisher encodes its PUBLISH once and repeats it to fill a 64 KiB
//     batch; before each write it patches only the packet identifiers and
//     the send timestamp, and writes the batch with one system call.
//   - Readers read into a large buffer and parse every complete packet in
//     place (packet.ParseFixedHeader and a few byte offsets), without
//     allocating; a subscriber's acknowledgements for one read go out in one
//     write.
//   - Time is read once per write and once per read, not per message: every
//     message in one write left at the same instant, and every message in
//     one read arrived at the same instant.
//   - In FanIn and FanOut a subscriber asks the kernel (SO_RCVLOWAT) to wake
//     it only once 16 KiB are buffered: against a broker that writes each
//     packet with its own system call, waking per message would cost the
//     load as much CPU as the broker.
//   - Idle connections (Connections) have no goroutine at all.
//
// # Pacing and what "lost" means
//
// By default every publisher keeps at most Window messages outstanding: for
// QoS 1 and 2 not yet acknowledged by the broker, and, at every QoS, not yet
// seen by the subscribers. So a QoS 0 publisher paces itself by the
// subscribers' progress and the broker is measured at the rate it can
// sustain, not at the rate it can discard. With Flat set, QoS 0 publishers
// send as fast as the broker reads instead; the broker may then drop
// messages for a slow subscriber, which is why the result always reports
// both what was published and what was delivered. Overload is always flat.
//
// # Time
//
// Each message carries in its first 8 payload bytes the time it was written,
// as nanoseconds since the run started on the process's monotonic clock (an
// offset, so clock steps do not matter; publishers and subscribers are in
// the same process). Latency is the time from that write to the read that
// brought the message in. Rates count what happened between the end of the
// warm-up and the end of the measured duration; latency covers the messages
// sent in that interval, wherever they arrive. After the duration the
// publishers stop and the run waits briefly for messages still in flight, so
// the totals compare what was sent with what arrived.
//
// # Limits
//
// Every connection costs the bench process one file descriptor. The
// open-file limit (RLIMIT_NOFILE) caps the connection count; the cap is
// applied and reported in Result.Notes rather than failing half-way. When
// the target is a loopback address, connections are spread over the source
// addresses 127.0.0.1 to 127.0.0.254, because one source address's
// ephemeral ports run out, and connect() slows down well before that.
package load
