#!/usr/bin/env bash
# Starts a working single-node Flotilla swarm on this machine: builds the
# binary, starts `flotilla daemon` in the background (state in .flotilla/),
# runs `flotilla swarm init`, and builds the local busybox test image.
# Stop it with scripts/swarm-down.sh.
# With --env it prints only the shell lines that point the CLIs at it
# (`eval "$(scripts/swarm-up.sh --env)"`), everything else on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.flotilla
sock=$root/flotilla.sock
mkdir -p "$root"
env_only=false
if [ "${1:-}" = "--env" ]; then
    env_only=true
    exec 3>&1 1>&2
fi

cargo build --release --bin flotilla
bin=$PWD/target/release/flotilla
bash tests/images/build.sh >/dev/null

if [ -S "$sock" ] && "$bin" -H "unix://$sock" node ls >/dev/null 2>&1; then
    echo "Flotilla is already running at unix://$sock"
else
    nohup "$bin" daemon --data-dir "$root/data" -H "unix://$sock" >"$root/daemon.log" 2>&1 &
    echo $! >"$root/daemon.pid"
    for _ in $(seq 1 100); do
        [ -S "$sock" ] && curl -sf --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! "$bin" -H "unix://$sock" node ls >/dev/null 2>&1; then
        "$bin" -H "unix://$sock" swarm init --advertise-addr 127.0.0.1
    fi
fi
env_lines="export PATH=$PWD/target/release:\$PATH
export FLOTILLA_HOST=unix://$sock
export DOCKER_HOST=unix://$sock"
if $env_only; then
    echo "$env_lines" >&3
    exit 0
fi
cat <<EOT

Flotilla is running (log: $root/daemon.log). Put the flotilla CLI on the
PATH and point both CLIs at it (or: eval "\$(scripts/swarm-up.sh --env)"):

$env_lines

then, for example:

    flotilla service create --replicas 3 --name helloworld flotilla-busybox ping 127.0.0.1
EOT
