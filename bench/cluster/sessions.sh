#!/bin/sh
# Durable QoS 1 (persistent subscribers) on one node against a three-node
# cluster, measured side by side in one run, and the restart of a cluster
# node holding many replicated sessions. Results: bench/RESULTS.md.
#
#   bench/cluster/sessions.sh [--before OLD_BINARY] [--rounds N] [--logs DIR] [--qos Q] [--persistent-pub] ROOST_BINARY [SESSIONS]
#
# --qos 2 measures the durable figures at QoS 2 (default 1); --persistent-pub
# makes the publishers persistent sessions too (roost bench --persistent-pub:
# at QoS 2 a cluster then routes under Origins). The load generator is
# ROOST_BINARY's roost bench for both binaries.
#
# --before also measures OLD_BINARY's durable figures in the same run: the
# binaries take turns, a fresh cluster and single node each time, for N
# rounds (default 1; 2 or more evens out a machine whose load moves; 0
# skips the durable figures).
# SESSIONS (default 10000) persistent sessions for the restart; 0 skips it.
# They are made on node 1 of a ROOST_BINARY cluster by
# bench/cluster/mksessions (built here, so run this from the repository's
# root): Clean Start 0, Session Expiry 3600 s, one QoS 1 subscription each,
# 256 clients at a time. Then node 1 is killed (kill -9) and started
# again, twice, with ROOST_BINARY; with --before, OLD_BINARY and
# ROOST_BINARY take turns on the same data instead (two restarts each).
# --logs keeps the nodes' logs in DIR. Nodes on 127.0.0.2-4 (cluster) and
# 127.0.0.5 (single), data in a temp directory removed at the end.
set -eu
before=""
rounds=1
logs=""
qos=1
pubflag=""
while [ $# -gt 0 ]; do
	case $1 in
	--before) before=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--logs) logs=$2; shift 2 ;;
	--qos) qos=$2; shift 2 ;;
	--persistent-pub) pubflag=--persistent-pub; shift ;;
	*) break ;;
	esac
done
roost=$1
sessions=${2:-10000}
dir=$(mktemp -d)
stop_all() {
	for f in "$dir"/*.pid; do
		[ -e "$f" ] || continue
		kill -9 "$(cat "$f")" 2>/dev/null || true
		rm -f "$f"
	done
}
cleanup() {
	stop_all
	sleep 1
	[ -z "$logs" ] || { mkdir -p "$logs" && cp "$dir"/*.log "$logs"/; }
	rm -rf "$dir"
}
trap cleanup EXIT
port() { "$roost" bench --free-port; }
node() { # binary name ip mqtt cluster peer peer
	"$1" serve --listen "mqtt://$3:$4" --data "$dir/$2" --node "$2" --cluster-listen "$3:$5" \
		--cluster-peer "$6" --cluster-peer "$7" >>"$dir/$2.log" 2>&1 &
	echo $! >"$dir/$2.pid"
}
ready() { # log, line, count
	i=0
	while [ "$(grep -c "$2" "$1" 2>/dev/null || true)" -lt "$3" ]; do
		i=$((i + 1)); [ $i -lt 3000 ] || { echo "timeout waiting for $2 in $1" >&2; exit 1; }
		sleep 0.1
	done
}
# up BINARY: a fresh three-node cluster and single node of BINARY.
up() {
	stop_all
	sleep 1
	rm -rf "${dir:?}"/n? "$dir"/single "$dir"/*.log
	m1=$(port); m2=$(port); m3=$(port); ms=$(port)
	c1=$(port); c2=$(port); c3=$(port)
	bin=$1
	start_n1
	node "$bin" n2 127.0.0.3 "$m2" "$c2" "127.0.0.2:$c1" "127.0.0.4:$c3"
	node "$bin" n3 127.0.0.4 "$m3" "$c3" "127.0.0.2:$c1" "127.0.0.3:$c2"
	"$bin" serve --listen "mqtt://127.0.0.5:$ms" --data "$dir/single" >"$dir/single.log" 2>&1 &
	echo $! >"$dir/single.pid"
	for n in n1 n2 n3; do ready "$dir/$n.log" "cluster retained messages caught up" 1; done
	ready "$dir/single.log" "listener ready" 1
}
start_n1() { node "$bin" n1 127.0.0.2 "$m1" "$c1" "127.0.0.3:$c2" "127.0.0.4:$c3"; }

b() { "$roost" bench --duration 5s --warmup 1s -q -protocol 5 $pubflag "$@"; }
durable() { # label binary
	up "$2"
	echo "== $1: durable QoS $qos pairs (20 pairs, persistent subscribers${pubflag:+ and publishers})"
	echo "-- single node";          b --url "mqtt://127.0.0.5:$ms" --persistent pairs -N 20 -qos "$qos"
	echo "-- cluster, same node";   b --url "mqtt://127.0.0.2:$m1" --persistent pairs -N 20 -qos "$qos"
	echo "-- cluster, cross-node";  b --url "mqtt://127.0.0.2:$m1" --sub-url "mqtt://127.0.0.3:$m2" --persistent pairs -N 20 -qos "$qos"
	echo "== $1: clean QoS $qos pairs, for reference"
	echo "-- single node";          b --url "mqtt://127.0.0.5:$ms" pairs -N 20 -qos "$qos"
	echo "-- cluster, same node";   b --url "mqtt://127.0.0.2:$m1" pairs -N 20 -qos "$qos"
}
r=0
while [ $r -lt "$rounds" ]; do
	r=$((r + 1))
	[ -z "$before" ] || durable "round $r, before ($before)" "$before"
	durable "round $r, $roost" "$roost"
done

[ "$sessions" -gt 0 ] || exit 0
go build -o "$dir/mksessions" ./bench/cluster/mksessions
up "$roost"
echo "== restart of a node holding $sessions replicated sessions"
"$dir/mksessions" --url "mqtt://127.0.0.2:$m1" -n "$sessions" -parallel 256
restarts=0
restart() { # binary
	kill -9 "$(cat "$dir/n1.pid")"
	sleep 1
	echo "---- restarted with $1" >>"$dir/n1.log"
	restarts=$((restarts + 1))
	bin=$1
	start=$(date +%s.%N)
	start_n1
	ready "$dir/n1.log" "listener ready" $((restarts + 1))
	t_listen=$(echo "$(date +%s.%N) - $start" | bc)
	ready "$dir/n1.log" "cluster session streams ready" $((restarts + 1))
	t_ready=$(echo "$(date +%s.%N) - $start" | bc)
	sed -n "$(grep -n '^---- restarted' "$dir/n1.log" | tail -1 | cut -d: -f1),\$p" "$dir/n1.log" |
		grep -E 'restored state|ownership records ready|owners of restored sessions|session streams ready|interest caught up' || true
	echo "interest not sent (\"maximum payload exceeded\"): $(grep -c 'maximum payload' "$dir/n1.log" || true) times in n1's log so far"
	echo "n1 restart with $1: serving its local copy after $t_listen s; owner records checked, replicating after $t_ready s"
	sleep 5 # settled, well within adopt_after
}
for b in ${before:+"$before"} "$roost" ${before:+"$before"} "$roost"; do restart "$b"; done
