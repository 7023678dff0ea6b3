#!/usr/bin/env bash
# bench/cluster.sh: cross-node traffic of a Roost cluster against one node,
# side by side in one run (bench/RESULTS.md, "Cluster"). For each binary
# given (the working tree; each --ref REF adds one built from a git ref,
# measured before it in the same run), it starts three cluster nodes on
# 127.0.0.2-4 and a single node on 127.0.0.5 and runs `roost bench`:
# single node, cluster same node, cluster cross-node (publishers on node 1,
# subscribers on node 2), for pairs QoS 1, fan-in QoS 0 and fan-out QoS 0.
#
# Usage: bench/cluster.sh [--ref REF]... [--duration 5s] [--pprof DIR]
#   --pprof DIR  also take 5 s CPU profiles of nodes 1 and 2 during the
#                cross-node runs (needs --http; written as DIR/<scenario>-nN.pprof)
set -euo pipefail

REFS=()
DURATION=5s
PPROF=""
while [ $# -gt 0 ]; do
	case "$1" in
	--ref) REFS+=("$2"); shift 2 ;;
	--duration) DURATION="$2"; shift 2 ;;
	--pprof) PPROF="$2"; shift 2 ;;
	*) echo "unknown flag $1" >&2; exit 2 ;;
	esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/roost-cluster-bench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && go build -o "$WORK/roost-tree" ./cmd/roost)
BINS=()
for ref in "${REFS[@]}"; do
	tag=$(cd "$ROOT" && git rev-parse --short "$ref")
	mkdir "$WORK/$tag"
	(cd "$ROOT" && git archive "$ref" | tar -x -C "$WORK/$tag")
	(cd "$WORK/$tag" && go build -o "$WORK/roost-$tag" ./cmd/roost)
	BINS+=("$tag:$WORK/roost-$tag")
done
BINS+=("tree:$WORK/roost-tree")
BENCH="$WORK/roost-tree"

# start NAME BIN ARGS...: a node in the background, logging to WORK/NAME.log.
start() {
	local name=$1 bin=$2
	shift 2
	"$bin" serve --log-level warn "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
}

# ready ADDR: wait until a CONNECT with a client id is accepted there (the
# cluster records client-id owners once JetStream has a quorum).
ready() {
	for _ in $(seq 1 120); do
		if "$BENCH" pub -h "${1%:*}" -p "${1#*:}" -i bench-ready -t bench/ready -m x -q 1 >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	echo "no broker ready on $1" >&2
	exit 1
}

# run LABEL URL SUBURL SCENARIO ARGS...: one bench, its summary to stdout.
run() {
	local label=$1 url=$2 sub=$3
	shift 3
	local extra=()
	[ -n "$sub" ] && extra=(--sub-url "$sub")
	echo "== $label: $*"
	"$BENCH" bench --url "$url" "${extra[@]}" --duration "$DURATION" --warmup 1s "$@" 2>/dev/null | grep -E "^(delivered|latency)" || true
}

for b in "${BINS[@]}"; do
	tag=${b%%:*}
	bin=${b#*:}
	rm -rf "$WORK/d"
	mkdir -p "$WORK/d"
	for i in 1 2 3; do
		peers=()
		for j in 1 2 3; do [ "$j" != "$i" ] && peers+=(--cluster-peer "127.0.0.$((j + 1)):17222"); done
		http=()
		[ -n "$PPROF" ] && http=(--http "127.0.0.1:1808$i")
		start "$tag-n$i" "$bin" --listen "mqtt://127.0.0.$((i + 1)):11883" --data "$WORK/d/n$i" --node "n$i" \
			--cluster-listen "127.0.0.$((i + 1)):17222" "${peers[@]}" "${http[@]}"
	done
	start "$tag-single" "$bin" --listen mqtt://127.0.0.5:11883 --data "$WORK/d/single"
	for a in 127.0.0.2:11883 127.0.0.3:11883 127.0.0.4:11883 127.0.0.5:11883; do ready "$a"; done
	for sc in "pairs -qos 1" "fan-in -qos 0" "fan-out -qos 0"; do
		# shellcheck disable=SC2086
		run "$tag single" mqtt://127.0.0.5:11883 "" -q $sc
		# shellcheck disable=SC2086
		run "$tag cluster same node" mqtt://127.0.0.2:11883 "" -q $sc
		profs=()
		if [ -n "$PPROF" ]; then
			mkdir -p "$PPROF"
			for n in 1 2; do
				curl -s -o "$PPROF/$tag-${sc%% *}-n$n.pprof" "http://127.0.0.1:1808$n/debug/pprof/profile?seconds=5" &
				profs+=($!)
			done
		fi
		# shellcheck disable=SC2086
		run "$tag cluster cross-node" mqtt://127.0.0.2:11883 mqtt://127.0.0.3:11883 -q $sc
		[ ${#profs[@]} -gt 0 ] && wait "${profs[@]}"
	done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait "${PIDS[@]}" 2>/dev/null || true
	PIDS=()
done
