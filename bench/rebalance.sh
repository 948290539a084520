#!/usr/bin/env bash
# rebalance: what it costs to give a node back its share. A cluster of one
# manager and W workers (network namespaces, scripts/cluster.sh), a service
# of N replicas on the workers (process executor, idle shell loops), then R
# times: drain the last worker, wait until its tasks run elsewhere, activate
# it again, and time until it holds its share (N/W tasks) with all N
# running. Reported: the time from the activation, the moves it took (tasks
# created on that worker after the activation), the wait before the first
# move (the settle wait, docs/orchestrators.md: 10 s, doubled for each
# other time the node was lost in the last 10 minutes, and every drain of
# this benchmark counts: 10, 20, 40 s...) and the moving alone (from the
# first move's task running there to the share).
# Then, on the same cluster, what Swarm's users do instead
# (moby#24103: Swarm leaves the node empty): `service update --force`,
# which restarts every task: its time to "completed" and the tasks restarted.
# Both with the service's update config (--parallelism, default 1 as Docker's).
#
#   bench/rebalance.sh [--reps 3] [--replicas 100] [--workers 4] [--parallelism 1]
#                      [--no-force] [--prefix fbreb] [--subnet 10.213.93] [--keep] [--bin PATH]
# Needs root (network namespaces).
BENCH_NAME=rebalance
. "$(dirname "$0")/lib.sh"

REPS=3 REPLICAS=100 WORKERS=4 PAR=1 FORCE=1 PREFIX=fbreb SUBNET=10.213.93 KEEP=0 BINARG=""
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --replicas) REPLICAS=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --parallelism) PAR=$2; shift 2 ;;
        --no-force) FORCE=0; shift ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --subnet) SUBNET=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --bin) BINARG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "rebalance.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
[ "$WORKERS" -ge 2 ] || die "needs at least 2 workers"
find_bin "$BINARG"
bench_workdir

export FLOTILLA_BIN=$BIN
unset FLOTILLA_CLUSTER_INIT_ARGS FLOTILLA_CLUSTER_PREFIX DOCKER_HOST FLOTILLA_HOST DOCKER_CONTEXT
STATE=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}/$PREFIX
CL() { bash "$BENCH_REPO/scripts/cluster.sh" "$@"; }
X() { timeout 30 "$BIN" -H "unix://$STATE/manager/flotilla.sock" "$@"; }
LAST=$(printf 'worker%02d' "$WORKERS")
SHARE=$((REPLICAS / WORKERS))

log "rebalance: 1 manager + $WORKERS workers (prefix $PREFIX), $REPLICAS replicas, parallelism $PAR, $REPS run(s), bin $BIN"
CL down --prefix "$PREFIX" >/dev/null 2>&1 || true
[ $KEEP = 1 ] || on_exit "bash '$BENCH_REPO/scripts/cluster.sh' down --prefix '$PREFIX'"
CL up --prefix "$PREFIX" --subnet "$SUBNET" --managers 1 --workers "$WORKERS" \
    --executor process >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "cluster up failed"; }

X service create -d -q --name rb --replicas "$REPLICAS" --constraint node.role==worker \
    --update-parallelism "$PAR" --stop-grace-period 2s \
    flotilla-busybox sh -c "trap 'exit 0' TERM; while :; do sleep 1; done" >/dev/null 2>&1 ||
    die "service create failed"

# running: "NODE" per running task of rb.
running() {
    X service ps rb --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' 2>/dev/null |
        awk '$2 == "Running" { print $1 }'
}
all_running() { [ "$(running | wc -l)" = "$REPLICAS" ]; }
on_last() { running | grep -c "^$LAST\$" || true; }
emptied() { all_running && [ "$(on_last)" = 0 ]; }
has_share() { all_running && [ "$(on_last)" -ge "$SHARE" ]; }
has_one() { [ "$(on_last)" -ge 1 ]; }
tasks_on_last() { X node ps "$LAST" -q 2>/dev/null | wc -l; }

wait_until 300 0.5 "all $REPLICAS running" all_running || die "the service did not start"
for r in $(seq 1 "$REPS"); do
    X node update --availability drain "$LAST" >/dev/null
    wait_until 300 0.2 "$LAST drained" emptied || die "drain did not finish"
    before=$(tasks_on_last)
    t0=$(now)
    X node update --availability active "$LAST" >/dev/null
    wait_until 300 0.1 "a task on $LAST" has_one || die "no move within 300 s"
    first=$(since "$t0")
    wait_until 300 0.1 "$LAST holds $SHARE" has_share || die "no rebalance within 300 s"
    took=$(since "$t0")
    moves=$(( $(tasks_on_last) - before ))
    moving=$(awk -v t="$took" -v f="$first" 'BEGIN { printf "%.3f", t - f }')
    record back "$took"
    record first "$first"
    record moving "$moving"
    record moves "$moves"
    log "run $r: $LAST held $SHARE of $REPLICAS again after $took s ($moves moves; the first ran after $first s)"
done

if [ $FORCE = 1 ]; then
    t0=$(now)
    X service update -d --force rb >/dev/null
    done_() { [ "$(X service inspect --format '{{.UpdateStatus.State}}' rb 2>/dev/null)" = completed ]; }
    wait_until 1200 0.2 "service update --force completed" done_ || die "force update did not complete"
    record force "$(since "$t0")"
    restarted=$(X service ps rb --filter desired-state=shutdown -q 2>/dev/null | wc -l)
    log "service update --force: $(cell force) ($restarted tasks shut down in the service's history)"
fi

echo
echo "| $REPLICAS replicas on $WORKERS workers, parallelism $PAR | figure |"
echo "| --- | --- |"
echo "| a drained worker activated -> its $SHARE tasks back, all running | $(cell back) |"
echo "| of which waiting for the node to settle (to the first moved task running) | $(cell first) |"
echo "| of which moving (first moved task running -> the share) | $(cell moving) |"
echo "| moves | $(cell moves '') |"
[ $FORCE = 1 ] && echo "| Swarm's workaround, \`service update --force\` (restarts all $REPLICAS) | $(cell force) |"
emit back s
emit first s
emit moving s
emit moves n
emit force s
