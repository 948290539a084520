#!/usr/bin/env bash
# overlay: traffic between tasks on two nodes over an overlay network, on
#   Flotilla        scripts/cluster.sh, a manager and a worker (docker
#                   executor), network `benchnet`
#   Docker Swarm    the same hosts' dockerds in swarm mode (cluster port
#                   2378, data path port 7789: Flotilla's swarm is left
#                   first), the same network and services
#   direct          the two hosts' own namespaces, no overlay: the ceiling
# A client task on the manager, a server task (flotilla-hello: httpd on
# 8080) on the worker. Measured from inside the client's network namespace
# (nsenter into the container's; the tools are the machine's):
#   bulk      iperf3 TCP, 5 s (--tiny: 1 s), to the server's overlay address (Gbit/s)
#   bulk-vip  the same through the service's VIP
#   request   HTTP GET over a new connection each (curl, N requests):
#             p50 / p99 of time_total, to the task address and to the VIP
#   connect   TCP connection setup alone (curl's time_connect), task
#             address against VIP
# Repeated R times; each cell is the median (min–max).
#
#   bench/overlay.sh [--reps 3] [--requests 300] [--no-swarm] [--tiny] [--bin PATH]
#
# --tiny: one run, 1 s of bulk, 20 requests, no Docker Swarm (prefix fbtov,
# subnet 10.213.71, so a tiny run never meets a full one). Needs root,
# iperf3 and curl (Debian's packages), busybox-static (the direct path's
# HTTP server). Prefix fbov, subnet 10.213.70.
BENCH_NAME=overlay
. "$(dirname "$0")/lib.sh"

REPS=3 N=300 SWARM=1 BINARG="" PREFIX=fbov SUBNET=10.213.70 SECS=5
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --requests) N=$2; shift 2 ;;
        --no-swarm) SWARM=0; shift ;;
        --tiny) REPS=1 N=20 SWARM=0 SECS=1 PREFIX=fbtov SUBNET=10.213.71; shift ;;
        --bin) BINARG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "overlay.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for c in iperf3 curl busybox; do command -v "$c" >/dev/null || die "needs $c (apt-get install iperf3 curl busybox-static)"; done
find_bin "$BINARG"
bench_workdir
export FLOTILLA_BIN=$BIN
unset FLOTILLA_CLUSTER_INIT_ARGS FLOTILLA_CLUSTER_PREFIX DOCKER_HOST FLOTILLA_HOST
STATE=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}/$PREFIX
CL() { bash "$BENCH_REPO/scripts/cluster.sh" "$@"; }
addr() { (. "$STATE/$1/host.env"; echo "$ADDR"); }
NS() { local h=$1; shift; nsenter --net="/var/run/netns/$PREFIX-$h" "$@"; }
# The system under test's API: Flotilla's socket, or the dockerd's.
SYS=flotilla
X() {
    local h=$1; shift
    if [ $SYS = flotilla ]; then timeout 30 docker -H "unix://$STATE/$h/flotilla.sock" "$@"
    else timeout 30 docker -H "unix://$STATE/$h/docker.sock" "$@"; fi
}
ENG() { local h=$1; shift; docker -H "unix://$STATE/$h/docker.sock" "$@"; }

CL down --prefix "$PREFIX" >/dev/null 2>&1 || true
on_exit "bash '$BENCH_REPO/scripts/cluster.sh' down --prefix '$PREFIX'"
t0=$(now)
CL up --prefix "$PREFIX" --subnet "$SUBNET" --managers 1 --workers 1 --executor docker \
    >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "cluster up failed"; }
log "cluster up in $(since "$t0") s (bin $BIN)"
MADDR=$(addr manager) WADDR=$(addr worker01)

# pid_of HOST SERVICE: the pid of the service's container on HOST.
pid_of() {
    local id
    id=$(ENG "$1" ps -q --filter "label=com.docker.swarm.service.name=$2" | head -1)
    [ -n "$id" ] || return 1
    ENG "$1" inspect --format '{{.State.Pid}}' "$id"
}
# overlay_addr HOST SERVICE: the container's address on benchnet.
overlay_addr() {
    local id
    id=$(ENG "$1" ps -q --filter "label=com.docker.swarm.service.name=$2" | head -1)
    ENG "$1" inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}{{"\n"}}{{end}}' "$id" \
        | awk '$1 ~ /benchnet|flotilla-/ && $2 != "" { print $2; exit }'
}
running() { [ "$(X manager service ls --format '{{.Name}} {{.Replicas}}' | grep -c ' 1/1$')" = 2 ]; }

deploy() {
    X manager network create -d overlay benchnet >/dev/null
    X manager service create -d --no-resolve-image --name srv --network benchnet \
        --constraint node.hostname==worker01 flotilla-hello >/dev/null 2>&1
    X manager service create -d --no-resolve-image --name cli --network benchnet \
        --constraint node.hostname==manager flotilla-busybox sleep 100000 >/dev/null 2>&1
    wait_until 120 0.5 "$SYS: srv and cli running" running
}

# iperf3_gbits NETNS-ARGS... -- TARGET: Gbit/s received over 5 s.
iperf3_gbits() {
    local target=$1; shift
    "$@" iperf3 -c "$target" -p 5201 -t "$SECS" -f g 2>/dev/null \
        | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i - 1) }'
}

# curl_times NETNS-ARGS... -- URL: per request "connect total" (seconds),
# N requests each on a new connection.
curl_times() {
    local url=$1; shift
    local cfg="$WORK/curl.cfg" i
    : >"$cfg"
    for i in $(seq "$N"); do printf 'url = "%s"\noutput = /dev/null\n' "$url" >>"$cfg"; done
    "$@" curl -s --no-keepalive -H 'Connection: close' -m 5 -K "$cfg" \
        -w '%{time_connect} %{time_total}\n' 2>/dev/null
}
# pct P FILE COLUMN: the P-th percentile of a column, in ms.
pct() { awk -v c="$3" '{ print $c * 1000 }' "$2" | sort -g | awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(NR * p / 100 + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.3f\n", v[i] }'; }

# measure LABEL CLIENT-PREFIX... : one repetition against TASK and VIP.
measure() {
    local sys=$1
    local cpid spid
    cpid=$(pid_of manager cli) spid=$(pid_of worker01 srv)
    local C=(nsenter -t "$cpid" -n)
    nsenter -t "$spid" -n iperf3 -s -D -p 5201 --pidfile "$WORK/iperf-$sys.pid"
    sleep 0.3
    local g
    g=$(iperf3_gbits "$TASK" "${C[@]}") && [ -n "$g" ] && record "$sys.bulk" "$g"
    # Docker Swarm's VIPs need IPVS, which this kernel may not have: one
    # probe first, rather than N time-outs.
    local vip=$VIP
    if [ -n "$vip" ] && ! "${C[@]}" curl -s -m 3 -o /dev/null "http://$vip:8080/"; then
        log "$sys: the VIP $vip does not answer"
        record "$sys.fail_vip" 1
        vip=""
    fi
    if [ -n "$vip" ]; then
        g=$(iperf3_gbits "$vip" "${C[@]}") && [ -n "$g" ] && record "$sys.bulk_vip" "$g"
    fi
    kill "$(cat "$WORK/iperf-$sys.pid")" 2>/dev/null || true
    for to in task vip; do
        local target=$TASK
        [ $to = task ] || target=$vip
        [ -n "$target" ] || continue
        curl_times "http://$target:8080/" "${C[@]}" >"$WORK/t.$sys.$to" || true
        local ok
        ok=$(wc -l <"$WORK/t.$sys.$to")
        if [ "$ok" -ge $((N / 2)) ]; then
            record "$sys.req_$to.p50" "$(pct 50 "$WORK/t.$sys.$to" 2)"
            record "$sys.req_$to.p99" "$(pct 99 "$WORK/t.$sys.$to" 2)"
            record "$sys.connect_$to.p50" "$(pct 50 "$WORK/t.$sys.$to" 1)"
        else
            log "$sys: only $ok of $N requests to the $to answered"
            record "$sys.fail_$to" 1
        fi
    done
}

# --- Flotilla ------------------------------------------------------------------------
deploy
TASK=$(overlay_addr worker01 srv)
VIP=$(X manager service inspect --format '{{range .Endpoint.VirtualIPs}}{{.Addr}}{{end}}' srv | cut -d/ -f1)
log "flotilla: srv at $TASK, VIP $VIP"
for r in $(seq "$REPS"); do measure flotilla; done

# --- direct: the hosts' own namespaces -------------------------------------------------
mkdir -p "$WORK/www" && echo direct >"$WORK/www/index.html"
NS worker01 iperf3 -s -D -p 5201 --pidfile "$WORK/iperf-direct.pid"
NS worker01 busybox httpd -p "$WADDR:8080" -h "$WORK/www" &
HTTPD=$!
on_exit "kill $HTTPD"
sleep 0.3
for r in $(seq "$REPS"); do
    g=$(iperf3_gbits "$WADDR" NS manager) && [ -n "$g" ] && record direct.bulk "$g"
    curl_times "http://$WADDR:8080/" NS manager >"$WORK/t.direct" || true
    record direct.req_task.p50 "$(pct 50 "$WORK/t.direct" 2)"
    record direct.req_task.p99 "$(pct 99 "$WORK/t.direct" 2)"
    record direct.connect_task.p50 "$(pct 50 "$WORK/t.direct" 1)"
done
kill "$(cat "$WORK/iperf-direct.pid")" 2>/dev/null || true
kill "$HTTPD" 2>/dev/null || true

# --- Docker Swarm on the same dockerds ------------------------------------------------
if [ $SWARM = 1 ]; then
    for h in worker01 manager; do X "$h" swarm leave --force >/dev/null 2>&1 || true; done
    SYS=swarm
    log "Docker Swarm: init on manager's dockerd (port 2378, data path port 7789), join worker01"
    X manager swarm init --advertise-addr "$MADDR:2378" --listen-addr "$MADDR:2378" \
        --data-path-port 7789 >/dev/null
    on_exit "docker -H 'unix://$STATE/worker01/docker.sock' swarm leave --force; docker -H 'unix://$STATE/manager/docker.sock' swarm leave --force"
    wait_until 30 0.5 "swarm: the manager active" sh -c "docker -H unix://$STATE/manager/docker.sock swarm join-token -q worker >/dev/null 2>&1"
    X worker01 swarm join --token "$(X manager swarm join-token -q worker)" \
        --advertise-addr "$WADDR:2378" --listen-addr "$WADDR:2378" "$MADDR:2378" >/dev/null
    wait_until 60 0.5 "swarm: 2 nodes Ready" sh -c "[ \$(docker -H unix://$STATE/manager/docker.sock node ls -q | wc -l) = 2 ]"
    t0=$(now)
    deploy
    log "swarm: services running in $(since "$t0") s"
    TASK=$(overlay_addr worker01 srv)
    VIP=$(X manager service inspect --format '{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}' srv | awk '{ print $NF }' | cut -d/ -f1)
    log "swarm: srv at $TASK, VIP $VIP"
    for r in $(seq "$REPS"); do measure swarm; done
fi

# --- report ------------------------------------------------------------------------------
rb=$(ratio "$(median_of flotilla.bulk)" "$(median_of direct.bulk)")
rs=$(ratio "$(median_of swarm.bulk)" "$(median_of direct.bulk)")
vipcell() { if [ -n "${FIG[$1.fail_vip]:-}" ]; then echo "no answer"; else cell "$2" "$3"; fi; }
echo
echo "Overlay, client task on one node, server task on the other; $REPS run(s), $N requests per run:"
echo
echo "| | Flotilla | Docker Swarm | direct (no overlay) |"
echo "| --- | --- | --- | --- |"
echo "| bulk TCP to the task, Gbit/s | $(cell flotilla.bulk '') | $(cell swarm.bulk '') | $(cell direct.bulk '') |"
echo "| … as a share of direct | $rb | $rs | 1 |"
echo "| bulk TCP through the VIP, Gbit/s | $(cell flotilla.bulk_vip '') | $(vipcell swarm swarm.bulk_vip '') | |"
echo "| HTTP request, new connection, to the task: p50 / p99 ms | $(cell flotilla.req_task.p50 '') / $(cell flotilla.req_task.p99 '') | $(cell swarm.req_task.p50 '') / $(cell swarm.req_task.p99 '') | $(cell direct.req_task.p50 '') / $(cell direct.req_task.p99 '') |"
echo "| … through the VIP: p50 / p99 ms | $(cell flotilla.req_vip.p50 '') / $(cell flotilla.req_vip.p99 '') | $(vipcell swarm swarm.req_vip.p50 '') | |"
echo "| TCP connection setup p50 ms: task / VIP | $(cell flotilla.connect_task.p50 '') / $(cell flotilla.connect_vip.p50 '') | $(cell swarm.connect_task.p50 '') / $(vipcell swarm swarm.connect_vip.p50 '') | $(cell direct.connect_task.p50 '') |"
echo
for k in flotilla.bulk flotilla.bulk_vip swarm.bulk swarm.bulk_vip direct.bulk; do emit "$k" Gbit/s; done
for sys in flotilla swarm direct; do
    for k in req_task.p50 req_task.p99 req_vip.p50 req_vip.p99 connect_task.p50 connect_vip.p50; do emit "$sys.$k" ms; done
done
emit_ratio flotilla_over_direct.bulk "$rb"
emit_ratio swarm_over_direct.bulk "$rs"
