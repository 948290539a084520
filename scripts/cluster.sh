#!/usr/bin/env bash
# Several Flotilla hosts on one machine: the project's equivalent of the
# seed's `vagrant up` (a manager and three workers, each its own machine).
#
# Every host is a network namespace with its own address on a Linux bridge,
# its own hostname, its own dockerd (with --executor docker) and its own
# `flotilla daemon`. Nothing is shared with the machine's own Docker Engine
# except the test images, which are copied into each host's dockerd.
#
#   scripts/cluster.sh up [--managers N] [--workers M] [--executor docker|process]
#                         [--prefix NAME] [--subnet A.B.C] [--data-size SIZE]
#                         [--metrics-port PORT]
#   scripts/cluster.sh down [--prefix NAME]
#   scripts/cluster.sh status [--prefix NAME]
#   scripts/cluster.sh kill HOST        # power the host off: kill -9 all it runs
#   scripts/cluster.sh start HOST       # power it back on (same data dirs)
#   scripts/cluster.sh partition HOST   # cut its network cable (iptables in its netns)
#   scripts/cluster.sh heal HOST        # plug it back
#   scripts/cluster.sh pause HOST       # SIGSTOP its daemon (its tasks keep running)
#   scripts/cluster.sh resume HOST      # SIGCONT it
#   scripts/cluster.sh fill HOST        # fill its data directory's filesystem (--data-size)
#   scripts/cluster.sh unfill HOST      # give the space back
#   scripts/cluster.sh exec HOST CMD... # run CMD on the host (its netns, hostname,
#                                       # FLOTILLA_HOST and DOCKER_HOST)
#   scripts/cluster.sh flotilla HOST ARGS...   # flotilla CLI against the host
#   scripts/cluster.sh docker HOST ARGS...     # docker CLI against the host's dockerd
#   scripts/cluster.sh env [HOST]       # print export lines for a host (default: first manager)
#
# --metrics-port PORT: every daemon serves Prometheus metrics at
# http://ADDRESS:PORT/metrics (`--metrics-addr`), ADDRESS being its host's,
# and every host's dockerd (docker executor) at ADDRESS:PORT+1.
#
# --data-size SIZE (tmpfs sizes: 64m, 1g): each host's data directory is a
# filesystem of its own of that size, so that `fill` can make a disk full on
# one host without touching the machine's.
#
# $FLOTILLA_CLUSTER_INIT_ARGS: more `swarm init` flags for the first manager
# (e.g. "--dispatcher-heartbeat 2s" in tests).
#
# --prefix (default "flotilla", or $FLOTILLA_CLUSTER_PREFIX) goes before every
# name this script makes, so several clusters can live side by side:
#   netns ${prefix}-${host}, bridge ${prefix}-br, veths ${prefix}-v<i>,
#   cgroups /flotilla-cluster/${prefix}/${host}, state /run/flotilla-cluster/${prefix}
# Defaults: 1 manager ("manager"; manager1..N when N>1), 3 workers
# (worker01..), subnet 10.213.0 (bridge .1, host i at .10+i), docker executor.
#
# State lives in $FLOTILLA_CLUSTER_STATE/$prefix (default /run/flotilla-cluster:
# root-only, on a run-time directory, so a reboot forgets it like it forgets
# the namespaces). Per host: host.env (name, role, address, index), data/ (the
# Flotilla data dir), docker/ (dockerd data and exec roots), flotilla.sock,
# docker.sock, flotilla.pid, docker.pid, daemon.log, dockerd.log. `down`
# removes it all.
#
# The flotilla binary is $FLOTILLA_BIN, else target/release/flotilla, else
# target/debug/flotilla. `up` copies it into the state dir so that a cargo
# build running at the same time cannot swap it under a running cluster, and
# `start` brings a host back with the same version as the others.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_ROOT=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}
CGROUP_ROOT=/sys/fs/cgroup
# Name of the uplink inside every namespace.
UPLINK=eth0

# --- small helpers ---------------------------------------------------------

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }
now_ms() { date +%s%3N; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, bridges, iptables, cgroups)"; }

need_cmds() {
    local c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "missing command: $c"; done
}

# True when pid $1 is alive and its command line contains $2 (a pid file can
# outlive its process, and the pid can be reused by something else).
pid_alive() {
    local pid=$1 want=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$want"
}

read_pid() { [ -f "$1" ] && cat "$1" 2>/dev/null || true; }

# wait_for SECONDS DESCRIPTION CMD... : poll CMD every 0.2 s.
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
        sleep 0.2
    done
}

# --- options and state -----------------------------------------------------

PREFIX=${FLOTILLA_CLUSTER_PREFIX:-flotilla}
MANAGERS=1
WORKERS=3
EXECUTOR=docker
DATA_SIZE=${FLOTILLA_CLUSTER_DATA_SIZE:-}
METRICS_PORT=
SUBNET=10.213.0

# Options may come anywhere, except for the commands that pass arguments on
# (exec, flotilla, docker): there they must come before HOST, and parsing
# stops at the first non-option (STOP_AT_ARG=1).
parse_common_opts() {
    ARGS=()
    while [ $# -gt 0 ]; do
        if [ "${STOP_AT_ARG:-0}" = 1 ] && [[ $1 != --* ]]; then ARGS+=("$@"); break; fi
        case $1 in
            --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
            --prefix=*) PREFIX=${1#*=}; shift ;;
            --managers) [ $# -ge 2 ] || die "--managers needs a value"; MANAGERS=$2; shift 2 ;;
            --managers=*) MANAGERS=${1#*=}; shift ;;
            --workers) [ $# -ge 2 ] || die "--workers needs a value"; WORKERS=$2; shift 2 ;;
            --workers=*) WORKERS=${1#*=}; shift ;;
            --executor) [ $# -ge 2 ] || die "--executor needs a value"; EXECUTOR=$2; shift 2 ;;
            --executor=*) EXECUTOR=${1#*=}; shift ;;
            --subnet) [ $# -ge 2 ] || die "--subnet needs a value"; SUBNET=$2; shift 2 ;;
            --subnet=*) SUBNET=${1#*=}; shift ;;
            --data-size) [ $# -ge 2 ] || die "--data-size needs a value"; DATA_SIZE=$2; shift 2 ;;
            --data-size=*) DATA_SIZE=${1#*=}; shift ;;
            --metrics-port) [ $# -ge 2 ] || die "--metrics-port needs a value"; METRICS_PORT=$2; shift 2 ;;
            --metrics-port=*) METRICS_PORT=${1#*=}; shift ;;
            *) ARGS+=("$1"); shift ;;
        esac
    done
    # Interface names are limited to 15 bytes: "${prefix}-v<i>" must fit.
    # No '-' in the prefix either, so "a" and "a-b" can never own each
    # other's namespaces.
    [[ $PREFIX =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "--prefix must be 1-10 lowercase letters/digits, starting with a letter (got '$PREFIX')"
    STATE=$STATE_ROOT/$PREFIX
    BRIDGE=$PREFIX-br
    CGROUP_REL=flotilla-cluster/$PREFIX
}

# Host-side veth of host number $1.
veth_name() { echo "$PREFIX-v$1"; }
ns_name() { echo "$PREFIX-$1"; }

# The hosts of the cluster, in index order (from the state dir).
hosts() {
    [ -f "$STATE/cluster.env" ] || return 0
    # shellcheck disable=SC1091
    (. "$STATE/cluster.env"; echo "$HOSTS")
}

load_cluster() {
    [ -f "$STATE/cluster.env" ] || die "no cluster '$PREFIX' (no $STATE/cluster.env): run 'scripts/cluster.sh up --prefix $PREFIX' first"
    # shellcheck disable=SC1091
    . "$STATE/cluster.env"
}

# Sets NAME ROLE ADDR IDX NS DIR for host $1.
load_host() {
    local h=$1
    [ -f "$STATE/$h/host.env" ] || die "no host '$h' in cluster '$PREFIX' (hosts: $(hosts | tr '\n' ' '))"
    # shellcheck disable=SC1090
    . "$STATE/$h/host.env"
    NS=$(ns_name "$NAME")
    DIR=$STATE/$NAME
}

bin_path() { echo "$STATE/bin/flotilla"; }

# --- cgroups: how a host's processes are found and killed -------------------
#
# Every process of a host lives under the cgroup /flotilla-cluster/$prefix/$host:
# the daemons in .../daemons (their children inherit it, so process-executor
# tasks are there too) and the containers in .../docker/<id> (dockerd's
# --cgroup-parent). Containers have their own network namespace, so
# `ip netns pids` does not see them, and their shims are reparented to PID 1,
# so they are not in dockerd's process tree either: the cgroup is the one
# place that holds them all, even after dockerd itself was killed.

cgroup_v2() { [ -f "$CGROUP_ROOT/cgroup.controllers" ]; }

# The cgroup directories to put a host's daemons into (one per hierarchy
# we use: pids to list processes, freezer to stop them atomically).
cgroup_daemon_dirs() {
    local h=$1
    if cgroup_v2; then
        echo "$CGROUP_ROOT/$CGROUP_REL/$h/daemons"
    else
        local c
        for c in pids freezer; do
            [ -d "$CGROUP_ROOT/$c" ] && echo "$CGROUP_ROOT/$c/$CGROUP_REL/$h/daemons"
        done
    fi
    return 0
}

cgroup_setup() {
    local d
    for d in $(cgroup_daemon_dirs "$1"); do mkdir -p "$d"; done
    [ -n "$(cgroup_daemon_dirs "$1")" ] || die "no usable cgroup hierarchy under $CGROUP_ROOT (need pids+freezer v1 or v2)"
}

# Every pid in the host's cgroup tree (or the whole cluster's, without $1).
cgroup_pids() {
    local base
    if cgroup_v2; then base=$CGROUP_ROOT/$CGROUP_REL; else base=$CGROUP_ROOT/pids/$CGROUP_REL; fi
    [ -n "${1:-}" ] && base=$base/$1
    [ -d "$base" ] || return 0
    find "$base" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

# kill -9 everything in the cgroup tree: freeze first so nothing can fork
# while we go through the list, kill, thaw (a frozen task dies once thawed).
cgroup_kill() {
    local rel=$CGROUP_REL${1:+/$1} tries=0 pids
    if cgroup_v2 && [ -f "$CGROUP_ROOT/$rel/cgroup.kill" ]; then
        echo 1 >"$CGROUP_ROOT/$rel/cgroup.kill" 2>/dev/null || true
    fi
    while pids=$(cgroup_pids "${1:-}") && [ -n "$pids" ]; do
        local fz=$CGROUP_ROOT/freezer/$rel/freezer.state
        [ -f "$fz" ] && echo FROZEN >"$fz" 2>/dev/null || true
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        [ -f "$fz" ] && echo THAWED >"$fz" 2>/dev/null || true
        tries=$((tries + 1))
        [ $tries -lt 100 ] || { echo "cluster.sh: processes still alive in cgroup $rel: $pids" >&2; return 1; }
        sleep 0.1
    done
}

# Removes the cgroup directories of the cluster in every hierarchy, deepest
# first (dockerd creates .../docker/<id> in every controller, and after a
# kill -9 nobody else removes them).
cgroup_remove() {
    local d
    for d in "$CGROUP_ROOT"/*/"$CGROUP_REL" "$CGROUP_ROOT/$CGROUP_REL"; do
        [ -d "$d" ] || continue
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    # The shared parent goes once no cluster uses it any more.
    for d in "$CGROUP_ROOT"/*/flotilla-cluster "$CGROUP_ROOT/flotilla-cluster"; do
        [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
    done
    return 0
}

# spawn HOST LOGFILE PIDFILE CMD... : start CMD detached, inside the host's
# network namespace, UTS namespace (its own hostname) and cgroup.
#  - nsenter --net, NOT `ip netns exec`: the latter remounts /sys, which hides
#    the cgroup mounts, and dockerd then dies with "Devices cgroup isn't
#    mounted".
#  - unshare --uts + hostname: `node ls` and `docker info` tell hosts apart.
#  - setsid: a Ctrl-C in the terminal that ran `up` must not kill the hosts.
# 8>&-: the daemons must not inherit the lock (see lock()).
# Neither setsid (not a group leader here), nsenter, unshare (no --fork) nor
# sh (exec) forks, so $! is the pid of CMD itself.
spawn() {
    local h=$1 logf=$2 pidf=$3; shift 3
    # shellcheck disable=SC2016
    setsid bash -c '
        for f in $CGROUP_PROCS; do echo $$ >"$f"; done
        exec nsenter --net="/var/run/netns/$NS" unshare --uts sh -c "hostname \"\$0\" && exec \"\$@\"" "$HOSTNAME_" "$@"
    ' _ "$@" </dev/null >>"$logf" 2>&1 8>&- &
    echo $! >"$pidf"
}

# The env spawn's inner bash needs (exported per call).
spawn_env() {
    export NS CGROUP_PROCS HOSTNAME_
    NS=$(ns_name "$1")
    HOSTNAME_=$1
    CGROUP_PROCS=$(for d in $(cgroup_daemon_dirs "$1"); do printf '%s ' "$d/cgroup.procs"; done)
}

# --- network ----------------------------------------------------------------

forward_rule() { echo "FORWARD -i $BRIDGE -o $BRIDGE -j ACCEPT -m comment --comment flotilla-cluster-$PREFIX"; }

net_bridge_up() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        echo "$BRIDGE" >"$STATE/bridge"
    fi
    ip addr replace "$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # The host's dockerd sets the FORWARD policy to DROP and bridged traffic
    # goes through iptables (br_netfilter), so hosts on the bridge cannot
    # reach each other without this. Added once, removed by `down`.
    # shellcheck disable=SC2046
    iptables -C $(forward_rule) 2>/dev/null || iptables -I $(forward_rule)
}

# Namespace, veth pair (one end renamed $UPLINK inside, the other on the
# bridge), address, lo up. No default route: the hosts reach each other and
# the bridge address, nothing else, so test traffic cannot leave the machine.
net_host_up() {
    local h=$1 idx=$2 addr=$3
    local ns veth peer
    ns=$(ns_name "$h"); veth=$(veth_name "$idx"); peer=$PREFIX-p$idx
    [ -e "/var/run/netns/$ns" ] || ip netns add "$ns"
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" link show "$UPLINK" >/dev/null 2>&1; then
        ip link del "$veth" 2>/dev/null || true
        ip link del "$peer" 2>/dev/null || true
        ip link add "$veth" type veth peer name "$peer"
        ip link set "$peer" netns "$ns"
        ip -n "$ns" link set "$peer" name "$UPLINK"
    fi
    ip link set "$veth" master "$BRIDGE"
    ip link set "$veth" up
    ip -n "$ns" addr replace "$addr/24" dev "$UPLINK"
    ip -n "$ns" link set "$UPLINK" up
}

# The partition rules: every packet that comes in on the uplink (raw
# PREROUTING: before routing, so for the host and for its containers alike)
# or goes out on it (mangle POSTROUTING: after routing, local and forwarded
# alike) is dropped. Loopback and the host's own docker bridge keep working,
# as on a machine whose cable was pulled. raw and mangle because the host's
# dockerd (iptables on, inside the namespace) rewrites filter's FORWARD at
# every start and could put its ACCEPTs above ours; it never touches these.
PART_TAG=flotilla-cluster-partition
partition_rules() {
    echo "raw PREROUTING -i $UPLINK -j DROP -m comment --comment $PART_TAG"
    echo "mangle POSTROUTING -o $UPLINK -j DROP -m comment --comment $PART_TAG"
}

# ns_iptables NS ACTION "TABLE CHAIN SPEC..."
ns_iptables() {
    local ns=$1 action=$2 table chain spec
    read -r table chain spec <<<"$3"
    # shellcheck disable=SC2086
    in_ns "$ns" iptables -w -t "$table" "$action" "$chain" $spec
}

in_ns() { local ns=$1; shift; nsenter --net="/var/run/netns/$ns" "$@"; }

partitioned() { in_ns "$1" iptables -w -t raw -S PREROUTING 2>/dev/null | grep -q -- "$PART_TAG"; }

# --- dockerd -----------------------------------------------------------------

dockerd_running() { pid_alive "$(read_pid "$DIR/docker.pid")" dockerd; }

# One dockerd per host, every path of its own. --config-file points at our
# own (empty-ish) file because the default /etc/docker/daemon.json belongs to
# the machine's engine (its data-root would clash with ours: dockerd refuses
# a directive given both as a flag and in the file).
# --iptables stays on: iptables rules are per network namespace, so this
# dockerd's NAT and filter rules go into the host's namespace and never touch
# the machine's; with it, containers can reach other hosts (masquerade) and
# published ports work. The bridge --bip is per host (172.30.<i>.1/24) so a
# container address tells which host it is on.
# --cgroup-parent puts the containers under the host's cgroup (see above).
dockerd_start() {
    local h=$NAME
    dockerd_running && return 0
    mkdir -p "$DIR/docker"
    cat >"$DIR/docker/daemon.json" <<EOF
{
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF
    # Stale pid files of a killed dockerd and its containerd: pids wrap
    # quickly on a busy machine (pid_max is often 32768), and a dockerd that
    # finds its old containerd pid alive in some unrelated process waits for
    # that "containerd" until it times out.
    rm -f "$DIR/docker.sock" "$DIR/docker/dockerd.pid" "$DIR/docker/exec/containerd/containerd.pid"
    local metrics_args=()
    [ -z "${METRICS_PORT:-}" ] || metrics_args=(--metrics-addr "$ADDR:$((METRICS_PORT + 1))")
    spawn_env "$h"
    spawn "$h" "$DIR/dockerd.log" "$DIR/docker.pid" \
        dockerd --config-file "$DIR/docker/daemon.json" \
        --data-root "$DIR/docker/data" --exec-root "$DIR/docker/exec" \
        --pidfile "$DIR/docker/dockerd.pid" -H "unix://$DIR/docker.sock" \
        --bip "172.30.$IDX.1/24" --cgroup-parent "/$CGROUP_REL/$h/docker" \
        "${metrics_args[@]}"
}

dockerd_wait() {
    wait_for 60 "dockerd of $NAME (log: $DIR/dockerd.log)" \
        docker -H "unix://$DIR/docker.sock" version --format '{{.Server.Version}}' \
        || { tail -n 5 "$DIR/dockerd.log" >&2; return 1; }
    dockerd_running || { tail -n 5 "$DIR/dockerd.log" >&2; die "dockerd of $NAME exited (log: $DIR/dockerd.log)"; }
}

# The test images, built against the machine's engine if needed and saved
# once; each host's dockerd loads the archive (there is no registry to pull
# from).
IMAGES="flotilla-busybox:latest flotilla-busybox:healthy flotilla-hello:latest flotilla-udpecho:latest flotilla-udpfrom:latest"
images_archive() {
    local tar=$STATE/images.tar
    [ -s "$tar" ] && return 0
    # The machine's engine, whatever DOCKER_HOST says (the summary of `up`
    # tells users to point it at a cluster).
    # shellcheck disable=SC2086
    if ! (unset DOCKER_HOST; docker image inspect $IMAGES) >/dev/null 2>&1; then
        log "building the test images on the machine's Docker Engine (tests/images/build.sh)"
        (unset DOCKER_HOST; bash "$REPO/tests/images/build.sh")
    fi
    # shellcheck disable=SC2086
    (unset DOCKER_HOST; docker save $IMAGES) >"$tar.tmp"
    mv "$tar.tmp" "$tar"
}

images_load() {
    # shellcheck disable=SC2086
    docker -H "unix://$DIR/docker.sock" image inspect $IMAGES >/dev/null 2>&1 && return 0
    docker -H "unix://$DIR/docker.sock" load -q <"$STATE/images.tar" >/dev/null
}

# --- flotilla daemon ----------------------------------------------------------

flotilla_running() { pid_alive "$(read_pid "$DIR/flotilla.pid")" "flotilla daemon"; }

flotilla_start() {
    local h=$NAME
    flotilla_running && return 0
    local docker_args
    if [ "$EXECUTOR" = docker ]; then
        docker_args=(--executor docker --docker-host "unix://$DIR/docker.sock")
    else
        # Without --docker-host the daemon would pass container requests
        # through to /var/run/docker.sock, the machine's engine: point it at
        # a socket that does not exist instead.
        docker_args=(--executor process --docker-host "unix://$DIR/no-docker.sock")
    fi
    local metrics_args=()
    [ -z "${METRICS_PORT:-}" ] || metrics_args=(--metrics-addr "$ADDR:$METRICS_PORT")
    rm -f "$DIR/flotilla.sock"
    spawn_env "$h"
    spawn "$h" "$DIR/daemon.log" "$DIR/flotilla.pid" \
        "$(bin_path)" daemon --data-dir "$DIR/data" -H "unix://$DIR/flotilla.sock" \
        --hostname "$h" "${docker_args[@]}" "${metrics_args[@]}"
}

flotilla_ping() { curl -sf --max-time 2 --unix-socket "$DIR/flotilla.sock" http://localhost/_ping; }

flotilla_wait() {
    wait_for 30 "flotilla daemon of $NAME (log: $DIR/daemon.log)" flotilla_ping \
        || { tail -n 5 "$DIR/daemon.log" >&2; return 1; }
}

flotilla_cli() { "$(bin_path)" -H "unix://$DIR/flotilla.sock" "$@"; }

# LocalNodeState from /info: inactive, active, pending, ...
swarm_state() {
    curl -sf --max-time 5 --unix-socket "$DIR/flotilla.sock" http://localhost/info \
        | grep -o '"LocalNodeState":"[a-z]*"' | cut -d'"' -f4
}

# --- host lifecycle -----------------------------------------------------------

# Powers host $NAME on: link up, dockerd, images, flotilla daemon.
host_boot() {
    mkdir -p "$DIR/data"
    if [ -n "${DATA_SIZE:-}" ] && ! mountpoint -q "$DIR/data"; then
        mount -t tmpfs -o "size=$DATA_SIZE,mode=0700" "flotilla-data-$PREFIX-$NAME" "$DIR/data"
    fi
    cgroup_setup "$NAME"
    ip -n "$NS" link set "$UPLINK" up
    if [ "$EXECUTOR" = docker ]; then
        dockerd_start
        dockerd_wait
        images_load
    fi
    flotilla_start
    flotilla_wait
    rm -f "$DIR/killed"
}

# Powers host $NAME off, like `shutdown -h now` without the goodbyes: every
# process it runs (daemons, dockerd, containerd, shims, containers,
# process-executor tasks) gets SIGKILL, and its link goes down so its peers
# see a dead machine (no answer at all) rather than refused connections.
host_kill() {
    cgroup_kill "$NAME"
    # Belt and braces: anything else left in its network namespace (a
    # process started with `exec` in the background, say).
    if [ -e "/var/run/netns/$NS" ]; then
        local p
        p=$(ip netns pids "$NS" 2>/dev/null | tr '\n' ' ')
        # shellcheck disable=SC2086
        [ -z "$p" ] || kill -9 $p 2>/dev/null || true
        ip -n "$NS" link set "$UPLINK" down 2>/dev/null || true
    fi
    local pidf
    for pidf in "$DIR/flotilla.pid" "$DIR/docker.pid"; do
        local pid; pid=$(read_pid "$pidf")
        pid_alive "$pid" "$DIR" && kill -9 "$pid" 2>/dev/null || true
    done
    return 0
}

# --- commands -----------------------------------------------------------------

find_bin() {
    if [ -n "${FLOTILLA_BIN:-}" ]; then
        [ -x "$FLOTILLA_BIN" ] || die "FLOTILLA_BIN=$FLOTILLA_BIN is not an executable"
        echo "$FLOTILLA_BIN"
    elif [ -x "$REPO/target/release/flotilla" ]; then
        echo "$REPO/target/release/flotilla"
    elif [ -x "$REPO/target/debug/flotilla" ]; then
        echo "$REPO/target/debug/flotilla"
    else
        die "no flotilla binary: build it (cargo build --release --bin flotilla) or set FLOTILLA_BIN"
    fi
}

# Writes the host list, or checks that an existing cluster has the same one.
plan_cluster() {
    [[ $MANAGERS =~ ^[0-9]+$ ]] && [ "$MANAGERS" -ge 1 ] || die "--managers must be a number >= 1"
    [[ $WORKERS =~ ^[0-9]+$ ]] || die "--workers must be a number >= 0"
    [ $((MANAGERS + WORKERS)) -le 99 ] || die "at most 99 hosts"
    [[ $EXECUTOR =~ ^(docker|process)$ ]] || die "--executor must be docker or process"
    [[ $SUBNET =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || die "--subnet must be three octets, like 10.213.0"
    [[ -z $DATA_SIZE || $DATA_SIZE =~ ^[0-9]+[kmgKMG]?$ ]] || die "--data-size must be a size like 64m or 1g"
    [[ -z $METRICS_PORT || $METRICS_PORT =~ ^[0-9]+$ ]] || die "--metrics-port must be a port number"
    local want="" i
    if [ "$MANAGERS" -eq 1 ]; then want="manager"; else
        for i in $(seq 1 "$MANAGERS"); do want="$want manager$i"; done
    fi
    for i in $(seq 1 "$WORKERS"); do want="$want $(printf 'worker%02d' "$i")"; done
    want=$(echo $want)
    if [ -f "$STATE/cluster.env" ]; then
        local HOSTS="" EXECUTOR_="" SUBNET_=""
        # shellcheck disable=SC1091
        HOSTS=$( . "$STATE/cluster.env"; echo "$HOSTS")
        EXECUTOR_=$( . "$STATE/cluster.env"; echo "$EXECUTOR")
        SUBNET_=$( . "$STATE/cluster.env"; echo "$SUBNET")
        [ "$HOSTS" = "$want" ] && [ "$EXECUTOR_" = "$EXECUTOR" ] && [ "$SUBNET_" = "$SUBNET" ] \
            || die "cluster '$PREFIX' already exists as [$HOSTS] executor=$EXECUTOR_ subnet=$SUBNET_: run 'scripts/cluster.sh down --prefix $PREFIX' first"
        return 0
    fi
    # Another cluster on the same subnet would fight over the addresses.
    local other
    for other in "$STATE_ROOT"/*/cluster.env; do
        [ -f "$other" ] || continue
        [ "$( . "$other"; echo "$SUBNET")" != "$SUBNET" ] \
            || die "cluster '$(basename "$(dirname "$other")")' already uses subnet $SUBNET: pick another with --subnet"
    done
    # A route to (or inside) our subnet means another network already uses
    # it: refuse rather than shadow it. Checked before anything is made.
    local clash
    clash=$( { ip -4 route show match "$SUBNET.0/24"; ip -4 route show root "$SUBNET.0/24"; } | grep -v '^default' | head -n1 || true)
    [ -z "$clash" ] || die "subnet $SUBNET.0/24 is already routed on this machine ($clash): pick another with --subnet"
    mkdir -p "$STATE/bin"
    chmod 700 "$STATE_ROOT" "$STATE"
    cat >"$STATE/cluster.env" <<EOF
PREFIX=$PREFIX
HOSTS="$want"
EXECUTOR=$EXECUTOR
SUBNET=$SUBNET
DATA_SIZE=$DATA_SIZE
METRICS_PORT=$METRICS_PORT
MANAGER=${want%% *}
EOF
    i=0
    local h
    for h in $want; do
        i=$((i + 1))
        mkdir -p "$STATE/$h"
        local role=worker
        [[ $h == manager* ]] && role=manager
        cat >"$STATE/$h/host.env" <<EOF
NAME=$h
ROLE=$role
IDX=$i
ADDR=$SUBNET.$((10 + i))
EOF
    done
}

cmd_up() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 0 ] || die "up: unexpected argument '${ARGS[0]}'"
    need_root
    need_cmds ip iptables nsenter unshare setsid curl
    [ "$EXECUTOR" != docker ] || need_cmds dockerd docker
    local t0 bin src
    t0=$(now_ms)
    mkdir -p "$STATE_ROOT"
    lock
    plan_cluster
    load_cluster
    src=$(find_bin)
    bin=$(bin_path)
    if [ ! -x "$bin" ]; then
        cp "$src" "$bin.tmp" && mv "$bin.tmp" "$bin"
        log "flotilla binary: $src (copied to $bin)"
    else
        log "flotilla binary: $bin (copied earlier; 'down' then 'up' to take a new build)"
    fi
    [ "$EXECUTOR" != docker ] || images_archive

    log "network: bridge $BRIDGE $SUBNET.1/24, hosts $HOSTS"
    net_bridge_up
    local h
    for h in $HOSTS; do
        load_host "$h"
        net_host_up "$NAME" "$IDX" "$ADDR"
    done

    # Boot the hosts in parallel: dockerd start-up and image loading dominate.
    log "booting hosts ($EXECUTOR executor)"
    local pids=() failed=0
    for h in $HOSTS; do
        ( load_host "$h"; host_boot ) &
        pids+=($!)
    done
    local p
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    [ $failed -eq 0 ] || die "some hosts did not boot (see above); 'scripts/cluster.sh status --prefix $PREFIX' shows which, 'down' cleans up"

    local rc=0 dt
    swarm_form || rc=$?
    dt=$(($(now_ms) - t0))
    log "up took $((dt / 1000)).$((dt % 1000 / 100))s"
    summary
    return $rc
}

# swarm init on the first manager, swarm join on the others. Joining may not
# be implemented yet by the flotilla build: each failure is reported per host
# and makes `up` exit non-zero, but the hosts stay up.
swarm_form() {
    load_host "$MANAGER"
    local maddr=$ADDR
    if [ "$(swarm_state)" != active ]; then
        log "$MANAGER: swarm init --advertise-addr $maddr"
        # shellcheck disable=SC2086 # extra init flags are meant to split
        flotilla_cli swarm init --advertise-addr "$maddr" ${FLOTILLA_CLUSTER_INIT_ARGS:-} >"$DIR/swarm-init.out" 2>&1 \
            || { cat "$DIR/swarm-init.out" >&2; die "swarm init failed on $MANAGER"; }
    fi
    local wtok mtok
    wtok=$(flotilla_cli swarm join-token -q worker) || die "cannot read the worker join token on $MANAGER"
    mtok=$(flotilla_cli swarm join-token -q manager) || die "cannot read the manager join token on $MANAGER"
    echo "$wtok" >"$STATE/token.worker"
    echo "$mtok" >"$STATE/token.manager"
    JOIN_FAILED=""
    local h tok out
    for h in $HOSTS; do
        [ "$h" != "$MANAGER" ] || continue
        load_host "$h"
        [ "$(swarm_state)" != active ] || { log "$h: already in a swarm"; continue; }
        tok=$wtok; [ "$ROLE" = manager ] && tok=$mtok
        if out=$(swarm_join "$tok" "$maddr:2377" 2>&1); then
            log "$h: joined as $ROLE"
        else
            echo "cluster.sh: $h: swarm join as $ROLE failed: $(echo "$out" | tr '\n' ' ')" >&2
            JOIN_FAILED="$JOIN_FAILED $h"
        fi
    done
    [ -z "$JOIN_FAILED" ] || return 1
}

# `flotilla swarm join` once the CLI has it; until then the docker CLI, which
# sends the same POST /swarm/join to the daemon's socket. Bounded by
# $FLOTILLA_CLUSTER_JOIN_TIMEOUT seconds (default 60): a join that hangs must
# not hang `up`. A transport error ("error during connect ... broken pipe":
# a daemon that answered before reading the request body, then closed) is
# retried; an answer from the daemon is not.
JOIN_TIMEOUT=${FLOTILLA_CLUSTER_JOIN_TIMEOUT:-60}
swarm_join() {
    local tok=$1 remote=$2 out rc try
    local -a cli=(docker -H "unix://$DIR/flotilla.sock")
    flotilla_cli swarm join --help >/dev/null 2>&1 && cli=("$(bin_path)" -H "unix://$DIR/flotilla.sock")
    for try in 1 2 3; do
        rc=0
        out=$(timeout "$JOIN_TIMEOUT" "${cli[@]}" swarm join --token "$tok" --advertise-addr "$ADDR" "$remote" 2>&1) || rc=$?
        [ $rc -ne 0 ] || { echo "$out"; return 0; }
        [ $rc -ne 124 ] || { echo "no answer within ${JOIN_TIMEOUT}s (FLOTILLA_CLUSTER_JOIN_TIMEOUT)${out:+: $out}"; return 1; }
        grep -q "error during connect" <<<"$out" || break
        sleep 0.5
    done
    echo "$out"
    return 1
}

summary() {
    local h
    echo
    printf '%-10s %-8s %-13s %-9s %s\n' HOST ROLE ADDRESS SWARM SOCKETS
    for h in $HOSTS; do
        load_host "$h"
        local socks="flotilla=unix://$DIR/flotilla.sock"
        [ "$EXECUTOR" != docker ] || socks="$socks docker=unix://$DIR/docker.sock"
        printf '%-10s %-8s %-13s %-9s %s\n' "$h" "$ROLE" "$ADDR" "$(swarm_state || echo '?')" "$socks"
    done
    load_host "$MANAGER"
    local through="container requests (docker ps, docker run) are answered with a 501: no dockerd runs beside it"
    [ "$EXECUTOR" != docker ] || through="it also passes container requests (docker ps, docker run) through to that host's dockerd"
    cat <<EOF

Point the CLIs at $MANAGER ($through):

    export FLOTILLA_HOST=unix://$DIR/flotilla.sock
    export DOCKER_HOST=unix://$DIR/flotilla.sock

Any host: scripts/cluster.sh [flotilla|docker|exec] --prefix $PREFIX HOST ...
Tear down: scripts/cluster.sh down --prefix $PREFIX
EOF
    if [ -n "${JOIN_FAILED:-}" ]; then
        echo
        echo "NOT JOINED:$JOIN_FAILED (their daemons are up; see the errors above)"
    fi
}

cmd_down() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 0 ] || die "down: unexpected argument '${ARGS[0]}'"
    need_root
    [ -d "$STATE" ] || [ -d "$CGROUP_ROOT/pids/$CGROUP_REL" ] || [ -d "$CGROUP_ROOT/$CGROUP_REL" ] \
        || ip link show "$BRIDGE" >/dev/null 2>&1 || { echo "cluster '$PREFIX' is not up: nothing to do"; cleanup_lock; return 0; }
    # 1. Processes: kill -9 everything, containers included. A graceful stop
    #    would take dockerd ~10 s per container and buys nothing when
    #    everything is deleted next. Before taking the lock: whatever holds
    #    it is going away anyway.
    cgroup_kill || true
    lock
    local d h
    for d in "$STATE"/*/; do
        [ -f "$d/host.env" ] || continue
        h=$(basename "$d")
        NAME=$h; NS=$(ns_name "$h"); DIR=$STATE/$h
        host_kill
    done
    # 2. Mounts dockerd left behind (it was killed, so it did not unmount):
    #    its data-root bind mount, overlay mounts, container netns files.
    #    Deepest first. Then the daemons' tmpfs of task secrets and configs
    #    (under /run/flotilla, its source naming the host's data directory).
    if [ -d "$STATE" ]; then
        local m
        while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done < <(awk -v s="$STATE/" 'index($2, s) == 1 { print $2 }' /proc/self/mounts | sort -r)
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
            rmdir "$m" 2>/dev/null || true
        done < <(awk -v s="flotilla:$STATE/" 'index($1, s) == 1 { print $2 }' /proc/self/mounts)
    fi
    # 3. Network: namespaces (deleting one deletes its veth pair), stray host
    #    veths of a partial up, the bridge, the FORWARD rule.
    for d in "$STATE"/*/; do
        [ -f "$d/host.env" ] || continue
        h=$(basename "$d")
        ip netns del "$(ns_name "$h")" 2>/dev/null || true
        local idx
        idx=$( . "$d/host.env"; echo "$IDX")
        ip link del "$(veth_name "$idx")" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    # shellcheck disable=SC2046
    while iptables -C $(forward_rule) 2>/dev/null; do iptables -D $(forward_rule); done
    # 4. cgroups and state.
    cgroup_remove
    rm -rf "$STATE"
    cleanup_lock
    rmdir "$STATE_ROOT" 2>/dev/null || true
    echo "cluster '$PREFIX' is down"
}

cmd_kill() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh kill HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    host_kill
    touch "$DIR/killed"
    echo "$NAME killed (kill -9 of everything it ran; link down)"
}

cmd_start() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh start HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    if flotilla_running && { [ "$EXECUTOR" != docker ] || dockerd_running; }; then
        echo "$NAME is already up"; return 0
    fi
    # Whatever is half alive goes first, so the host starts from a clean slate.
    host_kill
    host_boot
    echo "$NAME started (swarm: $(swarm_state || echo '?'))"
}

cmd_partition() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh partition HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    local r
    while read -r r; do
        ns_iptables "$NS" -C "$r" 2>/dev/null || ns_iptables "$NS" -I "$r"
    done < <(partition_rules)
    echo "$NAME partitioned (all traffic on its $UPLINK dropped, loopback kept)"
}

cmd_heal() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh heal HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    local r
    while read -r r; do
        while ns_iptables "$NS" -C "$r" 2>/dev/null; do ns_iptables "$NS" -D "$r"; done
    done < <(partition_rules)
    echo "$NAME healed"
}

cmd_pause() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh pause HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    local pid; pid=$(read_pid "$DIR/flotilla.pid")
    pid_alive "$pid" "flotilla daemon" || die "$NAME: its daemon is not running"
    kill -STOP "$pid"
    echo "$NAME paused (its daemon stopped with SIGSTOP; its tasks keep running)"
}

cmd_resume() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh resume HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    local pid; pid=$(read_pid "$DIR/flotilla.pid")
    pid_alive "$pid" "flotilla daemon" || die "$NAME: its daemon is not running"
    kill -CONT "$pid"
    echo "$NAME resumed"
}

cmd_status() {
    parse_common_opts "$@"
    need_root
    [ -f "$STATE/cluster.env" ] || { echo "cluster '$PREFIX' is not up"; return 0; }
    load_cluster
    echo "cluster $PREFIX: executor $EXECUTOR, bridge $BRIDGE $SUBNET.1/24, state $STATE"
    printf '%-10s %-8s %-13s %-9s %-9s %-9s %-12s %s\n' HOST ROLE ADDRESS POWER FLOTILLA DOCKERD NETWORK SWARM
    local h
    for h in $HOSTS; do
        load_host "$h"
        local power=up fl=down dk=- net=connected sw=-
        flotilla_running && fl=up
        if [ "$EXECUTOR" = docker ]; then dk=down; dockerd_running && dk=up; fi
        [ -f "$DIR/killed" ] && power=killed
        [ "$power" = up ] && [ "$fl" = down ] && power=degraded
        if [ ! -e "/var/run/netns/$NS" ]; then net=no-netns; elif partitioned "$NS"; then net=partitioned; fi
        [ "$fl" = up ] && sw=$(swarm_state || echo '?')
        printf '%-10s %-8s %-13s %-9s %-9s %-9s %-12s %s\n' "$h" "$ROLE" "$ADDR" "$power" "$fl" "$dk" "$net" "$sw"
    done
}

# Env of a host for `exec`: its sockets.
host_env() {
    echo "FLOTILLA_HOST=unix://$DIR/flotilla.sock"
    if [ "$EXECUTOR" = docker ]; then echo "DOCKER_HOST=unix://$DIR/docker.sock"; fi
}

cmd_exec() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -ge 2 ] || die "usage: cluster.sh exec HOST CMD..."
    need_root; load_cluster; load_host "${ARGS[0]}"
    [ -e "/var/run/netns/$NS" ] || die "$NAME has no network namespace ($NS)"
    local -a envs
    mapfile -t envs < <(host_env)
    # Same namespaces as the host's daemons: its network and its hostname.
    exec env "${envs[@]}" nsenter --net="/var/run/netns/$NS" unshare --uts \
        sh -c 'hostname "$0" && exec "$@"' "$NAME" "${ARGS[@]:1}"
}

cmd_flotilla() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -ge 1 ] || die "usage: cluster.sh flotilla HOST ARGS..."
    load_cluster; load_host "${ARGS[0]}"
    exec "$(bin_path)" -H "unix://$DIR/flotilla.sock" "${ARGS[@]:1}"
}

cmd_docker() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -ge 1 ] || die "usage: cluster.sh docker HOST ARGS..."
    load_cluster; load_host "${ARGS[0]}"
    [ "$EXECUTOR" = docker ] || die "cluster '$PREFIX' runs the process executor: $NAME has no dockerd"
    exec docker -H "unix://$DIR/docker.sock" "${ARGS[@]:1}"
}

cmd_env() {
    parse_common_opts "$@"
    load_cluster; load_host "${ARGS[0]:-$MANAGER}"
    echo "export FLOTILLA_HOST=unix://$DIR/flotilla.sock"
    echo "export DOCKER_HOST=unix://$DIR/flotilla.sock"
}

# One mutating command at a time per cluster.
lock() {
    mkdir -p "$STATE_ROOT"
    exec 8>"$STATE_ROOT/.$PREFIX.lock"
    flock -w 120 8 || die "another cluster.sh command holds $STATE_ROOT/.$PREFIX.lock"
    # A command that fails before the cluster exists leaves nothing behind.
    trap '[ -d "$STATE" ] || { cleanup_lock; rmdir "$STATE_ROOT" 2>/dev/null || true; }' EXIT
}
cleanup_lock() { rm -f "$STATE_ROOT/.$PREFIX.lock"; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

cmd_fill() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh fill HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    mountpoint -q "$DIR/data" || die "$NAME: its data directory is not a filesystem of its own (make the cluster with --data-size): filling it would fill the machine's disk"
    # Big blocks first, then small ones for the last bytes.
    dd if=/dev/zero of="$DIR/data/.fill" bs=1M status=none 2>/dev/null || true
    dd if=/dev/zero of="$DIR/data/.fill-tail" bs=4k status=none 2>/dev/null || true
    echo "$NAME: data directory full ($(df --output=avail -B1 "$DIR/data" | tail -n1 | tr -d ' ') bytes left)"
}

cmd_unfill() {
    parse_common_opts "$@"
    [ ${#ARGS[@]} -eq 1 ] || die "usage: cluster.sh unfill HOST"
    need_root; load_cluster; lock; load_host "${ARGS[0]}"
    rm -f "$DIR/data/.fill" "$DIR/data/.fill-tail"
    echo "$NAME: data directory has its space back"
}

main() {
    local cmd=${1:-}
    [ $# -eq 0 ] || shift
    case $cmd in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        kill) cmd_kill "$@" ;;
        start) cmd_start "$@" ;;
        partition) cmd_partition "$@" ;;
        heal) cmd_heal "$@" ;;
        pause) cmd_pause "$@" ;;
        resume) cmd_resume "$@" ;;
        fill) cmd_fill "$@" ;;
        unfill) cmd_unfill "$@" ;;
        status) cmd_status "$@" ;;
        exec) STOP_AT_ARG=1 cmd_exec "$@" ;;
        flotilla) STOP_AT_ARG=1 cmd_flotilla "$@" ;;
        docker) STOP_AT_ARG=1 cmd_docker "$@" ;;
        env) cmd_env "$@" ;;
        -h|--help|help) usage ;;
        "") usage >&2; exit 2 ;;
        *) die "unknown command '$cmd' (try --help)" ;;
    esac
}

main "$@"
