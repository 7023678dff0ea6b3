// Package client is Roost's MQTT 3.1.1 and 5.0 client: what an app needs
// from an "MqttHelper" — connect, a status listener, a handler per
// subscribed filter, publish with confirmation, subscribe, unsubscribe,
// disconnect and automatic reconnection — built so that none of it
// deadlocks or loses session state.
//
// # Lifecycle
//
// New validates Options; Start connects in the background and Connect
// waits for the first connection. From then on a connection manager
// goroutine keeps one connection up: when it is lost it reports
// ConnectionLost and Reconnecting (attempt, delay) and tries Options.Servers
// in order after an exponential, jittered, capped delay (Backoff).
// Disconnect sends DISCONNECT after everything already queued and stops.
// Status changes go to Options.OnStatus (Connecting, Connected with Session
// Present, ConnectionLost with the reason, Reconnecting, Disconnected), and
// to OnConnectionUp / OnConnectionDown; AwaitConnection waits for the
// connection.
//
// # Session
//
// Packet identifiers, unacknowledged QoS 1/2 publishes, the inbound QoS 2
// state and the subscriptions live in the Client, not in the connection.
// On a new connection, unacknowledged PUBLISHes are sent again with DUP,
// in their original order, and PUBREL for QoS 2 flows that got PUBREC
// [MQTT-4.4.0-1]; a Publish call keeps waiting for the real PUBACK or
// PUBCOMP and is never completed by the reconnect itself. When the server
// reports no session, every subscription is sent again (unless
// NoResubscribe). Operations made while offline wait in a bounded queue
// (OfflineQueue; ErrQueueFull beyond it). Options.Store (FileStore, one
// file per message) keeps QoS 1/2 publishes across a process restart.
//
// Flow control: no more QoS 1/2 publishes are inflight than the server's
// Receive Maximum (and MaxInflight, 20 by default for 3.1.1, whose servers
// cannot say). The quota starts afresh on each connection: if the server
// announces a smaller Receive Maximum after a reconnect, only that many
// unacknowledged publishes are resent at once and the rest follow, in
// order, as acknowledgements arrive. A PUBLISH larger than the server's Maximum Packet Size fails
// with ErrPacketTooLarge; with Options.TopicAliases, topic aliases up to
// the server's Topic Alias Maximum replace repeated topics.
//
// # Goroutines, handlers and guarantees
//
// Each connection has a reader, a writer that flushes queued packets with
// one writev, and a keep-alive goroutine that sends PINGREQ when the link
// is idle and drops the connection when PINGRESP is late. Handlers and
// status callbacks run on one dispatcher goroutine per Client, fed by a
// queue the reader never blocks on. Hence:
//
//   - A slow or blocked handler delays only later handlers and callbacks.
//     Keep-alive, acknowledgements of the client's own publishes, and
//     Publish/Subscribe/Unsubscribe/Request/Disconnect from any goroutine,
//     handlers included, keep working.
//   - Handlers run one at a time, in the order the messages arrived, which
//     for one topic at one QoS is the order they were published [MQTT-4.6].
//     A message matching several subscriptions is given to each matching
//     handler (in subscription order); one matching none goes to
//     Options.DefaultHandler.
//   - A QoS 1 message is acknowledged (PUBACK) after its handlers return, on
//     the connection it came by; if that connection is gone, the server
//     sends it again (at least once). A QoS 2 message is delivered once: its
//     PUBREC is sent after the handlers return, and a redelivery of the same
//     packet identifier before PUBREL is not delivered again.
//   - Because QoS 1/2 messages are acknowledged only after their handler,
//     the server's window (our ReceiveMaximum) bounds how many wait in the
//     queue; QoS 0 messages beyond MaxPendingMessages are dropped and counted
//     in Stats.Dropped.
//   - Disconnect never waits for a running handler (a handler may call it);
//     Done is closed once the dispatcher, too, has exited. After Done no
//     goroutine of the Client remains.
//
// Publish returns when the QoS flow completes — QoS 0 once handed to the
// connection, QoS 1 on PUBACK, QoS 2 on PUBCOMP — with the reason code in
// Ack (a failure code also as *ReasonError), or when its context ends.
// Request and Respond implement MQTT 5 request/response with Response Topic
// and Correlation Data.
//
// Transports: mqtt:// (TCP), mqtts:// (TLS), ws:// and wss:// (WebSocket,
// subprotocol "mqtt", path /mqtt unless the URL has one), each over a TCP
// connection from Options.DialContext when set (a proxy, say).
package client
