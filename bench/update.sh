#!/usr/bin/env bash
# update: a rolling update of N replicas (parallelism P, delay 0, the default
# stop-first order and 5 s monitor period) from flotilla-hello:latest to
# flotilla-udpecho:latest and back (both stop at once on SIGTERM, so the stop
# grace period is not what is measured), on Flotilla (one node, docker
# executor) and on Docker Swarm on the same engine, through the same docker
# CLI: `docker service update -d --image ...`. Each repetition is one update
# (the image alternates) of a service that is fully running; two times:
#   all new   every task with desired state running runs the new image
#             (docker service ps --filter desired-state=running, every 0.25 s)
#   completed the service's UpdateStatus is "completed" (GET /services/ID)
# Both systems wait out one monitor period after the last task before they
# say "completed" (SwarmKit's updater does; so does Flotilla's).
#
# The floor: the same engine work without an orchestrator. N containers of
# the old image run and N of the new one are created; P workers each take
# the next slot, `docker stop` the old container, `docker start` the new one
# (what a stop-first update with prepared tasks asks of the engine).
#
#   bench/update.sh [--replicas 100] [--parallelism 10] [--reps 3]
#                   [--no-swarm] [--no-plain] [--tiny] [--bin PATH]
#
# --tiny: 6 replicas, parallelism 2, one repetition, no Docker Swarm.
BENCH_NAME=update
. "$(dirname "$0")/lib.sh"

N=100 PAR=10 REPS=3 SWARM=1 PLAIN=1 BINARG=""
usage() { sed -n '2,/^BENCH_NAME=/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --replicas) N=$2; shift 2 ;;
        --parallelism) PAR=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --no-swarm) SWARM=0; shift ;;
        --no-plain) PLAIN=0; shift ;;
        --tiny) N=6 PAR=2 REPS=1 SWARM=0; shift ;;
        --bin) BINARG=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "update.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
find_bin "$BINARG"
bench_workdir
IMAGES=(flotilla-hello:latest flotilla-udpecho:latest)
(unset DOCKER_HOST; bash "$BENCH_REPO/tests/images/build.sh" >/dev/null)
TIMEOUT=900

update_status() { api "$1" "/services/$2" 2>/dev/null | grep -o '"UpdateStatus":{[^}]*}' || true; }
running_is() {
    [ "$(api "$1" "/services?status=true&filters=$(filters "{\"id\":[\"$2\"]}")" 2>/dev/null \
        | grep -o '"RunningTasks":[0-9]*' | head -n1 | cut -d: -f2)" = "$3" ]
}
# all_new SOCK ID IMAGE: N tasks want to run, and all N run IMAGE.
all_new() {
    local out
    out=$(env -u DOCKER_CONTEXT DOCKER_HOST="unix://$1" docker service ps "$2" \
        --filter desired-state=running --format '{{.Image}} {{.CurrentState}}' 2>/dev/null) || return 1
    [ "$(grep -c . <<<"$out")" = "$N" ] && [ "$(grep -c "^$3 Running" <<<"$out")" = "$N" ]
}
# completed SOCK ID BEFORE: UpdateStatus is completed, and not the one seen
# before the update (the previous update's).
completed() {
    local s
    s=$(update_status "$1" "$2")
    [ "$s" != "$3" ] && grep -q '"State":"completed"' <<<"$s"
}

run_system() { # SYSTEM SOCK
    local sys=$1 sock=$2 id t0 before img r
    local -a D=(env -u DOCKER_CONTEXT DOCKER_HOST="unix://$sock" docker)
    log "$sys: $N replicas of ${IMAGES[0]}"
    id=$("${D[@]}" service create -d -q --no-resolve-image --replicas "$N" --name "fbupd" \
        --update-parallelism "$PAR" --update-delay 0s "${IMAGES[0]}")
    on_exit "env -u DOCKER_CONTEXT DOCKER_HOST=unix://$sock docker service rm $id"
    wait_until $TIMEOUT 0.2 "$sys: $N running" running_is "$sock" "$id" "$N"
    for r in $(seq 1 "$REPS"); do
        img=${IMAGES[$((r % 2))]}
        before=$(update_status "$sock" "$id")
        log "$sys: update $r to $img"
        t0=$(now)
        "${D[@]}" service update -d -q --no-resolve-image --image "$img" "$id" >/dev/null
        wait_until $TIMEOUT 0.25 "$sys: all $N on $img" all_new "$sock" "$id" "$img"
        record "$sys.allnew" "$(since "$t0")"
        wait_until $TIMEOUT 0.1 "$sys: UpdateStatus completed" completed "$sock" "$id" "$before"
        record "$sys.completed" "$(since "$t0")"
    done
    "${D[@]}" service rm "$id" >/dev/null
    wait_until $TIMEOUT 0.2 "$sys: containers gone" \
        bash -c '[ "$(curl -s --unix-socket "$0" "http://localhost/containers/json?all=1&filters=$1" | grep -c "\"Id\":")" = 0 ]' \
        "$ENGINE_SOCK" "$(filters "{\"label\":[\"com.docker.swarm.service.id=$id\"]}")"
}

# plain_rep: one stop/start round of N slots by P workers on the bare engine.
plain_rep() {
    local g=flbench-upd-$$ i t0
    on_exit "engine ps -aq --filter label=flbench.group=$g | xargs -r env -u DOCKER_HOST docker -H unix://$ENGINE_SOCK rm -f >/dev/null"
    seq 1 "$N" | xargs -P 8 -I{} env -u DOCKER_HOST docker -H "unix://$ENGINE_SOCK" \
        run -d --label flbench.group=$g --name "$g-old-{}" "${IMAGES[0]}" >/dev/null
    seq 1 "$N" | xargs -P 8 -I{} env -u DOCKER_HOST docker -H "unix://$ENGINE_SOCK" \
        create --label flbench.group=$g --name "$g-new-{}" "${IMAGES[1]}" >/dev/null
    t0=$(now)
    seq 1 "$N" | xargs -P "$PAR" -I{} env -u DOCKER_HOST sh -c \
        'docker -H "unix://$0" stop -t 10 "$1-old-$2" >/dev/null && docker -H "unix://$0" start "$1-new-$2" >/dev/null' \
        "$ENGINE_SOCK" "$g" {}
    record plain.allnew "$(since "$t0")"
    engine ps -aq --filter "label=flbench.group=$g" | xargs -r env -u DOCKER_HOST docker -H "unix://$ENGINE_SOCK" rm -f >/dev/null
}

log "update: $N replicas, parallelism $PAR, $REPS repetition(s), swarm $([ $SWARM = 1 ] && echo yes || echo no), bin $BIN"
if [ $PLAIN = 1 ]; then
    for r in $(seq 1 "$REPS"); do log "plain docker: stop/start $N, $PAR at a time"; plain_rep; done
fi
flotilla_start "$WORK/flotilla" docker
run_system flotilla "$FL_SOCK"
if [ $SWARM = 1 ] && swarm_begin; then
    run_system swarm "$ENGINE_SOCK"
    swarm_end
fi

echo
echo "update: $N replicas, parallelism $PAR, delay 0, monitor 5 s (default); $(nproc) cores, Docker $(engine version --format '{{.Server.Version}}'); $REPS update(s): median (min–max)"
echo
echo "| to | plain docker stop/start (-P $PAR) | Flotilla | Docker Swarm | Flotilla / plain | Flotilla / Swarm |"
echo "| --- | --- | --- | --- | --- | --- |"
for k in allnew completed; do
    label="all $N running the new image"; [ $k = allnew ] || label="UpdateStatus completed"
    echo "| $label | $(cell "plain.$k") | $(cell "flotilla.$k") | $(cell "swarm.$k") | $(ratio "$(median_of "flotilla.$k")" "$(median_of "plain.$k")") | $(ratio "$(median_of "flotilla.$k")" "$(median_of "swarm.$k")") |"
done
echo
for k in allnew completed; do
    emit "plain.$k" s; emit "flotilla.$k" s; emit "swarm.$k" s
    emit_ratio "flotilla_over_plain.$k" "$(ratio "$(median_of "flotilla.$k")" "$(median_of "plain.$k")")"
    emit_ratio "flotilla_over_swarm.$k" "$(ratio "$(median_of "flotilla.$k")" "$(median_of "swarm.$k")")"
done
