#!/usr/bin/env bash
# scale: a cluster of 1 or 3 managers on loopback with N simulated worker
# nodes (one flotilla-sim process: each node its own identity through the
# real join protocol, the real agent and dispatcher protocol, an executor
# that runs nothing), then S services of R replicas created through the
# Engine API by C concurrent clients. Prints the time from the first create
# to all tasks RUNNING, tasks/s, create latency p50/p99, the latency of a
# probe write repeated while the cluster converges, and each manager's
# peak RSS and CPU seconds; see docs/sim.md.
#
#   bench/scale.sh [--nodes N] [--services S] [--replicas R] [--managers 1|3]
#                  [--concurrency C] [--timeout SECONDS] [--tiny] [--no-build] [--keep]
#
# Defaults are issue 6's sizes: 1,000 nodes, 1,000 services x 100 replicas.
# --tiny is 20 nodes, 10 services x 10 replicas (well under a minute).
# Everything lives in a fresh /tmp/flsim-XXXXXX (removed at the end unless
# --keep); only processes this script started are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=1000 SERVICES=1000 REPLICAS=100 MANAGERS=1 CONCURRENCY=8 TIMEOUT=600
BUILD=1 KEEP=0
usage() { sed -n '2,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=$2; shift 2 ;;
        --services) SERVICES=$2; shift 2 ;;
        --replicas) REPLICAS=$2; shift 2 ;;
        --managers) MANAGERS=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --tiny) NODES=20 SERVICES=10 REPLICAS=10; shift ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "scale.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done

if [ "$BUILD" = 1 ] && [ -z "${FLSIM_BIN_DIR:-}" ]; then
    cargo build --release -p flotilla -p flotilla-sim >&2
fi
# FLSIM_BIN_DIR: binaries built earlier (e.g. copied aside while others
# rebuild the tree); implies --no-build.
BIN=${FLSIM_BIN_DIR:-$PWD/target/release}
for b in flotilla flotilla-sim flotilla-sim-load; do
    [ -x "$BIN/$b" ] || { echo "scale.sh: $BIN/$b is missing (build without --no-build)" >&2; exit 1; }
done

# One socket per simulated node on each side of the cluster port.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((NODES * 2 + 1024)) ]; then
    echo "scale.sh: warning: ulimit -n is $(ulimit -n), low for $NODES nodes" >&2
fi

root=$(mktemp -d /tmp/flsim-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "scale.sh: logs and data kept in $root" >&2; else rm -rf "$root"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sock() { echo "unix://$root/m$1/api.sock"; }
cli() { local i=$1; shift; "$BIN/flotilla" -H "$(sock "$i")" "$@"; }
log() { echo "scale.sh: $*" >&2; }

# Managers: the process executor (no Docker), drained below, so every task
# goes to a simulated node.
manager_pids=()
for i in $(seq 1 "$MANAGERS"); do
    mkdir -p "$root/m$i"
    FLOTILLA_NO_SERVICE_ADDRS=1 FLOTILLA_LOG=${FLOTILLA_LOG:-warn} \
        "$BIN/flotilla" daemon --data-dir "$root/m$i/data" -H "$(sock "$i")" \
        --executor process --hostname "manager-$i" >"$root/m$i/log" 2>&1 &
    pids+=($!)
    manager_pids+=($!)
    until curl -sf --unix-socket "$root/m$i/api.sock" http://x/_ping >/dev/null 2>&1; do
        kill -0 "$!" 2>/dev/null || { log "manager $i died:"; cat "$root/m$i/log" >&2; exit 1; }
        sleep 0.05
    done
done
cli 1 swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
read -r worker_token addr < <(cli 1 swarm join-token worker | awk '/swarm join --token/ {print $5, $6}')
read -r manager_token _ < <(cli 1 swarm join-token manager | awk '/swarm join --token/ {print $5, $6}')
for i in $(seq 2 "$MANAGERS"); do
    cli "$i" swarm join --token "$manager_token" --advertise-addr 127.0.0.1 \
        --listen-addr 127.0.0.1:0 "$addr" >/dev/null
done
for i in $(seq 1 "$MANAGERS"); do
    # The node's own agent registering can bump its version meanwhile.
    for _ in $(seq 1 50); do
        cli "$i" node update --availability drain self >/dev/null 2>&1 && break
        sleep 0.2
    done
done
log "$MANAGERS manager(s) up, cluster port $addr, data in $root"

"$BIN/flotilla-sim" --manager "$addr" --token "$worker_token" --nodes "$NODES" \
    >"$root/sim.log" 2>&1 &
sim_pid=$!
pids+=($sim_pid)
log "flotilla-sim (pid $sim_pid) joining $NODES nodes; progress in $root/sim.log"

hosts=()
for i in $(seq 1 "$MANAGERS"); do hosts+=(-H "$(sock "$i")"); done
mpids=()
for p in "${manager_pids[@]}"; do mpids+=(--manager-pid "$p"); done
status=0
"$BIN/flotilla-sim-load" "${hosts[@]}" --nodes "$NODES" --services "$SERVICES" \
    --replicas "$REPLICAS" --concurrency "$CONCURRENCY" --managers "$MANAGERS" \
    "${mpids[@]}" --sim-pid "$sim_pid" --timeout "$TIMEOUT" --nodes-timeout "$TIMEOUT" || status=$?
tail -n 3 "$root/sim.log" >&2
exit "$status"
