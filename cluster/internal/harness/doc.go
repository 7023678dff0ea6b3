// Package harness is what the cluster's two packages of process tests
// share: cluster's own (cluster/*_test.go) and the repro tests
// (cluster/repro). They are one suite in two packages only so that
// `go test -p 3` runs them side by side: the tests of one package run
// a few at a time (FeatureLanes, ReproLanes), and as one package they were
// the suite's long pole (docs/testing.md, "Two cluster packages").
//
// It is the short names over internal/clustertest those tests are written
// in (StartClusterFault, Connect, Resume, Cluster.Kill, ...) and the
// helpers of more than one test file: a helper that only one package's
// tests use stays in that package.
package harness
