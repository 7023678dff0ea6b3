// Package broker is the Roost MQTT server: connections, sessions, client-id
// takeover, the QoS 0/1/2 state machines, retained messages, wills and $SYS,
// for MQTT 3.1, 3.1.1 and 5.0 clients alike.
//
// A Server is created with New and fed net.Listeners with Serve (TCP, TLS
// and WebSocket listeners all look the same to it); Shutdown stops it.
// Packets are decoded and encoded by package packet; topic matching and
// retained lookups live in package topic; persistence is behind the Store
// interface, implemented in package store.
//
// Each connection has one reader goroutine that decodes and handles every
// packet in what one read returned, and a flusher goroutine that exists only
// while there are bytes to write: everything queued for a connection while a
// write is in progress leaves in the next single write. A PUBLISH routed to
// several subscribers is encoded once per wire form (protocol version, QoS,
// RETAIN) and shared.
//
// DESIGN.md beside this file describes the lifecycles, the lock order and
// the policies (queue limits, slow consumers, wills, durability) in full.
package broker
