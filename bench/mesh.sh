#!/usr/bin/env bash
# mesh: the routing mesh of a real `flotilla daemon` against a direct
# connection, with one load generator in one run. A one-node swarm with the
# process executor runs `mesh-bench serve` as the one task of a service
# published on PORT (ingress: the daemon's mesh listens there on every
# address and forwards each connection to the task's host port); then
# `mesh-bench against` measures the task's host port directly and the
# published port, with 1 and with 16 clients. Loopback only; everything it
# started is removed on the way out, on failure too.
#
#   bench/mesh.sh [--seconds S] [--tiny] [--size BYTES] [--port PORT] [--no-build]
#
#   --seconds S   per scenario (default 5; three scenarios per target)
#   --tiny        1 s per scenario: checks the script, not the mesh
#   --size B      request/response message size (default 1024)
#   --port P      the published port (default 18400)
#   --no-build    use the binaries already in target/release
#   --bin PATH    this flotilla binary; --mesh-bench PATH: this mesh-bench
#                 (either one skips the build; the tests pass debug builds)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=5
size=1024
port=18400
build=1
bin=$root/target/release/flotilla
bench=$root/target/release/mesh-bench
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --tiny) seconds=1; shift ;;
        --size) size=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --bin) bin=$2; build=0; shift 2 ;;
        --mesh-bench) bench=$2; build=0; shift 2 ;;
        *) echo "bench/mesh.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$build" = 1 ]; then
    cargo build --release --bin flotilla -p flotilla
    cargo build --release -p flotilla-net --bin mesh-bench
fi
for b in "$bin" "$bench"; do
    [ -x "$b" ] || { echo "bench/mesh.sh: $b is missing (drop --no-build)" >&2; exit 1; }
done
if ss -Htln "sport = :$port" | grep -q .; then
    echo "bench/mesh.sh: port $port is already in use (choose another with --port)" >&2
    exit 1
fi

dir=$(mktemp -d /tmp/flmesh-XXXXXX)
sock=$dir/api.sock
daemon_pid=
ok=0
F=("$bin" -H "unix://$sock")

# Field 22 of /proc/PID/stat: tells a process from a later one with its pid.
start_time() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }

cleanup() {
    set +e
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        "${F[@]}" service rm meshbench >/dev/null 2>&1
        "${F[@]}" swarm leave --force >/dev/null 2>&1
        kill "$daemon_pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    # Task processes outlive their daemon by design: kill any left, found
    # through the executor's records (pid and start time), group and all.
    while IFS= read -r record; do
        pid=$(jq -r '.pid // empty' "$record" 2>/dev/null)
        start=$(jq -r '.start_time // empty' "$record" 2>/dev/null)
        if [ -n "$pid" ] && [ -n "$start" ] && [ "$(start_time "$pid")" = "$start" ]; then
            kill -9 -- "-$pid" "$pid" 2>/dev/null
        fi
    done < <(find "$dir" -name record.json 2>/dev/null)
    if [ "$ok" != 1 ] && [ -f "$dir/daemon.log" ]; then
        echo "---- daemon log (last 40 lines) ----" >&2
        tail -n 40 "$dir/daemon.log" >&2
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

env -u FLOTILLA_HOST -u DOCKER_HOST FLOTILLA_NO_SERVICE_ADDRS=1 FLOTILLA_LOG=warn \
    "$bin" daemon --data-dir "$dir/data" -H "unix://$sock" --executor process \
    --hostname flmesh >"$dir/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 300); do
    curl -sf --unix-socket "$sock" http://x/_ping >/dev/null 2>&1 && break
    kill -0 "$daemon_pid" 2>/dev/null || { echo "bench/mesh.sh: the daemon exited" >&2; exit 1; }
    sleep 0.1
done
"${F[@]}" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
"${F[@]}" service create -d --no-resolve-image --name meshbench --stop-grace-period 1s \
    -p "$port:9000" flotilla-busybox "$bench" serve >/dev/null

# The running task's process, then the host port it was given: the API
# hides ingress-mode PortStatus, the process's environment does not.
filters=$(printf '{"service":["meshbench"],"desired-state":["running"]}' | jq -sRr @uri)
pid=
for _ in $(seq 1 300); do
    pid=$(curl -sf --unix-socket "$sock" "http://x/tasks?filters=$filters" |
        jq -r '[.[] | select(.Status.State == "running") | .Status.ContainerStatus.PID] | first // empty')
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "$pid" ] || { echo "bench/mesh.sh: the task never ran" >&2; exit 1; }
hostport=$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^PORT_9000=//p')
[ -n "$hostport" ] || { echo "bench/mesh.sh: process $pid has no PORT_9000" >&2; exit 1; }

echo "flotilla daemon (process executor) pid $daemon_pid; task process $pid on host port $hostport; published $port"
for clients in 1 16; do
    echo
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$bench" against --direct "127.0.0.1:$hostport" --mesh "127.0.0.1:$port" \
        --seconds "$seconds" --clients "$clients" --size "$size" | tee "$dir/against.txt"
    echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
    # One summary line per client count: the mesh/direct ratios.
    awk -v c="$clients" '
        /req\/s/ { rps = $NF }   /conn\/s/ { cps = $NF }   /MiB\/s/ { bulk = $NF }
        END { printf "BENCH mesh clients=%s ratio=%s conn_ratio=%s bulk_ratio=%s\n", c, rps, cps, bulk }
    ' "$dir/against.txt"
done
ok=1
