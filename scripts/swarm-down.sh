#!/usr/bin/env bash
# Stops the swarm scripts/swarm-up.sh started: its services' tasks, the
# daemon, and its state under .flotilla/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.flotilla
sock=$root/flotilla.sock
bin=$PWD/target/release/flotilla
if [ -S "$sock" ]; then
    "$bin" -H "unix://$sock" swarm leave --force || true
fi
if [ -f "$root/daemon.pid" ]; then
    pid=$(cat "$root/daemon.pid")
    # SIGTERM: the daemon stops in order, within 15 s.
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -rf "$root"
echo "Flotilla stopped."
