# Shared helpers of the bench/*.sh scripts (sourced, not run).
#
# Conventions every script follows:
#  - the flotilla binary is --bin PATH, else $FLOTILLA_BIN, else
#    target/release/flotilla (build it with `cargo build --release -p flotilla`);
#    nothing is built implicitly;
#  - scratch files live in one fresh /tmp/flbench-<name>-XXXXXX, removed at
#    the end; only processes the script started (their pids are recorded)
#    are stopped; cleanup runs on exit, error and Ctrl-C;
#  - figures: a markdown table for BENCHMARKS.md, and one machine-readable
#    line per figure, `BENCH <name> <key> median=.. min=.. max=.. runs=.. unit=..`
#    (ratios: `BENCH <name> <key> ratio=..`);
#  - --tiny: smallest sizes, one repetition, no Docker Swarm comparison
#    (what the test suite runs, crates/flotilla/tests/bench.rs);
#  - the Docker Swarm comparison inits a swarm on the machine's Docker Engine
#    only if it is not in one already, and always leaves it (trap).
# Needs bash >= 5 ($EPOCHREALTIME), curl, awk; the docker CLI where Docker
# takes part. No python, no jq.

set -euo pipefail
BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=${BENCH_NAME:-bench}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }

# --- time --------------------------------------------------------------------

now() { echo "$EPOCHREALTIME"; }
# since T0: seconds elapsed, 3 decimals.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# wait_until TIMEOUT_S INTERVAL_S WHAT CMD...: polls CMD; fails after TIMEOUT_S.
wait_until() {
    local timeout=$1 interval=$2 what=$3; shift 3
    local t0=$EPOCHREALTIME
    until "$@"; do
        if awk -v a="$t0" -v b="$EPOCHREALTIME" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep "$interval"
    done
}

# --- cleanup -----------------------------------------------------------------

BENCH_CLEANUPS=()
# on_exit CMD: run CMD (a string for eval) at exit, last registered first.
on_exit() { BENCH_CLEANUPS+=("$1"); }
bench_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    for ((i = ${#BENCH_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${BENCH_CLEANUPS[$i]}" >/dev/null 2>&1
    done
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench_workdir: a fresh /tmp/flbench-$BENCH_NAME-XXXXXX in $WORK, removed at exit.
bench_workdir() {
    WORK=$(mktemp -d "/tmp/flbench-$BENCH_NAME-XXXXXX")
    on_exit "rm -rf '$WORK'"
}

# kill_pid PID: TERM, then KILL after 5 s, of a process this script started.
kill_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

# --- the flotilla binary -------------------------------------------------------

# find_bin [PATH]: sets BIN (absolute).
find_bin() {
    BIN=${1:-${FLOTILLA_BIN:-$BENCH_REPO/target/release/flotilla}}
    [ -x "$BIN" ] || die "no flotilla binary at $BIN: cargo build --release -p flotilla, or pass --bin / FLOTILLA_BIN"
    BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
}

# --- statistics ----------------------------------------------------------------

# stats V...: "median min max n" (the median of an even count is the mean of
# the middle two).
stats() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "- - - 0"; exit }
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.3f %.3f %.3f %d\n", m, v[1], v[NR], NR
        }'
}

# Figures collected so far: FIG_<key> holds the space-separated samples.
declare -A FIG=()
# record KEY VALUE: one more sample of KEY.
record() { FIG[$1]="${FIG[$1]:-} $2"; }
# median_of KEY: the median of KEY's samples (or "-").
median_of() {
    [ -n "${FIG[$1]:-}" ] || { echo -; return; }
    # shellcheck disable=SC2086
    stats ${FIG[$1]} | cut -d' ' -f1
}
# cell KEY [UNIT]: "median (min–max)" for a table, "median" alone for one run.
cell() {
    local key=$1 unit=${2-s}
    [ -n "${FIG[$key]:-}" ] || { echo "-"; return; }
    local m lo hi n
    # shellcheck disable=SC2086
    read -r m lo hi n < <(stats ${FIG[$key]})
    [ -z "$unit" ] || unit=" $unit"
    if [ "$n" -le 1 ]; then
        printf '%s%s' "$(fmt "$m")" "$unit"
    else
        printf '%s%s (%s–%s)' "$(fmt "$m")" "$unit" "$(fmt "$lo")" "$(fmt "$hi")"
    fi
}
# fmt X: 3 significant-ish digits (12.3, 1.23, 0.123, 1234).
fmt() {
    awk -v x="$1" 'BEGIN {
        if (x == "-" || x == "") { print "-"; exit }
        if (x + 0 == 0) { print "0"; exit }
        a = x < 0 ? -x : x
        if (a >= 100) printf "%.0f\n", x; else if (a >= 10) printf "%.1f\n", x;
        else if (a >= 1) printf "%.2f\n", x; else printf "%.3f\n", x }'
}
# ratio A B: A / B with 2 decimals, "-" if either is missing.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}
# emit KEY UNIT: the machine-readable line of KEY.
emit() {
    local key=$1 unit=${2:-s}
    [ -n "${FIG[$key]:-}" ] || return 0
    local m lo hi n
    # shellcheck disable=SC2086
    read -r m lo hi n < <(stats ${FIG[$key]})
    echo "BENCH $BENCH_NAME $key median=$m min=$lo max=$hi runs=$n unit=$unit"
}
emit_ratio() { [ "$2" = - ] || echo "BENCH $BENCH_NAME $1 ratio=$2"; }

# --- HTTP on unix sockets --------------------------------------------------------

# api SOCK PATH [curl args...]: the body of GET (or whatever the args say) PATH.
api() {
    local sock=$1 path=$2; shift 2
    curl -sS --max-time 10 --unix-socket "$sock" "$@" "http://localhost$path"
}
# urlenc STRING
urlenc() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [a-zA-Z0-9.~_-]) out+=$c ;;
            *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    echo "$out"
}
# filters JSON: the URL-encoded value of a filters= parameter.
filters() { urlenc "$1"; }

# running_tasks SOCK SERVICE: ServiceStatus.RunningTasks (GET /services?status=true).
running_tasks() {
    api "$1" "/services?status=true&filters=$(filters "{\"name\":[\"$2\"]}")" 2>/dev/null \
        | grep -o '"RunningTasks":[0-9]*' | head -n1 | cut -d: -f2
}

# containers SOCK FILTER_JSON [all]: how many containers the engine at SOCK
# lists (running ones, or all with a third argument).
containers() {
    local q="filters=$(filters "$2")"
    [ -z "${3:-}" ] || q="all=1&$q"
    api "$1" "/containers/json?$q" 2>/dev/null | grep -o '"Id":' | wc -l
}

# The machine's Docker Engine (for plain docker run and Docker Swarm).
ENGINE_SOCK=${BENCH_DOCKER_SOCK:-/var/run/docker.sock}
engine() { env -u DOCKER_HOST -u DOCKER_CONTEXT docker -H "unix://$ENGINE_SOCK" "$@"; }

# --- a single flotilla daemon on this machine --------------------------------------

# flotilla_start DIR EXECUTOR [daemon args...]: a `flotilla daemon` with its
# state in DIR, in a swarm of its own (cluster port on a free loopback port),
# with published ports only (no VIPs/DNS: it shares the machine's network
# namespace with everything else). Sets FL_PID, FL_SOCK, FL_NODE. Stopped at
# exit: `swarm leave --force` removes its containers, then the process goes.
flotilla_start() {
    local dir=$1 executor=$2; shift 2
    mkdir -p "$dir"
    FL_SOCK=$dir/flotilla.sock
    FLOTILLA_NO_SERVICE_ADDRS=1 FLOTILLA_LOG=warn \
        "$BIN" daemon --data-dir "$dir/data" -H "unix://$FL_SOCK" --executor "$executor" \
        --docker-host "unix://$ENGINE_SOCK" --hostname "fb-$BENCH_NAME" "$@" \
        </dev/null >"$dir/daemon.log" 2>&1 &
    FL_PID=$!
    on_exit "flotilla_stop '$FL_SOCK' $FL_PID '$executor'"
    wait_until 30 0.05 "flotilla daemon (log $dir/daemon.log)" \
        curl -sf --max-time 1 --unix-socket "$FL_SOCK" http://localhost/_ping -o /dev/null
    "$BIN" -H "unix://$FL_SOCK" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
    FL_NODE=$(api "$FL_SOCK" /info | grep -o '"NodeID":"[a-z0-9]*"' | head -n1 | cut -d'"' -f4)
    [ -n "$FL_NODE" ] || die "flotilla daemon has no node id after swarm init"
}

flotilla_stop() {
    local sock=$1 pid=$2 executor=$3 node
    node=$(api "$sock" /info 2>/dev/null | grep -o '"NodeID":"[a-z0-9]*"' | head -n1 | cut -d'"' -f4 || true)
    timeout 120 "$BIN" -H "unix://$sock" swarm leave --force >/dev/null 2>&1 || true
    kill_pid "$pid"
    # Belt and braces: containers this node made, found by its node id.
    if [ "$executor" = docker ] && [ -n "$node" ]; then
        engine ps -aq --filter "label=com.docker.swarm.node.id=$node" | xargs -r docker -H "unix://$ENGINE_SOCK" rm -f >/dev/null 2>&1 || true
    fi
}

# --- Docker Swarm on the machine's engine -------------------------------------------

# swarm_begin: `docker swarm init` on the machine's engine for the
# comparison. Returns 1 (and says why) if the engine is already in a swarm:
# someone else's, not ours to touch.
SWARM_MINE=0
swarm_begin() {
    local state
    state=$(engine info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
    if [ "$state" != inactive ]; then
        log "the machine's Docker Engine is in swarm state '$state', not inactive: Docker Swarm comparison skipped"
        return 1
    fi
    on_exit "swarm_end"
    SWARM_MINE=1
    # Said, not skipped in silence: port 2377 taken (a Flotilla daemon
    # left running) made the comparison vanish from the report.
    if ! engine swarm init --advertise-addr 127.0.0.1 >/dev/null 2>"$WORK/swarm-init.err"; then
        log "docker swarm init failed: $(head -1 "$WORK/swarm-init.err"): Docker Swarm comparison skipped"
        SWARM_MINE=0
        return 1
    fi
}
swarm_end() {
    [ "$SWARM_MINE" = 1 ] || return 0
    engine swarm leave --force >/dev/null 2>&1 || true
    SWARM_MINE=0
}
