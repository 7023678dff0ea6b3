// Package clustertest runs real `roost serve` processes as the nodes of a
// cluster for the tests of other packages, and connects real MQTT clients
// (paho.golang) to them.
//
// Node i of a cluster listens on 127.0.0.(i+2): every address of
// 127.0.0.0/8 is the loopback on Linux, and a node binds its outgoing
// cluster connections to its own address, so the nodes act as separate
// hosts to per-address firewall rules (internal/netfault). Ports are
// picked by the OS; each node's log lives in the test's t.TempDir, its
// data directory in memory (/dev/shm) when that is a tmpfs with room,
// since the nodes sync every write and a test never loses the page cache
// (ROOST_CLUSTERTEST_DATA=DIR puts the data under DIR instead). Every
// node's config gets TestPartitions session partitions (2, not the
// product's 8) unless Options.Partitions or the test's config says
// otherwise: each partition is a Raft group on every node (config.go).
//
// The roost binary comes from internal/roostbin (Build, Binary): the one
// scripts/test.sh built for the whole suite, or one built once per test
// process, plain or with -race, and removed by Main when the tests end. A
// process that is handed an already built binary in the
// ROOST_CLUSTERTEST_BIN environment variable uses it instead: a test that
// re-executes itself inside a network namespace passes its binary on that
// way and the child does not build it again.
//
// Faults on a node are what a host suffers: Kill (SIGKILL, kill -9),
// Pause and Resume (SIGSTOP and SIGCONT, a frozen VM or a long GC stall),
// Restart on the same data directory. Node does them through Proc, which
// returns errors instead of failing the test, for callers outside the
// test's goroutine (test/jepsen's nemesis runs its nodes on Proc too). Every wait is bounded: WaitLog and
// WaitReady poll a node's log, Client.Next waits for a message, and the
// helpers fail the test saying what did not happen.
package clustertest
