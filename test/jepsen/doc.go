// Package jepsen is Roost's Jepsen-like checker (issue 17): a workload of
// real MQTT 5 clients runs against real `roost serve` processes (one node,
// or three as a cluster) while a seeded nemesis hurts them; afterwards it
// heals everything, drains every persistent subscriber, and checks the
// recorded history.
//
// # Workload
//
//   - Publishers at QoS 1 and 2 (chosen at random per message) on t/0..t/3,
//     every payload unique ("j" and the operation's index). One of them is
//     persistent: on a resumed session it resends what was unacknowledged
//     (DUP) and the PUBRELs of the PUBRECs it had.
//   - Persistent subscribers on t/# (Clean Start 0, Session Expiry a day;
//     the last at QoS 1, the others QoS 2), clean subscribers on t/#, two
//     shared groups of persistent members on $share/gN/t/#. Everyone
//     reconnects every 1-4 s to a random node (of Config.SessionNodes for
//     sessions), leaving with DISCONNECT or a bare close at random.
//   - Retained registers r/0..r/2: writers publish retained QoS 1 values,
//     readers SUBSCRIBE, take the retained message and UNSUBSCRIBE.
//
// Every operation is recorded with its invocation and completion: a
// publish is OK (PUBACK, or PUBREC for QoS 2, with a code below 0x80),
// Fail (a code from 0x80: it did not happen) or Unknown (its connection
// died first, or the run ended: it may or may not have happened). Every
// delivery is recorded with its subscriber, session, connection and node.
// The client is written on the packet codec rather than a library so that
// it sees every packet and keeps the QoS 2 receive state across
// connections as the specification requires [MQTT-4.3.3-10].
//
// # Nemesis
//
// One fault at a time, every 2-5 s, for 0.3-2 s, on a node of
// Config.FaultNodes: kill -9 and a restart on the same data, SIGSTOP and
// SIGCONT, and (cluster, inside a netfault namespace) the isolation of a
// node from the others. The seed picks the faults, nodes, durations and
// every client's choices; timing is the machine's.
//
// # Checks
//
// Check (check.go) defines them exactly: lost = 0 for acknowledged
// publishes owed to persistent subscribers and groups, no QoS 2
// duplicates per subscriber session or per group, nothing unexpected
// (unpublished, refused, wrong topic, before its publish), order per
// publisher connection, topic and QoS on non-shared subscriptions (QoS 1
// redeliveries aside; a shared group's members are not held to it, as
// MQTT does not [MQTT-4.6.0-6], and their reorders are printed as a
// count), no persistent session lost, and retained topics linearizable as
// last-writer-wins registers (github.com/anishathalye/porcupine).
//
// # Running it
//
// The checker is a library (Run, Check, Procs) driven by the tests, with
// flags for the long runs, as test/crash and test/soak do: the suite's
// command runs it with no extra step, `go test`'s -timeout bounds every
// run, and the roost binary is built once per test process
// (internal/clustertest). A separate main would add a second way to build
// and clean up the nodes for no gain.
//
//	go test ./test/jepsen                              # TestSingleNode (60 s), TestCluster (30 s), the checker's own tests
//	go test ./test/jepsen -run TestSingleNode -timeout 0 -jepsen.duration 30m -jepsen.seed 1 -jepsen.runs 3
//	go test ./test/jepsen -run TestClusterFull -jepsen.cluster-full [-jepsen.faults kill,pause,isolate|none]
//	go test ./test/jepsen -run TestRecheck -jepsen.check DIR/history.json -v
//	go test ./test/jepsen -run TestRecheck -jepsen.check DIR/history.json -jepsen.explain ps1:779 -v
//
// The last sets out one operation (779) for one subscriber or group
// (ps1): its publish and answer, the subscriber's connections (node, what
// each got), and the events around it, with the wall-clock times the
// node logs use (History.Start; histories written before December 6 2026
// have none) and the nodes by their log names (index 0 is n1).
//
// A failed run keeps its directory under -jepsen.out (default the
// temporary directory): the nodes' data and logs, history.json (every
// operation, delivery, read and event) and, when the retained check
// failed, porcupine's linearizability.html. What a node's partition
// streams stored (each session op, at its epoch, and each held or kept
// copy in a node's held subject, payloads as j<op>) is printed from its
// data directory by package cluster's TestStreamDump:
//
//	go test ./cluster -run TestStreamDump -count=1 -v -dump.dir DIR/n1 [-dump.stream ROOST_SESS_4] [-dump.grep ps0]
//
// bench/jepsen/RESULTS.md lists the long runs and the cluster's findings.
package jepsen
