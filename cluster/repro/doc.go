// Package repro holds no code: its test files are the cluster's repro
// tests (repro_*_test.go), each a real cluster of `roost serve` processes
// driven into one traced failure of the cluster (a lost, duplicated or
// reordered message, a test/jepsen finding; bench/jepsen/RESULTS.md has
// each one's trace) and checking that it no longer happens.
//
// They are cluster's process tests, in a package of their own so that
// `go test -p 3` runs them beside the rest of cluster's (docs/testing.md,
// "Two cluster packages"): the tests of one package run a few at a time
// (harness.ReproLanes here), and together the two were the suite's long
// pole. What both share is cluster/internal/harness. A new repro
// test that needs a cluster of processes goes here, as
// cluster/repro/repro_NAME_test.go in package repro_test; one that
// needs the cluster package's unexported code stays in cluster/ as an
// internal test (package cluster).
package repro
