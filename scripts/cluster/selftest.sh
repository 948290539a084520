#!/usr/bin/env bash
# Checks scripts/cluster.sh for real: brings clusters up, looks at what it
# made, kills/starts/partitions hosts, tears them down and checks nothing is
# left. Prints every check; exits non-zero if any failed. Needs root.
#
#   scripts/cluster/selftest.sh            # docker executor, process executor, partial up
#   SELFTEST_ONLY=docker scripts/cluster/selftest.sh   # one part: docker|process|partial
#
# Uses its own prefixes (fst<pid>d/p/x) and subnets (10.213.200-202, or
# $SELFTEST_SUBNET_BASE.{200,201,202}) so it can run beside other clusters.
# Traffic goes only to the namespaces it creates and to loopback.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=$REPO/scripts/cluster.sh
BASE=${SELFTEST_SUBNET_BASE:-10.213}
STATE_ROOT=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}
ONLY=${SELFTEST_ONLY:-}
FAILS=0
PASSES=0
PREFIXES=()
# up's output per cluster; kept when a check failed, to read why.
OUTDIR=$(mktemp -d /tmp/cluster-selftest.XXXXXX)

pass() { PASSES=$((PASSES + 1)); echo "  ok    $*"; }
fail() { FAILS=$((FAILS + 1)); echo "  FAIL  $*"; }
# check DESCRIPTION CMD... : CMD must succeed.
check() { local d=$1; shift; if "$@" >/dev/null 2>&1; then pass "$d"; else fail "$d"; fi; }
# check_not DESCRIPTION CMD... : CMD must fail.
check_not() { local d=$1; shift; if "$@" >/dev/null 2>&1; then fail "$d"; else pass "$d"; fi; }
section() { echo; echo "== $*"; }

cl() { "$CLUSTER" "$@"; }

# ping from host A's namespace to ADDR, once, 1 s timeout. busybox's ping
# because the machine may not have iputils.
PING=(busybox ping -c1 -W1)
ping_from() { local p=$1 h=$2 addr=$3; cl exec --prefix "$p" "$h" "${PING[@]}" "$addr"; }

# Processes whose command line mentions the cluster's state dir. Called
# directly, never through `sh -c "pgrep ..."`: that shell's own command line
# would match the pattern.
procs_of() { pgrep -f "$STATE_ROOT/$1/${2:-}" || true; }
# Gone, or a zombie waiting for PID 1 to reap it (its parent was killed too).
pid_dead() { [ ! -e "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
dockerd_of() { pgrep -af dockerd | grep -q "$STATE_ROOT/$1/"; }
no_procs_of() { [ -z "$(procs_of "$@")" ]; }
cgroup_empty() {
    local d
    for d in /sys/fs/cgroup/pids/flotilla-cluster/"$1" /sys/fs/cgroup/flotilla-cluster/"$1"; do
        [ -d "$d" ] || continue
        [ -z "$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] || return 1
    done
}

cleanup() {
    local p
    for p in "${PREFIXES[@]}"; do "$CLUSTER" down --prefix "$p" >/dev/null 2>&1 || true; done
    if [ "$FAILS" = 0 ]; then rm -rf "$OUTDIR"; else echo "selftest: outputs of up kept in $OUTDIR"; fi
}
trap cleanup EXIT

# Everything `down` must leave behind: nothing.
check_gone() {
    local p=$1
    check_not "no namespace $p-* left (ip netns)" sh -c "ip netns list | grep -q '^$p-'"
    check_not "no link $p-* left (ip link: bridge, veths)" sh -c "ip -o link show | grep -q ' $p-'"
    check_not "no FORWARD rule for $p-br left (iptables -S FORWARD)" sh -c "iptables -S FORWARD | grep -q -- '-i $p-br'"
    check "no process of the cluster left (ps)" no_procs_of "$p"
    check_not "no state dir left ($STATE_ROOT/$p)" test -e "$STATE_ROOT/$p"
    check_not "no mount left under the state dir" sh -c "grep -q ' $STATE_ROOT/$p/' /proc/self/mounts"
    check_not "no cgroup left (/sys/fs/cgroup/*/flotilla-cluster/$p)" sh -c "ls -d /sys/fs/cgroup/*/flotilla-cluster/$p /sys/fs/cgroup/flotilla-cluster/$p 2>/dev/null | grep -q ."
}

# `up` must report every join: "HOST: joined as ROLE", or "HOST: swarm join
# as ROLE failed: WHY" (joining may not be implemented, or may hang, in the
# flotilla build under test: the report must say so per host, and `up` must
# then exit non-zero with a NOT JOINED line, leaving the hosts up).
check_joins() {
    local p=$1 rc=$2 out=$3; shift 3
    local h failed=0
    for h in "$@"; do
        if grep -q "$h: joined as" "$out"; then
            pass "$h joined"
            check "node ls on $MGR lists $h" sh -c "'$CLUSTER' flotilla --prefix $p $MGR node ls | grep -qw $h"
        elif grep -q "$h: swarm join as [a-z]* failed: ." "$out"; then
            failed=1
            pass "up reports $h's failed join: $(grep -o "$h: swarm join as .*" "$out" | cut -c1-110)"
            check "$h's daemon stays up after its failed join" \
                curl -sf --unix-socket "$STATE_ROOT/$p/$h/flotilla.sock" http://localhost/_ping
        else
            failed=1
            fail "up says nothing about $h's join"
        fi
    done
    if [ $failed = 1 ]; then
        check "up exits non-zero (exit $rc) when a join failed" test "$rc" != 0
        check "up's summary names the hosts that did not join" grep -q "NOT JOINED:" "$out"
    else
        check "up exits 0 (exit $rc) when every host joined" test "$rc" = 0
    fi
}

test_docker() {
    local p=fst$$d sub=$BASE.200 out
    out=$OUTDIR/$p.out
    PREFIXES+=("$p")
    MGR=manager
    section "docker executor: up --prefix $p --subnet $sub (1 manager + 3 workers)"
    local t0 t1 rc=0
    t0=$(date +%s%N)
    cl up --prefix "$p" --subnet "$sub" >"$out" 2>&1 || rc=$?
    t1=$(date +%s%N)
    echo "  up took $(( (t1 - t0) / 1000000 )) ms (exit $rc)"
    check_joins "$p" "$rc" "$out" worker01 worker02 worker03
    check "summary prints export FLOTILLA_HOST / DOCKER_HOST for the manager" \
        sh -c "grep -q 'export FLOTILLA_HOST=unix://$STATE_ROOT/$p/manager/flotilla.sock' '$out' && grep -q 'export DOCKER_HOST=' '$out'"

    local h i=0 hosts="manager worker01 worker02 worker03"
    for h in $hosts; do
        i=$((i + 1))
        check "$h: namespace $p-$h exists" test -e "/var/run/netns/$p-$h"
        check "$h: address $sub.$((10 + i)) on eth0" sh -c "ip -n $p-$h -4 addr show eth0 | grep -q 'inet $sub.$((10 + i))/24'"
        check "$h: its dockerd runs a container (docker run --rm flotilla-busybox echo ok)" \
            sh -c "'$CLUSTER' docker --prefix $p $h run --rm flotilla-busybox:latest echo ok | grep -qx ok"
        check "$h: flotilla daemon answers /_ping" curl -sf --unix-socket "$STATE_ROOT/$p/$h/flotilla.sock" http://localhost/_ping
        check "$h: exec sees hostname $h" sh -c "[ \"\$('$CLUSTER' exec --prefix $p $h hostname)\" = $h ]"
        check "$h: docker info Name is $h" sh -c "[ \"\$('$CLUSTER' docker --prefix $p $h info --format '{{.Name}}')\" = $h ]"
        check "$h: pings the bridge $sub.1" ping_from "$p" "$h" "$sub.1"
    done
    check "manager pings worker03 ($sub.14)" ping_from "$p" manager "$sub.14"
    check "worker03 pings worker01 ($sub.12)" ping_from "$p" worker03 "$sub.12"
    check "a container on worker01 pings worker02 (masquerade inside worker01's netns)" \
        cl docker --prefix "$p" worker01 run --rm flotilla-busybox:latest ping -c1 -W1 "$sub.13"
    check_not "no default route in a host's namespace (test traffic cannot leave)" \
        sh -c "ip -n $p-worker01 route | grep -q default"
    check "node ls on manager: manager is Ready" \
        sh -c "'$CLUSTER' flotilla --prefix $p manager node ls | grep -E '^[a-z0-9]+ +\\* +manager +Ready'"
    check "FORWARD accept rule for $p-br is on the host" sh -c "iptables -S FORWARD | grep -q -- '-i $p-br -o $p-br'"
    check "the per-host dockerds put no rule into the machine's iptables" \
        sh -c "! iptables-save | grep -qE '172\\.30\\.[0-9]+\\.0/24'"
    check "status lists 4 hosts up" sh -c "[ \$('$CLUSTER' status --prefix $p | grep -c ' up ') = 4 ]"

    section "docker executor: idempotent up"
    local rc2=0
    cl up --prefix "$p" --subnet "$sub" >"$out.2" 2>&1 || rc2=$?
    check "second up keeps the same hosts (no re-init)" sh -c "! grep -q 'swarm init' '$out.2'"
    check "second up adds no second FORWARD rule" sh -c "[ \$(iptables -S FORWARD | grep -c -- '-i $p-br -o $p-br') = 1 ]"
    check_not "up with another layout is refused" cl up --prefix "$p" --subnet "$sub" --workers 2

    section "docker executor: kill worker03 (with a sleep container)"
    cl docker --prefix "$p" worker03 run -d --name sleeper flotilla-busybox:latest sleep 4242 >/dev/null
    check "sleep container runs on worker03" pgrep -f "sleep 4242"
    check "worker03 has dockerd, containerd, shim, flotilla processes" test "$(procs_of "$p" worker03/ | wc -l)" -ge 4
    t0=$(date +%s%N)
    check "kill worker03" cl kill --prefix "$p" worker03
    t1=$(date +%s%N)
    echo "  kill took $(( (t1 - t0) / 1000000 )) ms"
    check "no process of worker03 left (flotilla, dockerd, containerd, shim)" no_procs_of "$p" worker03/
    check_not "the container's sleep is gone too" pgrep -f "sleep 4242"
    check "worker03's cgroup is empty" cgroup_empty "$p/worker03"
    check_not "worker03 no longer answers ping from manager" ping_from "$p" manager "$sub.14"
    check "other hosts still run (manager /_ping)" curl -sf --unix-socket "$STATE_ROOT/$p/manager/flotilla.sock" http://localhost/_ping
    check "status shows worker03 killed" sh -c "'$CLUSTER' status --prefix $p | grep -E '^worker03 .* killed'"
    t0=$(date +%s%N)
    check "start worker03" cl start --prefix "$p" worker03
    t1=$(date +%s%N)
    echo "  start took $(( (t1 - t0) / 1000000 )) ms"
    check "worker03's flotilla daemon answers /_ping again" curl -sf --unix-socket "$STATE_ROOT/$p/worker03/flotilla.sock" http://localhost/_ping
    check "worker03's dockerd runs containers again" \
        sh -c "'$CLUSTER' docker --prefix $p worker03 run --rm flotilla-busybox:latest echo ok | grep -qx ok"
    check "worker03's dockerd remembers its (dead) sleeper container" \
        sh -c "'$CLUSTER' docker --prefix $p worker03 ps -a --format '{{.Names}}' | grep -qx sleeper"
    check "worker03 answers ping again" ping_from "$p" manager "$sub.14"
    check "status shows worker03 up" sh -c "'$CLUSTER' status --prefix $p | grep -E '^worker03 .* up +up +up'"

    section "docker executor: partition / heal worker02"
    check "partition worker02" cl partition --prefix "$p" worker02
    check_not "worker01 cannot ping worker02" ping_from "$p" worker01 "$sub.13"
    check_not "worker02 cannot ping worker01" ping_from "$p" worker02 "$sub.12"
    check_not "worker02 cannot ping the bridge" ping_from "$p" worker02 "$sub.1"
    check_not "a container on worker02 cannot ping worker01" \
        cl docker --prefix "$p" worker02 run --rm flotilla-busybox:latest ping -c1 -W1 "$sub.12"
    check "worker02 still pings its own loopback" ping_from "$p" worker02 127.0.0.1
    check "worker02's daemon still answers on its socket" curl -sf --unix-socket "$STATE_ROOT/$p/worker02/flotilla.sock" http://localhost/_ping
    check "status shows worker02 partitioned" sh -c "'$CLUSTER' status --prefix $p | grep -E '^worker02 .* partitioned'"
    check "partition is idempotent" cl partition --prefix "$p" worker02
    check "heal worker02" cl heal --prefix "$p" worker02
    check "worker01 pings worker02 again" ping_from "$p" worker01 "$sub.13"
    check "worker02 pings worker01 again" ping_from "$p" worker02 "$sub.12"
    check_not "heal left no partition rule in worker02's namespace" \
        sh -c "'$CLUSTER' exec --prefix $p worker02 iptables-save | grep -q flotilla-cluster-partition"
    check "heal kept dockerd's own rules in worker02's namespace" \
        sh -c "'$CLUSTER' exec --prefix $p worker02 iptables-save | grep -q DOCKER"

    section "docker executor: down (a running container on worker01, worker02 killed)"
    cl docker --prefix "$p" worker01 run -d flotilla-busybox:latest sleep 4343 >/dev/null
    cl docker --prefix "$p" worker02 run -d flotilla-busybox:latest sleep 4545 >/dev/null
    # A killed dockerd leaves its mounts (data-root bind, overlay, netns
    # files) behind: down must still remove everything.
    check "kill worker02 (its dockerd's mounts stay behind)" cl kill --prefix "$p" worker02
    check "worker02's overlay mount is still there after the kill" grep -q " $STATE_ROOT/$p/worker02/docker/data/overlay2/.*/merged " /proc/self/mounts
    t0=$(date +%s%N)
    check "down" cl down --prefix "$p"
    t1=$(date +%s%N)
    echo "  down took $(( (t1 - t0) / 1000000 )) ms"
    check_not "the containers' sleeps are gone" pgrep -f "sleep 4343|sleep 4545"
    check_gone "$p"
    check "down again is a no-op" cl down --prefix "$p"
}

test_process() {
    local p=fst$$p sub=$BASE.201 out
    out=$OUTDIR/$p.out
    PREFIXES+=("$p")
    MGR=manager1
    section "process executor: up --executor process --managers 3 --workers 2"
    local rc=0
    # Joins that hang must not make the test slow.
    FLOTILLA_CLUSTER_JOIN_TIMEOUT=${FLOTILLA_CLUSTER_JOIN_TIMEOUT:-20} \
        cl up --prefix "$p" --subnet "$sub" --executor process --managers 3 --workers 2 >"$out" 2>&1 || rc=$?
    check_joins "$p" "$rc" "$out" manager2 manager3 worker01 worker02
    local h
    for h in manager1 manager2 manager3 worker01 worker02; do
        check "$h: flotilla daemon answers /_ping" curl -sf --unix-socket "$STATE_ROOT/$p/$h/flotilla.sock" http://localhost/_ping
    done
    check_not "no dockerd runs for this cluster" dockerd_of "$p"
    check "node ls on manager1: manager1 is Ready, engine flotilla-process" \
        sh -c "'$CLUSTER' flotilla --prefix $p manager1 node ls | grep -E '\\* +manager1 +Ready .*process'"
    check_not "container requests are not passed through to the machine's engine" \
        env DOCKER_HOST="unix://$STATE_ROOT/$p/manager1/flotilla.sock" docker ps
    check "manager3 pings worker02" ping_from "$p" manager3 "$sub.15"

    section "process executor: kill/start the host that runs a task"
    cl flotilla --prefix "$p" manager1 service create --detach --name st flotilla-busybox sleep 4444 >/dev/null 2>&1
    local i pid="" host=""
    for i in $(seq 1 50); do pid=$(pgrep -f "sleep 4444" | head -n1); [ -n "$pid" ] && break; sleep 0.2; done
    check "the task runs as a process (sleep 4444)" test -n "$pid"
    # Which host runs it: its cgroup says (…/flotilla-cluster/PREFIX/HOST/daemons).
    [ -z "$pid" ] || host=$(sed -n "s|.*/flotilla-cluster/$p/\([^/]*\)/.*|\1|p" "/proc/$pid/cgroup" | head -n1)
    check "the task's process is in its host's cgroup (${host:-none})" test -n "$host"
    host=${host:-manager1}
    check "kill $host" cl kill --prefix "$p" "$host"
    check "the task's process ($pid) died with its host" pid_dead "${pid:-0}"
    check "no process of $host left" no_procs_of "$p" "$host/"
    check "start $host" cl start --prefix "$p" "$host"
    check "$host is still in its swarm after the restart" \
        sh -c "'$CLUSTER' flotilla --prefix $p $host info 2>/dev/null | grep -q 'Swarm: active' || curl -sf --unix-socket '$STATE_ROOT/$p/$host/flotilla.sock' http://localhost/info | grep -q '\"LocalNodeState\":\"active\"'"

    section "process executor: down"
    check "down" cl down --prefix "$p"
    check_not "the task's process is gone" pgrep -f "sleep 4444"
    check_gone "$p"
}

# A host whose daemon never comes up: `up` fails, `down` still cleans.
test_partial() {
    local p=fst$$x sub=$BASE.202 out
    out=$OUTDIR/$p.out
    PREFIXES+=("$p")
    section "partial up: a flotilla binary that exits at once"
    local rc=0
    FLOTILLA_BIN=/bin/false cl up --prefix "$p" --subnet "$sub" --executor process --workers 1 >"$out" 2>&1 || rc=$?
    check "up fails (exit $rc)" test "$rc" != 0
    check "up says why in one line" grep -q "^cluster.sh: some hosts did not boot" "$out"
    check "the namespaces were made before the failure" test -e "/var/run/netns/$p-manager"
    check "down after a partial up" cl down --prefix "$p"
    check_gone "$p"
}

[ "$(id -u)" = 0 ] || { echo "selftest: must run as root" >&2; exit 1; }
case $ONLY in
    "") test_docker; test_process; test_partial ;;
    docker) test_docker ;;
    process) test_process ;;
    partial) test_partial ;;
    *) echo "selftest: SELFTEST_ONLY must be docker, process or partial" >&2; exit 2 ;;
esac

echo
echo "selftest: $PASSES passed, $FAILS failed"
[ "$FAILS" = 0 ]
