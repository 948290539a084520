#!/usr/bin/env bash
# converge: how long the same containers take to reach the wanted state on one
# machine's Docker Engine, driven three ways:
#   plain    `docker run -d` / `docker stop` / `docker rm -f`, P at a time
#   Flotilla one `flotilla daemon --executor docker` node, through the docker CLI
#   Swarm    Docker Swarm mode on the same engine, through the same docker CLI
# Steps, each timed from the command to the state (polled every 0.1 s):
#   create N          `service create --replicas N` -> N tasks running
#                     (GET /services?status=true: RunningTasks = N)
#   scale A->B        `service scale` up -> B running
#   scale B->0        `service scale` to 0 -> no task running, no container running
#   rm                `service rm` -> no container of the service left (docker ps -a)
# Plain equivalents: N `docker run -d`; B-A more; `docker stop -t 1` of all;
# `docker rm -f` of all. The task exits at once on SIGTERM
# (sh -c 'trap "exit 0" TERM; ...'), so no stop grace period is waited for.
#
#   bench/converge.sh [--sizes "10 100 300"] [--scale "100 300"] [--reps 3]
#                     [--parallel 8] [--no-swarm] [--no-plain] [--tiny] [--bin PATH]
#   bench/converge.sh N          # the old form: --sizes N --scale "" --reps 1
#
# --tiny: sizes 5, scale 5->10->0, one repetition, no Docker Swarm.
# Needs the machine's Docker Engine; the Swarm comparison inits a swarm on it
# (only if it is in none) and leaves it at the end. See bench/lib.sh.
BENCH_NAME=converge
. "$(dirname "$0")/lib.sh"

SIZES="10 100 300" SCALE="100 300" REPS=3 PAR=8 SWARM=1 PLAIN=1 BINARG=""
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --sizes) SIZES=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --parallel) PAR=$2; shift 2 ;;
        --no-swarm) SWARM=0; shift ;;
        --no-plain) PLAIN=0; shift ;;
        --tiny) SIZES=5 SCALE="5 10" REPS=1 SWARM=0; shift ;;
        --bin) BINARG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        [0-9]*) SIZES=$1 SCALE="" REPS=1; shift ;;
        *) echo "converge.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
[ "${NO_SWARM:-0}" != 1 ] || SWARM=0
read -r SCALE_FROM SCALE_TO <<<"${SCALE:-- -}"
find_bin "$BINARG"
bench_workdir
RUN=$(basename "$WORK")

IMG=flotilla-busybox:latest
CMD=(sh -c 'trap "exit 0" TERM; while :; do sleep 1; done')
(unset DOCKER_HOST; bash "$BENCH_REPO/tests/images/build.sh" >/dev/null)
TIMEOUT=900

# --- plain docker ------------------------------------------------------------------

on_exit "engine ps -aq --filter label=flbench.run=$RUN | xargs -r -n 50 docker -H unix://$ENGINE_SOCK rm -f"
plain_run() { # GROUP COUNT
    seq 1 "$2" | xargs -P "$PAR" -I{} env -u DOCKER_HOST docker -H "unix://$ENGINE_SOCK" run -d \
        --label "flbench.run=$RUN" --label "flbench.group=$1" --stop-timeout 1 "$IMG" "${CMD[@]}" >/dev/null
}
plain_ids() { engine ps -q ${2:+-a} --filter "label=flbench.group=$1"; }
plain_each() { # GROUP all? DOCKER-ARGS...
    local g=$1 all=$2; shift 2
    plain_ids "$g" $all | xargs -r -P "$PAR" -n 1 env -u DOCKER_HOST docker -H "unix://$ENGINE_SOCK" "$@" >/dev/null
}

plain_rep() {
    local n g t0
    for n in $SIZES; do
        g=$RUN-p$n-$rep
        t0=$(now); plain_run "$g" "$n"; record plain.create.$n "$(since "$t0")"
        if [ "$n" = "$SCALE_FROM" ]; then
            t0=$(now); plain_run "$g" $((SCALE_TO - SCALE_FROM)); record plain.scale.up "$(since "$t0")"
            t0=$(now); plain_each "$g" "" stop -t 1; record plain.scale.down "$(since "$t0")"
            t0=$(now); plain_each "$g" all rm -f; record plain.rm.scaled "$(since "$t0")"
        else
            t0=$(now); plain_each "$g" all rm -f; record plain.rm.$n "$(since "$t0")"
        fi
    done
}

# --- a swarm (Flotilla's or Docker's) through the docker CLI ---------------------------

# svc_rep SYSTEM SOCK: one repetition of every step against the API at SOCK;
# containers are counted on the machine's engine by service id.
running_is() { [ "$(running_tasks_id "$1" "$2")" = "$3" ]; }
running_tasks_id() {
    api "$1" "/services?status=true&filters=$(filters "{\"id\":[\"$2\"]}")" 2>/dev/null \
        | grep -o '"RunningTasks":[0-9]*' | head -n1 | cut -d: -f2
}
no_containers() { # SERVICE_ID [all]
    [ "$(containers "$ENGINE_SOCK" "{\"label\":[\"com.docker.swarm.service.id=$1\"]}" ${2:-})" = 0 ]
}
stopped_all() { running_is "$1" "$2" 0 && no_containers "$2"; }

svc_rep() {
    local sys=$1 sock=$2 n name id t0
    local -a D=(env -u DOCKER_CONTEXT DOCKER_HOST="unix://$sock" docker)
    for n in $SIZES; do
        name=cv${n}x$rep
        t0=$(now)
        id=$("${D[@]}" service create -d -q --no-resolve-image --replicas "$n" --name "$name" \
            --stop-grace-period 1s "$IMG" "${CMD[@]}")
        wait_until $TIMEOUT 0.1 "$sys: $n running" running_is "$sock" "$id" "$n"
        record "$sys.create.$n" "$(since "$t0")"
        local rmkey=$sys.rm.$n
        if [ "$n" = "$SCALE_FROM" ]; then
            t0=$(now)
            "${D[@]}" service scale -d "$name=$SCALE_TO" >/dev/null
            wait_until $TIMEOUT 0.1 "$sys: $SCALE_TO running" running_is "$sock" "$id" "$SCALE_TO"
            record "$sys.scale.up" "$(since "$t0")"
            t0=$(now)
            "${D[@]}" service scale -d "$name=0" >/dev/null
            wait_until $TIMEOUT 0.1 "$sys: none running" stopped_all "$sock" "$id"
            record "$sys.scale.down" "$(since "$t0")"
            rmkey=$sys.rm.scaled
        fi
        t0=$(now)
        "${D[@]}" service rm "$name" >/dev/null
        wait_until $TIMEOUT 0.1 "$sys: no container left" no_containers "$id" all
        record "$rmkey" "$(since "$t0")"
    done
}

# --- run -------------------------------------------------------------------------------

log "converge: sizes [$SIZES], scale [${SCALE:-none}], $REPS repetition(s), plain -P $PAR, swarm $([ $SWARM = 1 ] && echo yes || echo no), bin $BIN"
flotilla_start "$WORK/flotilla" docker
if [ $SWARM = 1 ] && ! swarm_begin; then SWARM=0; fi
for rep in $(seq 1 "$REPS"); do
    if [ $PLAIN = 1 ]; then log "rep $rep: plain docker"; plain_rep; fi
    log "rep $rep: Flotilla"; svc_rep flotilla "$FL_SOCK"
    if [ $SWARM = 1 ]; then log "rep $rep: Docker Swarm"; svc_rep swarm "$ENGINE_SOCK"; fi
done

# --- report ------------------------------------------------------------------------------

steps=()
for n in $SIZES; do steps+=("create.$n|create --replicas $n"); done
[ -z "$SCALE" ] || steps+=("scale.up|scale $SCALE_FROM→$SCALE_TO" "scale.down|scale $SCALE_TO→0")
for n in $SIZES; do
    if [ "$n" = "$SCALE_FROM" ]; then steps+=("rm.scaled|rm (after scale to 0)"); else steps+=("rm.$n|rm ($n running)"); fi
done

echo
echo "converge: $(nproc) cores, Docker $(engine version --format '{{.Server.Version}}'), $REPS repetition(s): median (min–max)"
echo
echo "| step | plain docker (-P $PAR) | Flotilla | Docker Swarm | Flotilla / plain | Flotilla / Swarm |"
echo "| --- | --- | --- | --- | --- | --- |"
for s in "${steps[@]}"; do
    k=${s%%|*} label=${s#*|}
    echo "| $label | $(cell "plain.$k") | $(cell "flotilla.$k") | $(cell "swarm.$k") | $(ratio "$(median_of "flotilla.$k")" "$(median_of "plain.$k")") | $(ratio "$(median_of "flotilla.$k")" "$(median_of "swarm.$k")") |"
done
echo
for s in "${steps[@]}"; do
    k=${s%%|*}
    for sys in plain flotilla swarm; do emit "$sys.$k" s; done
    emit_ratio "flotilla_over_plain.$k" "$(ratio "$(median_of "flotilla.$k")" "$(median_of "plain.$k")")"
    emit_ratio "flotilla_over_swarm.$k" "$(ratio "$(median_of "flotilla.$k")" "$(median_of "swarm.$k")")"
done
