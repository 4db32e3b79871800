#!/bin/sh
# Create the course's Redis Cluster from fresh cluster-enabled nodes: `redis-cli --cluster create`
# with CLUSTER_REPLICAS replicas per primary (6 nodes, 1 replica: 3 primaries + 3 replicas), then
# return only once cluster-healthcheck.sh passes on every node (a bounded wait on the cluster's
# own state). Idempotent: a cluster that already exists is not created again, only awaited.
#
# Usage: cluster-init.sh [--stay] [PORT...]      (default: the ports of CLUSTER_PORTS)
#   --stay   once the cluster is healthy, keep running (idle) until SIGTERM/SIGINT, then exit 0.
#            docker-compose.yml uses it so that the init service never exits (see there why).
#
# Settings (environment), so the same script serves docker-compose.yml and the tests:
#   CLUSTER_HOST          address of the nodes                   (default 127.0.0.1)
#   CLUSTER_PORTS         client ports of the nodes              (default "7001 7002 7003 7004 7005 7006")
#   CLUSTER_REPLICAS      replicas per primary                   (default 1)
#   CLUSTER_INIT_TIMEOUT  seconds for it all: nodes answering, creation, cluster ok (default 60)
#   REDIS_CLI             redis-cli command                      (default redis-cli)
#   REDISCLI_AUTH         password, if the nodes need one (read by redis-cli itself)
#
# POSIX sh only: the official Alpine images have no bash.

set -u

stay=no
while [ "$#" -gt 0 ]; do
    case $1 in
        --stay) stay=yes; shift ;;
        --) shift; break ;;
        -*) echo "cluster-init: unknown option $1 (usage: cluster-init.sh [--stay] [PORT...])" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ "$#" -eq 0 ]; then
    # shellcheck disable=SC2086 # word splitting of the port list is intended
    set -- ${CLUSTER_PORTS:-7001 7002 7003 7004 7005 7006}
fi

CLUSTER_HOST=${CLUSTER_HOST:-127.0.0.1}
CLUSTER_PORTS="$*"
CLUSTER_REPLICAS=${CLUSTER_REPLICAS:-1}
REDIS_CLI=${REDIS_CLI:-redis-cli}
export CLUSTER_HOST CLUSTER_PORTS CLUSTER_REPLICAS REDIS_CLI  # read by cluster-healthcheck.sh
host=$CLUSTER_HOST
cli=$REDIS_CLI
timeout=${CLUSTER_INIT_TIMEOUT:-60}
healthcheck="$(dirname "$0")/cluster-healthcheck.sh"

say() { echo "cluster-init: $*"; }

# until_ok WHAT COMMAND...: run COMMAND until it succeeds; give up (exit 1) at the deadline,
# printing WHAT was awaited and the command's last output.
deadline=$(($(date +%s) + timeout))
until_ok() {
    what=$1
    shift
    while ! last=$("$@" 2>&1); do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "gave up after ${timeout}s waiting for $what: $last" >&2
            exit 1
        fi
        sleep 0.2 2>/dev/null || sleep 1
    done
}

every_node_answers() {
    for port in "$@"; do
        reply=$($cli -h "$host" -p "$port" ping 2>&1)
        if [ "$reply" != PONG ]; then
            echo "$host:$port: $reply"
            return 1
        fi
    done
}

# info_field NAME PORT: one field of CLUSTER INFO on a node (empty if it is not a cluster node).
info_field() {
    $cli -h "$host" -p "$2" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$1://p"
}

say "waiting for the nodes on $host, ports $*, to answer"
until_ok "every node to answer PING" every_node_answers "$@"

if sh "$healthcheck" >/dev/null 2>&1; then
    say "the cluster exists and is healthy already: nothing to create"
else
    fresh=yes
    for port in "$@"; do
        known=$(info_field cluster_known_nodes "$port")
        if [ -z "$known" ]; then
            say "$host:$port is not a cluster node (start it with cluster-enabled yes)" >&2
            exit 1
        fi
        if [ "$known" != 1 ] || [ "$(info_field cluster_slots_assigned "$port")" != 0 ]; then
            fresh=no
        fi
    done
    if [ "$fresh" = yes ]; then
        addresses=""
        for port in "$@"; do
            addresses="$addresses $host:$port"
        done
        say "creating the cluster:$addresses, $CLUSTER_REPLICAS replica(s) per primary"
        # redis-cli waits for the nodes to join with no limit of its own (forever if, say, they
        # announce an address they cannot reach each other on): bound it by what is left of ours.
        bounded=""
        if command -v timeout >/dev/null 2>&1; then
            left=$((deadline - $(date +%s)))
            bounded="timeout $((left > 1 ? left : 1))"
        fi
        # shellcheck disable=SC2086 # one argument per address
        if ! $bounded $cli --cluster create $addresses --cluster-replicas "$CLUSTER_REPLICAS" --cluster-yes; then
            say "redis-cli --cluster create failed or did not finish within ${timeout}s (see above)" >&2
            exit 1
        fi
    else
        say "the nodes already belong to a cluster (formed earlier, or being formed): waiting for it"
    fi
fi

until_ok "cluster_state:ok on every node, every replica linked, every node announcing $host" sh "$healthcheck"
say "$last"

if [ "$stay" = yes ]; then
    # Idle in `wait`, which a trapped signal interrupts at once (a foreground sleep would delay it).
    # The trap stops the latest sleep ($!, set before the trap exists), so nothing outlives the script.
    sleep 3600 &
    trap 'kill $! 2>/dev/null; exit 0' TERM INT HUP
    say "staying up (idle) until stopped"
    while :; do
        wait $!
        sleep 3600 &
    done
fi
