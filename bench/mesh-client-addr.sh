#!/usr/bin/env bash
# mesh-client-addr: what keeping the client's address through the routing
# mesh costs, against today's SNAT, in one run. A three-node cluster in
# network namespaces (scripts/cluster.sh, process executor: a manager,
# worker01 and worker02, the last restarted with FLOTILLA_CLIENT_ADDR=off)
# runs `mesh-bench serve` as the one task of a service, on worker01,
# publishing PORT. A client in a namespace of its own on the cluster's
# bridge measures with `mesh-bench against`, each scenario on the three
# targets in turn (so the machine's load falls on all three alike):
#   direct     worker01's published port (the task is there: DNAT only),
#              the reference the ratios are to;
#   kept       the manager's published port, sent on to worker01 through
#              the tunnel with the client's address;
#   snat       worker02's published port, sent on from worker02's address,
#              as before.
# Each with 1 and 16 clients. Traffic stays inside the namespaces; the
# cluster and the client's namespace are removed on the way out, on
# failure too. Needs root.
#
#   bench/mesh-client-addr.sh [--seconds S] [--reps N] [--mesh auto|userspace] [--bin PATH]
#                             [--mesh-bench PATH] [--prefix P] [--subnet A.B.C] [--port PORT]
#
#   --seconds S   per scenario (default 3; three scenarios per target)
#   --reps N      measurements of each (default 1); with more, the medians
#                 of the ratios and their range close the output
#   --mesh M      the daemons' --mesh (default auto: the kernel path)
#   --bin, --mesh-bench   the binaries (default target/release/…, built
#                 when absent); the kernel path's figures do not depend on
#                 the daemon's build, the proxy's do
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=3
reps=1
mesh=auto
bin=$root/target/release/flotilla
bench=$root/target/release/mesh-bench
prefix=fcad2
subnet=10.213.92
port=18500
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --mesh) mesh=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --mesh-bench) bench=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --subnet) subnet=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        *) echo "bench/mesh-client-addr.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || cargo build --release --bin flotilla -p flotilla
[ -x "$bench" ] || cargo build --release -p flotilla-net --bin mesh-bench
bin=$(realpath "$bin")
bench=$(realpath "$bench")

cluster() { FLOTILLA_BIN=$bin FLOTILLA_MESH=$mesh bash scripts/cluster.sh "$@"; }
cli() { cluster flotilla --prefix "$prefix" manager "$@"; }
ns=$prefix-client
veth=$prefix-vcl
ok=0
cleanup() {
    set +e
    ip netns del "$ns" 2>/dev/null
    ip link del "$veth" 2>/dev/null
    if [ "$ok" != 1 ]; then
        for h in manager worker01; do
            echo "---- $h daemon.log (last 20 lines) ----" >&2
            tail -n 20 "/run/flotilla-cluster/$prefix/$h/daemon.log" >&2
        done
    fi
    bash scripts/cluster.sh down --prefix "$prefix" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cluster up --prefix "$prefix" --subnet "$subnet" --managers 1 --workers 2 --executor process >/dev/null
addr() { cli node inspect --format '{{.Status.Addr}}' "$1" | tr -d '[:space:]'; }
manager=$(addr manager)
worker=$(addr worker01)
snat=$(addr worker02)
cli service create -d --no-resolve-image --name meshbench --stop-grace-period 1s \
    --constraint node.hostname==worker01 -p "$port:9000" flotilla-busybox "$bench" serve >/dev/null

ip netns add "$ns"
ip link add "$veth" type veth peer name "$veth-p"
ip link set "$veth-p" netns "$ns"
ip link set "$veth" master "$prefix-br" up
ip -n "$ns" link set lo up
ip -n "$ns" link set "$veth-p" up
ip -n "$ns" addr add "$subnet.200/24" dev "$veth-p"

against() { # the manager's and worker02's ports against worker01's, 1 and 16 clients
    local clients
    for clients in 1 16; do
        ip netns exec "$ns" "$bench" against --direct "$worker:$port" \
            --mesh "kept=$manager:$port" --mesh "snat=$snat:$port" \
            --seconds "$seconds" --clients "$clients" \
            >"/tmp/$prefix-against.txt"
        cat "/tmp/$prefix-against.txt"
        awk -v c="$clients" -v m="$mesh" '
            /^ratios / {
                split($3, rr, "="); split($4, conn, "="); split($5, bulk, "=")
                printf "BENCH mesh-client-addr mesh=%s clients=%s path=%s ratio=%s conn_ratio=%s bulk_ratio=%s\n", m, c, $2, rr[2], conn[2], bulk[2]
            }' "/tmp/$prefix-against.txt" | tee -a "/tmp/$prefix-bench.txt"
    done
    rm -f "/tmp/$prefix-against.txt"
}

: >"/tmp/$prefix-bench.txt"
pid=$(cat "/run/flotilla-cluster/$prefix/worker02/flotilla.pid")
kill -TERM "$pid"
for _ in $(seq 1 300); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
FLOTILLA_CLIENT_ADDR=off cluster start --prefix "$prefix" worker02 >/dev/null
grep -q "clients keep their addresses" "/run/flotilla-cluster/$prefix/manager/daemon.log" ||
    { echo "bench/mesh-client-addr.sh: the manager does not keep clients' addresses" >&2; exit 1; }
grep -q "clients. addresses are not kept" "/run/flotilla-cluster/$prefix/worker02/daemon.log" ||
    { echo "bench/mesh-client-addr.sh: worker02 did not restart without the tunnel" >&2; exit 1; }
echo "cluster $prefix (--mesh $mesh): task on worker01 $worker, kept through the manager $manager, snat through worker02 $snat, client $subnet.200, published $port"
for _ in $(seq 1 "$reps"); do against; done

echo
echo "summary (ratios to the same-node path):"
cat "/tmp/$prefix-bench.txt"
if [ "$reps" -gt 1 ]; then
    echo
    echo "medians of $reps runs (min-max):"
    for clients in 1 16; do
        for path in kept snat; do
            line="clients=$clients path=$path"
            for key in ratio conn_ratio bulk_ratio; do
                values=$(grep "clients=$clients path=$path " "/tmp/$prefix-bench.txt" |
                    sed -n "s/.* $key=\([0-9.]*\).*/\1/p" | sort -n)
                n=$(echo "$values" | wc -l)
                median=$(echo "$values" | sed -n "$(( (n + 1) / 2 ))p")
                line="$line $key=$median ($(echo "$values" | head -1)-$(echo "$values" | tail -1))"
            done
            echo "$line"
        done
    done
fi
rm -f "/tmp/$prefix-bench.txt"
ok=1
