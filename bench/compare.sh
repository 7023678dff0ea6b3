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
                    test of the script in about two minutes
  --only "A B"      run only these scenarios (fan-in fan-out pairs latency
                    connections overload causality)
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
ONLY="fan-in fan-out pairs latency connections overload causality"
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

# stop_broker ends the running broker: SIGTERM, then SIGKILL after 15 s.
stop_broker() {
	[ -n "$BPID" ] || return 0
	if kill -0 "$BPID" 2>/dev/null; then
		kill -TERM "$BPID" 2>/dev/null || true
		for _ in $(seq 150); do
			kill -0 "$BPID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$BPID" 2>/dev/null || true
	fi
	wait "$BPID" 2>/dev/null || true
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
mkdir -p "$WORK/json" "$WORK/log"

# --- scenarios ----------------------------------------------------------------

if [ "$QUICK" = 1 ]; then
	TIMES="--warmup 500ms --duration 2s"
	CONNS=2000
	HOLD=2s
	TRIALS=50
else
	TIMES="--warmup 2s --duration 10s"
	CONNS=19900
	HOLD=10s
	TRIALS=500 # per gap: about 20 s a run
fi

# bench_args prints the roost bench arguments of a scenario.
bench_args() {
	case "$1" in
	fan-in) echo "fan-in -P 8 --qos 0 --size 64 $TIMES" ;;
	fan-out) echo "fan-out -S 100 --qos 0 --size 64 $TIMES" ;;
	pairs) echo "pairs -N 50 --qos 1 --size 64 $TIMES" ;;
	latency) echo "latency --rate 1000 --qos 0 --size 64 $TIMES" ;;
	connections) echo "connections -C $CONNS --batch 500 --duration $HOLD" ;;
	overload) echo "overload -P 8 --rate 50000 --sub-rate 1000 --qos 0 --size 64 --sys-dropped $TIMES" ;;
	causality) echo "causality --trials $TRIALS --idle 300ms --quiet 10ms" ;;
	*) echo "compare.sh: unknown scenario $1" >&2; exit 2 ;;
	esac
}

# --- brokers ------------------------------------------------------------------

free_port() { "$ROOST" bench --free-port; }

# Both brokers: no persistence, anonymous, queues and in-flight windows far
# above what a scenario needs, $SYS every second (overload reads its drop
# count), warnings only in the log (per-connection log lines would cost the
# connections scenario), Nagle off (Roost, being Go, always has it off).
write_configs() {
	local port=$1 http=$2
	cat >"$WORK/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
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
EOF
	cat >"$WORK/roost.yaml" <<EOF
listeners:
  - url: mqtt://127.0.0.1:$port
log:
  level: warn
limits:
  max_inflight: 1000
  max_queued: 100000
sys_interval: 1s
store:
  memory: true
http:
  addr: 127.0.0.1:$http
EOF
}

# start_broker starts $1 (roost or mosquitto) pinned to BCPU on a free port,
# sets PORT, HTTP and BPID, and waits until it accepts connections.
start_broker() {
	PORT=$(free_port)
	HTTP=$(free_port)
	write_configs "$PORT" "$HTTP"
	local logf="$WORK/log/broker-$1.log"
	case "$1" in
	roost) taskset -c "$BCPU" "$ROOST" serve --config "$WORK/roost.yaml" --memory >>"$logf" 2>&1 & ;;
	mosquitto) taskset -c "$BCPU" "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$logf" 2>&1 & ;;
	esac
	BPID=$! # taskset execs the broker: this is the broker's pid
	for _ in $(seq 100); do
		if ! kill -0 "$BPID" 2>/dev/null; then
			echo "compare.sh: $1 exited at start; its log:" >&2
			tail -20 "$logf" >&2
			exit 1
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "compare.sh: $1 is not listening on $PORT after 10 s" >&2
	exit 1
}

# measure runs scenario $1 against broker $2, run $3, into a JSON file.
measure() {
	local sc=$1 b=$2 run=$3
	local json="$WORK/json/$sc-$b-$run.json"
	start_broker "$b"
	sleep 0.5 # let it settle: the RSS before the load is part of the result
	# shellcheck disable=SC2046 # bench_args is a list of arguments
	if ! taskset -c "$LCPU" "$ROOST" bench $(bench_args "$sc") -q --url "mqtt://127.0.0.1:$PORT" \
		--pid "$BPID" --json "$json" >"$WORK/log/$sc-$b-$run.txt" 2>&1; then
		log "$sc on $b (run $run) failed:"
		tail -5 "$WORK/log/$sc-$b-$run.txt" >&2
	fi
	if [ "$b" = roost ] && [ "$sc" = overload ]; then
		curl -sf "http://127.0.0.1:$HTTP/metrics" | grep '^roost_messages_dropped_total' \
			>"$WORK/log/overload-metrics-$run.txt" || true
	fi
	stop_broker
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
	pairs) echo "$(value .deliver_rate "$2") msgs/s, p99 $(value .latency.p99_us "$2") µs" ;;
	latency) echo "p50 $(value .latency.p50_us "$2") µs, p99 $(value .latency.p99_us "$2") µs" ;;
	connections) echo "$(value .connections.opened "$2") opened, $(value .broker.kib_per_conn "$2") KiB/conn" ;;
	overload) echo "max RSS $(value .broker.rss_max_kib "$2") KiB, dropped $(value .broker.dropped "$2")" ;;
	causality) echo "inversions per 1,000 at 50 µs / 500 µs / 2 ms: $(value '[.causality.gaps[].per_1000 | tostring] | join(" / ")' "$2")" ;;
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
	for v in ARGS RUNS QUICK ONLY COMMIT STARTED LOAD_BEFORE LOAD_AFTER TIMES CONNS HOLD BCPU LCPU MOSQUITTO; do
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
reproduce:** \`bench/compare.sh\` from the repository root (about 10
minutes; \`--runs 5\` for steadier medians, \`--quick\` for a one-minute
smoke test, \`--ref COMMIT\` to measure the commit below).
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
	row connections "idle connections ($(fmt_num "$CONNS") asked)" "broker KiB per connection" .broker.kib_per_conn "≤ 2 KiB" abs-max 2
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
	for sc in fan-in fan-out pairs latency connections overload causality; do cpu_row "$sc"; done
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
		echo "taskset -c $LCPU roost bench $(bench_args "$sc") -q --url mqtt://127.0.0.1:PORT --pid PID --json FILE"
	done
	cat <<EOF
\`\`\`

Brokers:

\`\`\`sh
taskset -c $BCPU roost serve --config roost.yaml --memory
taskset -c $BCPU $MOSQUITTO -c mosquitto.conf
\`\`\`

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
