#!/usr/bin/env bash
# run-all: every benchmark of bench/, one after the other (they share the
# machine's two cores and its Docker Engine: never in parallel), each
# script's tables and BENCH lines on stdout. A benchmark that fails is
# reported and the others still run; the exit status says whether all passed.
#
#   bench/run-all.sh [--tiny] [--bin PATH] [--only "converge update ..."]
#
# --tiny passes --tiny to each (smallest sizes, one repetition, no Docker
# Swarm): a few minutes in all. --bin (or FLOTILLA_BIN) is the flotilla
# binary for the scripts that take one; by default target/release/flotilla
# (cargo build --release -p flotilla). scale.sh and mesh.sh, when present,
# build what they need themselves.
set -uo pipefail
cd "$(dirname "$0")/.."

TINY=() BINARG=() ONLY=""
while [ $# -gt 0 ]; do
    case $1 in
        --tiny) TINY=(--tiny); shift ;;
        --bin) BINARG=(--bin "$2"); shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-all.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

ALL="converge update failover api footprint scale mesh overlay"
[ -n "$ONLY" ] || ONLY=$ALL
failed=() passed=()
for b in $ONLY; do
    script=bench/$b.sh
    [ -x "$script" ] || [ -f "$script" ] || { echo "run-all: no $script, skipped" >&2; continue; }
    args=("${TINY[@]}")
    case $b in scale|mesh) ;; *) args+=("${BINARG[@]}") ;; esac
    echo
    echo "## $b: bench/$b.sh ${args[*]}"
    t0=$EPOCHREALTIME
    if bash "$script" "${args[@]}"; then passed+=("$b"); else failed+=("$b"); echo "run-all: $b FAILED" >&2; fi
    echo "(bench/$b.sh took $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s)"
done
echo
echo "run-all: passed: ${passed[*]:-none}; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
