#!/usr/bin/env bash
# Compares what Flotilla and a real Docker Swarm manager answer for the same
# services (tests/clients/compare_dockerd.py): one namespace host of
# scripts/cluster.sh runs both, its own dockerd put in swarm mode beside the
# Flotilla daemon that uses it as executor. Prints each difference; exits 1
# if there is any.
#
#   scripts/compare-dockerd.sh [--keep] [compare_dockerd.py options...]
#
# Needs root. The cluster (prefix fcmpd, subnet 10.213.97) is removed at
# the end unless --keep. The flotilla binary is chosen as cluster.sh does.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEEP=0
if [ "${1:-}" = --keep ]; then KEEP=1; shift; fi
C=(env "FLOTILLA_CLUSTER_PREFIX=fcmpd" "$REPO/scripts/cluster.sh")
"${C[@]}" down >/dev/null 2>&1 || true
"${C[@]}" up --managers 1 --workers 0 --subnet 10.213.97 >/dev/null
[ "$KEEP" = 1 ] || trap '"${C[@]}" down >/dev/null 2>&1 || true' EXIT
# Flotilla's swarm port is 2377 on this host: Docker's goes elsewhere.
"${C[@]}" docker manager swarm init --advertise-addr 10.213.97.11 \
    --listen-addr 10.213.97.11:2477 >/dev/null
STATE=${FLOTILLA_CLUSTER_STATE:-/run/flotilla-cluster}/fcmpd/manager
python3 "$REPO/tests/clients/compare_dockerd.py" \
    --docker "unix://$STATE/docker.sock" --flotilla "unix://$STATE/flotilla.sock" "$@"
