#!/bin/sh
# Exit 0 only when the Redis Cluster is usable as each node checked sees it; otherwise print the
# first problem found and exit 1. A node passes when it answers, is in cluster_state:ok, knows every
# node, counts the expected number of primaries serving slots, has (if it is a replica) its link to
# its primary up, and lists in CLUSTER SHARDS every node with no replica still "loading" (a replica
# that has not synced yet is left out of CLUSTER SLOTS, so clients would not see it) and with
# CLUSTER_HOST as its endpoint: the address clients are sent to (CLUSTER SLOTS, MOVED) must be the
# one this check reaches the nodes at, or a client that found one node could not follow it to the
# others (the classic mistake: nodes announcing their container addresses). A node another one has
# marked failed is tolerated once its replica has taken over: that is a usable cluster.
#
# Usage: cluster-healthcheck.sh [PORT...]      (default: every port of CLUSTER_PORTS)
#   docker-compose.yml gives each node its own port, and the cluster's owner service no port, so
#   that service is healthy only while every node answers and agrees.
#
# Settings (environment), so the same script serves docker-compose.yml and the tests:
#   CLUSTER_HOST      address of the nodes, and the one they must announce (default 127.0.0.1)
#   CLUSTER_PORTS     client ports of ALL the cluster nodes (default "7001 7002 7003 7004 7005 7006")
#   CLUSTER_REPLICAS  replicas per primary                  (default 1)
#   REDIS_CLI         redis-cli command                     (default redis-cli)
#   REDISCLI_AUTH     password, if the nodes need one (read by redis-cli itself)
#
# POSIX sh only: the official Alpine images have no bash.

set -u

host=${CLUSTER_HOST:-127.0.0.1}
all_ports=${CLUSTER_PORTS:-7001 7002 7003 7004 7005 7006}
replicas=${CLUSTER_REPLICAS:-1}
cli=${REDIS_CLI:-redis-cli}

if [ "$#" -eq 0 ]; then
    # shellcheck disable=SC2086 # word splitting of the port list is intended
    set -- $all_ports
fi
# shellcheck disable=SC2086
nodes=$(printf '%s\n' $all_ports | grep -c .)
primaries=$((nodes / (replicas + 1)))

# field NAME TEXT: the value of "NAME:value" in an INFO-style reply (lines end with \r\n).
field() {
    printf '%s\n' "$2" | tr -d '\r' | sed -n "s/^$1://p"
}

for port in "$@"; do
    node="$host:$port"
    if ! info=$($cli -h "$host" -p "$port" cluster info 2>&1); then
        echo "$node: no answer ($info)"
        exit 1
    fi
    state=$(field cluster_state "$info")
    if [ -z "$state" ]; then
        echo "$node: not a cluster node ($(printf '%s\n' "$info" | head -n 1 | tr -d '\r'))"
        exit 1
    fi
    if [ "$state" != ok ]; then
        echo "$node: cluster_state is $state"
        exit 1
    fi
    known=$(field cluster_known_nodes "$info")
    if [ "$known" != "$nodes" ]; then
        echo "$node: knows $known nodes, expected $nodes"
        exit 1
    fi
    size=$(field cluster_size "$info")
    if [ "$size" != "$primaries" ]; then
        echo "$node: sees $size primaries serving slots, expected $primaries"
        exit 1
    fi
    if ! replication=$($cli -h "$host" -p "$port" info replication 2>&1); then
        echo "$node: no answer to INFO replication ($replication)"
        exit 1
    fi
    if [ "$(field role "$replication")" = slave ]; then
        link=$(field master_link_status "$replication")
        if [ "$link" != up ]; then
            echo "$node: replica whose link to its primary is '${link:-unknown}'"
            exit 1
        fi
    fi
    # CLUSTER SHARDS, flattened by redis-cli into one line per value: "port", "endpoint", "role" and
    # "health" lines are followed by their values (health: online, loading or fail).
    if ! shards=$($cli -h "$host" -p "$port" cluster shards 2>&1); then
        echo "$node: no answer to CLUSTER SHARDS ($shards)"
        exit 1
    fi
    if ! problem=$(printf '%s\n' "$shards" | tr -d '\r' | awk -v nodes="$nodes" -v primaries="$primaries" -v host="$host" '
        previous == "port" { port = $0 }
        previous == "endpoint" && $0 != host && !elsewhere { elsewhere = $0 ":" port }
        previous == "role" { role = $0 }
        previous == "health" {
            listed++
            if ($0 == "loading") loading++
            else if ($0 == "online" && role == "master") live++
        }
        { previous = $0 }
        END {
            if (listed != nodes) { printf "lists %d nodes in CLUSTER SHARDS, expected %d\n", listed, nodes; exit 1 }
            if (elsewhere) { printf "sends clients to %s (CLUSTER SHARDS endpoint), not to %s where the nodes are reached: check cluster-announce-ip\n", elsewhere, host; exit 1 }
            if (loading) { printf "%d replica(s) not synced yet (health: loading)\n", loading; exit 1 }
            if (live != primaries) { printf "sees %d live primaries in CLUSTER SHARDS, expected %d\n", live, primaries; exit 1 }
        }'); then
        echo "$node: $problem"
        exit 1
    fi
done
echo "cluster ok: $nodes nodes, $primaries primaries (checked $*)"
