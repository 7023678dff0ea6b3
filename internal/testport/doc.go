// Package testport hands tests TCP ports for servers that must keep one
// number across restarts (a cluster node's listeners, a mosquitto
// config), so that no other process takes the port while its server is
// down.
//
// A port from bind(":0") comes from the kernel's ephemeral range, the
// range every outgoing connection's local port also comes from. Cluster
// nodes dial from their own 127.0.0.x address, so while a test's node is
// killed, any other test's node on the same address may connect out from
// its port, and the restart fails with "address already in use" (seen in
// a suite run). Ports here come from below the ephemeral range instead,
// where the kernel never picks on its own, and each is reserved across
// the machine's processes with an flock on a file named for it, which the
// kernel drops when the reserving process ends, however it ends.
package testport
