#!/usr/bin/env bash
# text-order: writes crates/flotilla/text-order.txt, the functions an idle
# worker and an idle manager run, which the release build's linker puts
# first and together (see crates/flotilla/build.rs). An idle daemon's
# memory is mostly its binary's code, paged in 64 KiB at a time around each
# function it touches: scattered over the 26 MiB of text, the few it runs
# made most of that text resident.
#
#   scripts/text-order.sh [BIN]     (default target/release/flotilla)
#
# A manager and a worker (scripts/cluster.sh, docker executor, prefix fbto,
# subnet 10.213.72) run under valgrind's callgrind: idle for 20 s, then a
# service of 2 tasks on the worker, removed again. The list is the worker's
# functions then the manager's, idle first. Run it again after large
# changes or a new Rust toolchain (symbol names change with it; a stale
# list is only less effective). Needs root and valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/flotilla}")
OUT=crates/flotilla/text-order.txt
PREFIX=fbto SUBNET=10.213.72
[ "$(id -u)" = 0 ] || { echo "text-order.sh: needs root" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "text-order.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "text-order.sh: no $BIN (cargo build --release -p flotilla)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/text-order.XXXXXX)
CL() { bash scripts/cluster.sh "$@"; }
trap 'CL down --prefix $PREFIX >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
# Daemons under callgrind (one output per host), the CLI as it is.
cat >"$WORK/flotilla" <<WRAP
#!/bin/bash
if [ "\$1" = daemon ]; then
    h=x prev=
    for a in "\$@"; do [ "\$prev" = --hostname ] && h=\$a; prev=\$a; done
    exec valgrind --tool=callgrind --demangle=no --dump-instr=no \\
        --callgrind-out-file="$WORK/cg.\$h" "$BIN" "\$@"
fi
exec "$BIN" "\$@"
WRAP
chmod +x "$WORK/flotilla"
export FLOTILLA_BIN=$WORK/flotilla
CL down --prefix $PREFIX >/dev/null 2>&1 || true
echo "text-order: a manager and a worker under callgrind (slow to start)" >&2
CL up --prefix $PREFIX --subnet $SUBNET --managers 1 --workers 1 --executor docker >"$WORK/up.log" 2>&1 \
    || { cat "$WORK/up.log" >&2; exit 1; }
STATE=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}/$PREFIX
FL() { "$BIN" -H "unix://$STATE/manager/flotilla.sock" "$@"; }
sleep 20
for h in manager worker01; do callgrind_control -d idle "$(cat "$STATE/$h/flotilla.pid")" >/dev/null; done
echo "text-order: idle traced; now 2 tasks on the worker" >&2
FL service create -d --name text-order --replicas 2 --constraint node.hostname==worker01 \
    flotilla-busybox sleep 1000 >/dev/null
for _ in $(seq 1 120); do
    [ "$(FL service ps text-order --format '{{.CurrentState}}' | grep -c Running)" = 2 ] && break
    sleep 1
done
FL service rm text-order >/dev/null
sleep 10
for h in manager worker01; do kill -TERM "$(cat "$STATE/$h/flotilla.pid")"; done
for h in manager worker01; do
    pid=$(cat "$STATE/$h/flotilla.pid")
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
done
python3 scripts/text-order-symbols.py "$BIN" \
    $(ls "$WORK"/cg.worker01.* | sort) "$WORK"/cg.worker01 \
    $(ls "$WORK"/cg.manager.* | sort) "$WORK"/cg.manager >"$OUT.new"
mv "$OUT.new" "$OUT"
echo "text-order: $(wc -l <"$OUT") functions in $OUT" >&2
