#!/usr/bin/env bash
# A Redis Cluster of three masters, each with one replica, on loopback, for
# what a single Redis never shows: keys spread over masters, redirections,
# and a replica taking over from a master killed mid-run.
#
#   redis-cluster.sh start <first-port> <dir>  six nodes on first..first+5
#   redis-cluster.sh kill <port> <dir>         kill -9 one node, for failover
#   redis-cluster.sh node <port> <dir>         start one node again
#   redis-cluster.sh stop <dir>                every node started in <dir>
#
# Each node lives in <dir>/<port>. The arguments a node starts with are
# only in start_node, so a node restarted by a test (through `node`) comes
# back exactly as it was created and rejoins with its own nodes.conf; and
# tests/redis_cluster_support drives its nodes through this script too.
#
# Prints one line on success; on failure, which node failed and why.
set -euo pipefail

NODES=6
# Generous for two slow cores; polling ends as soon as the cluster is ready.
CLUSTER_TIMEOUT_SECONDS=60
NODE_TIMEOUT_SECONDS=10

usage() {
    echo "usage: $0 start <first-port> <dir> | kill <port> <dir> | node <port> <dir> | stop <dir>" >&2
    exit 2
}

fail() {
    echo "redis-cluster.sh: $*" >&2
    exit 1
}

cli() {
    local port=$1
    shift
    # redis-cli ends lines with \r\n; grep and case want plain lines.
    redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null | tr -d '\r'
}

field() {
    sed -n "s/^$1://p"
}

# A pid counts as a node only while it is a redis-server that has not
# exited: the pid in a stale pid file may have been reused, and a node
# killed with -9 stays a zombie until something reaps it.
node_alive() {
    local pid=$1 stat state
    [ -r "/proc/$pid/stat" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ] && [ "$state" != X ]
}

# The pid of the node living in the folder $1 (an absolute path), if it
# runs: redis-server works in its --dir, so a pid file can never lead to
# another server, such as the one on 6379.
node_pid() {
    local home=$1 pid
    [ -r "$home/redis.pid" ] || return 1
    pid=$(tr -dc 0-9 <"$home/redis.pid")
    [ -n "$pid" ] && node_alive "$pid" || return 1
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$home" ] || return 1
    echo "$pid"
}

log_tail() {
    local log=$1/redis.log
    if [ -r "$log" ]; then
        echo "last lines of $log:" >&2
        tail -n 15 "$log" >&2
    fi
}

start_node() {
    local port=$1 home=$2/$1 pid answer deadline
    mkdir -p "$home"
    if pid=$(node_pid "$home"); then
        fail "127.0.0.1:$port: already running as pid $pid"
    fi
    rm -f "$home/redis.pid"
    # Without a password and protected mode, as nothing but loopback can
    # reach it; no persistence, as each run starts from nothing; a
    # replica's full sync starts at once rather than after 5 s spent
    # waiting for other replicas to share it (most of the time to come up,
    # and to rejoin after a restart, otherwise).
    redis-server \
        --port "$port" \
        --bind 127.0.0.1 \
        --protected-mode no \
        --dir "$home" \
        --cluster-enabled yes \
        --cluster-config-file nodes.conf \
        --cluster-node-timeout 2000 \
        --appendonly no \
        --save "" \
        --repl-diskless-sync-delay 0 \
        --daemonize yes \
        --pidfile "$home/redis.pid" \
        --logfile "$home/redis.log" ||
        fail "127.0.0.1:$port: redis-server exited with $?"

    # A daemonized redis-server reports a port it cannot bind only in its
    # log, and another server already on the port would answer PING, so
    # the node is up once the process in our pid file answers.
    deadline=$((SECONDS + NODE_TIMEOUT_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if pid=$(node_pid "$home"); then
            answer=$(cli "$port" info server | field process_id || true)
            [ "$answer" = "$pid" ] && return 0
        fi
        sleep 0.1
    done
    if pid=$(node_pid "$home"); then
        echo "redis-cluster.sh: 127.0.0.1:$port: pid $pid does not answer on the port" \
            "(is another server on it?)" >&2
    else
        echo "redis-cluster.sh: 127.0.0.1:$port: redis-server did not stay up" >&2
    fi
    log_tail "$home"
    exit 1
}

# kill -9 the nodes living in the folders given, and wait until they are
# gone, so that their ports are free again.
kill_nodes() {
    local home pid pids=() deadline
    for home in "$@"; do
        if pid=$(node_pid "$home"); then
            pids+=("$pid")
        fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -9 "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + NODE_TIMEOUT_SECONDS))
    for pid in "${pids[@]}"; do
        while node_alive "$pid"; do
            [ "$SECONDS" -lt "$deadline" ] || fail "pid $pid did not exit after kill -9"
            sleep 0.05
        done
    done
}

stop_nodes() {
    local dir=$1 home homes=()
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd)
    for home in "$dir"/*/; do
        home=${home%/}
        [[ ${home##*/} =~ ^[0-9]+$ ]] && homes+=("$home")
    done
    [ ${#homes[@]} -gt 0 ] || return 0
    # No graceful shutdown: nothing in the folders is kept.
    kill_nodes "${homes[@]}"
    rm -rf "${homes[@]}"
    # The folder is the caller's (often from mktemp -d); it goes only if
    # nothing else was put in it.
    rmdir "$dir" 2>/dev/null || true
}

# Why the node on $1 is not yet a healthy member of a six-node cluster, or
# nothing once it is.
node_problem() {
    local port=$1 info replication state
    info=$(cli "$port" cluster info) || true
    [ -n "$info" ] || {
        echo "no answer"
        return
    }
    state=$(field cluster_state <<<"$info")
    [ "$state" = ok ] || {
        echo "cluster_state:$state"
        return
    }
    state=$(field cluster_slots_ok <<<"$info")
    [ "$state" = 16384 ] || {
        echo "cluster_slots_ok:$state"
        return
    }
    state=$(field cluster_known_nodes <<<"$info")
    [ "$state" = "$NODES" ] || {
        echo "cluster_known_nodes:$state"
        return
    }
    replication=$(cli "$port" info replication) || true
    if [ "$(field role <<<"$replication")" = slave ]; then
        state=$(field master_link_status <<<"$replication")
        [ "$state" = up ] || echo "replica with master_link_status:$state"
    fi
}

await_cluster() {
    local first=$1 port problem problems deadline
    deadline=$((SECONDS + CLUSTER_TIMEOUT_SECONDS))
    while :; do
        problems=()
        for port in $(seq "$first" $((first + NODES - 1))); do
            problem=$(node_problem "$port")
            [ -z "$problem" ] || problems+=("127.0.0.1:$port: $problem")
        done
        [ ${#problems[@]} -gt 0 ] || return 0
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.1
    done
    echo "redis-cluster.sh: cluster not healthy after ${CLUSTER_TIMEOUT_SECONDS}s:" >&2
    printf '  %s\n' "${problems[@]}" >&2
    exit 1
}

start_cluster() {
    local first=$1 last port addresses=() output
    last=$((first + NODES - 1))
    stop_nodes "$2"
    mkdir -p "$2"
    CLUSTER_DIR=$(cd "$2" && pwd)
    # A cluster that did not come up is not left running.
    trap 'stop_nodes "$CLUSTER_DIR"' EXIT
    for port in $(seq "$first" "$last"); do
        start_node "$port" "$CLUSTER_DIR"
        addresses+=("127.0.0.1:$port")
    done
    output=$(redis-cli --cluster create "${addresses[@]}" \
        --cluster-replicas 1 --cluster-yes 2>&1) || {
        echo "redis-cluster.sh: redis-cli --cluster create failed:" >&2
        echo "$output" >&2
        exit 1
    }
    await_cluster "$first"
    trap - EXIT
    echo "redis cluster up on 127.0.0.1:$first-$last"
}

port_number() {
    [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] ||
        fail "not a port: $1"
}

command -v redis-server >/dev/null || fail "redis-server is not installed"
command -v redis-cli >/dev/null || fail "redis-cli is not installed"

case "${1:-}" in
start)
    [ $# -eq 3 ] || usage
    port_number "$2"
    port_number $(($2 + NODES - 1))
    start_cluster "$2" "$3"
    ;;
node)
    [ $# -eq 3 ] || usage
    port_number "$2"
    mkdir -p "$3"
    start_node "$2" "$(cd "$3" && pwd)"
    ;;
kill)
    [ $# -eq 3 ] || usage
    port_number "$2"
    home=$(cd "$3" && pwd)/$2
    node_pid "$home" >/dev/null || fail "127.0.0.1:$2: no node of $3 runs there"
    kill_nodes "$home"
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop_nodes "$2"
    ;;
*)
    usage
    ;;
esac
