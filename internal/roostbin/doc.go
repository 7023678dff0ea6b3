// Package roostbin gives the process-level tests (test/crash, test/soak,
// the cluster tests through internal/clustertest) a built `roost` binary.
//
// A -race build of cmd/roost costs about a minute of CPU on a cold cache,
// and several test packages need one; built by each of them, the suite
// pays for it once per package. scripts/test.sh therefore builds both
// flavours once, before `go test`, and hands their paths to every test
// process in ROOST_TEST_BIN (plain) and ROOST_TEST_BIN_RACE (-race). A
// test process run on its own (`go test ./test/crash/`) finds neither
// variable and builds the flavour it asks for itself, once per process,
// into a temporary directory that Cleanup removes.
package roostbin
