#!/usr/bin/env bash
# Runs Roost's whole test suite from a fresh clone: installs the real MQTT
# peers the interop tests drive (mosquitto, mosquitto-clients, nftables for
# the partition tests and, when
# test/interop and test/listeners have lockfiles, their npm packages and
# Chromium for the browser test), then go vet and the race
# tests (the roost binaries the process-level tests run are built once,
# up front). Meant for root on Debian; re-running it is cheap, because every
# install step is skipped when its tools are already present.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
	sudo="sudo"
fi

have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }

apt_updated=""
apt_install() {
	if [ -z "$apt_updated" ]; then
		$sudo apt-get update
		apt_updated=1
	fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

if ! have mosquitto_pub || ! have mosquitto; then
	apt_install mosquitto mosquitto-clients
fi
if ! have nft; then
	apt_install nftables # internal/netfault's partitions, inside a private network namespace
fi
if ! have gcc; then
	apt_install gcc libc6-dev # go test -race needs cgo
fi
# The npm installs wait on the network, not the CPU: they run in the
# background while go vet and the builds below compile. Chromium (apt)
# is installed first, in the foreground, since apt holds a lock.
npm_dirs=()
for d in test/interop test/listeners test/console console; do
	if [ -f "$d/package-lock.json" ]; then
		npm_dirs+=("$d")
	fi
done
if [ ${#npm_dirs[@]} -gt 0 ] && ! have npm; then
	apt_install nodejs npm
fi
if { [ -f test/listeners/package-lock.json ] || [ -f test/console/package-lock.json ]; } && [ ! -x /usr/bin/chromium ]; then
	apt_install chromium # the browser and console tests drive it with playwright-core
fi
# Temporary files of this run: the npm logs and the roost binaries.
tmp=$(mktemp -d -t roost-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
npm_pids=()
for d in "${npm_dirs[@]}"; do
	# console/ too: its test compares the committed mqtt.min.js with the
	# lockfile's (the console's assets are committed, so no build step).
	npm ci --prefix "$d" --no-audit --no-fund >"$tmp/npm-${d//\//-}.log" 2>&1 &
	npm_pids+=("$!:$d")
done

# The roost binary the process-level tests run (test/crash, test/soak,
# the cluster tests: internal/roostbin), built once here instead of once
# per test package; -race for test/soak, plain for the others.
# Every platform roost supports (README, "Platforms") must build. A cold
# cross `go build` is too dear for a suite that must stay under 10 minutes
# on 2 cores. Measured cold (fresh GOCACHE) for windows/amd64 on the
# 2-core dev machine, December 2026: `go build ./...` ~3 min;
# `go build ./cmd/roost` 65 s (100 s CPU); `go vet ./cmd/roost` 111 s (and
# it fails on test-only Unix calls, which is not the question);
# `go build -gcflags=all='-N -l' ./cmd/roost` 86 s CPU. scripts/crosscheck
# type-checks roost and all 491 packages beneath it, standard library
# included, with go/types from source: 3.5 s CPU per target, 22 s CPU for
# all six. What it leaves out is code generation and linking, which do not
# depend on our code's build tags; what breaks a port (a call or file that
# exists on one system only) is a type error, and it finds those.
# It checks one package at a time on one core (22 to 42 s, December 2026),
# as go vet mostly does (12 s) and each link (10 s): the two run side by
# side.
go run ./scripts/crosscheck -targets linux/amd64,linux/arm64,darwin/amd64,darwin/arm64,windows/amd64,windows/arm64 ./cmd/roost >"$tmp/crosscheck.log" 2>&1 &
crosscheck=$!

go build -o "$tmp/roost" ./cmd/roost
go build -race -o "$tmp/roost-race" ./cmd/roost
export ROOST_TEST_BIN="$tmp/roost" ROOST_TEST_BIN_RACE="$tmp/roost-race"

for p in "${npm_pids[@]}"; do
	if ! wait "${p%%:*}"; then
		d=${p#*:}
		echo "npm ci --prefix $d failed:" >&2
		cat "$tmp/npm-${d//\//-}.log" >&2
		exit 1
	fi
done

# go test starts packages in the order given (at most -p at a time); the
# slowest ones, which mostly wait on real processes, go first so that the
# short ones fill the gaps instead of a long one starting last and running
# alone (the order follows the per-package times measured in December
# 2026; see the commit message). -p 3, one more package than cores: with
# two, the run used 1.15 of the 2 cores (its packages wait on real
# processes, elections and timers), and the cluster package's slot alone
# was as long as every other package's one after the other; with three,
# 406 s against 485 s from fresh clones of the same commit, 1.48 cores
# (docs/testing.md, "Three packages at once"). -p 4, measured in an older,
# heavier suite, loaded the machine to 15-24 and tests of real processes
# failed their bounds in two runs of three.
# The cluster's process tests are two packages, its repro tests
# (cluster/repro, the longer: 875 s of tests' walls against 757 s, main,
# December 2026) and the rest (./cluster/), so that they take two of the
# three slots side by side instead of one package's tests running one
# after the other (docs/testing.md, "Two cluster packages").
slow=(./cluster/repro/ ./cluster/ ./test/jepsen/ ./test/soak/ ./test/deb/ ./test/interop/ ./test/crash/ ./test/conformance/ ./client/ ./auth/ ./broker/ ./cmd/roost/ ./store/)
# go vet runs beside the tests, not before them: the tests' packages are
# mostly waiting (on elections, timeouts, real processes: the run averages
# about 1.4 of the 2 cores), and a cold go vet ./... before them put its
# whole wall (26 CPU-s) on the suite's, in front of the cluster package,
# the long pole (docs/testing.md). A vet failure still fails the run,
# after the tests.
{ nice -n 5 go vet ./... && nice -n 5 go vet -tags roost_portable ./broker/; } >"$tmp/vet.log" 2>&1 &
vet=$!
# The broker again with the code other systems use (no idle-connection
# parking, no FIONREAD): the fallback is tested here, on Linux. It runs
# beside the main run at a lower priority, on the CPU time the main run
# leaves idle while its tests wait on processes and timers (about a third
# of the two cores), instead of after it (37 s).
nice -n 5 go test -race -count=1 -tags roost_portable ./broker/ >"$tmp/portable.log" 2>&1 &
portable=$!
# -vet=off: go vet ./... (beside, above) runs every analyzer go test's own
# vet would (a curated subset) on the same packages and test files; vetting them
# again per test binary cost about 14 CPU-s of a fresh clone's build
# (docs/testing.md). The race build's own files (//go:build race) are the
# ones go vet ./... does not see: broker's is vetted by the portable run
# beside, which keeps go test's vet; test/soak's and test/jepsen's only
# declare a constant.
status=0
go test -vet=off -race -count=1 -p 3 -timeout 15m "${slow[@]}" ./... 2>&1 | tee "$tmp/main.log" || status=$?
portable_status=0
wait "$portable" || portable_status=$?
echo "== go test -race -tags roost_portable ./broker/"
cat "$tmp/portable.log"
vet_status=0
if ! wait "$vet"; then
	vet_status=1
	echo "== go vet ./... and go vet -tags roost_portable ./broker/ failed:" >&2
	cat "$tmp/vet.log" >&2
fi
crosscheck_status=0
if ! wait "$crosscheck"; then
	crosscheck_status=1
	cat "$tmp/crosscheck.log" >&2
	echo "scripts/crosscheck: roost does not build for every platform it supports (README, \"Platforms\")" >&2
fi
if [ "$status" -ne 0 ] || [ "$portable_status" -ne 0 ]; then
	# Last, so that a report that keeps only the output's tail still says
	# which tests failed and why (scripts/failsummary.awk).
	echo "== failed tests, with what they logged (node logs left out; they are above)"
	awk -f scripts/failsummary.awk "$tmp/main.log" "$tmp/portable.log"
fi
if [ "$status" -ne 0 ] || [ "$portable_status" -ne 0 ] || [ "$vet_status" -ne 0 ] || [ "$crosscheck_status" -ne 0 ]; then
	exit 1
fi
