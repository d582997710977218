#!/usr/bin/env bash
# Start or stop a Redis Cluster of 3 masters and 3 replicas on loopback, for
# the tests and the chaos run (issue 15). Nothing here touches another Redis.
#
#   scripts/redis_cluster.sh start DIR PORT...   six ports: nodes on 127.0.0.1,
#                                                 data, logs and pid files under DIR
#   scripts/redis_cluster.sh stop DIR            stop the nodes DIR's pid files name
#                                                 and remove DIR
#   scripts/redis_cluster.sh restart DIR PORT    start one stopped node again (it
#                                                 rejoins from its nodes.conf)
#
# Each node's cluster bus is its port + 10000, so those must be free too. The
# nodes run with AOF on (fsync every second), as services.sh runs the single
# Redis, and a node timeout of 1 s, so that a replica takes over from a killed
# master within a few seconds. `start` returns once every node agrees that the
# cluster is ok (all 16384 slots served).
set -euo pipefail

NODE_TIMEOUT_MS=${REDIS_CLUSTER_NODE_TIMEOUT_MS:-1000}
READY_TIMEOUT=30   # seconds for the cluster to become ok

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

node_start() {
    local dir=$1 port=$2
    mkdir -p "$dir/$port"
    redis-server --daemonize yes --port "$port" --bind 127.0.0.1 \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout "$NODE_TIMEOUT_MS" \
        --dir "$dir/$port" --appendonly yes --appendfsync everysec --save "" \
        --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log"
    local deadline=$((SECONDS + 10))
    until [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; do
        ((SECONDS < deadline)) || die "node $port did not answer within 10 s ($dir/$port/redis.log)"
        sleep 0.05
    done
}

cluster_ok() {
    local port
    for port in "$@"; do
        redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
    redis-cli --cluster check "127.0.0.1:$1" >/dev/null 2>&1
}

replicas_known() {
    local port
    for port in "$@"; do
        [[ $(redis-cli -p "$port" cluster nodes 2>/dev/null | grep -cE '[ ,]slave ') -eq 3 ]] || return 1
    done
}

start() {
    local dir=$1; shift
    (($# == 6)) || die "start needs six ports, got $#"
    command -v redis-server >/dev/null || die "redis-server is not installed"
    mkdir -p "$dir"
    local port nodes=()
    for port in "$@"; do
        node_start "$dir" "$port"
        nodes+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$dir/create.log" 2>&1 || { cat "$dir/create.log" >&2; die "cluster create failed"; }
    local deadline=$((SECONDS + READY_TIMEOUT))
    until cluster_ok "$@"; do
        ((SECONDS < deadline)) || die "cluster not ok within ${READY_TIMEOUT}s"
        sleep 0.1
    done
    # replicas counted by their masters (the replication links are up), and
    # every node knows all three as replicas (what clients read from CLUSTER SLOTS)
    deadline=$((SECONDS + READY_TIMEOUT))
    until [[ $(for port in "$@"; do redis-cli -p "$port" info replication; done \
               | grep -c '^slave[0-9]*:.*state=online') -ge 3 ]] && replicas_known "$@"; do
        ((SECONDS < deadline)) || die "replicas not online within ${READY_TIMEOUT}s"
        sleep 0.1
    done
    echo "redis cluster: 3 masters, 3 replicas on ${nodes[*]} (data in $dir)"
}

stop() {
    local dir=$1 pidfile pid pids=()
    [[ -d $dir ]] || return 0
    for pidfile in "$dir"/*/redis.pid; do
        [[ -f $pidfile ]] || continue
        pid="$(cat "$pidfile")"
        if [[ $pid =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]]; then
            # SIGTERM to every node at once: a master does not wait for replicas being stopped
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    local deadline=$((SECONDS + 15))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; break; fi
            sleep 0.05
        done
    done
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; (($# >= 1)) || die "start DIR PORT..."; start "$@" ;;
    stop) (($# == 2)) || die "stop DIR"; stop "$2" ;;
    restart) (($# == 3)) || die "restart DIR PORT"; node_start "$2" "$3" ;;
    *) echo "usage: $0 start DIR PORT*6 | stop DIR | restart DIR PORT" >&2; exit 2 ;;
esac
