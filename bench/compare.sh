#!/usr/bin/env bash
# bench/compare.sh: Roost and mosquitto side by side, under the load of
# `roost bench`, with the scenarios and targets of issue #8. Writes
# bench/RESULTS.md. See docs/bench.md.
#
# Each measurement starts a fresh broker pinned to one CPU (taskset, CPU 0
# by default) and runs the load pinned to another (CPU 1), so each side has
# one core. Brokers alternate run by run (roost first in odd runs, mosquitto
# first in even ones) so slow drifts of a shared machine hit both alike, and
# the table reports medians.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: bench/compare.sh [flags]

  --runs N          measurements per scenario and broker (default 3)
  --quick           1 run each, short durations, 2,000 connections: a smoke
                    test of the script in about 8 minutes
  --only "A B"      run only these scenarios (fan-in fan-out pairs latency
                    connections overload causality causality-active; over
                    TLS and WebSocket:
                    the same with .tls, .ws or .wss, e.g. fan-in.wss;
                    durable; storm)
  --ref REF         build roost from git REF (git archive) instead of the
                    working tree
  --out FILE        where to write the report (default bench/RESULTS.md)
  --broker-cpu N    CPU for the brokers (default 0)
  --load-cpu N      CPU for the load generator (default 1)
  --keep            keep the work directory (logs, JSON results, configs)
  --from DIR        measure nothing: write the report again from the work
                    directory of an earlier run kept with --keep

Needs Debian or Ubuntu for installing mosquitto and jq when missing
(apt-get, through sudo unless root), Go, taskset and curl.
EOF
}

ARGS="$*" # for the report
RUNS=3
QUICK=0
ONLY="fan-in fan-out pairs latency connections overload causality causality-active"
# The paths users run (issue #18): every throughput, memory and overload
# scenario over TLS, WebSocket and WebSocket over TLS, QoS 1 to persistent
# sessions on each broker's disk store, and a restart under 19,900
# persistent sessions.
PATHS_TRANSPORTS="tls ws wss"
for t in $PATHS_TRANSPORTS; do
	for sc in fan-in fan-out pairs connections overload; do ONLY="$ONLY $sc.$t"; done
done
ONLY="$ONLY durable durable-memory storm"
REF=""
OUT=""
BCPU=0
LCPU=1
KEEP=0
FROM=""
while [ $# -gt 0 ]; do
	case "$1" in
	--runs) RUNS="$2"; shift 2 ;;
	--quick) QUICK=1; RUNS=1; shift ;;
	--only) ONLY="$2"; shift 2 ;;
	--ref) REF="$2"; shift 2 ;;
	--out) OUT="$2"; shift 2 ;;
	--broker-cpu) BCPU="$2"; shift 2 ;;
	--load-cpu) LCPU="$2"; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--from) FROM="$2"; KEEP=1; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "compare.sh: unknown flag $1" >&2; usage >&2; exit 2 ;;
	esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/bench/RESULTS.md}
if [ -n "$FROM" ]; then
	WORK=$(cd "$FROM" && pwd)
	[ -f "$WORK/meta.env" ] || { echo "compare.sh: $FROM is not a kept work directory (no meta.env)" >&2; exit 1; }
else
	WORK=$(mktemp -d /tmp/roost-compare.XXXXXX)
fi
BPID=""

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# stop_broker ends the running broker: SIGTERM, then SIGKILL after 15 s
# ($WORK/ctl.sh, which the storm scenario also runs).
stop_broker() {
	[ -n "$BPID" ] || return 0
	[ ! -x "$WORK/ctl.sh" ] || "$WORK/ctl.sh" stop || true
	BPID=""
}

cleanup() {
	stop_broker
	if [ "$KEEP" = 1 ]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ------------------------------------------------------------------

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
apt_install() {
	log "installing $* from Debian"
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
MOSQUITTO=$(command -v mosquitto || true)
[ -n "$MOSQUITTO" ] || [ ! -x /usr/sbin/mosquitto ] || MOSQUITTO=/usr/sbin/mosquitto
if [ -z "$MOSQUITTO" ]; then
	apt_install mosquitto
	MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
command -v jq >/dev/null || apt_install jq
for t in go taskset curl; do
	command -v "$t" >/dev/null || { echo "compare.sh: $t is needed" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
	echo "compare.sh: needs two CPUs (one for the broker, one for the load)" >&2
	exit 1
fi

ROOST=$WORK/roost
if [ -n "$FROM" ]; then
	: # built by the run that made the directory
elif [ -n "$REF" ]; then
	log "building roost from $REF"
	mkdir -p "$WORK/src"
	git -C "$REPO" archive "$REF" | tar -x -C "$WORK/src"
	(cd "$WORK/src" && go build -o "$ROOST" ./cmd/roost)
	COMMIT="$(git -C "$REPO" rev-parse "$REF")"
else
	log "building roost from the working tree"
	(cd "$REPO" && go build -o "$ROOST" ./cmd/roost)
	COMMIT="$(git -C "$REPO" rev-parse HEAD)"
	[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] || COMMIT="$COMMIT + uncommitted changes"
fi
mkdir -p "$WORK/json" "$WORK/log" "$WORK/data"

# --- scenarios ----------------------------------------------------------------

if [ "$QUICK" = 1 ]; then
	TIMES="--warmup 500ms --duration 2s"
	PTIMES="--warmup 500ms --duration 2s"
	CONNS=2000
	PCONNS=2000
	HOLD=3s
	TRIALS=50
else
	TIMES="--warmup 2s --duration 10s"
	# Shorter for the transport and durable variants: 17 more scenarios.
	PTIMES="--warmup 1s --duration 5s"
	CONNS=19900
	# Idle connections over TLS and WebSocket: fewer, because mosquitto
	# sets up WebSocket connections at about 70 a second here (19,900 took
	# it 285 s), and memory per connection is flat past a few thousand.
	PCONNS=5000
	# The result has the RSS 2 s after the last connection and at the end
	# of the hold: 10 s later, time for the broker's periodic clean-up
	# (Roost's memory trim looks every 500 ms, mosquitto has none).
	HOLD=12s
	TRIALS=500 # per gap: about 20 s a run
fi

# bench_args prints the roost bench arguments of a scenario.
bench_args() {
	case "$1" in
	*.tls | *.ws | *.wss | durable | durable-memory | storm) paths_args "$1" ;;
	fan-in) echo "fan-in -P 8 --qos 0 --size 64 $TIMES" ;;
	fan-out) echo "fan-out -S 100 --qos 0 --size 64 $TIMES" ;;
	pairs) echo "pairs -N 50 --qos 1 --size 64 $TIMES" ;;
	latency) echo "latency --rate 1000 --qos 0 --size 64 $TIMES" ;;
	connections) echo "connections -C $CONNS --batch 500 --duration $HOLD" ;;
	overload) echo "overload -P 8 --rate 50000 --sub-rate 1000 --qos 0 --size 64 --sys-dropped $TIMES" ;;
	causality) echo "causality --trials $TRIALS --idle 300ms --quiet 10ms" ;;
	# Idle for less than Roost's parkIdle (50 ms): readers wait in Go's
	# netpoller, not in the broker's poller, which orders parked ones.
	causality-active) echo "causality --trials $TRIALS --idle 20ms --quiet 2ms" ;;
	*) echo "compare.sh: unknown scenario $1" >&2; exit 2 ;;
	esac
}

# paths_args prints the arguments of a transport variant (SCENARIO.T),
# durable or storm.
paths_args() {
	case "$1" in
	durable | durable-memory) echo "pairs -N 50 --qos 1 --size 64 --persistent $PTIMES" ;;
	storm) echo "storm -C $CONNS --duration 2m" ;;
	connections.*) echo "connections -C $PCONNS --batch 500 --duration $HOLD --insecure" ;;
	overload.*) echo "overload -P 8 --rate 50000 --sub-rate 1000 --qos 0 --size 64 --sys-dropped $PTIMES --insecure" ;;
	fan-in.*) echo "fan-in -P 8 --qos 0 --size 64 $PTIMES --insecure" ;;
	fan-out.*) echo "fan-out -S 100 --qos 0 --size 64 $PTIMES --insecure" ;;
	pairs.*) echo "pairs -N 50 --qos 1 --size 64 $PTIMES --insecure" ;;
	*) echo "compare.sh: unknown scenario $1" >&2; exit 2 ;;
	esac
}

# url_of prints the broker URL a scenario's load connects to.
url_of() {
	case "$1" in
	*.tls) echo "mqtts://127.0.0.1:$TLSPORT" ;;
	*.ws) echo "ws://127.0.0.1:$WSPORT/mqtt" ;;
	*.wss) echo "wss://127.0.0.1:$WSSPORT/mqtt" ;;
	*) echo "mqtt://127.0.0.1:$PORT" ;;
	esac
}

# mode_of: durable and storm run both brokers with their disk stores.
mode_of() {
	case "$1" in
	durable | storm) echo durable ;;
	*) echo memory ;;
	esac
}

# --- brokers ------------------------------------------------------------------

free_port() { "$ROOST" bench --free-port; }

# Both brokers: no persistence, anonymous, queues and in-flight windows far
# above what a scenario needs, $SYS every second (overload reads its drop
# count), warnings only in the log (per-connection log lines would cost the
# connections scenario), Nagle off (Roost, being Go, always has it off).
# Each listens on TCP, TLS, WebSocket and WebSocket over TLS, with the same
# certificate (roost cert dev: ECDSA P-256). In durable mode (durable,
# storm) Roost uses its default disk store (sync always) in DATA and
# mosquitto persistence true there.
write_configs() {
	local port=$1 http=$2 mode=$3 data=$4
	local persist="persistence false"
	[ "$mode" != durable ] || persist="persistence true
persistence_location $data/"
	# user: mosquitto started as root switches to the user mosquitto, which
	# cannot read the certificate or write the store in the private work
	# directory; Roost runs as the invoking user too.
	cat >"$WORK/mosquitto.conf" <<EOF
user $(id -un)
listener $port 127.0.0.1
allow_anonymous true
$persist
max_queued_messages 100000
max_inflight_messages 1000
max_queued_bytes 0
memory_limit 0
max_connections -1
sys_interval 1
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
connection_messages false
listener $TLSPORT 127.0.0.1
certfile $WORK/pki/server.pem
keyfile $WORK/pki/server-key.pem
listener $WSPORT 127.0.0.1
protocol websockets
listener $WSSPORT 127.0.0.1
protocol websockets
certfile $WORK/pki/server.pem
keyfile $WORK/pki/server-key.pem
EOF
	local store="  memory: true"
	[ "$mode" != durable ] || store="  data: $data"
	cat >"$WORK/roost.yaml" <<EOF
listeners:
  - url: mqtt://127.0.0.1:$port
  - url: mqtts://127.0.0.1:$TLSPORT
    tls: {cert: $WORK/pki/server.pem, key: $WORK/pki/server-key.pem}
  - url: ws://127.0.0.1:$WSPORT/mqtt
  - url: wss://127.0.0.1:$WSSPORT/mqtt
    tls: {cert: $WORK/pki/server.pem, key: $WORK/pki/server-key.pem}
log:
  level: warn
limits:
  max_inflight: 1000
  max_queued: 100000
sys_interval: 1s
store:
$store
http:
  addr: 127.0.0.1:$http
EOF
}

# write_ctl writes $WORK/ctl.sh, which starts a broker (start) or stops it
# (stop), each returning only when done: listening, or exited. compare.sh
# starts and stops every broker through it, and the storm scenario
# restarts one with it (roost bench --stop-cmd/--start-cmd).
write_ctl() {
	cat >"$WORK/ctl.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
W=$WORK
EOF
	cat >>"$WORK/ctl.sh" <<'EOF'
. "$W/broker.env" # B, MODE, PORT, PORTS, BCPU, ROOST, MOSQUITTO
# alive: the process exists and is not a zombie (the broker is not this
# script's child, and whoever reaps it may take a moment).
alive() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
case "$1" in
start)
	flags=""
	[ "$MODE" = durable ] || flags=--memory
	case "$B" in
	# shellcheck disable=SC2086
	roost) taskset -c "$BCPU" "$ROOST" serve --config "$W/roost.yaml" $flags >>"$W/log/broker-roost.log" 2>&1 </dev/null & ;;
	mosquitto) taskset -c "$BCPU" "$MOSQUITTO" -c "$W/mosquitto.conf" >>"$W/log/broker-mosquitto.log" 2>&1 </dev/null & ;;
	esac
	pid=$! # taskset execs the broker: this is the broker's pid
	echo "$pid" >"$W/broker.pid"
	for _ in $(seq 1500); do # 30 s: a restart restores 19,900 sessions
		if ! alive "$pid"; then
			echo "ctl.sh: $B exited at start; its log:" >&2
			tail -20 "$W/log/broker-$B.log" >&2
			exit 1
		fi
		# Every listener: mosquitto opens its WebSocket ones after TCP,
		# and a load that came too soon was refused.
		up=1
		for p in $PORTS; do
			(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { up=0; break; }
		done
		[ "$up" = 0 ] || exit 0
		sleep 0.02
	done
	echo "ctl.sh: $B is not listening on all of $PORTS after 30 s" >&2
	kill -KILL "$pid" 2>/dev/null || true
	exit 1
	;;
stop)
	pid=$(cat "$W/broker.pid")
	alive "$pid" || exit 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 750); do # 15 s
		alive "$pid" || exit 0
		sleep 0.02
	done
	kill -KILL "$pid" 2>/dev/null || true
	echo "ctl.sh: $B did not exit within 15 s of SIGTERM; killed" >&2
	exit 1
	;;
esac
EOF
	chmod +x "$WORK/ctl.sh"
}

# start_broker starts $1 (roost or mosquitto) in mode $2 (memory or
# durable, with a fresh data directory $3) pinned to BCPU on free ports,
# sets PORT, TLSPORT, WSPORT, WSSPORT, HTTP and BPID, and waits until it
# accepts connections.
start_broker() {
	local attempt
	for attempt in 1 2 3; do
		start_broker_once "$@" && return 0
		# A port picked free may be taken by the time the broker binds it
		# (the machine is shared): then mosquitto exits at start.
		log "$1 did not start (attempt $attempt); trying other ports"
	done
	exit 1
}

# free_ports sets PORT, TLSPORT, WSPORT, WSSPORT and HTTP to distinct free
# ports.
free_ports() {
	local picked="" p v
	for v in PORT TLSPORT WSPORT WSSPORT HTTP; do
		p=$(free_port)
		while [[ " $picked " == *" $p "* ]]; do p=$(free_port); done
		picked="$picked $p"
		printf -v "$v" '%s' "$p"
	done
}

start_broker_once() {
	free_ports
	rm -rf "$3"
	mkdir -p "$3"
	write_configs "$PORT" "$HTTP" "$2" "$3"
	printf 'B=%q\nMODE=%q\nPORT=%q\nPORTS=%q\nBCPU=%q\nROOST=%q\nMOSQUITTO=%q\n' "$1" "$2" "$PORT" \
		"$PORT $TLSPORT $WSPORT $WSSPORT" "$BCPU" "$ROOST" "$MOSQUITTO" >"$WORK/broker.env"
	"$WORK/ctl.sh" start || return 1
	BPID=$(cat "$WORK/broker.pid")
}

# measure runs scenario $1 against broker $2, run $3, into a JSON file.
measure() {
	local sc=$1 b=$2 run=$3
	local json="$WORK/json/$sc-$b-$run.json"
	start_broker "$b" "$(mode_of "$sc")" "$WORK/data/$sc-$b-$run"
	sleep 0.5 # let it settle: the RSS before the load is part of the result
	local hooks=()
	[ "$sc" != storm ] || hooks=(--stop-cmd "$WORK/ctl.sh stop" --start-cmd "$WORK/ctl.sh start")
	# shellcheck disable=SC2046 # bench_args is a list of arguments
	if ! taskset -c "$LCPU" "$ROOST" bench $(bench_args "$sc") -q --url "$(url_of "$sc")" \
		--pid "$BPID" "${hooks[@]}" --json "$json" >"$WORK/log/$sc-$b-$run.txt" 2>&1; then
		log "$sc on $b (run $run) failed:"
		tail -5 "$WORK/log/$sc-$b-$run.txt" >&2
	fi
	if [ "$b" = roost ] && [ "$sc" = overload ]; then
		curl -sf "http://127.0.0.1:$HTTP/metrics" | grep '^roost_messages_dropped_total' \
			>"$WORK/log/overload-metrics-$run.txt" || true
	fi
	stop_broker
	rm -rf "$WORK/data/$sc-$b-$run" # up to 64 MiB of Roost's ballast each
	log "$sc on $b (run $run): $(summary "$sc" "$json")"
}

# --- numbers --------------------------------------------------------------------

# value prints a jq expression of a result file, or nothing when the run
# failed or did not produce it.
value() {
	[ -s "$2" ] || return 0
	jq -r "$1 // empty" "$2" 2>/dev/null || true
}

summary() {
	case "$1" in
	storm) echo "restart $(value .storm.restart_s "$2") s, all back with the message at $(value .storm.all_received_s "$2") s, $(value .storm.sessions_lost "$2") sessions lost" ;;
	connections*) echo "$(value .connections.opened "$2") opened, $(value .connections.connect_rate "$2")/s, $(value .broker.kib_per_conn_settled "$2") KiB/conn after 2 s, $(value .broker.kib_per_conn "$2") at the end" ;;
	overload*) echo "max RSS $(value .broker.rss_max_kib "$2") KiB, dropped $(value .broker.dropped "$2")" ;;
	pairs* | durable*) echo "$(value .deliver_rate "$2") msgs/s, p99 $(value .latency.p99_us "$2") µs" ;;
	pairs) echo "$(value .deliver_rate "$2") msgs/s, p99 $(value .latency.p99_us "$2") µs" ;;
	latency) echo "p50 $(value .latency.p50_us "$2") µs, p99 $(value .latency.p99_us "$2") µs" ;;
	connections) echo "$(value .connections.opened "$2") opened, $(value .broker.kib_per_conn "$2") KiB/conn" ;;
	overload) echo "max RSS $(value .broker.rss_max_kib "$2") KiB, dropped $(value .broker.dropped "$2")" ;;
	causality*) echo "inversions per 1,000 at 50 µs / 500 µs / 2 ms: $(value '[.causality.gaps[].per_1000 | tostring] | join(" / ")' "$2")" ;;
	*) echo "$(value .deliver_rate "$2") msgs/s" ;;
	esac
}

# values prints jq expression $3 of every run of scenario $1 on broker $2.
values() {
	local run v
	for run in $(seq "$RUNS"); do
		v=$(value "$3" "$WORK/json/$1-$2-$run.json")
		[ -z "$v" ] || echo "$v"
	done
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# fmt_num rounds for the table: whole numbers and anything of 100 or more
# as integers with separators, else two decimals.
fmt_num() {
	[ -n "$1" ] || { echo "n/a"; return; }
	awk -v x="$1" 'BEGIN {
		if (x >= 100 || x <= -100 || x == int(x)) { s = sprintf("%.0f", x); n = ""; neg = (substr(s,1,1) == "-"); if (neg) s = substr(s,2)
			while (length(s) > 3) { n = "," substr(s, length(s)-2) n; s = substr(s, 1, length(s)-3) }
			printf "%s%s%s", (neg ? "-" : ""), s, n }
		else printf "%.2f", x }'
}

ratio() {
	[ -n "$1" ] && [ -n "$2" ] || { echo "n/a"; return; }
	awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2fx", a / b }'
}

# verdict checks a target: "min R" (ratio at least R), "max R" (ratio at
# most R) or "abs-max V" (roost's value at most V).
verdict() {
	local kind=$1 lim=$2 r=$3 m=$4
	[ -n "$r" ] || { echo "no data"; return; }
	case "$kind" in
	info) echo "" ;;
	abs-max) awk -v v="$r" -v l="$lim" 'BEGIN { print (v <= l ? "**met**" : "missed") }' ;;
	*)
		[ -n "$m" ] || { echo "no data"; return; }
		awk -v a="$r" -v b="$m" -v l="$lim" -v k="$kind" 'BEGIN {
			if (b == 0) { print "n/a"; exit }
			x = a / b; ok = (k == "min") ? (x >= l) : (x <= l); print (ok ? "**met**" : "missed") }'
		;;
	esac
}

# paths_rows prints the rows of issue #18's scenarios: each transport,
# durable, storm.
paths_rows() {
	local t name mem hs
	for t in $PATHS_TRANSPORTS; do
		case $t in
		tls) name="TLS" mem="≤ 2x" hs="≥ 1x" ;;
		ws) name="WebSocket" mem="" hs="" ;;
		wss) name="WebSocket over TLS" mem="≤ 2x" hs="≥ 1x" ;;
		esac
		local mk=max hk=min
		[ -n "$mem" ] || mk=info
		[ -n "$hs" ] || hk=info
		row "fan-in.$t" "fan-in, $name" "delivered msgs/s" .deliver_rate "≥ 3x" min 3
		row "fan-out.$t" "fan-out, $name" "deliveries/s" .deliver_rate "≥ 3x" min 3
		row "pairs.$t" "pairs QoS 1, $name" "msgs/s" .deliver_rate "≥ 3x" min 3
		row "pairs.$t" "pairs QoS 1, $name" "p99 latency µs" .latency.p99_us "" info 0
		row "connections.$t" "idle connections, $name ($(fmt_num "$PCONNS") asked)" "KiB per connection, 2 s after the last" .broker.kib_per_conn_settled "$mem" "$mk" 2
		row "connections.$t" "idle connections, $name" "KiB per connection, end of hold" .broker.kib_per_conn "$mem" "$mk" 2
		row "connections.$t" "idle connections, $name" "connects/s" .connections.connect_rate "$hs" "$hk" 1
		row "connections.$t" "idle connections, $name" "opened" .connections.opened "all" info 0
		row "overload.$t" "overload, $name" "broker max RSS KiB" .broker.rss_max_kib "bounded" info 0
		row "overload.$t" "overload, $name" "broker drops (\$SYS)" .broker.dropped "counted" info 0
		row "overload.$t" "overload, $name" "missing at the end" .missing "" info 0
	done
	row durable "durable: pairs QoS 1 to persistent sessions, disk stores" "msgs/s" .deliver_rate "≥ 1x" min 1
	row durable "durable" "p99 latency µs" .latency.p99_us "" info 0
	row durable-memory "the same in memory (roost --memory, mosquitto persistence false)" "msgs/s" .deliver_rate "" info 0
	row storm "storm: $(fmt_num "$CONNS") persistent sessions, broker restarted" "s until all are back with the message" .storm.all_received_s "≤ 1x" max 1
	row storm "storm" "s until all are connected" .storm.all_connected_s "" info 0
	row storm "storm" "restart s (stop + start)" .storm.restart_s "" info 0
	row storm "storm" "stop s" .storm.stop_s "" info 0
	row storm "storm" "start s" .storm.start_s "" info 0
	row storm "storm" "sessions lost" .storm.sessions_lost "0" info 0
	row storm "storm" "received the message" .storm.received "all" info 0
}

runs_list() { values "$1" "$2" "$3" | while read -r v; do fmt_num "$v"; echo; done | paste -sd' ' -; }

# row prints one table row: scenario label, metric label, jq expression,
# target text, target kind and limit.
row() {
	local sc=$1 label=$2 metric=$3 expr=$4 target=$5 kind=$6 lim=$7
	case " $ONLY " in *" $sc "*) ;; *) return 0 ;; esac
	local r m
	r=$(values "$sc" roost "$expr" | median)
	m=$(values "$sc" mosquitto "$expr" | median)
	printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s |\n' "$label" "$metric" "$target" \
		"$(fmt_num "$r")" "$(fmt_num "$m")" "$(ratio "$r" "$m")" "$(verdict "$kind" "$lim" "$r" "$m")" \
		"$(runs_list "$sc" roost "$expr")" "$(runs_list "$sc" mosquitto "$expr")"
}

cpu_row() {
	local sc=$1
	case " $ONLY " in *" $sc "*) ;; *) return 0 ;; esac
	printf '| %s | %s | %s | %s | %s |\n' "$sc" \
		"$(fmt_num "$(values "$sc" roost .load_cpu | median)")" "$(fmt_num "$(values "$sc" roost .broker.cpu | median)")" \
		"$(fmt_num "$(values "$sc" mosquitto .load_cpu | median)")" "$(fmt_num "$(values "$sc" mosquitto .broker.cpu | median)")"
}

# --- run --------------------------------------------------------------------------

if [ -z "$FROM" ]; then
	LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
	STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
	log "results go to $WORK/json; $RUNS run(s) per scenario and broker"
	"$ROOST" cert dev --dir "$WORK/pki" >/dev/null
	write_ctl
	for sc in $ONLY; do
		bench_args "$sc" >/dev/null
		for run in $(seq "$RUNS"); do
			if [ $((run % 2)) = 1 ]; then order="roost mosquitto"; else order="mosquitto roost"; fi
			for b in $order; do
				measure "$sc" "$b" "$run"
			done
		done
	done
	LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
	# What --from needs to write the report again.
	for v in ARGS RUNS QUICK ONLY COMMIT STARTED LOAD_BEFORE LOAD_AFTER TIMES PTIMES CONNS PCONNS HOLD BCPU LCPU MOSQUITTO PATHS_TRANSPORTS; do
		printf '%s=%q\n' "$v" "${!v}"
	done >"$WORK/meta.env"
else
	# shellcheck source=/dev/null
	. "$WORK/meta.env"
fi

# --- report ------------------------------------------------------------------------

MOSQ_VERSION=$("$MOSQUITTO" -h 2>/dev/null | head -1 || true)
ROOST_VERSION=$("$ROOST" version | tr '\n' ' ')
GO_VERSION=$(go version)
KERNEL=$(uname -srm)
CPU_MODEL=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
NOISE=$(awk -v a="$LOAD_BEFORE" -v b="$LOAD_AFTER" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ")
	if (x[1] > n / 2 || y[1] > n + 0.5) print "yes" }')
MODE="full run"
[ "$QUICK" = 0 ] || MODE="**--quick: a smoke test of the script, not a measurement**"

{
	cat <<EOF
# Roost vs mosquitto

Produced by \`bench/compare.sh\` on $STARTED ($MODE, $RUNS run(s) per
scenario and broker), as \`bench/compare.sh${ARGS:+ $ARGS}\`. **To
reproduce:** \`bench/compare.sh\` from the repository root (about 40
minutes; \`--only "fan-in pairs"\` for a part, \`--runs 5\` for steadier
medians, \`--quick\` for a smoke test, \`--ref COMMIT\` to measure the
commit below).
[docs/bench.md](../docs/bench.md) explains the scenarios and how to read
them.

Each measurement starts a fresh broker pinned to CPU $BCPU
(\`taskset -c $BCPU\`) and runs \`roost bench\` pinned to CPU $LCPU, so the
broker has one core and the load another. Brokers alternate run by run; the
table shows medians and every run. Ratios are roost / mosquitto.

## Results
$(if [ -n "$NOISE" ]; then cat <<'NOISY'

> **Noisy run.** The load average (see Environment) shows other processes
> competing for the CPUs the broker and the load were pinned to: pinning
> keeps the two apart but does not keep others off. Throughput figures are
> then lower than the machine can do and tail latencies mostly measure the
> scheduler. Compare the ratios, not the absolute numbers, and prefer a
> rerun on a quiet machine.
NOISY
fi)

| scenario | metric | target | roost | mosquitto | ratio | target | runs: roost / mosquitto |
|---|---|---|---|---|---|---|---|
EOF
	row fan-in "fan-in, 8 → 1, QoS 0, 64 B" "delivered msgs/s" .deliver_rate "≥ 3x" min 3
	row fan-out "fan-out, 1 → 100, QoS 0, 64 B" "deliveries/s" .deliver_rate "≥ 4x" min 4
	row pairs "pairs, 50, QoS 1, 64 B" "msgs/s" .deliver_rate "≥ 2.5x" min 2.5
	row pairs "pairs, 50, QoS 1, 64 B" "p99 latency µs" .latency.p99_us "≤ 1x" max 1
	row latency "latency, 1,000 msgs/s, QoS 0" "p99 latency µs" .latency.p99_us "≤ 0.8x" max 0.8
	row latency "latency, 1,000 msgs/s, QoS 0" "p50 latency µs" .latency.p50_us "" info 0
	row connections "idle connections ($(fmt_num "$CONNS") asked)" "broker KiB per connection, end of hold ($HOLD)" .broker.kib_per_conn "≤ 2 KiB" abs-max 2
	row connections "idle connections" "KiB per connection, 2 s after the last" .broker.kib_per_conn_settled "≤ 2 KiB" abs-max 2
	row connections "idle connections" "KiB per connection, largest sample while held" .broker.kib_per_conn_max "≤ 2 KiB" abs-max 2
	row connections "idle connections" "KiB per connection, second half only" \
		'.connections.steps as $s | ($s | length) as $n | select($n >= 2) | $s[($n / 2 | floor)] as $h | $s[-1] as $l | select($l.conns > $h.conns) | ($l.rss_kib - $h.rss_kib) / ($l.conns - $h.conns)' \
		"flat" info 0
	row connections "idle connections" "opened" .connections.opened "all" info 0
	row connections "idle connections" "connects/s" .connections.connect_rate "" info 0
	row overload "overload, 8 pubs at 50,000 msgs/s → 1 sub reading 1,000/s" "broker max RSS KiB" .broker.rss_max_kib "bounded" info 0
	row overload "overload" "broker drops (\$SYS)" .broker.dropped "counted" info 0
	row overload "overload" "published msgs/s" .publish_rate "" info 0
	row overload "overload" "missing at the end" .missing "" info 0
	# Arrival order across connections (issue 18): see docs/bench.md.
	row causality "causality: SUBSCRIBE, then PUBLISH on another idle connection" "inversions per 1,000, 50 µs later" '.causality.gaps[0].per_1000' "as mosquitto" info 0
	row causality "causality" "inversions per 1,000, 500 µs later" '.causality.gaps[1].per_1000' "as mosquitto" info 0
	row causality "causality" "inversions per 1,000, 2 ms later" '.causality.gaps[2].per_1000' "as mosquitto" info 0
	row causality "causality" "wake-up to PUBACK p50 µs (50 µs gap)" '.causality.gaps[0].puback.p50_us' "" info 0
	row causality-active "causality, connections idle 20 ms (not parked)" "inversions per 1,000, 50 µs later" '.causality.gaps[0].per_1000' "as mosquitto" info 0
	row causality-active "causality, idle 20 ms" "inversions per 1,000, 500 µs later" '.causality.gaps[1].per_1000' "as mosquitto" info 0
	row causality-active "causality, idle 20 ms" "inversions per 1,000, 2 ms later" '.causality.gaps[2].per_1000' "as mosquitto" info 0
	paths_rows
	cat <<EOF

"info" rows have no numeric target ("met" cannot be computed); overload's
target is judged by reading its rows: the broker's RSS must stay bounded
while the publishers outrun the subscriber, and every message that did not
arrive must be either counted as dropped or still queued ("missing" counts
both). When the broker slows its publishers down instead (TCP
back-pressure), "published msgs/s" falls short of 50,000. For connections,
"second half only" is the RSS growth per connection between half and all of
them open (one RSS sample per batch of 500): equal to the overall figure
when memory per connection is flat.

### CPU during the measured interval (cores, median)

The load generator must stay well below 1.0, or it, not the broker, was the
limit; a broker well below 1.0 in a throughput scenario was held back by
something else (the machine is shared: see the load average below).

| scenario | load (vs roost) | roost | load (vs mosquitto) | mosquitto |
|---|---|---|---|---|
EOF
	for sc in $ONLY; do cpu_row "$sc"; done
	if ls "$WORK"/log/overload-metrics-*.txt >/dev/null 2>&1; then
		echo
		echo "Roost's own drop counters after the last overload run (\`/metrics\`):"
		echo
		echo '```'
		cat "$(ls "$WORK"/log/overload-metrics-*.txt | tail -1)"
		echo '```'
	fi
	cat <<EOF

## Environment

- roost: $ROOST_VERSION(commit $COMMIT)
- $MOSQ_VERSION (Debian package)
- $GO_VERSION
- $KERNEL, $(nproc) CPUs: $CPU_MODEL
- load average before: $LOAD_BEFORE, after: $LOAD_AFTER
- open-file limit: $(ulimit -n) (the bench process needs one per connection)

## Commands

Per scenario and run, for each broker (PORT, PID and the JSON file vary):

\`\`\`sh
EOF
	for sc in $ONLY; do
		local_hooks=""
		[ "$sc" != storm ] || local_hooks=" --stop-cmd 'ctl.sh stop' --start-cmd 'ctl.sh start'"
		echo "taskset -c $LCPU roost bench $(bench_args "$sc") -q --url $(PORT=PORT TLSPORT=TLSPORT WSPORT=WSPORT WSSPORT=WSSPORT url_of "$sc") --pid PID$local_hooks --json FILE"
	done
	cat <<EOF
\`\`\`

Brokers:

\`\`\`sh
taskset -c $BCPU roost serve --config roost.yaml --memory   # durable and storm: without --memory
taskset -c $BCPU $MOSQUITTO -c mosquitto.conf
\`\`\`

Started and stopped by ctl.sh (in the kept work directory), which storm
also runs to restart a broker. The configurations of the last
measurement (durable and storm: \`store: data: DIR\` instead of
\`memory: true\`, and \`persistence true\` with a
\`persistence_location\`):

roost.yaml:

\`\`\`yaml
$(cat "$WORK/roost.yaml")
\`\`\`

mosquitto.conf:

\`\`\`
$(cat "$WORK/mosquitto.conf")
\`\`\`
EOF
} >"$OUT"
log "wrote $OUT"
