#!/usr/bin/env bash
# Hunts flaky tests: runs the chosen packages' tests COUNT times each under
# the race detector while busy loops keep LOAD CPU cores busy, as a shared
# CI machine or a laptop doing other work would, then prints every failed
# test with its output. Exits 1 if any test failed, 2 on bad usage.
#
#   scripts/flakehunt.sh [-n COUNT] [-l LOAD] [-r REGEXP] [-t TIMEOUT] PACKAGE...
#
#   -n COUNT    runs of each test (go test -count), default 5
#   -l LOAD     cores kept busy meanwhile, default 1 (0: a quiet machine)
#   -r REGEXP   only the tests matching it (go test -run)
#   -t TIMEOUT  go test -timeout, default 20m
#
# Example: scripts/flakehunt.sh -n 5 ./client ./cmd/roost ./listener
# Each package runs on its own, one after the other, so one package's
# failure does not hide another's; the full logs stay in a temp dir whose
# name is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

count=5 load=1 run="" timeout=20m
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "n:l:r:t:h" opt; do
	case $opt in
	n) count=$OPTARG ;;
	l) load=$OPTARG ;;
	r) run=$OPTARG ;;
	t) timeout=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage
[[ $count =~ ^[1-9][0-9]*$ && $load =~ ^[0-9]+$ ]] || usage

logs=$(mktemp -d "${TMPDIR:-/tmp}/flakehunt.XXXXXX")
busy=()
stop_load() {
	for pid in "${busy[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	busy=()
}
trap stop_load EXIT
trap 'stop_load; exit 130' INT TERM
for ((i = 0; i < load; i++)); do
	# A plain busy loop, bounded in case this script is killed with -9.
	timeout 4h sh -c 'while :; do :; done' &
	busy+=("$!")
done

echo "flakehunt: -count=$count with $load busy core(s) of $(nproc); logs in $logs"
failed=0
for pkg in "$@"; do
	log="$logs/$(echo "$pkg" | tr '/.' '__').log"
	args=(test -race -count="$count" -timeout "$timeout")
	[ -n "$run" ] && args+=(-run "$run")
	start=$(date +%s)
	if go "${args[@]}" "$pkg" >"$log" 2>&1; then
		echo "ok    $pkg ($(($(date +%s) - start))s)"
		continue
	fi
	failed=1
	echo "FAIL  $pkg ($(($(date +%s) - start))s): $(grep -c -- '^\s*--- FAIL' "$log" || true) failed tests and subtests"
	# Every failed test with the lines it logged, without the chatter of
	# the ones that passed; build errors and panics in full.
	grep -E -- '^\s*--- FAIL|_test\.go:[0-9]+:|^panic:|^FAIL|cannot|undefined|race detected' "$log" | head -100 | sed 's/^/      /' || true
done
stop_load
if [ $failed -ne 0 ]; then
	echo "flakehunt: failures found; full logs in $logs"
	exit 1
fi
echo "flakehunt: no failures in $count runs"
