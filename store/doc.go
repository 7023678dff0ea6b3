// Package store holds implementations of broker.Store, the journal of
// persistent sessions, queued and inflight messages and retained messages
// that a broker restarts from.
//
// Memory keeps that state in the process: it survives a Server being
// replaced by a new one in the same process (tests, embedders that restart
// the broker) but not the process itself. The on-disk default arrives with
// the durable store.
package store
