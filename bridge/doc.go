// Package bridge connects a Roost broker to another MQTT broker (mosquitto,
// EMQX, HiveMQ, a cloud IoT endpoint or another Roost) and forwards the
// topics its rules name, in either direction or both, with mosquitto's
// topic, prefix and QoS semantics (see Rule).
//
// # Two clients and a pipe
//
// A Bridge is two clients of package client. The remote side is an
// ordinary MQTT 3.1.1 or 5 connection to the other broker, with its
// failover addresses, TLS, keep alive and reconnect backoff. The local
// side is an MQTT 5 connection to this broker through an in-process pipe
// (broker.Server.DialInternal), trusted, so the broker's authentication
// and ACLs do not apply to it. Each side's messages go to a handler that
// publishes them on the other side.
//
// # Store and forward
//
// The local side has a persistent session (Clean Start 0, no expiry).
// Everything the out rules match is therefore queued for it by the broker
// like for any persistent subscriber: in the broker's store, counted
// against its queue limits, before the publisher gets its PUBACK. Both
// clients acknowledge by hand (client.Options.ManualAck): a QoS 1 or 2
// message is acknowledged to the broker — and so removed from the store —
// only after the remote acknowledged the forwarded copy (PUBACK or
// PUBCOMP), or refused it for good (an MQTT 5 failure reason code, a
// packet too large: counted in Stats.Dropped). Up to 256 messages per
// direction are in flight at once (the local session's Receive Maximum),
// published on the other side in arrival order (client.PublishAsync) and
// acknowledged in that order. While the remote is unreachable the window
// stays full and the rest stays queued; after a bridge restart or a crash
// of the whole process the broker sends the unacknowledged messages
// again. QoS 1 delivery is at least once: a message whose remote PUBACK
// came just before a crash may be forwarded twice. QoS 0 messages are
// forwarded while the remote is up and dropped (counted) while it is not.
// The same holds inward: a remote message is acknowledged to the remote
// only once this broker has it.
//
// # Exactly once
//
// QoS 2 is exactly once across bridge restarts and crashes. A QoS 2
// message is forwarded with client.PublishAsyncTagged, tagged with the
// packet identifier it arrived with, and the receiving client's Store
// (Config.State: an append-only log in the store's directory under roost
// serve, client.LogStore) keeps
// the forwarded copy's flow — PUBLISH sent, PUBREC received (PUBREL
// pending), completed — until the side the message came from sends its
// PUBREL for that identifier, which it does only after it has our
// PUBREC. So after a restart:
//
//   - a copy in flight is resent by the client with its packet identifier
//     (PUBLISH with DUP, or PUBREL), which the other side recognises;
//   - the original, which the side it came from sends again (the bridge
//     had not acknowledged it) with DUP 1, finds its tag: it is not
//     forwarded again, only acknowledged once its copy completed (at once
//     if it had); a message with DUP 0 is a first delivery and never
//     matches [MQTT-3.3.1-1], so a stale record cannot swallow one;
//   - a tag is forgotten at that side's PUBREL, before the PUBCOMP that
//     lets it reuse the identifier, and all tags are forgotten when that
//     side lost the session (Session Present 0), whose identifiers they
//     were.
//
// bridge/exactlyonce_test.go stops a bridge at each step against a
// scripted remote; test/crash kills Roost with SIGKILL under QoS 2
// traffic both ways with mosquitto and a second Roost as the remote.
//
// # No loops
//
// The local subscriptions have No Local: what the bridge publishes here
// (from the remote) is not given back to it. The remote subscriptions have
// No Local and Retain As Published with MQTT 5. With 3.1.1, which has no
// subscription options, the CONNECT carries the bridge bit (protocol
// level 0x84, mosquitto's try_private), by which mosquitto and Roost give
// the bridge's subscriptions the same two options; a server that refuses
// that level gets a plain CONNECT at once (client.Options.Bridge). Two
// brokers joined by one bridge with "both" rules therefore see each
// message once. Two bridges between the same brokers, each forwarding
// both ways, still loop, as with mosquitto: use one.
//
// # Addresses and starting
//
// The remote client tries Config.Addresses in order. Without RoundRobin
// the first is the main one, and a bridge connected to another checks
// every PrimaryRetry whether the first accepts connections again, then
// reconnects to it (client.Client.Reconnect); with RoundRobin the next
// address is tried first after a loss. StartOnce stops reconnecting once
// the first connection is lost. mosquitto's start_type lazy is roost
// serve's (internal/bridgeset): Prepare creates the local session without
// connecting to the remote, and a supervisor starts the bridge when
// enough messages wait there and closes it when idle.
//
// # On a cluster node
//
// Every node of a cluster runs the bridges of the configuration the nodes
// share (Config.Node). Each node's bridge has client ids of its own and
// forwards what is published on its node (a shared subscription of the
// cluster, whose own member on the publishing node is served first);
// remote messages are split among the nodes' bridges by a shared
// subscription on the remote, and routed by the cluster to every
// subscriber once. Rules that would loop between the nodes and the remote
// are refused (cluster.go). A cluster node records the owner of every
// client id, the bridge's local session's too, which needs a quorum: until
// the cluster can, the local side is refused, and Start leaves it trying
// in the background (backing off to 15 s) instead of failing, so that the
// node starts and serves; the bridge connects to the remote once the
// local side is up.
//
// # Notifications
//
// With Config.Notifications the bridge keeps a retained "1" or "0" on
// $SYS/broker/connection/<client id>/state here and on the remote (where
// a will publishes the "0"), as mosquitto's notifications do.
package bridge
