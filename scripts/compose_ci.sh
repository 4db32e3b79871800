#!/usr/bin/env bash
# CI's third configuration (.ci/run): the course against docker-compose.yml on a real Docker engine.
#
#   scripts/compose_ci.sh [PYTEST ARGS...]
#
# 1. Uses the Docker engine that answers, or starts dockerd (root only) and waits for it, bounded.
# 2. Builds the Redis image from this machine's redis-server (docker/build-local-image.sh: no
#    registry needed), unless COURSE_DOCKER_REDIS_IMAGE names an image to use instead.
# 3. `up -d`, then waits for every container's health check, bounded (Compose v1 has no --wait).
# 4. Runs `make test` against the composed servers (COURSE_REDIS_URL, COURSE_CLUSTER_URL), by
#    default on every notebook, tests/test_cluster.py and tests/test_compose_stack.py (which checks
#    the stack from the host and from other containers); PYTEST ARGS replace that selection.
# 5. `down -v`, then brings the stack up again with docker/broken-announce.yml (every node announcing
#    its container address) and fails unless the health checks refuse it.
# 6. Always, even on failure or Ctrl-C: `down -v`, and stops the dockerd it started (if it did).
#
# With no engine and none startable (no dockerd, not root, dockerd failing): under CI (CI set) the
# script fails with the reason; elsewhere it prints the reason and exits 0, skipping the checks.
#
# Settings (environment): COURSE_COMPOSE_PROJECT (project name, default redis-in-practice-ci),
# COURSE_DOCKER_REDIS_IMAGE (see 2), COURSE_DOCKER_REDIS_PORT (the standalone's host port, default
# 6379), COURSE_COMPOSE_HEALTH_TIMEOUT (seconds for step 3, default 120), DOCKERD_FLAGS (arguments
# for a dockerd this script starts; default --userland-proxy=false, see below; where overlay2
# cannot mount: DOCKERD_FLAGS="--userland-proxy=false --storage-driver vfs").
#
# --userland-proxy=false: published ports go through the kernel's NAT instead of one docker-proxy
# process per port copying every byte. Measured on CI's 2-core machine, the proxy added about 50 us
# to each round trip and cut pipelined SET throughput from about 100,000 to 67,000 ops/s: enough to
# bring the chapters' timing verdicts near their thresholds on a loaded machine. (Docker then sets
# route_localnet on its bridges; acceptable for this throwaway engine. An engine that already
# answers is used as it is.)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PROJECT=${COURSE_COMPOSE_PROJECT:-redis-in-practice-ci}
HEALTH_TIMEOUT=${COURSE_COMPOSE_HEALTH_TIMEOUT:-120}
REDIS_PORT=${COURSE_DOCKER_REDIS_PORT:-6379}
if [ "$#" -eq 0 ]; then
    set -- notebooks tests/test_cluster.py tests/test_compose_stack.py
fi

DOCKERD_PID=""   # set once this script has started a dockerd: the only one it ever stops
DOCKERD_LOG=""
STACK_FILES=()   # the compose files of the stack that is up, if any

say() { echo "compose-ci: $*"; }
now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }

unavailable() {
    if [ -n "${CI:-}" ] && [ "$CI" != false ]; then
        say "FAILED: $* (a Docker engine is required under CI)" >&2
        exit 1
    fi
    say "skipped: $* (under CI this fails)"
    exit 0
}

docker_answers() { timeout 20 docker info >/dev/null 2>&1; }

ensure_engine() {
    command -v docker >/dev/null || unavailable "no docker command (Debian: apt-get install docker.io)"
    if docker_answers; then
        say "using the Docker engine that answers ($(docker version -f '{{.Server.Version}}'))"
        return
    fi
    if [ -n "${DOCKER_HOST:-}" ]; then
        unavailable "the Docker engine at DOCKER_HOST=$DOCKER_HOST does not answer: $(docker info 2>&1 | tail -n 1)"
    fi
    command -v dockerd >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v dockerd >/dev/null || unavailable "no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)"
    [ "$(id -u)" = 0 ] || unavailable "no Docker engine answers, and starting dockerd needs root"

    DOCKERD_LOG=$(mktemp /tmp/compose-ci-dockerd.XXXXXX)
    local started
    started=$(now)
    # In a session of its own, so a Ctrl-C meant for this script does not stop the engine before the
    # cleanup has brought the stack down. (A background job of a script is no process group leader,
    # so setsid runs dockerd in place: $! is dockerd.)
    # shellcheck disable=SC2086 # DOCKERD_FLAGS is a list of arguments
    setsid dockerd ${DOCKERD_FLAGS---userland-proxy=false} </dev/null >"$DOCKERD_LOG" 2>&1 &
    DOCKERD_PID=$!
    local deadline=$((SECONDS + 60))
    until docker_answers; do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            DOCKERD_PID=""
            unavailable "dockerd exited at start: $(tail -n 3 "$DOCKERD_LOG" | tr '\n' ' ')"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            unavailable "dockerd did not answer within 60s: $(tail -n 3 "$DOCKERD_LOG" | tr '\n' ' ')"
        fi
        sleep 0.2
    done
    say "started dockerd ${DOCKERD_FLAGS---userland-proxy=false} (pid $DOCKERD_PID, storage driver $(docker info -f '{{.Driver}}')) in $(since "$started")s"
}

# stop_dockerd STATUS: the log is kept when the run failed.
stop_dockerd() {
    [ -n "$DOCKERD_PID" ] || return 0
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$DOCKERD_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        say "dockerd (pid $DOCKERD_PID) still running after 30s: killing it" >&2
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    if [ "$1" = 0 ]; then
        rm -f "$DOCKERD_LOG"
        say "stopped the dockerd it started (pid $DOCKERD_PID)"
    else
        say "stopped the dockerd it started (pid $DOCKERD_PID); its log: $DOCKERD_LOG"
    fi
    DOCKERD_PID=""
}

# compose FILE... -- ARGS...: Compose v2 (`docker compose`) if present, else v1 (`docker-compose`).
compose() {
    local files=()
    while [ "$1" != -- ]; do
        files+=(-f "$1")
        shift
    done
    shift
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$PROJECT" --project-directory "$REPO" "${files[@]}" "$@"
    else
        docker-compose -p "$PROJECT" --project-directory "$REPO" "${files[@]}" "$@"
    fi
}

up() {
    STACK_FILES=("$@")
    local output
    if ! output=$(compose "${STACK_FILES[@]}" -- up -d --quiet-pull 2>&1); then
        printf '%s\n' "$output"
        say "FAILED: docker compose up (see above; are ports 6379 and 7001-7006 free?)" >&2
        exit 1
    fi
}

down() {
    [ "${#STACK_FILES[@]}" -gt 0 ] || return 0
    if compose "${STACK_FILES[@]}" -- down -v --remove-orphans --timeout 5 >/dev/null 2>&1; then
        say "down -v: project $PROJECT removed"
    else
        say "docker compose down failed (containers of project $PROJECT may be left)" >&2
    fi
    STACK_FILES=()
}

# wait_healthy SECONDS: return 0 once every service's container runs and is healthy; 1 (with every
# container's state, and the last health-check output and log lines of the failing ones) as soon as
# one has exited or is unhealthy, or at the deadline.
wait_healthy() {
    local bound=$1 started services states failing
    started=$(now)
    services=$(compose "${STACK_FILES[@]}" -- config --services | wc -l)
    local deadline=$((SECONDS + bound))
    while :; do
        states=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" -q \
            | xargs -r docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}')
        if [ "$(printf '%s\n' "$states" | grep -c ' running healthy$')" -eq "$services" ]; then
            say "all $services containers healthy (waited $(since "$started")s after up -d)"
            return 0
        fi
        failing=$(printf '%s\n' "$states" | awk '$2 == "exited" || $2 == "dead" || $3 == "unhealthy" { print $1 }')
        if [ -n "$failing" ] || [ "$SECONDS" -ge "$deadline" ]; then
            say "not healthy $(since "$started")s after up -d (bound ${bound}s); service, state, health:"
            printf '%s\n' "$states" | sort | sed 's/^/    /'
            for service in ${failing:-$(printf '%s\n' "$states" | awk '$3 != "healthy" { print $1 }')}; do
                local id
                id=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
                    --filter "label=com.docker.compose.service=$service")
                echo "--- $service: last health check output, then last log lines"
                docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{end}}{{end}}' "$id" | tail -n 2
                docker logs --tail 5 "$id" 2>&1
            done
            return 1
        fi
        sleep 0.5
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    down
    stop_dockerd "$status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

total=$(now)
ensure_engine
# Whatever an interrupted earlier run left of this project (containers, their volumes) goes first.
STACK_FILES=(docker-compose.yml docker/broken-announce.yml)
down

if [ -z "${COURSE_DOCKER_REDIS_IMAGE:-}" ]; then
    started=$(now)
    export COURSE_DOCKER_REDIS_IMAGE=course-redis:local
    sh docker/build-local-image.sh "$COURSE_DOCKER_REDIS_IMAGE"
    say "image built in $(since "$started")s"
fi
export COURSE_DOCKER_REDIS_PORT=$REDIS_PORT COURSE_COMPOSE_PROJECT=$PROJECT

say "up: docker-compose.yml, image $COURSE_DOCKER_REDIS_IMAGE, project $PROJECT"
started=$(now)
up docker-compose.yml
wait_healthy "$HEALTH_TIMEOUT"
say "stack up and healthy in $(since "$started")s"

started=$(now)
args=$(printf '%q ' "$@")
# -n 0: serially, since every test worker would share the one composed stack (see conftest.py).
say "make test ARGS=\"-n 0 $args\" against the composed servers"
COURSE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 COURSE_CLUSTER_URL=redis://127.0.0.1:7001 \
    make test ARGS="-n 0 $args"
say "tests passed in $(since "$started")s"
down

say "up with docker/broken-announce.yml: every node announces its container address; this must fail"
started=$(now)
up docker-compose.yml docker/broken-announce.yml
if report=$(wait_healthy 60); then
    printf '%s\n' "$report"
    say "FAILED: the stack was reported healthy although its nodes announce their container addresses" >&2
    exit 1
fi
if ! grep -q 'check cluster-announce-ip' <<<"$report"; then
    printf '%s\n' "$report"
    say "FAILED: the broken stack failed, but not on the announced address (see above)" >&2
    exit 1
fi
grep -m 1 'check cluster-announce-ip' <<<"$report" | sed 's/^ */    /'
say "refused as it must be, in $(since "$started")s"
down

say "passed in $(since "$total")s"
