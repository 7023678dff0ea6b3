// Package store holds implementations of broker.Store, the journal of
// persistent sessions, queued and inflight messages and retained messages
// that a broker restarts from.
//
// Disk is the default: a Pebble database in one directory. Append queues
// ops in memory and never blocks; one committer goroutine writes all ops
// queued since its last batch as one Pebble batch, and a syncer makes them
// durable with one fsync of the log for every batch written meanwhile
// (group commit), so Wait — which the broker calls before acknowledging —
// costs one fsync per round, not per message. Sync relaxes that
// (SyncInterval, SyncNone) and documents what each mode can lose.
//
// What survives a crash is a prefix of the Appends. Disk also implements
// broker.Grouper: while held, the committer commits only what was appended
// before the hold began, and once the last overlapping hold is released it
// commits everything appended meanwhile in one batch, so that a change the
// broker makes in several Appends (a QoS 2 packet id and the message's
// deliveries) survives whole or not at all.
//
// On disk, keys start with one byte naming their kind; session-scoped keys
// continue with the length-prefixed client id, so that deleting a session
// is three range deletions:
//
//	v                      format version ("roost-store/1")
//	s|client               session: expiry, disconnect time, pending will
//	u|client|filter        subscription: options, identifier
//	q|client|seq           queued or inflight delivery: message id, QoS, flags, packet id, subscription ids
//	i|client|packet id     inbound QoS 2 id awaiting PUBREL
//	m|id                   message body, shared by the deliveries that refer to it
//	r|topic                retained message, whole
//
// The committer keeps the reference counts of message bodies in memory
// (rebuilt by Open, which reads the whole store once) and deletes a body
// with its last reference. Free disk space is watched: below
// DiskOptions.MinFree, Healthy reports ErrNoSpace so the broker can refuse
// new messages; below half of it, writes stop and Wait fails until space
// returns.
//
// Pebble cannot continue after a failed write or sync of its log: it stops
// the process. So it writes through a guard (guardFS) that never lets one
// fail: a write that finds the disk full releases the ballast
// (DiskOptions.Ballast) and goes on, and Healthy refuses new messages until
// free space allows the ballast back; any write or sync that still fails
// puts the store in a failing state (Wait and Healthy report it) and is
// retried until it works. Ops that were not durable when a write or sync
// failed with an I/O error are never acknowledged: Wait fails for them for
// good. A commit Pebble refuses keeps its ops for the next try.
//
// Memory keeps that state in the process: it survives a Server being
// replaced by a new one in the same process (tests, embedders that restart
// the broker) but not the process itself.
package store
