#!/bin/sh
# Durable QoS 1 (persistent subscribers) on one node against a three-node
# cluster, measured side by side in one run, and the restart of a cluster
# node holding many replicated sessions. Results: bench/RESULTS.md.
#
#   bench/cluster/sessions.sh ROOST_BINARY [SESSIONS]
#
# SESSIONS (default 10000) persistent sessions for the restart; 0 skips it.
# Nodes on 127.0.0.2-4 (cluster) and 127.0.0.5 (single), data in a temp
# directory removed at the end.
set -eu
roost=$1
sessions=${2:-10000}
dir=$(mktemp -d)
cleanup() {
	for f in "$dir"/*.pid; do kill -9 "$(cat "$f")" 2>/dev/null || true; done
	sleep 1
	rm -rf "$dir"
}
trap cleanup EXIT
port() { "$roost" bench --free-port; }
m1=$(port); m2=$(port); m3=$(port); ms=$(port)
c1=$(port); c2=$(port); c3=$(port)
node() { # name ip mqtt cluster peer peer
	"$roost" serve --listen "mqtt://$2:$3" --data "$dir/$1" --node "$1" --cluster-listen "$2:$4" \
		--cluster-peer "$5" --cluster-peer "$6" >>"$dir/$1.log" 2>&1 &
	echo $! >"$dir/$1.pid"
}
start_n1() { node n1 127.0.0.2 "$m1" "$c1" "127.0.0.3:$c2" "127.0.0.4:$c3"; }
start_n1
node n2 127.0.0.3 "$m2" "$c2" "127.0.0.2:$c1" "127.0.0.4:$c3"
node n3 127.0.0.4 "$m3" "$c3" "127.0.0.2:$c1" "127.0.0.3:$c2"
"$roost" serve --listen "mqtt://127.0.0.5:$ms" --data "$dir/single" >"$dir/single.log" 2>&1 &
echo $! >"$dir/single.pid"
ready() { # log, line, count
	i=0
	while [ "$(grep -c "$2" "$1" 2>/dev/null || true)" -lt "$3" ]; do
		i=$((i + 1)); [ $i -lt 1200 ] || { echo "timeout waiting for $2 in $1" >&2; exit 1; }
		sleep 0.1
	done
}
for n in n1 n2 n3; do ready "$dir/$n.log" "cluster retained messages caught up" 1; done
ready "$dir/single.log" "listener ready" 1

b() { "$roost" bench --duration 5s --warmup 1s -q -protocol 5 "$@"; }
echo "== durable QoS 1 pairs (20 pairs, persistent subscribers)"
echo "-- single node";          b --url "mqtt://127.0.0.5:$ms" --persistent pairs -N 20 -qos 1
echo "-- cluster, same node";   b --url "mqtt://127.0.0.2:$m1" --persistent pairs -N 20 -qos 1
echo "-- cluster, cross-node";  b --url "mqtt://127.0.0.2:$m1" --sub-url "mqtt://127.0.0.3:$m2" --persistent pairs -N 20 -qos 1
echo "== clean QoS 1 pairs, for reference"
echo "-- single node";          b --url "mqtt://127.0.0.5:$ms" pairs -N 20 -qos 1
echo "-- cluster, same node";   b --url "mqtt://127.0.0.2:$m1" pairs -N 20 -qos 1

[ "$sessions" -gt 0 ] || exit 0
echo "== restart of a node holding $sessions replicated sessions"
start=$(date +%s.%N)
"$roost" bench --url "mqtt://127.0.0.2:$m1" -q -protocol 5 --persistent --duration 1s connections -C "$sessions" --batch 200 >/dev/null
echo "creating $sessions persistent sessions on n1: $(echo "$(date +%s.%N) - $start" | bc) s"
kill -9 "$(cat "$dir/n1.pid")"
sleep 1
start=$(date +%s.%N)
start_n1
ready "$dir/n1.log" "listener ready" 2
t_listen=$(echo "$(date +%s.%N) - $start" | bc)
ready "$dir/n1.log" "cluster session streams ready" 2
t_ready=$(echo "$(date +%s.%N) - $start" | bc)
grep "restored state" "$dir/n1.log" | tail -1
echo "n1 restart: serving its local copy after $t_listen s; owner records checked, replicating after $t_ready s"
