#!/usr/bin/env bash
# failover: a cluster of M managers and W workers, each host a network
# namespace of its own (scripts/cluster.sh; default settings: no
# --dispatcher-heartbeat or other override), and two faults, each repeated
# R times (median, min–max):
#   leader  `scripts/cluster.sh kill LEADER` (kill -9 of everything the host
#           runs, then its link goes down) -> the first write that succeeds
#           through another manager (POST /services/create; a fresh attempt
#           every 0.1 s, each allowed 15 s: a write sent to a manager that
#           still believes in the dead leader may hang, the next one may not)
#   worker  the same kill of a worker running 2 tasks of a service with
#           2 tasks per host -> all the service's tasks running again, none
#           on the dead worker (service ps, every 0.1 s); the time to the
#           node shown Down is noted on the way
# Times are from the moment the killed host's daemon is gone (a watcher
# polls its /proc entry every 5 ms); the kill command's own time is shown
# beside (bash, the cluster lock, the kill through the host's cgroup:
# ~0.15 s). Between runs the host is started again (`scripts/cluster.sh
# start`) and the run waits until every node is Ready and every manager
# Reachable or Leader. A leader run kills whoever leads then; worker runs
# take the workers in turn, each with a fresh service.
#
#   bench/failover.sh [--reps 10] [--managers 3] [--workers 3] [--partitions 3]
#                     [--executor process|docker] [--docker-swarm] [--swarm-reps R]
#                     [--prefix fbfo] [--subnet 10.213.61] [--keep] [--tiny] [--bin PATH]
#
# --executor: the process executor (default) is the fastest way to run the
# tasks; docker gives every host its own dockerd, as in production.
# --docker-swarm (implies --executor docker): Docker Swarm is formed on the
# same hosts' dockerds (cluster port 2378; Flotilla's swarm keeps 2377) and
# measured the same way, after Flotilla, --swarm-reps times (default: R).
# Every fault then hits both systems' daemons on the host at once.
# --partitions N: also N runs of each fault with `scripts/cluster.sh
# partition HOST` instead of kill (the network cable pulled: no connection
# is closed, so only heartbeats and Raft timeouts can tell), timed from the
# partition command, healed afterwards (Flotilla only).
# --tiny: 3 managers, 1 worker, one run of each kill, no partitions; prefix
# fbtfo, subnet 10.213.66 (a tiny run never meets a full one).
# Needs root (network namespaces).
BENCH_NAME=failover
. "$(dirname "$0")/lib.sh"

REPS=10 PARTS=3 MANAGERS=3 WORKERS=3 PREFIX=fbfo SUBNET=10.213.61 KEEP=0 BINARG=""
EXECUTOR=process DSWARM=0 SREPS=""
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --partitions) PARTS=$2; shift 2 ;;
        --managers) MANAGERS=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --executor) EXECUTOR=$2; shift 2 ;;
        --docker-swarm) DSWARM=1 EXECUTOR=docker; shift ;;
        --swarm-reps) SREPS=$2; shift 2 ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --subnet) SUBNET=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --tiny) REPS=1 PARTS=0 MANAGERS=3 WORKERS=1 PREFIX=fbtfo SUBNET=10.213.66; shift ;;
        --bin) BINARG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "failover.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
SREPS=${SREPS:-$REPS}
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
[ "$MANAGERS" -ge 3 ] || die "a leader failover needs at least 3 managers"
[ "$WORKERS" -ge 1 ] || die "a worker failover needs at least 1 worker"
[[ $EXECUTOR =~ ^(process|docker)$ ]] || die "--executor must be process or docker"
[ $DSWARM = 0 ] || [ "$EXECUTOR" = docker ] || die "--docker-swarm needs --executor docker"
find_bin "$BINARG"
bench_workdir

# --- the cluster -------------------------------------------------------------------

export FLOTILLA_BIN=$BIN
unset FLOTILLA_CLUSTER_INIT_ARGS FLOTILLA_CLUSTER_PREFIX DOCKER_HOST FLOTILLA_HOST DOCKER_CONTEXT
STATE=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}/$PREFIX
CL() { bash "$BENCH_REPO/scripts/cluster.sh" "$@"; }

MGRS=() WKRS=()
for i in $(seq 1 "$MANAGERS"); do MGRS+=("manager$i"); done
for i in $(seq 1 "$WORKERS"); do WKRS+=("$(printf 'worker%02d' "$i")"); done
HOSTS=("${MGRS[@]}" "${WKRS[@]}")

# The system under test: SYS=flotilla (its daemon's socket, its CLI) or
# SYS=swarm (the host's dockerd, the docker CLI); both speak the same API
# and print the same node ls / service ps formats.
SYS=flotilla
sock() { if [ $SYS = flotilla ]; then echo "$STATE/$1/flotilla.sock"; else echo "$STATE/$1/docker.sock"; fi; }
pidfile() { if [ $SYS = flotilla ]; then echo "$STATE/$1/flotilla.pid"; else echo "$STATE/$1/docker.pid"; fi; }
X() {
    local h=$1; shift
    if [ $SYS = flotilla ]; then timeout 20 "$BIN" -H "unix://$(sock "$h")" "$@"
    else timeout 20 docker -H "unix://$(sock "$h")" "$@"; fi
}

log "failover: $MANAGERS managers + $WORKERS workers (prefix $PREFIX, subnet $SUBNET.0/24, $EXECUTOR executor, default heartbeat), $REPS run(s) of each fault$([ $DSWARM = 1 ] && echo ", Docker Swarm $SREPS run(s)"), bin $BIN"
CL down --prefix "$PREFIX" >/dev/null 2>&1 || true
[ $KEEP = 1 ] || on_exit "bash '$BENCH_REPO/scripts/cluster.sh' down --prefix '$PREFIX'"
t0=$(now)
CL up --prefix "$PREFIX" --subnet "$SUBNET" --managers "$MANAGERS" --workers "$WORKERS" \
    --executor "$EXECUTOR" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "cluster up failed"; }
log "cluster up in $(since "$t0") s"

# node_table FROM: "hostname status managerstatus" per node, asked of FROM.
node_table() { X "$1" node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}' 2>/dev/null; }
# healthy FROM: every host Ready, one Leader, every other manager Reachable.
healthy() {
    local t h
    t=$(node_table "$1") || return 1
    [ "$(grep -c ' Leader$' <<<"$t")" = 1 ] || return 1
    for h in "${HOSTS[@]}"; do grep -q "^$h Ready" <<<"$t" || return 1; done
    for h in "${MGRS[@]}"; do grep -Eq "^$h Ready (Leader|Reachable)$" <<<"$t" || return 1; done
}
# leader: the hostname of the leader as a majority of the managers see it.
# One manager's word is not enough: a leader just healed from a partition
# still names itself for a moment (0.1-0.2 s) before it hears the new term.
leader() {
    local m
    for m in "${MGRS[@]}"; do node_table "$m" | awk '$3 == "Leader" { print $1 }'; done \
        | sort | uniq -c | awk -v half=$((${#MGRS[@]} / 2)) '$1 > half { print $2; found = 1 } END { exit !found }'
}
# On a timeout, what each manager sees and the end of each daemon's log go
# to stderr: a CI run keeps nothing else of the cluster.
wait_healthy() {
    wait_until 180 0.2 "$SYS: all nodes Ready and managers Reachable" healthy "$1" && return
    local h
    for h in "${MGRS[@]}"; do { echo "--- node ls on $h:"; node_table "$h"; } >&2; done
    if [ $SYS = flotilla ]; then
        for h in "${HOSTS[@]}"; do { echo "--- the end of $h's log:"; tail -n 60 "$STATE/$h/daemon.log"; } >&2; done
    fi
    return 1
}

# death_watch HOST FILE: in the background, writes the time at which HOST's
# daemon (flotilla, or dockerd for Docker Swarm) stops existing (or turns
# zombie) to FILE. Sets WATCH_PID.
death_watch() {
    local pid st
    pid=$(cat "$(pidfile "$1")")
    st=$(cut -d' ' -f22 "/proc/$pid/stat")
    rm -f "$2"
    (
        while s=$(cat "/proc/$pid/stat" 2>/dev/null) && [ "$(cut -d' ' -f22 <<<"$s")" = "$st" ] \
            && [ "$(cut -d' ' -f3 <<<"$s")" != Z ]; do
            sleep 0.005
        done
        echo "$EPOCHREALTIME" >"$2"
    ) &
    WATCH_PID=$!
}
# died FILE T0: the time of death written by death_watch (T0 if none).
died() { wait "$WATCH_PID" 2>/dev/null || true; cat "$1" 2>/dev/null || echo "$2"; }
# between A B: B - A in seconds, 3 decimals.
between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# --- leader ------------------------------------------------------------------------

# writers_start SOCK NAME DIR: a new write attempt every 0.1 s, each in the
# background with 15 s to answer, until DIR/stop exists; attempt i writes
# "CODE START END" to DIR/i.
writers_start() {
    local sock=$1 name=$2 dir=$3
    rm -rf "$dir"; mkdir -p "$dir"
    (
        i=0
        while [ ! -e "$dir/stop" ]; do
            i=$((i + 1))
            (
                t=$EPOCHREALTIME
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 15 --unix-socket "$sock" \
                    -H 'Content-Type: application/json' \
                    -d "{\"Name\":\"$name-$i\",\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"flotilla-busybox:latest\",\"Args\":[\"sleep\",\"1\"]}},\"Mode\":{\"Replicated\":{\"Replicas\":0}}}" \
                    http://localhost/services/create 2>/dev/null) || true
                echo "$code $t $EPOCHREALTIME" >"$dir/$i.tmp" && mv "$dir/$i.tmp" "$dir/$i"
            ) &
            sleep 0.1
        done
        wait
    ) &
    WRITERS_PID=$!
}
# first_ok DIR: the end time of the earliest successful attempt, if any.
first_ok() { cat "$1"/[0-9]* 2>/dev/null | awk '$1 == 201 { print $3 }' | sort -g | head -n1; }
have_ok() { [ -n "$(first_ok "$1")" ]; }

# leader_run kill|partition RUN
leader_run() {
    local fault=$1 r=$2 L other m t0 t1 tk td took c1 s1 e1
    L=$(leader) || die "$SYS: no leader"
    for m in "${MGRS[@]}"; do [ "$m" = "$L" ] || { other=$m; break; }; done
    log "$SYS leader run $r: $fault $L, write through $other"
    [ "$fault" = partition ] || death_watch "$L" "$WORK/dead"
    t0=$(now)
    CL "$fault" --prefix "$PREFIX" "$L" >/dev/null
    tk=$(since "$t0")
    writers_start "$(sock "$other")" "fbw$SYS$fault$r" "$WORK/writes"
    wait_until 120 0.01 "$SYS: a write through $other" have_ok "$WORK/writes"
    t1=$(first_ok "$WORK/writes")
    touch "$WORK/writes/stop"
    wait "$WRITERS_PID" 2>/dev/null || true
    read -r c1 s1 e1 <"$WORK/writes/1"
    if [ "$fault" = kill ]; then
        td=$(died "$WORK/dead" "$t0")
        took=$(between "$td" "$t1")
        record "$SYS.leader.write" "$took"
        record "$SYS.leader.write_cmd" "$(between "$t0" "$t1")"
        record "$SYS.killcmd" "$tk"
        log "  write accepted $took s after the leader died ($(between "$t0" "$t1") s after the kill command started; the command took $tk s); the first attempt answered $c1 after $(between "$s1" "$e1") s; new leader: $(leader || echo '?')"
        CL start --prefix "$PREFIX" "$L" >/dev/null
    else
        took=$(between "$t0" "$t1")
        record "$SYS.leader.cut.write" "$took"
        log "  write accepted $took s after the partition command started; the first attempt answered $c1 after $(between "$s1" "$e1") s; new leader: $(leader || echo '?')"
        CL heal --prefix "$PREFIX" "$L" >/dev/null
    fi
    wait_healthy "$other"
}

# --- worker ------------------------------------------------------------------------

R=$((2 * ${#HOSTS[@]}))
# tasks_of FROM SERVICE: "node state" of the tasks that should run.
tasks_of() {
    X "$1" service ps "$2" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' 2>/dev/null
}
all_running() { # FROM SERVICE [NOT_ON]
    local t
    t=$(tasks_of "$1" "$2") || return 1
    [ "$(grep -c ' Running' <<<"$t")" = "$R" ] || return 1
    [ -z "${3:-}" ] || ! grep -q "^$3 " <<<"$t"
}
node_down() { node_table "$1" | grep -q "^$2 Down"; }
no_containers() { # SERVICE: no container of it left on any live host (docker executor)
    local h
    [ "$EXECUTOR" = docker ] || return 0
    for h in "${HOSTS[@]}"; do
        [ -z "$(docker -H "unix://$STATE/$h/docker.sock" ps -aq --filter "label=com.docker.swarm.service.name=$1" 2>/dev/null)" ] || return 1
    done
}

# worker_run kill|partition RUN
worker_run() {
    local fault=$1 r=$2 L victim svc on t0 td down took
    L=$(leader) || die "$SYS: no leader"
    victim=${WKRS[$(((r - 1) % ${#WKRS[@]}))]}
    svc=fb$SYS$fault$r
    X "$L" service create -d --no-resolve-image --replicas "$R" --name "$svc" --stop-grace-period 1s \
        flotilla-busybox:latest sh -c 'trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
    wait_until 180 0.2 "$SYS: $R tasks of $svc running" all_running "$L" "$svc"
    on=$(tasks_of "$L" "$svc" | grep -c "^$victim " || true)
    log "$SYS worker run $r: $fault $victim ($on of $R tasks on it)"
    [ "$fault" = partition ] || death_watch "$victim" "$WORK/dead"
    t0=$(now)
    CL "$fault" --prefix "$PREFIX" "$victim" >/dev/null
    if [ "$fault" = kill ]; then
        record "$SYS.killcmd" "$(since "$t0")"
        td=$(died "$WORK/dead" "$t0")
    else
        td=$t0
    fi
    down=""
    while :; do
        # Down first: the tasks may move within one poll of it.
        if [ -z "$down" ] && node_down "$L" "$victim"; then down=$(since "$td"); fi
        all_running "$L" "$svc" "$victim" && break
        awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a > 180) }' \
            && die "$SYS: $svc's tasks not running elsewhere 180 s after the $fault"
        sleep 0.1
    done
    took=$(since "$td")
    if [ "$fault" = kill ]; then
        record "$SYS.worker.moved" "$took"
        record "$SYS.worker.moved_cmd" "$(since "$t0")"
        [ -z "$down" ] || record "$SYS.worker.down" "$down"
    else
        record "$SYS.worker.cut.moved" "$took"
        [ -z "$down" ] || record "$SYS.worker.cut.down" "$down"
    fi
    log "  $on tasks running elsewhere after $took s (node Down seen at ${down:-after} s)"
    X "$L" service rm "$svc" >/dev/null
    if [ "$fault" = kill ]; then
        CL start --prefix "$PREFIX" "$victim" >/dev/null
    else
        CL heal --prefix "$PREFIX" "$victim" >/dev/null
    fi
    wait_healthy "$L"
    # The old service's containers go before the next run starts.
    wait_until 120 0.5 "$SYS: $svc's containers gone" no_containers "$svc"
}

# --- Flotilla --------------------------------------------------------------------------

SYS=flotilla
wait_healthy manager1
for r in $(seq 1 "$REPS"); do leader_run kill "$r"; done
for r in $(seq 1 "$PARTS"); do leader_run partition "$r"; done
for r in $(seq 1 "$REPS"); do worker_run kill "$r"; done
for r in $(seq 1 "$PARTS"); do worker_run partition "$r"; done

# --- Docker Swarm on the same hosts' dockerds ---------------------------------------------

if [ $DSWARM = 1 ]; then
    SYS=swarm
    addr() { (. "$STATE/$1/host.env"; echo "$ADDR"); }
    log "Docker Swarm: init on manager1's dockerd, join the others (port 2378)"
    X manager1 swarm init --advertise-addr "$(addr manager1):2378" --listen-addr "$(addr manager1):2378" >/dev/null
    mtok=$(X manager1 swarm join-token -q manager) wtok=$(X manager1 swarm join-token -q worker)
    for h in "${HOSTS[@]}"; do
        [ "$h" != manager1 ] || continue
        tok=$wtok; [[ $h == manager* ]] && tok=$mtok
        X "$h" swarm join --token "$tok" --advertise-addr "$(addr "$h"):2378" \
            --listen-addr "$(addr "$h"):2378" "$(addr manager1):2378" >/dev/null
    done
    wait_healthy manager1
    for r in $(seq 1 "$SREPS"); do leader_run kill "$r"; done
    for r in $(seq 1 "$SREPS"); do worker_run kill "$r"; done
    for h in "${HOSTS[@]}"; do X "$h" swarm leave --force >/dev/null 2>&1 || true; done
fi

# --- report ------------------------------------------------------------------------

echo
echo "failover: $MANAGERS managers + $WORKERS workers in network namespaces, $EXECUTOR executor, default settings; $(nproc) cores; $REPS run(s)$([ $DSWARM = 1 ] && echo ", Docker Swarm $SREPS run(s)"): median (min–max)"
echo
if [ $DSWARM = 1 ]; then
    swarm_l=$(cell swarm.leader.write) swarm_w=$(cell swarm.worker.moved) swarm_d=$(cell swarm.worker.down)
    rl=$(ratio "$(median_of flotilla.leader.write)" "$(median_of swarm.leader.write)")
    rw=$(ratio "$(median_of flotilla.worker.moved)" "$(median_of swarm.worker.moved)")
    swhead="Docker Swarm, same hosts, same run | Flotilla / Swarm"
else
    swarm_l="14.5–15 s (DESIGN.md)" swarm_w="33–34 s (DESIGN.md)" swarm_d="" rl="" rw=""
    swhead="Docker Swarm (not run: DESIGN.md, same kind of machine) | Flotilla / Swarm"
fi
echo "| fault | Flotilla, from the death | from the kill command | target | $swhead |"
echo "| --- | --- | --- | --- | --- | --- |"
echo "| leader kill -9 → write accepted by another manager | $(cell flotilla.leader.write) | $(cell flotilla.leader.write_cmd) | < 2 s | $swarm_l | $rl |"
echo "| worker kill -9 → its tasks running elsewhere | $(cell flotilla.worker.moved) | $(cell flotilla.worker.moved_cmd) | < 5 s | $swarm_w | $rw |"
echo "| worker kill -9 → node shown Down | $(cell flotilla.worker.down) | | | $swarm_d | |"
if [ "$PARTS" -gt 0 ]; then
    echo "| leader cut off (partition) → write accepted by another manager | | $(cell flotilla.leader.cut.write) | | | |"
    echo "| worker cut off (partition) → its tasks running elsewhere | | $(cell flotilla.worker.cut.moved) | | | |"
    echo "| worker cut off (partition) → node shown Down | | $(cell flotilla.worker.cut.down) | | | |"
fi
echo
echo "(the kill command itself: $(cell flotilla.killcmd))"
echo
for sys in flotilla swarm; do
    for k in leader.write leader.write_cmd worker.moved worker.moved_cmd worker.down killcmd \
        leader.cut.write worker.cut.moved worker.cut.down; do
        emit "$sys.$k" s
    done
done
[ $DSWARM = 0 ] || { emit_ratio flotilla_over_swarm.leader.write "$rl"; emit_ratio flotilla_over_swarm.worker.moved "$rw"; }
