#!/usr/bin/env bash
# scale: a cluster of 1 or 3 managers on loopback with N simulated worker
# nodes (one flotilla-sim process: each node its own identity through the
# real join protocol, the real agent and dispatcher protocol, an executor
# that runs nothing), then S services of R replicas created through the
# Engine API by C concurrent clients. Prints the time from the first create
# to all tasks RUNNING, tasks/s, create latency p50/p99, the latency of a
# probe write repeated while the cluster converges, the managers' peak RSS
# and CPU seconds, how long a Prometheus scrape of the first manager's
# --metrics-addr takes (every second while converging, then 20 times with
# every task RUNNING), and the anchors; see docs/sim.md.
#
#   bench/scale.sh [--nodes N] [--services S] [--replicas R] [--managers 1|3]
#                  [--concurrency C] [--timeout SECONDS] [--reps K]
#                  [--tiny] [--no-build] [--bin PATH] [--keep]
#
# Defaults are issue 6's sizes: 1,000 nodes, 1,000 services x 100 replicas,
# 1 manager, 8 clients, one run, 600 s to converge before the run is cut
# short (its figures then say how far it got). --tiny is 20 nodes,
# 10 services x 10 replicas: well under a minute.
#
# Builds target/release/{flotilla,flotilla-sim,flotilla-sim-load} unless
# --no-build; --bin PATH (or FLOTILLA_BIN) is the flotilla binary, and
# FLSIM_BIN_DIR a directory holding all three (implies --no-build). Each
# run lives in a fresh /tmp/flsim-XXXXXX (removed unless --keep); only the
# processes this script started are stopped. Needs bash >= 5 and curl.
BENCH_NAME=scale
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$BENCH_REPO"

NODES=1000 SERVICES=1000 REPLICAS=100 MANAGERS=1 CONCURRENCY=8 TIMEOUT=600 REPS=1
# Manager i serves its metrics on 127.0.0.1:$((METRICS_BASE + i));
# FLSIM_METRICS_PORT=off: no metrics, no scrapes (a binary without them).
METRICS_BASE=${FLSIM_METRICS_PORT:-19400}
BUILD=1 KEEP=0 FLBIN=${FLOTILLA_BIN:-}
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=$2; shift 2 ;;
        --services) SERVICES=$2; shift 2 ;;
        --replicas) REPLICAS=$2; shift 2 ;;
        --managers) MANAGERS=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --tiny) NODES=20 SERVICES=10 REPLICAS=10; shift ;;
        --no-build) BUILD=0; shift ;;
        --bin) FLBIN=$2; BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "scale.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done

SIMDIR=${FLSIM_BIN_DIR:-$BENCH_REPO/target/release}
[ -z "${FLSIM_BIN_DIR:-}" ] || BUILD=0
if [ "$BUILD" = 1 ]; then
    cargo build --release -p flotilla -p flotilla-sim >&2
fi
FLBIN=${FLBIN:-$SIMDIR/flotilla}
SIM=$SIMDIR/flotilla-sim
LOAD=$SIMDIR/flotilla-sim-load
for b in "$FLBIN" "$SIM" "$LOAD"; do
    [ -x "$b" ] || die "$b is missing: cargo build --release -p flotilla -p flotilla-sim"
done

# One socket per simulated node on each side of the cluster port.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((NODES + 1024)) ]; then
    log "warning: ulimit -n is $(ulimit -n), low for $NODES nodes"
fi

# start_cluster DIR: managers (process executor, drained so every task goes
# to a simulated node) and the flotilla-sim fleet. Sets MGR_PIDS, SIM_PID.
start_cluster() {
    local dir=$1 i addr worker_token manager_token
    MGR_PIDS=()
    for i in $(seq 1 "$MANAGERS"); do
        mkdir -p "$dir/m$i"
        FLOTILLA_NO_SERVICE_ADDRS=1 FLOTILLA_LOG=${FLOTILLA_LOG:-warn} \
            "$FLBIN" daemon --data-dir "$dir/m$i/data" -H "unix://$dir/m$i/api.sock" \
            --executor process --hostname "manager-$i" \
            "${METRICS_ARGS[@]/PORT/$((METRICS_BASE + i))}" </dev/null >"$dir/m$i/log" 2>&1 &
        MGR_PIDS+=($!)
        on_exit "kill_pid $!"
        wait_until 30 0.05 "manager $i (log $dir/m$i/log)" \
            curl -sf --max-time 1 --unix-socket "$dir/m$i/api.sock" http://localhost/_ping -o /dev/null
    done
    fl 1 swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
    read -r worker_token addr < <(fl 1 swarm join-token worker | awk '/swarm join --token/ {print $5, $6}')
    read -r manager_token _ < <(fl 1 swarm join-token manager | awk '/swarm join --token/ {print $5, $6}')
    for i in $(seq 2 "$MANAGERS"); do
        fl "$i" swarm join --token "$manager_token" --advertise-addr 127.0.0.1 \
            --listen-addr 127.0.0.1:0 "$addr" >/dev/null
    done
    for i in $(seq 1 "$MANAGERS"); do
        # The node's own agent registering can bump its version meanwhile.
        wait_until 20 0.2 "manager $i drained" fl "$i" node update --availability drain self
    done
    "$SIM" --manager "$addr" --token "$worker_token" --nodes "$NODES" </dev/null >"$dir/sim.log" 2>&1 &
    SIM_PID=$!
    on_exit "kill_pid $SIM_PID"
    log "$MANAGERS manager(s) at $addr; flotilla-sim (pid $SIM_PID) joining $NODES nodes (log $dir/sim.log)"
}
# fl I ARGS: the flotilla CLI against manager I of the current run, quiet
# but for the join-token lines that are parsed.
fl() {
    local i=$1; shift
    if [ "$1 ${2:-}" = "swarm join-token" ]; then
        "$FLBIN" -H "unix://$dir/m$i/api.sock" "$@"
    else
        "$FLBIN" -H "unix://$dir/m$i/api.sock" "$@" >/dev/null 2>&1
    fi
}

# scrape: one GET of manager 1's /metrics as Prometheus sends it: "ms bytes".
scrape() {
    curl -s -o /dev/null --max-time 10 -w '%{time_total} %{size_download}\n' \
        -H 'Accept: text/plain;version=0.0.4' "http://127.0.0.1:$((METRICS_BASE + 1))/metrics" |
        awk '{ printf "%.3f %d\n", $1 * 1000, $2 }'
}
scrape_every_second() { while sleep 1; do scrape >>"$1"; done; }
METRICS_ARGS=(--metrics-addr 127.0.0.1:PORT)
[ "$METRICS_BASE" != off ] || METRICS_ARGS=()
# record_scrapes DIR: this run's scrape figures (median and worst).
record_scrapes() {
    local d=$1 f
    # shellcheck disable=SC2046 # one sample per word
    f=$(stats $(cut -d' ' -f1 "$d/scrapes-converged.txt"))
    record "${P}scrape_ms" "$(cut -d' ' -f1 <<<"$f")"
    record "${P}scrape_max_ms" "$(cut -d' ' -f3 <<<"$f")"
    record "${P}scrape_kib" "$(awk '{ s = $2 } END { printf "%.1f", s / 1024 }' "$d/scrapes-converged.txt")"
    if [ -s "$d/scrapes-converging.txt" ]; then
        # shellcheck disable=SC2046
        f=$(stats $(cut -d' ' -f1 "$d/scrapes-converging.txt"))
        record "${P}scrape_converging_max_ms" "$(cut -d' ' -f3 <<<"$f")"
    fi
}

# Figures are recorded as n<nodes>.m<managers>.<key>, the BENCH line names.
P=n$NODES.m$MANAGERS.
KEYS="total_s tasks_per_s running create_p50_ms create_p99_ms probe_p50_ms probe_p99_ms manager_peak_rss_mib manager_cpu_s sim_peak_rss_mib sim_cpu_s nodes_ready_s creates_s converged"
for rep in $(seq 1 "$REPS"); do
    dir=$(mktemp -d /tmp/flsim-XXXXXX)
    if [ "$KEEP" = 1 ]; then log "run $rep: kept in $dir"; else on_exit "rm -rf '$dir'"; fi
    start_cluster "$dir"
    hosts=() mpids=()
    for i in $(seq 1 "$MANAGERS"); do hosts+=(-H "unix://$dir/m$i/api.sock"); done
    for p in "${MGR_PIDS[@]}"; do mpids+=(--manager-pid "$p"); done
    rc=0
    SCRAPER=
    if [ "$METRICS_BASE" != off ]; then
        scrape_every_second "$dir/scrapes-converging.txt" &
        SCRAPER=$!
        on_exit "kill_pid $SCRAPER"
    fi
    "$LOAD" "${hosts[@]}" --nodes "$NODES" --services "$SERVICES" --replicas "$REPLICAS" \
        --concurrency "$CONCURRENCY" --managers "$MANAGERS" "${mpids[@]}" --sim-pid "$SIM_PID" \
        --timeout "$TIMEOUT" --nodes-timeout "$TIMEOUT" >"$dir/report.txt" || rc=$?
    if [ -n "$SCRAPER" ]; then
        kill_pid "$SCRAPER"
        for _ in $(seq 1 20); do scrape >>"$dir/scrapes-converged.txt"; done
        record_scrapes "$dir"
    fi
    # flotilla-sim says, as it stops, how many tasks reached its nodes.
    kill_pid "$SIM_PID"
    for p in "${MGR_PIDS[@]}"; do kill_pid "$p"; done
    grep -v '^SCALE ' "$dir/report.txt" || true
    grep 'tasks started on the simulated nodes' "$dir/sim.log" | tail -n 1 | sed 's/^/  /' || true
    # No simulated node ever stops heartbeating: every Down is a false one.
    record "${P}false_down" "$(cat "$dir"/m*/log | grep -c 'node marked down' || true)"
    line=$(grep '^SCALE ' "$dir/report.txt" || true)
    [ -n "$line" ] || die "run $rep: the driver printed no figures (exit $rc); logs in $dir"
    for kv in $line; do
        k=${kv%%=*} v=${kv#*=}
        case " $KEYS " in *" $k "*) [ "$v" = - ] || record "$P$k" "$v" ;; esac
    done
done

tasks=$((SERVICES * REPLICAS))
conv=$(median_of "${P}converged")
echo
echo "scale: $NODES simulated nodes, $MANAGERS manager(s), $SERVICES services x $REPLICAS replicas = $tasks tasks, $CONCURRENCY clients, $REPS run(s) (median (min–max))"
echo
echo "| nodes | managers | tasks | to all RUNNING | tasks/s | create p50 | create p99 | write p50 / p99 while converging | manager peak RSS | manager CPU |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
total=$(cell "${P}total_s")
[ "$conv" = "1.000" ] || total="not all: $(cell "${P}running" '') RUNNING after $(cell "${P}total_s")"
echo "| $NODES | $MANAGERS | $tasks | $total | $(cell "${P}tasks_per_s" '') | $(cell "${P}create_p50_ms" ms) | $(cell "${P}create_p99_ms" ms) | $(cell "${P}probe_p50_ms" ms) / $(cell "${P}probe_p99_ms" ms) | $(cell "${P}manager_peak_rss_mib" MiB) | $(cell "${P}manager_cpu_s") |"
echo
echo "flotilla-sim (all $NODES nodes): peak RSS $(cell "${P}sim_peak_rss_mib" MiB), CPU $(cell "${P}sim_cpu_s"); nodes Ready $(cell "${P}nodes_ready_s") after start"
echo "nodes marked down while healthy (false Down): $(cell "${P}false_down" '')"
echo "a scrape of manager 1's /metrics ($(cell "${P}scrape_kib" KiB)): $(cell "${P}scrape_ms" ms) median, $(cell "${P}scrape_max_ms" ms) worst of 20 with every task RUNNING; worst while converging $(cell "${P}scrape_converging_max_ms" ms)"
echo "anchors: SwarmKit's scheduler benchmark placed 100,000 tasks on 1,000 nodes in 22.6 s (~4,425/s, placement only);"
echo "         Nomad's C1M placed ~3,750 containers/s on 5,000 nodes with 5 servers."
for k in $KEYS false_down scrape_ms scrape_max_ms scrape_converging_max_ms scrape_kib; do
    case $k in
        tasks_per_s) emit "$P$k" tasks/s ;;
        *_ms) emit "$P$k" ms ;;
        *_mib) emit "$P$k" MiB ;;
        *_kib) emit "$P$k" KiB ;;
        *_s) emit "$P$k" s ;;
        *) emit "$P$k" count ;;
    esac
done
[ "$conv" = "1.000" ]
