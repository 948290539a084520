#!/usr/bin/env bash
# footprint: resident memory (VmRSS) of Flotilla's daemons against Docker's
# on the same machine, and the binary's size. A manager and a worker, each
# a network namespace with its own dockerd (scripts/cluster.sh, docker
# executor, default settings). Phases, each measured after SETTLE seconds,
# sampled S times 1 s apart (median, min–max):
#   idle        a fresh swarm, no service
#   worker N    N replicas placed on the worker (constraint node.hostname==worker01):
#               the worker runs N containers, the manager orchestrates them
#   manager N   N replicas on the manager instead (node.hostname==manager: a manager that also runs
#               the tasks, as in a one-node swarm); the worker is idle again
#   idle after  every service removed
#   Docker Swarm, on a third host's dockerd (worker02: Flotilla's worker
#   there stays idle, and its dockerd has run nothing yet; not the machine's
#   engine): `docker swarm init`, then N replicas of the same task. Docker
#   Swarm's manager and agent live inside dockerd, so its cost is dockerd's
#   RSS against a dockerd without a swarm running the same containers
#   (worker01's under Flotilla).
# dockerd, containerd and the container shims are measured beside Flotilla:
# both systems run containers through them.
#
#   bench/footprint.sh [--tasks 100] [--settle 10] [--samples 5] [--no-swarm]
#                      [--prefix fbfp] [--subnet 10.213.64] [--tiny] [--bin PATH]
#
# --tiny: 10 tasks, 2 s settle, 1 sample, no Docker Swarm; prefix fbtfp,
# subnet 10.213.67 (a tiny run never meets a full one). Needs root.
BENCH_NAME=footprint
. "$(dirname "$0")/lib.sh"

N=100 SETTLE=10 SAMPLES=5 SWARM=1 PREFIX=fbfp SUBNET=10.213.64 BINARG=""
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --tasks) N=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --samples) SAMPLES=$2; shift 2 ;;
        --no-swarm) SWARM=0; shift ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --subnet) SUBNET=$2; shift 2 ;;
        --tiny) N=10 SETTLE=2 SAMPLES=1 SWARM=0 PREFIX=fbtfp SUBNET=10.213.67; shift ;;
        --bin) BINARG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "footprint.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
find_bin "$BINARG"
bench_workdir
export FLOTILLA_BIN=$BIN
unset FLOTILLA_CLUSTER_INIT_ARGS FLOTILLA_CLUSTER_PREFIX DOCKER_HOST FLOTILLA_HOST
STATE=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}/$PREFIX
CL() { bash "$BENCH_REPO/scripts/cluster.sh" "$@"; }
M=manager W=worker01 S=worker02
FL() { timeout 60 "$BIN" -H "unix://$STATE/$M/flotilla.sock" "$@"; }
WD() { env -u DOCKER_CONTEXT docker -H "unix://$STATE/$W/docker.sock" "$@"; }
IMG=flotilla-busybox:latest
CMD=(sh -c 'trap "exit 0" TERM; while :; do sleep 1; done')

log "footprint: $N tasks, settle ${SETTLE}s, $SAMPLES sample(s), swarm $([ $SWARM = 1 ] && echo yes || echo no), bin $BIN"
CL down --prefix "$PREFIX" >/dev/null 2>&1 || true
on_exit "bash '$BENCH_REPO/scripts/cluster.sh' down --prefix '$PREFIX'"
t0=$(now)
CL up --prefix "$PREFIX" --subnet "$SUBNET" --managers 1 --workers 2 --executor docker \
    >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "cluster up failed"; }
log "cluster up in $(since "$t0") s"

# --- measuring ---------------------------------------------------------------------

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
pid_of() { cat "$STATE/$1/$2.pid"; } # HOST flotilla|docker
containerd_of() { ps -o pid= --ppid "$(pid_of "$1" docker)" -o comm= | awk '$2 == "containerd" { print $1 }' | head -n1; }
# shims_kib HOST: the summed RSS of the host's containerd-shim processes
# (found through the host's cgroup tree, where cluster.sh keeps them all).
shims_kib() {
    local base=/sys/fs/cgroup s=0 p
    [ -f $base/cgroup.controllers ] || base=/sys/fs/cgroup/pids
    for p in $(find "$base/flotilla-cluster/$PREFIX/$1" -name cgroup.procs -exec cat {} + 2>/dev/null); do
        case $(cat "/proc/$p/comm" 2>/dev/null) in containerd-shim*) ;; *) continue ;; esac
        s=$((s + $(rss_kib "$p")))
    done
    echo $s
}

# measure PHASE: SAMPLES samples of every process of interest.
measure() {
    local phase=$1 i
    log "$phase: settling ${SETTLE}s, then $SAMPLES sample(s)"
    sleep "$SETTLE"
    for i in $(seq 1 "$SAMPLES"); do
        [ "$i" = 1 ] || sleep 1
        record "$phase.mgr" "$(mib "$(rss_kib "$(pid_of $M flotilla)")")"
        record "$phase.wkr" "$(mib "$(rss_kib "$(pid_of $W flotilla)")")"
        record "$phase.mdockerd" "$(mib "$(rss_kib "$(pid_of $M docker)")")"
        record "$phase.wdockerd" "$(mib "$(rss_kib "$(pid_of $W docker)")")"
        record "$phase.mcontainerd" "$(mib "$(rss_kib "$(containerd_of $M)")")"
        record "$phase.wcontainerd" "$(mib "$(rss_kib "$(containerd_of $W)")")"
        record "$phase.mshims" "$(mib "$(shims_kib $M)")"
        record "$phase.sdockerd" "$(mib "$(rss_kib "$(pid_of $S docker)")")"
        record "$phase.scontainerd" "$(mib "$(rss_kib "$(containerd_of $S)")")"
        record "$phase.sshims" "$(mib "$(shims_kib $S)")"
        record "$phase.wshims" "$(mib "$(shims_kib $W)")"
    done
}

running_n() { # SERVICE HOST
    [ "$(FL service ps "$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' 2>/dev/null \
        | grep -c "^$2 Running")" = "$N" ]
}
no_containers() { [ -z "$(env -u DOCKER_CONTEXT docker -H "unix://$STATE/$1/docker.sock" ps -aq --filter label=com.docker.swarm.service.name="$2")" ]; }

# --- phases ----------------------------------------------------------------------------

measure idle
FL service create -d --no-resolve-image --name fbfpw --replicas "$N" --constraint node.hostname==$W \
    --stop-grace-period 1s "$IMG" "${CMD[@]}" >/dev/null
wait_until 600 0.5 "$N tasks running on $W" running_n fbfpw "$W"
measure worker
FL service rm fbfpw >/dev/null
wait_until 300 0.5 "$W's containers gone" no_containers "$W" fbfpw
FL service create -d --no-resolve-image --name fbfpm --replicas "$N" --constraint node.hostname==$M \
    --stop-grace-period 1s "$IMG" "${CMD[@]}" >/dev/null
wait_until 600 0.5 "$N tasks running on $M" running_n fbfpm "$M"
measure manager
FL service rm fbfpm >/dev/null
wait_until 300 0.5 "$M's containers gone" no_containers "$M" fbfpm
measure after

if [ $SWARM = 1 ]; then
    # Docker Swarm on worker02's dockerd, in worker02's namespace (cluster
    # port 2378: Flotilla's daemon there leaves 2377 alone, but why risk it).
    SD() { env -u DOCKER_CONTEXT docker -H "unix://$STATE/$S/docker.sock" "$@"; }
    on_exit "env -u DOCKER_CONTEXT docker -H 'unix://$STATE/$S/docker.sock' swarm leave --force"
    SADDR=$(. "$STATE/$S/host.env"; echo "$ADDR")
    log "Docker Swarm on $S's dockerd ($SADDR)"
    SD swarm init --advertise-addr "$SADDR" --listen-addr "$SADDR:2378" >/dev/null
    measure swarmidle
    SD service create -d -q --no-resolve-image --name fbfps --replicas "$N" \
        --stop-grace-period 1s "$IMG" "${CMD[@]}" >/dev/null
    wait_until 600 0.5 "$N swarm tasks running" \
        bash -c '[ "$(env -u DOCKER_CONTEXT docker -H "unix://$0" service ls --filter name=fbfps --format "{{.Replicas}}")" = "$1/$1" ]' \
        "$STATE/$S/docker.sock" "$N"
    measure swarm
    SD service rm fbfps >/dev/null
    SD swarm leave --force >/dev/null
fi

# --- report --------------------------------------------------------------------------

size=$(stat -c %s "$BIN")
record binary "$(mib $((size / 1024)))"
echo
echo "footprint: RSS in MiB, $SAMPLES sample(s) per phase after ${SETTLE}s settling: median (min–max); $(nproc) cores, Docker $(WD version --format '{{.Server.Version}}')"
echo "binary: $BIN, $(mib $((size / 1024))) MiB ($(file -b "$BIN" 2>/dev/null | grep -o 'not stripped\|stripped' || echo '?'))"
echo
echo "| phase | Flotilla manager | Flotilla worker | dockerd (manager host) | dockerd (worker host) | containerd (mgr / wkr) | shims (mgr / wkr) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
row() {
    echo "| $2 | $(cell "$1.mgr" "") | $(cell "$1.wkr" "") | $(cell "$1.mdockerd" "") | $(cell "$1.wdockerd" "") | $(fmt "$(median_of "$1.mcontainerd")") / $(fmt "$(median_of "$1.wcontainerd")") | $(fmt "$(median_of "$1.mshims")") / $(fmt "$(median_of "$1.wshims")") |"
}
row idle "idle"
row worker "$N tasks on the worker"
row manager "$N tasks on the manager"
row after "idle again (services removed)"
if [ $SWARM = 1 ]; then
    echo
    echo "Docker Swarm in a third host's dockerd ($S, Flotilla idle beside it), against the same containers without a swarm:"
    echo
    echo "| phase | dockerd | containerd | shims | Flotilla daemon beside it |"
    echo "| --- | --- | --- | --- | --- |"
    echo "| no swarm, no container ($S, Flotilla's phases) | $(cell after.sdockerd "") | $(fmt "$(median_of after.scontainerd)") | $(fmt "$(median_of after.sshims)") | - |"
    echo "| no swarm, $N containers (worker01 under Flotilla) | $(cell worker.wdockerd "") | $(fmt "$(median_of worker.wcontainerd)") | $(fmt "$(median_of worker.wshims)") | worker $(fmt "$(median_of worker.wkr)"), manager $(fmt "$(median_of worker.mgr)") |"
    echo "| swarm init, no service | $(cell swarmidle.sdockerd "") | $(fmt "$(median_of swarmidle.scontainerd)") | $(fmt "$(median_of swarmidle.sshims)") | - |"
    echo "| swarm, $N tasks | $(cell swarm.sdockerd "") | $(fmt "$(median_of swarm.scontainerd)") | $(fmt "$(median_of swarm.sshims)") | - |"
    echo
    echo "A one-node swarm with $N tasks: Flotilla = its daemon $(fmt "$(median_of manager.mgr)") + dockerd $(fmt "$(median_of manager.mdockerd)") + containerd $(fmt "$(median_of manager.mcontainerd)") MiB; Docker Swarm = dockerd $(fmt "$(median_of swarm.sdockerd)") + containerd $(fmt "$(median_of swarm.scontainerd)") MiB (shims alike)"
    echo "Swarm's own cost in dockerd: idle $(awk -v a="$(median_of swarmidle.sdockerd)" -v b="$(median_of after.sdockerd)" 'BEGIN { printf "%+.1f", a - b }') MiB, with $N tasks $(awk -v a="$(median_of swarm.sdockerd)" -v b="$(median_of worker.wdockerd)" 'BEGIN { printf "%+.1f", a - b }') MiB (against worker01's dockerd with the same containers); Flotilla's: its daemon, idle manager $(fmt "$(median_of idle.mgr)") / worker $(fmt "$(median_of idle.wkr)") MiB"
fi
echo
emit binary MiB
for p in idle worker manager after swarmidle swarm; do
    for k in mgr wkr mdockerd wdockerd mcontainerd wcontainerd mshims wshims sdockerd scontainerd sshims; do emit "$p.$k" MiB; done
done
