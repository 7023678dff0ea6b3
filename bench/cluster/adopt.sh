#!/bin/sh
# Adoption of a killed node's persistent sessions by the survivors
# (cluster/janitor.go). Results: bench/cluster/adopt.txt.
#
#   bench/cluster/adopt.sh [--logs DIR] ROOST_BINARY [SESSIONS]
#
# A fresh three-node cluster of ROOST_BINARY (nodes on 127.0.0.2-4, data in
# a temp directory removed at the end); SESSIONS (default 10000)
# persistent sessions are made on node 1 by bench/cluster/mksessions
# (built here, so run this from the repository's root: Clean Start 0,
# Session Expiry 3600 s, one QoS 1 subscription each, 256 clients at a
# time); then node 1 is killed (kill -9) and not started again. It prints
# how long after the kill the survivors had adopted every session (each
# logs "session of a silent node adopted"; cluster.adopt_after is the
# default 10 s of that), and each survivor's summary line ("records of
# silent nodes handled": the adoption's own time, split into the owner
# scan, the partition reads, the claims and the held-message reads).
# --logs keeps the nodes' logs in DIR.
set -eu
logs=""
while [ $# -gt 0 ]; do
	case $1 in
	--logs) logs=$2; shift 2 ;;
	*) break ;;
	esac
done
roost=$1
sessions=${2:-10000}
dir=$(mktemp -d)
cleanup() {
	for f in "$dir"/*.pid; do
		[ -e "$f" ] || continue
		kill -9 "$(cat "$f")" 2>/dev/null || true
	done
	sleep 1
	[ -z "$logs" ] || { mkdir -p "$logs" && cp "$dir"/*.log "$logs"/; }
	rm -rf "$dir"
}
trap cleanup EXIT
port() { "$roost" bench --free-port; }
node() { # name ip mqtt cluster peer peer
	"$roost" serve --listen "mqtt://$2:$3" --data "$dir/$1" --node "$1" --cluster-listen "$2:$4" \
		--cluster-peer "$5" --cluster-peer "$6" >>"$dir/$1.log" 2>&1 &
	echo $! >"$dir/$1.pid"
}
count() { grep -c "$2" "$1" 2>/dev/null || true; }
ready() { # log, line
	i=0
	while [ "$(count "$1" "$2")" -lt 1 ]; do
		i=$((i + 1)); [ $i -lt 3000 ] || { echo "timeout waiting for $2 in $1" >&2; exit 1; }
		sleep 0.1
	done
}
m1=$(port); m2=$(port); m3=$(port)
c1=$(port); c2=$(port); c3=$(port)
node n1 127.0.0.2 "$m1" "$c1" "127.0.0.3:$c2" "127.0.0.4:$c3"
node n2 127.0.0.3 "$m2" "$c2" "127.0.0.2:$c1" "127.0.0.4:$c3"
node n3 127.0.0.4 "$m3" "$c3" "127.0.0.2:$c1" "127.0.0.3:$c2"
for n in n1 n2 n3; do ready "$dir/$n.log" "cluster retained messages caught up"; done
go build -o "$dir/mksessions" ./bench/cluster/mksessions
echo "== adoption of $sessions persistent sessions of a killed node ($(uname -n), load $(cut -d' ' -f1-3 /proc/loadavg))"
"$dir/mksessions" --url "mqtt://127.0.0.2:$m1" -n "$sessions" -parallel 256
sleep 2 # the last sessions' ops replicated
kill -9 "$(cat "$dir/n1.pid")"
killed=$(date +%s.%N)
i=0
line='"session of a silent node adopted"'
while [ $(($(count "$dir/n2.log" "$line") + $(count "$dir/n3.log" "$line"))) -lt "$sessions" ]; do
	i=$((i + 1)); [ $i -lt 36000 ] || { echo "not all adopted within an hour" >&2; exit 1; }
	sleep 0.1
done
t=$(echo "$(date +%s.%N) - $killed" | bc)
i=0
while [ $(($(count "$dir/n2.log" "records of silent nodes handled") + $(count "$dir/n3.log" "records of silent nodes handled"))) -lt 2 ]; do
	i=$((i + 1)); [ $i -lt 600 ] || break
	sleep 0.1
done
grep -h "records of silent nodes handled" "$dir/n2.log" "$dir/n3.log" | sed 's/^time=[^ ]* level=INFO //'
echo "all $sessions sessions adopted $t s after the kill (adopt_after 10 s; load $(cut -d' ' -f1-3 /proc/loadavg))"
