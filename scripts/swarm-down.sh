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
    kill "$(cat "$root/daemon.pid")" 2>/dev/null || true
fi
rm -rf "$root"
echo "Flotilla stopped."
