#!/usr/bin/env bash
# api: throughput and latency of the Engine API's swarm calls with 1, 16 and
# 64 concurrent clients, on
#   Flotilla, 1 manager       scripts/cluster.sh, process executor, no workers
#   Flotilla, 3 managers      the same with 3 managers; clients on the leader,
#                             and clients spread over all 3 (followers forward
#                             writes to the leader)
#   Docker Swarm, 1 manager   the machine's Docker Engine (swarm init)
#   Docker Swarm, 3 managers  three hosts of scripts/cluster.sh (docker
#                             executor), their Flotilla daemons stopped: each
#                             host's own dockerd, in a swarm of the three
#                             (clients on the leader)
# The load tool is curl itself: one `curl --parallel --parallel-max C` process
# per row sends K requests over at most C keep-alive connections on the unix
# socket(s) and writes each request's status and time_total; a row is K / wall
# time (req/s) and the p50 / p99 of the request times. The same requests go
# to every system:
#   create   POST /services/create, a new service with 0 replicas
#   inspect  GET /services/NAME (the services just created)
#   update   POST /services/NAME/update?version=V (a label changes; each
#            service once, its version read before the row)
#   tasks    GET /tasks?filters={"service":["fbtasks"]}: 100 tasks (a service
#            whose constraint no node meets, so they stay pending everywhere)
# Repeated R times; each row shows the median over the repetitions, and the
# min–max of req/s.
#
#   bench/api.sh [--clients "1 16 64"] [--requests 400] [--reps 3]
#                [--no-swarm] [--no-cluster3] [--tiny] [--bin PATH]
#
# --tiny: clients 1 and 16, 32 requests per row, one repetition, no Docker
# Swarm. Needs root for the clusters (network namespaces; prefixes fbapi1,
# fbapi3, fbapis3, subnets 10.213.62-63 and 10.213.61; with --tiny fbtapi1,
# fbtapi3, 10.213.68-69, so a tiny run never meets a full one).
BENCH_NAME=api
. "$(dirname "$0")/lib.sh"

CLIENTS="1 16 64" K=400 REPS=3 SWARM=1 C3=1 BINARG="" P1=fbapi1 P3=fbapi3 NET1=10.213.62 NET3=10.213.63
PS3=fbapis3 NETS3=10.213.61
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --clients) CLIENTS=$2; shift 2 ;;
        --requests) K=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --no-swarm) SWARM=0; shift ;;
        --no-cluster3) C3=0; shift ;;
        --tiny) CLIENTS="1 16" K=32 REPS=1 SWARM=0 P1=fbtapi1 P3=fbtapi3 NET1=10.213.68 NET3=10.213.69; shift ;;
        --bin) BINARG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "api.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
find_bin "$BINARG"
bench_workdir
export FLOTILLA_BIN=$BIN
unset FLOTILLA_CLUSTER_INIT_ARGS FLOTILLA_CLUSTER_PREFIX DOCKER_HOST FLOTILLA_HOST
CSTATE=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}
CL() { bash "$BENCH_REPO/scripts/cluster.sh" "$@"; }

SPEC_TAIL='"TaskTemplate":{"ContainerSpec":{"Image":"flotilla-busybox:latest","Args":["sleep","1000"]}},"Mode":{"Replicated":{"Replicas":0}}'

# curl config helpers: every group names its socket (a `next` resets every
# per-transfer option) and a host name of its own per socket, so curl never
# reuses a connection to one socket for another.
group() { # SOCKIDX URL [METHOD BODY]
    printf 'unix-socket = "%s"\nurl = "http://m%s%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code} %%{time_total}\\n"\n' \
        "${SOCKS[$1]}" "$1" "$2"
    if [ -n "${3:-}" ]; then
        printf 'request = "%s"\nheader = "Content-Type: application/json"\ndata = "%s"\n' "$3" "$(sed 's/"/\\"/g' <<<"$4")"
    fi
    echo next
}
sockidx() { echo $(( $1 % ${#SOCKS[@]} )); }

# run_row SYS OP C CONFIG: one curl with C parallel transfers; records
# SYS.OP.C.{rps,p50,p99,err}.
run_row() {
    local sys=$1 op=$2 c=$3 cfg=$4 out=$WORK/out t0 wall
    sed -i '$d' "$cfg" # the last `next`
    t0=$(now)
    curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$c" -K "$cfg" >"$out" 2>"$WORK/curl.err" || true
    wall=$(since "$t0")
    local n err p50 p99
    n=$(grep -c . "$out" || true)
    err=$(awk '$1 !~ /^2/' "$out" | grep -c . || true)
    read -r p50 p99 < <(awk '{ print $2 * 1000 }' "$out" | sort -g | awk '
        { v[NR] = $1 } END { if (NR == 0) { print "- -"; exit }
            i50 = int(NR * 0.50 + 0.999); i99 = int(NR * 0.99 + 0.999)
            printf "%.2f %.2f\n", v[i50 < 1 ? 1 : i50], v[i99 < 1 ? 1 : i99] }')
    record "$sys.$op.$c.rps" "$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.1f", n / w }')"
    record "$sys.$op.$c.p50" "$p50"
    record "$sys.$op.$c.p99" "$p99"
    record "$sys.$op.$c.err" "$err"
    [ "$err" = 0 ] || log "$sys $op x$c: $err of $n requests failed (status $(awk '$1 !~ /^2/ { print $1 }' "$out" | sort | uniq -c | tr '\n' ' '))"
}

# service_versions SOCK PREFIX: "NAME VERSION" of the services whose name
# starts with PREFIX.
service_versions() {
    api "$1" "/services?filters=$(filters "{\"name\":[\"$2\"]}")" | awk 'BEGIN { RS = "[{]\"ID\":\"" }
        NR > 1 {
            if (match($0, /"Version":[{]"Index":[0-9]+/)) v = substr($0, RSTART + 19, RLENGTH - 19); else next
            if (match($0, /"Name":"[^"]*"/)) n = substr($0, RSTART + 8, RLENGTH - 9); else next
            print n, v
        }'
}

# run_system SYS SOCK...: every op x clients x repetition against the sockets
# (clients go round-robin over them; writes through a follower are forwarded).
run_system() {
    local sys=$1; shift
    SOCKS=("$@")
    local rep c op i n cfg
    # 100 tasks that stay pending, for the task list.
    api "${SOCKS[0]}" /services/create -X POST -H 'Content-Type: application/json' \
        -d '{"Name":"fbtasks","TaskTemplate":{"ContainerSpec":{"Image":"flotilla-busybox:latest","Args":["sleep","1000"]},"Placement":{"Constraints":["node.labels.fbapi.none==1"]}},"Mode":{"Replicated":{"Replicas":100}}}' >/dev/null
    wait_until 60 0.2 "$sys: 100 tasks of fbtasks" \
        bash -c '[ "$(curl -s --unix-socket "$0" "http://localhost/tasks?filters=$1" | grep -o "\"DesiredState\":" | wc -l)" -ge 100 ]' \
        "${SOCKS[0]}" "$(filters '{"service":["fbtasks"]}')"
    # Warm-up: one of each.
    api "${SOCKS[0]}" /services/fbtasks >/dev/null
    for rep in $(seq 1 "$REPS"); do
        for c in $CLIENTS; do
            local pre=fb$sys-$c-$rep-
            log "$sys: $c client(s), repetition $rep"
            cfg=$WORK/create.cfg; : >"$cfg"
            for i in $(seq 1 "$K"); do
                group "$(sockidx "$i")" /services/create POST "{\"Name\":\"$pre$i\",$SPEC_TAIL}" >>"$cfg"
            done
            run_row "$sys" create "$c" "$cfg"
            cfg=$WORK/inspect.cfg; : >"$cfg"
            for i in $(seq 1 "$K"); do group "$(sockidx "$i")" "/services/$pre$i" >>"$cfg"; done
            run_row "$sys" inspect "$c" "$cfg"
            cfg=$WORK/update.cfg; : >"$cfg"
            i=0
            while read -r n v; do
                i=$((i + 1))
                group "$(sockidx "$i")" "/services/$n/update?version=$v" POST \
                    "{\"Name\":\"$n\",\"Labels\":{\"fbapi\":\"updated\"},$SPEC_TAIL}" >>"$cfg"
            done < <(service_versions "${SOCKS[0]}" "$pre")
            [ "$i" = "$K" ] || log "$sys: $i services to update, not $K (some creates failed?)"
            run_row "$sys" update "$c" "$cfg"
            cfg=$WORK/tasks.cfg; : >"$cfg"
            local tq
            tq="/tasks?filters=$(filters '{"service":["fbtasks"]}')"
            for i in $(seq 1 "$K"); do group "$(sockidx "$i")" "$tq" >>"$cfg"; done
            run_row "$sys" tasks "$c" "$cfg"
        done
    done
}

# --- Flotilla clusters ---------------------------------------------------------------

# cluster_up PREFIX SUBNET MANAGERS: a cluster of managers only; sets MSOCKS
# (manager1's first; with 3 managers manager1 leads after `up`).
cluster_up() {
    local prefix=$1 subnet=$2 m=$3 t0 h
    CL down --prefix "$prefix" >/dev/null 2>&1 || true
    on_exit "bash '$BENCH_REPO/scripts/cluster.sh' down --prefix '$prefix'"
    t0=$(now)
    CL up --prefix "$prefix" --subnet "$subnet" --managers "$m" --workers 0 --executor process \
        >"$WORK/up-$prefix.log" 2>&1 || { cat "$WORK/up-$prefix.log" >&2; die "cluster $prefix did not come up"; }
    MSOCKS=()
    if [ "$m" = 1 ]; then MSOCKS=("$CSTATE/$prefix/manager/flotilla.sock"); else
        for h in $(seq 1 "$m"); do MSOCKS+=("$CSTATE/$prefix/manager$h/flotilla.sock"); done
    fi
    # Every manager answers as part of the cluster.
    for h in "${MSOCKS[@]}"; do
        wait_until 60 0.2 "$prefix: manager at $h in the swarm" \
            bash -c 'curl -sf --unix-socket "$0" http://localhost/nodes | grep -q "\"Leader\":true"' "$h"
    done
    log "cluster $prefix ($m manager(s)) up in $(since "$t0") s"
}
cluster_down() { CL down --prefix "$1" >/dev/null 2>&1 || true; }

# swarm3_up: Docker Swarm with 3 managers, each a host of its own: a
# cluster.sh cluster with the docker executor, whose Flotilla daemons are
# stopped (they hold port 2377 in each host's namespace), then `docker swarm
# init` on manager1's dockerd and `swarm join` of the other two. Sets
# SWARM3_SOCK (manager1's dockerd, the leader). Returns 1, said, if it fails.
swarm3_up() {
    local t0 h tok pid
    CL down --prefix "$PS3" >/dev/null 2>&1 || true
    on_exit "bash '$BENCH_REPO/scripts/cluster.sh' down --prefix '$PS3'"
    t0=$(now)
    if ! CL up --prefix "$PS3" --subnet "$NETS3" --managers 3 --workers 0 --executor docker \
        >"$WORK/up-$PS3.log" 2>&1; then
        log "cluster $PS3 did not come up ($WORK/up-$PS3.log): 3-manager Docker Swarm skipped"
        return 1
    fi
    for h in 1 2 3; do
        pid=$(cat "$CSTATE/$PS3/manager$h/flotilla.pid")
        kill "$pid" 2>/dev/null || true
        wait_until 30 0.2 "$PS3: Flotilla daemon of manager$h stopped" bash -c '! kill -0 "$0" 2>/dev/null' "$pid"
    done
    s3docker() { env -u DOCKER_HOST -u DOCKER_CONTEXT docker -H "unix://$CSTATE/$PS3/manager$1/docker.sock" "${@:2}"; }
    if ! s3docker 1 swarm init --advertise-addr "$NETS3.11" >/dev/null 2>"$WORK/swarm3.err" ||
        ! tok=$(s3docker 1 swarm join-token -q manager 2>>"$WORK/swarm3.err"); then
        log "docker swarm init on $PS3/manager1 failed: $(head -1 "$WORK/swarm3.err"): 3-manager Docker Swarm skipped"
        return 1
    fi
    for h in 2 3; do
        if ! s3docker "$h" swarm join --token "$tok" --advertise-addr "$NETS3.1$h" "$NETS3.11:2377" >/dev/null 2>>"$WORK/swarm3.err"; then
            log "manager$h did not join the Docker Swarm: $(tail -1 "$WORK/swarm3.err"): 3-manager Docker Swarm skipped"
            return 1
        fi
    done
    wait_until 60 0.5 "$PS3: 3 Docker Swarm managers reachable" \
        bash -c '[ "$(env -u DOCKER_HOST docker -H "unix://$0" node ls --format "{{.ManagerStatus}}" | grep -cE "Leader|Reachable")" = 3 ]' \
        "$CSTATE/$PS3/manager1/docker.sock"
    SWARM3_SOCK=$CSTATE/$PS3/manager1/docker.sock
    log "Docker Swarm with 3 managers up in $(since "$t0") s"
}

log "api: clients [$CLIENTS], $K requests per row, $REPS repetition(s), swarm $([ $SWARM = 1 ] && echo yes || echo no), bin $BIN"
SYSTEMS=()
cluster_up $P1 $NET1 1
run_system fl1 "${MSOCKS[@]}"; SYSTEMS+=("fl1|Flotilla, 1 manager")
cluster_down $P1
if [ $C3 = 1 ]; then
    cluster_up $P3 $NET3 3
    # The leader: the manager whose /info says it is (manager1 after `up`).
    lead=""
    for s in "${MSOCKS[@]}"; do
        if api "$s" /info | grep -q "\"NodeID\":\"$(api "$s" /nodes | awk 'BEGIN { RS = "[{]\"ID\":\"" } /"Leader":true/ { print substr($0, 1, index($0, "\"") - 1) }')\""; then lead=$s; fi
    done
    [ -n "$lead" ] || die "$P3: no leader found"
    run_system fl3 "$lead"; SYSTEMS+=("fl3|Flotilla, 3 managers, clients on the leader")
    run_system fl3s "${MSOCKS[@]}"; SYSTEMS+=("fl3s|Flotilla, 3 managers, clients spread over all 3")
    cluster_down $P3
fi
if [ $SWARM = 1 ] && swarm_begin; then
    run_system swarm "$ENGINE_SOCK"; SYSTEMS+=("swarm|Docker Swarm, 1 manager (machine's engine)")
    swarm_end
fi
if [ $SWARM = 1 ] && [ $C3 = 1 ] && swarm3_up; then
    run_system swarm3 "$SWARM3_SOCK"; SYSTEMS+=("swarm3|Docker Swarm, 3 managers, clients on the leader")
    cluster_down $PS3
fi

# --- report ------------------------------------------------------------------------------

echo
echo "api: $K requests per row, curl --parallel over unix sockets; $(nproc) cores; $REPS repetition(s): medians (req/s: min–max)"
for s in "${SYSTEMS[@]}"; do
    sys=${s%%|*}
    echo
    echo "${s#*|}"
    echo
    echo "| call | clients | req/s | p50 ms | p99 ms | errors |"
    echo "| --- | --- | --- | --- | --- | --- |"
    for op in create inspect update tasks; do
        for c in $CLIENTS; do
            echo "| $op | $c | $(cell "$sys.$op.$c.rps" "") | $(fmt "$(median_of "$sys.$op.$c.p50")") | $(fmt "$(median_of "$sys.$op.$c.p99")") | $(awk -v x="$(median_of "$sys.$op.$c.err")" 'BEGIN { printf "%d", x }') |"
        done
    done
done
# ratio_table TITLE A B: system A's req/s over system B's, per call and clients.
ratio_table() {
    echo
    echo "$1"
    echo
    echo "| call |$(for c in $CLIENTS; do printf ' %s clients |' "$c"; done)"
    echo "| --- |$(for c in $CLIENTS; do printf -- ' --- |'; done)"
    for op in create inspect update tasks; do
        echo "| $op |$(for c in $CLIENTS; do printf ' %s |' "$(ratio "$(median_of "$2.$op.$c.rps")" "$(median_of "$3.$op.$c.rps")")"; done)"
    done
}
if [ $SWARM = 1 ] && [ -n "${FIG[swarm.create.1.rps]:-}" ]; then
    ratio_table "Flotilla (1 manager) / Docker Swarm, req/s (higher is better for Flotilla)" fl1 swarm
fi
if [ -n "${FIG[swarm3.create.1.rps]:-}" ]; then
    ratio_table "Flotilla (3 managers, clients on the leader) / Docker Swarm (3 managers, the same), req/s" fl3 swarm3
fi
echo
for s in "${SYSTEMS[@]}"; do
    sys=${s%%|*}
    for op in create inspect update tasks; do
        for c in $CLIENTS; do
            emit "$sys.$op.$c.rps" req/s
            emit "$sys.$op.$c.p50" ms
            emit "$sys.$op.$c.p99" ms
        done
    done
done
for op in create inspect update tasks; do
    for c in $CLIENTS; do
        emit_ratio "fl1_over_swarm.$op.$c.rps" "$(ratio "$(median_of "fl1.$op.$c.rps")" "$(median_of "swarm.$op.$c.rps")")"
        [ -z "${FIG[swarm3.create.1.rps]:-}" ] ||
            emit_ratio "fl3_over_swarm3.$op.$c.rps" "$(ratio "$(median_of "fl3.$op.$c.rps")" "$(median_of "swarm3.$op.$c.rps")")"
    done
done
