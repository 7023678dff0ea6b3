// Package broker is the Roost MQTT server: connections, sessions, client-id
// takeover, QoS state machines, retained messages, wills and $SYS.
package broker
