#!/usr/bin/env bash
# mesh: the routing mesh of real `flotilla daemon`s against a direct
# connection, both paths side by side, with one load generator in one run.
# In a network namespace of its own (nothing touches the host's interfaces
# or firewall), two one-node swarms with the process executor each run
# `mesh-bench serve` as the one task of a service: one daemon with the
# user-space proxy (--mesh userspace) publishing PORT, one with the
# kernel's NAT (--mesh kernel) publishing PORT+1 (ingress: each daemon's
# mesh takes the port on every address and forwards each connection to
# its task's host port). Then `mesh-bench against` measures a task's host
# port directly, and both published ports, with 1 and with 16 clients,
# and prints each mesh's ratios to direct. Loopback inside the namespace
# only; everything it started is removed on the way out, on failure too.
# Needs root (the namespace, the kernel path).
#
#   bench/mesh.sh [--seconds S] [--reps N] [--tiny] [--size BYTES] [--port PORT] [--no-build]
#
#   --seconds S   per scenario (default 5; three scenarios per target)
#   --reps N      runs of the whole measurement (default 1); with more than
#                 one, the median ratios and their range close the output
#   --tiny        1 s per scenario: checks the script, not the mesh
#   --size B      request/response message size (default 1024)
#   --port P      the user-space mesh's published port, P+1 the kernel's
#                 (default 18400)
#   --no-build    use the binaries already in target/release
#   --bin PATH    this flotilla binary; --mesh-bench PATH: this mesh-bench
#                 (either one skips the build; the tests pass debug builds)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=5
reps=1
size=1024
port=18400
build=1
bin=$root/target/release/flotilla
bench=$root/target/release/mesh-bench
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --tiny) seconds=1; reps=1; shift ;;
        --size) size=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --bin) bin=$2; build=0; shift 2 ;;
        --mesh-bench) bench=$2; build=0; shift 2 ;;
        *) echo "bench/mesh.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
kport=$((port + 1))
bin=$(realpath "$bin")
bench=$(realpath "$bench")

if [ "$build" = 1 ]; then
    cargo build --release --bin flotilla -p flotilla
    cargo build --release -p flotilla-net --bin mesh-bench
fi
for b in "$bin" "$bench"; do
    [ -x "$b" ] || { echo "bench/mesh.sh: $b is missing (drop --no-build)" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/flmesh-XXXXXX)
ns=flmb-$$
netns_made=0
declare -A daemon_pid=()
ok=0
in_ns() { ip netns exec "$ns" "$@"; }
cli() { "$bin" -H "unix://$dir/$1.sock" "${@:2}"; }

# Field 22 of /proc/PID/stat: tells a process from a later one with its pid.
start_time() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }

cleanup() {
    set +e
    for name in "${!daemon_pid[@]}"; do
        pid=${daemon_pid[$name]}
        if kill -0 "$pid" 2>/dev/null; then
            cli "$name" service rm meshbench >/dev/null 2>&1
            cli "$name" swarm leave --force >/dev/null 2>&1
            kill "$pid" 2>/dev/null
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    # Task processes outlive their daemon by design: kill any left, found
    # through the executor's records (pid and start time), group and all.
    while IFS= read -r record; do
        pid=$(jq -r '.pid // empty' "$record" 2>/dev/null)
        start=$(jq -r '.start_time // empty' "$record" 2>/dev/null)
        if [ -n "$pid" ] && [ -n "$start" ] && [ "$(start_time "$pid")" = "$start" ]; then
            kill -9 -- "-$pid" "$pid" 2>/dev/null
        fi
    done < <(find "$dir" -name record.json 2>/dev/null)
    if [ "$ok" != 1 ]; then
        for log in "$dir"/*.log; do
            [ -f "$log" ] || continue
            echo "---- $(basename "$log") (last 40 lines) ----" >&2
            tail -n 40 "$log" >&2
        done
    fi
    [ "$netns_made" = 1 ] && ip netns del "$ns"
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns"
netns_made=1
ip -n "$ns" link set lo up

# start NAME MESH PUBLISHED [env...]: a daemon in the namespace, its swarm,
# and the service; prints the task's host port.
start() {
    local name=$1 mesh=$2 published=$3
    shift 3
    env -u FLOTILLA_HOST -u DOCKER_HOST "$@" FLOTILLA_LOG=warn,flotilla_agent::network=info \
        ip netns exec "$ns" "$bin" daemon --data-dir "$dir/$name" -H "unix://$dir/$name.sock" \
        --executor process --hostname "flmesh-$name" --mesh "$mesh" >"$dir/$name.log" 2>&1 &
    daemon_pid[$name]=$!
    for _ in $(seq 1 300); do
        curl -sf --unix-socket "$dir/$name.sock" http://x/_ping >/dev/null 2>&1 && break
        kill -0 "${daemon_pid[$name]}" 2>/dev/null || { echo "bench/mesh.sh: the $name daemon exited" >&2; exit 1; }
        sleep 0.1
    done
    cli "$name" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
    cli "$name" service create -d --no-resolve-image --name meshbench --stop-grace-period 1s \
        -p "$published:9000" flotilla-busybox "$bench" serve >/dev/null
}

# hostport NAME: the running task's process, then the host port it was
# given (the API hides ingress-mode PortStatus, the environment does not).
hostport() {
    local name=$1 filters pid=
    filters=$(printf '{"service":["meshbench"],"desired-state":["running"]}' | jq -sRr @uri)
    for _ in $(seq 1 300); do
        pid=$(curl -sf --unix-socket "$dir/$name.sock" "http://x/tasks?filters=$filters" |
            jq -r '[.[] | select(.Status.State == "running") | .Status.ContainerStatus.PID] | first // empty')
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || { echo "bench/mesh.sh: the $name task never ran" >&2; exit 1; }
    tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^PORT_9000=//p'
}

# The user-space daemon shares the namespace with the kernel one as
# --no-service-addrs (which is what keeps it off the kernel's NAT).
start userspace userspace "$port" FLOTILLA_NO_SERVICE_ADDRS=1
start kernel kernel "$kport"
grep -q 'routing mesh: in the kernel' "$dir/kernel.log" ||
    { echo "bench/mesh.sh: the kernel daemon did not set up the kernel path" >&2; exit 1; }
uport=$(hostport userspace)
khport=$(hostport kernel)
[ -n "$uport" ] && [ -n "$khport" ] || { echo "bench/mesh.sh: a task has no PORT_9000" >&2; exit 1; }

echo "namespace $ns: user-space mesh on $port (task on host port $uport), kernel mesh on $kport (task on $khport); direct: $khport"
for rep in $(seq 1 "$reps"); do
for clients in 1 16; do
    echo
    echo "run $rep/$reps, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    in_ns "$bench" against --direct "127.0.0.1:$khport" \
        --mesh "userspace=127.0.0.1:$port" --mesh "kernel=127.0.0.1:$kport" \
        --seconds "$seconds" --clients "$clients" --size "$size" | tee "$dir/against.txt"
    echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
    # One summary line per mesh and client count: its ratios to direct.
    awk -v c="$clients" '
        /^ratios / {
            split($3, rr, "="); split($4, conn, "="); split($5, bulk, "=")
            printf "BENCH mesh clients=%s path=%s ratio=%s conn_ratio=%s bulk_ratio=%s\n", c, $2, rr[2], conn[2], bulk[2]
        }
    ' "$dir/against.txt" | tee -a "$dir/bench.txt"
done
done
if [ "$reps" -gt 1 ]; then
    echo
    echo "medians of $reps runs (min-max):"
    for clients in 1 16; do
        for path in userspace kernel; do
            line="clients=$clients path=$path"
            for key in ratio conn_ratio bulk_ratio; do
                values=$(grep "clients=$clients path=$path " "$dir/bench.txt" |
                    sed -n "s/.* $key=\([0-9.]*\).*/\1/p" | sort -n)
                n=$(echo "$values" | wc -l)
                median=$(echo "$values" | sed -n "$(( (n + 1) / 2 ))p")
                line="$line $key=$median ($(echo "$values" | head -1)-$(echo "$values" | tail -1))"
            done
            echo "$line"
        done
    done
fi
ok=1
