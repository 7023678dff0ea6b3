// Package cluster makes several Roost nodes serve as one broker, on an
// embedded NATS server: an existing, proven engine rather than a home-made
// one. docs/cluster.md is the user's and operator's account; this is the
// code's.
//
// # Two planes
//
// Delivery goes over core NATS routes: fast, one hop, no durability of its
// own. What must survive a node (client-id ownership, retained messages,
// and persistent sessions) is for JetStream, with three replicas
// and a sync on every write, used as a replicated log. A node's JetStream
// store lives in Config.Data; nothing is ever created per session or per
// subscription, which is how nats-server's own MQTT layer stopped scaling.
//
// # The seam
//
// The broker knows nothing of NATS. It sees a broker.Cluster (Options.
// Cluster, nil for one node): it reports the (filter, group) pairs its
// subscription tree gains and loses, and hands over every message published
// on it; messages from other nodes come back through Server.DeliverRemote.
// Node implements broker.Cluster; another engine could, without a change
// to the broker.
//
// # Pieces
//
//   - engine.go: the embedded nats-server (routes to every peer through
//     bind proxies, so that every outgoing cluster connection has the
//     node's address; no gossiped routes; JetStream) and the node's
//     in-process connection to it.
//   - interest.go: this node's interest (counted per filter and group) and
//     every other node's, in one subscription tree keyed by node; the
//     versioned changes, heartbeats and snapshots that keep them in step;
//     the plan of which nodes get a message and which node serves each
//     shared group.
//     interest_catchup.go: a starting node serves MQTT only once it has
//     every reachable peer's interest (or after a bound for the others).
//   - node.go: Node, the lifecycle, the interest protocol's loops, and
//     Forward / onForward.
//   - batch.go: the forwards to each node gathered into batches, one NATS
//     message each, by a sender goroutine per node.
//   - ack.go: QoS 1/2 forwards carry a sequence; the receiving node
//     confirms them once it took them, gathered per origin node.
//   - stats.go: the figures for /metrics, $SYS and the admin API.
//   - security.go: mutual TLS and the shared secret of the route port.
//   - owner.go: one connection per client id: owner records in a
//     replicated key-value bucket, written with a compare-and-set and an
//     epoch; the previous owner is asked to let go and hands a persistent
//     session over (handover.go: its bytes); after a loss of contact a
//     node fences the sessions whose ids were claimed elsewhere meanwhile.
//   - assets.go: openAssets creates or opens the bucket, the session
//     streams and the retained stream once JetStream has a quorum, with
//     idempotent creates (an update first went unanswered while the
//     stream another node had just created had no leader).
//   - handover_live.go: a persistent session moving between live nodes,
//     with a cut per origin node (barriers in the forward streams) so
//     that messages published meanwhile reach it once, in order; its
//     share groups' messages are held by the new owner and passed on by
//     the old one, for those groups only (no plain subscriber there gets
//     them again); nothing held is confirmed before it is durable.
//   - fence.go: a previous owner that was paused or cut off lets go when
//     it sees the newer owner record (a watcher on the bucket); handovers
//     are confirmed by the new owner, and an unconfirmed one ends the
//     session where it was. keep.go: what such a disowned copy takes
//     meanwhile (a share group's message only when the group has no
//     other member here) is kept in the held subject for its session.
//   - sessions.go: persistent sessions replicated: the broker's store
//     wrapped so that every session op also goes to its client's subject
//     in one of Config.Partitions streams, and Wait waits for the quorum;
//     reading a session back when its owner does not answer.
//     sessions_wire.go: the ops' bytes and their replay (stale epochs
//     skipped).
//   - janitor.go: survivors adopt the sessions of a node silent for 10 s,
//     so that its clients' wills are published and their sessions expire;
//     in bulk (one scan of the owner records, one pass per partition,
//     claims 64 at a time).
//   - held.go: until then, QoS 1/2 messages matching the interest of a
//     node whose process died are held for it in a partition stream, and
//     applied by the node when it is back or by whoever takes one of its
//     sessions from the stream; forwards carry their origin so that such a
//     session gets a message once; a dead node's share groups are held
//     too and claimed per group by whoever delivers them. A node
//     restarted with sessions in its store announces them by hold keys
//     (the others go on holding for them) and keeps them out of what it
//     delivers until it knows which are still its own and applied what
//     was held for it (restoredGate); it serves everything else at once.
//   - diskhold.go: a node whose store's disk is full holds what is
//     forwarded for its persistent sessions in its own held subject and
//     confirms it once replicated, rather than refusing it (which closed
//     the publishers' connections elsewhere).
//   - heldahead.go: a session taken from the stream for a connecting
//     client gets what was held for it with its adoption, before any
//     newer forwarded message.
//   - cleanwill.go: the will of a clean session (expiry 0, not
//     replicated) rides in its client id's owner record, written by the
//     CONNECT's claim; whichever node's compare-and-set removes it from
//     the record publishes it (the node itself, a node the client
//     reconnects to, or the janitor's survivor if the node dies).
//   - placement.go: the meta leader moves the members of replicated
//     objects off a node silent for Config.ReplaceAfter (15 s), when a
//     live node has room, so that the next node loss is again one member
//     of three.
//   - retained.go: retained messages in a replicated stream, one message
//     per topic, followed by every node from its start; a node's own
//     retained publishes change its tree only when the stream delivers
//     them, never ahead of it (broker.RetainedSyncer); QoS 1/2 appends
//     are conditional on the topic's last sequence, so a late one cannot
//     overwrite a newer message. A new subscription's retained
//     messages wait until the node applied the stream's last message
//     (SyncRetained): reads are linearizable. retained_lease.go: the
//     leader's answer counts only under a lease (it heard from every
//     replica recently, so none can be elected yet); without one a read
//     appends a marker and waits for it.
//   - wire.go: the bytes of a forwarded message (a small header and an MQTT
//     5 PUBLISH, so the packet codec carries every property).
//   - subject.go: MQTT topics and filters as NATS subjects, escaped.
//   - config.go: Config and the refusal of weaker-than-safe settings.
//
// # Concurrency
//
// Subscribed and Unsubscribed run under broker session locks: they touch
// localInterest's map under its own lock and wake the announcer goroutine,
// nothing more. Control messages (heartbeats, changes) arrive on one NATS
// subscription, so in the order each node sent them; snapshot fetches run
// in their own goroutines. Forwards to a node are queued under its sender's
// lock and sent by its goroutine. Forwarded messages are delivered one at a
// time in arrival order (which keeps each publisher's order); their
// confirmations, which may wait for the store, go through one ack
// goroutine. Lock order: Node.gate (read side around a publish on this
// node and around each forwarded message's delivery; write side for the
// steps of a live session move, handover_live.go; and for the adoption of
// a session taken from the stream, heldahead.go) before any broker lock,
// liveMoves.mu, owners.mu and sessions.mu; remoteInterest.mu, then its topic tree's lock (a
// leaf); remoteInterest.mu before orphanInterest.mu, then its tree's
// lock. sessions.mu before a heldFollower's mu; a heldFollower's mu and
// originWatch.mu are also taken inside the broker's subscription tree
// lock (through RemoteMessage.Pick), so nothing is taken under them.
// sessions.mu (Append, under broker session locks) before
// persistentFilters.mu, then localInterest.mu. Node.holdOutMu (holdOut)
// before remoteInterest.mu, replies.mu and the locks a hold's append takes
// (orphanInterest.mu, sessions.mu); replies.mu is a leaf.
// localInterest.mu is a leaf too; plan takes it after the tree's
// Match has returned, never inside its callback. Nothing that holds the
// gate's write side publishes (broker.Server.Adopt publishes due wills
// on a goroutine of its own).
package cluster
