#!/usr/bin/env bash
# converge: time from `service create --replicas N` to N running tasks, for
# Flotilla (docker executor, one node) and Docker Swarm on the same engine,
# against N plain `docker run -d` with 8 in parallel. Prints one table row
# per system and the ratios. Uses the host's Docker Engine; initialises and
# leaves a Docker swarm on it for the comparison (skipped with NO_SWARM=1).
#
#   bench/converge.sh [N]        (default 100; needs target/release/flotilla)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
BIN=${FLOTILLA_BIN:-target/release/flotilla}
IMG=flotilla-busybox:latest
CMD=(sh -c 'trap "exit 0" TERM; while :; do sleep 1; done')
bash tests/images/build.sh >/dev/null
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

# Plain docker run, 8 at a time.
t0=$(now)
seq 1 "$N" | xargs -P 8 -I{} docker run -d --label bench.converge=plain --stop-timeout 1 "$IMG" "${CMD[@]}" >/dev/null
plain=$(elapsed "$t0")
docker ps -aq --filter label=bench.converge=plain | xargs -r docker rm -f >/dev/null

# Flotilla.
dir=$(mktemp -d)
"$BIN" daemon --data-dir "$dir/data" -H "unix://$dir/f.sock" --executor docker >"$dir/log" 2>&1 &
fpid=$!
trap 'kill $fpid 2>/dev/null; rm -rf "$dir"' EXIT
until curl -sf --unix-socket "$dir/f.sock" http://x/_ping >/dev/null 2>&1; do sleep 0.05; done
F=("$BIN" -H "unix://$dir/f.sock")
"${F[@]}" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
t0=$(now)
"${F[@]}" service create -d --no-resolve-image --replicas "$N" --name conv --stop-grace-period 1s "$IMG" "${CMD[@]}" >/dev/null
until [ "$("${F[@]}" service ls --format '{{.Replicas}}')" = "$N/$N" ]; do sleep 0.1; done
flotilla=$(elapsed "$t0")
"${F[@]}" swarm leave --force >/dev/null

swarm=skipped
if [ "${NO_SWARM:-0}" != 1 ] && [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ]; then
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    t0=$(now)
    docker service create -d --no-resolve-image --replicas "$N" --name conv --stop-grace-period 1s "$IMG" "${CMD[@]}" >/dev/null
    until [ "$(docker service ls --filter name=conv --format '{{.Replicas}}')" = "$N/$N" ]; do sleep 0.2; done
    swarm=$(elapsed "$t0")
    docker swarm leave --force >/dev/null
fi

printf '| N | plain docker run (-P 8) | Flotilla | Docker Swarm | Flotilla / plain | Flotilla / Swarm |\n'
printf '| %s | %.1f s | %.1f s | %s | %.2f | %s |\n' "$N" "$plain" "$flotilla" \
    "$( [ "$swarm" = skipped ] && echo skipped || printf '%.1f s' "$swarm")" \
    "$(echo "$flotilla / $plain" | bc -l)" \
    "$( [ "$swarm" = skipped ] && echo - || printf '%.2f' "$(echo "$flotilla / $swarm" | bc -l)")"
