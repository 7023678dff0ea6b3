#!/bin/sh
# Alternated A/B runs of roost bench against three-node clusters: for each
# of ROUNDS rounds, each binary in turn gets a fresh cluster (nodes on
# 127.0.0.2-4, as bench/cluster/sessions.sh starts them), one roost bench
# run on n1 (subscribers on n2 with XNODE=1), and is stopped. One line per
# run: round, binary, msgs/s published, p50 latency, load average.
#
#   bench/cluster/alternate.sh ROUNDS "BINARY..." BENCH_ARGS...
#
# The load generator is the first binary's roost bench (BENCH=path to use
# another: an older binary may lack a flag); DUR sets --duration (10s).
# Example (docs/cluster.md, "What the publish path costs"):
#   bench/cluster/alternate.sh 4 "$OLD $NEW" --persistent --persistent-pub pairs -N 1 -qos 2
set -eu
rounds=$1
bins=$2
shift 2
first=""
for b in $bins; do first=${first:-$b}; done
bench=${BENCH:-$first}
dir=$(mktemp -d)
stop() {
	for f in "$dir"/*.pid; do
		[ -e "$f" ] || continue
		kill -9 "$(cat "$f")" 2>/dev/null || true
		rm -f "$f"
	done
}
trap 'stop; sleep 1; rm -rf "$dir"' EXIT
port() { "$bench" bench --free-port; }
node() { # binary name ip mqtt cluster peer peer
	"$1" serve --listen "mqtt://$3:$4" --data "$dir/$2" --node "$2" --cluster-listen "$3:$5" \
		--cluster-peer "$6" --cluster-peer "$7" >>"$dir/$2.log" 2>&1 &
	echo $! >"$dir/$2.pid"
}
ready() { # log
	i=0
	until grep -q "cluster retained messages caught up" "$1" 2>/dev/null; do
		i=$((i + 1)); [ $i -lt 3000 ] || { echo "timeout waiting for $1" >&2; exit 1; }
		sleep 0.1
	done
}
r=0
while [ $r -lt "$rounds" ]; do
	r=$((r + 1))
	for bin in $bins; do
		rm -rf "${dir:?}"/n? "$dir"/*.log
		m1=$(port); m2=$(port); m3=$(port); c1=$(port); c2=$(port); c3=$(port)
		node "$bin" n1 127.0.0.2 "$m1" "$c1" "127.0.0.3:$c2" "127.0.0.4:$c3"
		node "$bin" n2 127.0.0.3 "$m2" "$c2" "127.0.0.2:$c1" "127.0.0.4:$c3"
		node "$bin" n3 127.0.0.4 "$m3" "$c3" "127.0.0.2:$c1" "127.0.0.3:$c2"
		for n in n1 n2 n3; do ready "$dir/$n.log"; done
		sub=""
		[ "${XNODE:-0}" != 1 ] || sub="--sub-url mqtt://127.0.0.3:$m2"
		out=$("$bench" bench --duration "${DUR:-10s}" --warmup 1s -q -protocol 5 --url "mqtt://127.0.0.2:$m1" $sub "$@" 2>&1 || true)
		echo "round $r $bin $(echo "$out" | awk '/^published/{print $2, $3}') p50 $(echo "$out" | awk '/^latency/{print $3, $4}') load $(cut -d' ' -f1 /proc/loadavg)"
		stop
		sleep 1
	done
done
