// Package netfault cuts the network between addresses of this machine, for
// partition tests: a private network namespace, its own loopback, and
// nftables rules that drop (or reject) packets between chosen 127.0.0.x
// addresses, one way or both, until they are healed.
//
// # Why a namespace
//
// Rules on the host's loopback would cut every other test and engineer on
// the machine, and need root. A new user and network namespace (what
// `unshare -rn` makes; no privilege needed where unprivileged user
// namespaces are enabled) has a loopback and a firewall of its own, which
// vanish with the last process inside. Everything on one side of a cut
// (the roost nodes, the test's clients) must run inside the same
// namespace, so a test re-executes itself there: Namespace does that for a
// Go test, Command for any program (a checker), and Setup, inside,
// refuses to touch a firewall that is not a private namespace's.
//
// # From a program
//
// A checker (not a Go test) re-executes itself the same way:
//
//	if os.Getenv(netfault.InsideEnv) == "" {
//		cmd := netfault.Command(ctx, "checker", os.Args[0], os.Args[1:]...)
//		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
//		runtime.LockOSThread() // the death signal follows the forking thread
//		return cmd.Run()       // its exit status is the checker's
//	}
//	n, err := netfault.Setup(logger) // inside: lo up, an empty table
//	...
//	n.Partition([]string{"127.0.0.2"}, []string{"127.0.0.3", "127.0.0.4"})
//	n.Isolate("127.0.0.3")
//	n.Heal()
//
// and starts its nodes (internal/clustertest, or its own) and clients
// after Setup, inside.
//
// # What a cut does
//
// Rules sit on the output hook, which every loopback packet passes, and
// match source and destination addresses. They hit established
// connections too, not only new ones: a dropped TCP connection stalls, as
// behind a pulled cable, until its ends time out; a rejected one fails at
// once with a reset (Reject). Nodes must therefore bind their outgoing
// connections to their own address: an unbound socket's source on
// loopback is 127.0.0.1, which this package never cuts (Isolate leaves it
// alone on purpose, so that a test's clients, unbound, reach every node).
//
// # Requirements
//
// The nft program (Debian package nftables; scripts/test.sh installs it)
// and user namespaces. Namespace skips the test, saying why, only when the
// kernel refuses the namespace; a missing nft fails it.
package netfault
