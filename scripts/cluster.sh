#!/usr/bin/env bash
# Runs a tern cluster of 3 nodes on loopback: node i listens on 127.0.0.i with the default
# ports (Kafka 9092, peers 9093, HTTP 9090). Used by the tests, the runbooks and the benchmarks.
#
#   scripts/cluster.sh start [N]     start every node (or node N); waits until each is up
#   scripts/cluster.sh stop [N]      SIGTERM, wait up to TERN_CLUSTER_STOP_SECS, then SIGKILL
#   scripts/cluster.sh status        which nodes run (and their /health once HTTP exists)
#   scripts/cluster.sh kill N        SIGKILL node N (a crash)
#   scripts/cluster.sh restart N     stop node N (if running) and start it again
#   scripts/cluster.sh wipe N        delete node N's data directory (node must be stopped)
#   scripts/cluster.sh rebuild N     stop node N (if running) and start it with --rebuild: a
#                                    wiped voter is rebuilt from its peers (docs/replication.md)
#
# Environment:
#   TERN_CLUSTER_DIR         where data, logs and pids go   [/tmp/tern-cluster]
#                            node-i/ (data), node-i.log, node-i.pid, cluster-id
#   TERN_BIN                 the tern binary                [target/release/tern, built if missing]
#   TERN_CLUSTER_NODES       number of nodes, 1 to 9        [3]
#   TERN_CLUSTER_PORT_OFFSET added to every port, so runs can share the machine [0]
#   TERN_CLUSTER_KAFKA_PORTS  Kafka port of each node, comma-separated (node 1 first), instead
#                            of 9092 + offset for all: nodes advertising different ports
#   TERN_CLUSTER_STOP_SECS   bound of a graceful stop before SIGKILL [15]
#   TERN_CLUSTER_START_SECS  bound of the wait for a node to come up [60]
#   TERN_SERVE_ARGS          extra arguments for every `tern serve` (e.g. "--shards 1")
#
# Exit codes: 0 done (status: every node runs); 1 a node failed to start or stop, or
# (status) some node is not running; 2 usage error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TERN_CLUSTER_DIR:-/tmp/tern-cluster}"
NODES="${TERN_CLUSTER_NODES:-3}"
OFFSET="${TERN_CLUSTER_PORT_OFFSET:-0}"
STOP_SECS="${TERN_CLUSTER_STOP_SECS:-15}"
START_SECS="${TERN_CLUSTER_START_SECS:-60}"
BIN="${TERN_BIN:-$ROOT/target/release/tern}"

die() { echo "cluster.sh: $*" >&2; exit 2; }

[[ "$NODES" =~ ^[1-9]$ ]] || die "TERN_CLUSTER_NODES must be 1 to 9 (got $NODES)"
[[ "$OFFSET" =~ ^[0-9]+$ ]] && (( OFFSET <= 50000 )) || die "TERN_CLUSTER_PORT_OFFSET must be 0 to 50000"
[[ "$STOP_SECS" =~ ^[0-9]+$ ]] || die "TERN_CLUSTER_STOP_SECS must be a number of seconds"
[[ "$START_SECS" =~ ^[0-9]+$ ]] || die "TERN_CLUSTER_START_SECS must be a number of seconds"

ip_of() { echo "127.0.0.$1"; }
peer_port() { echo $((9093 + OFFSET)); }
kafka_port() {
    if [[ -n "${TERN_CLUSTER_KAFKA_PORTS:-}" ]]; then
        local -a ports
        IFS=, read -r -a ports <<< "$TERN_CLUSTER_KAFKA_PORTS"
        local port="${ports[$(($1 - 1))]:-}"
        [[ "$port" =~ ^[0-9]+$ ]] || die "TERN_CLUSTER_KAFKA_PORTS names no port for node $1"
        echo "$port"
    else
        echo $((9092 + OFFSET))
    fi
}
# Refused up front: inside $(...) at start a missing port would not stop the script.
for ((i = 1; i <= NODES; i++)); do kafka_port "$i" > /dev/null; done
http_port() { echo $((9090 + OFFSET)); }
data_of() { echo "$DIR/node-$1"; }
log_of() { echo "$DIR/node-$1.log"; }
pid_file() { echo "$DIR/node-$1.pid"; }

check_node() {
    [[ "${1:-}" =~ ^[1-9]$ ]] && (( $1 <= NODES )) || die "node must be 1 to $NODES (got '${1:-}')"
}

ensure_bin() {
    if [[ ! -x "$BIN" ]]; then
        if [[ -n "${TERN_BIN:-}" ]]; then
            die "TERN_BIN=$BIN is not an executable"
        fi
        echo "cluster.sh: building $BIN" >&2
        (cd "$ROOT" && cargo build --release -p tern --bin tern) >&2
    fi
}

# The pid of node N if it runs: the pid file names a live process whose command line is
# this node's `tern serve` (a recycled pid is never signalled).
running_pid() {
    local n=$1 pf pid
    pf="$(pid_file "$n")"
    [[ -f "$pf" ]] || return 1
    pid="$(cat "$pf")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' < "/proc/$pid/cmdline")"
    [[ "$cmdline" == *" serve "*"--data-dir $(data_of "$n") "* ]] || return 1
    # A zombie has finished: it is not running.
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]] || return 1
    echo "$pid"
}

cluster_id() {
    local f="$DIR/cluster-id"
    if [[ ! -s "$f" ]]; then
        mkdir -p "$DIR"
        cat /proc/sys/kernel/random/uuid > "$f.tmp"
        mv "$f.tmp" "$f"
    fi
    cat "$f"
}

peers() {
    local i list=""
    for ((i = 1; i <= NODES; i++)); do
        list+="${list:+,}$i=$(ip_of "$i"):$(peer_port)"
    done
    echo "$list"
}

start_node() {
    local n=$1 pid
    if pid="$(running_pid "$n")"; then
        echo "node $n: already running (pid $pid)"
        return 0
    fi
    mkdir -p "$DIR"
    local log; log="$(log_of "$n")"
    local -a extra=()
    if [[ -n "${TERN_SERVE_ARGS:-}" ]]; then
        read -r -a extra <<< "$TERN_SERVE_ARGS"
    fi
    echo "=== $(date -u +%FT%TZ) cluster.sh start node $n" >> "$log"
    # A cluster is created once: `start` of a cluster none of whose nodes has data passes
    # --bootstrap (etcd's initial-cluster-state=new). Any later start (restart, or start of a
    # wiped node) does not, so a node that lost its data asks its peers and is refused
    # rather than voting again with its promises forgotten.
    if [[ "${BOOTSTRAP:-0}" == 1 ]]; then
        extra+=(--bootstrap)
    fi
    if [[ "${REBUILD:-0}" == 1 ]]; then
        extra+=(--rebuild)
    fi
    # The trailing argument after --data-dir keeps running_pid's match exact.
    "$BIN" serve \
        --node-id "$n" \
        --cluster-id "$(cluster_id)" \
        --data-dir "$(data_of "$n")" \
        --kafka-addr "$(ip_of "$n"):$(kafka_port "$n")" \
        --peer-addr "$(ip_of "$n"):$(peer_port)" \
        --http-addr "$(ip_of "$n"):$(http_port)" \
        --peers "$(peers)" \
        "${extra[@]}" \
        < /dev/null >> "$log" 2>&1 &
    pid=$!
    echo "$pid" > "$(pid_file "$n")"
    # Up = the node logged caught_up; bounded by START_SECS.
    local deadline=$((SECONDS + START_SECS))
    local from; from="$(grep -c '' "$log")"
    while (( SECONDS < deadline )); do
        if tail -n "+$from" "$log" | grep -q "caught_up"; then
            echo "node $n: running (pid $pid, $(ip_of "$n"), log $log)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null && code=0 || code=$?
            echo "node $n: exited at start-up (exit $code); last lines of $log:" >&2
            tail -n 5 "$log" >&2
            rm -f "$(pid_file "$n")"
            return 1
        fi
        sleep 0.1
    done
    echo "node $n: not up after ${START_SECS}s (pid $pid); see $log" >&2
    return 1
}

wait_gone() {
    local pid=$1 secs=$2 deadline
    deadline=$((SECONDS + secs))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do
        # Reap it when it is our child (same shell); otherwise poll.
        [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]] && return 0
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null || [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]]
}

stop_node() {
    local n=$1 pid
    if ! pid="$(running_pid "$n")"; then
        echo "node $n: not running"
        rm -f "$(pid_file "$n")"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if wait_gone "$pid" "$STOP_SECS"; then
        echo "node $n: stopped (pid $pid)"
    else
        echo "node $n: still running ${STOP_SECS}s after SIGTERM; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || { echo "node $n: pid $pid survives SIGKILL" >&2; return 1; }
    fi
    rm -f "$(pid_file "$n")"
}

kill_node() {
    local n=$1 pid
    if ! pid="$(running_pid "$n")"; then
        echo "node $n: not running"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || { echo "node $n: pid $pid survives SIGKILL" >&2; return 1; }
    echo "=== $(date -u +%FT%TZ) cluster.sh kill node $n (SIGKILL)" >> "$(log_of "$n")"
    rm -f "$(pid_file "$n")"
    echo "node $n: killed (SIGKILL, pid $pid)"
}

status() {
    local i pid all=0 health
    for ((i = 1; i <= NODES; i++)); do
        if pid="$(running_pid "$i")"; then
            health=""
            # /health exists once the HTTP listener is integrated; until then say so.
            if command -v curl > /dev/null; then
                if health="$(curl -fsS -m 1 "http://$(ip_of "$i"):$(http_port)/health" 2>/dev/null)"; then
                    health="health: ${health//$'\n'/ }"
                else
                    health="health: no answer"
                fi
            fi
            echo "node $i: running (pid $pid, $(ip_of "$i")) $health"
        else
            echo "node $i: stopped"
            all=1
        fi
    done
    return "$all"
}

wipe_node() {
    local n=$1 pid
    if pid="$(running_pid "$n")"; then
        echo "node $n: running (pid $pid); stop or kill it before wiping" >&2
        return 1
    fi
    rm -rf "$(data_of "$n")"
    echo "node $n: data directory $(data_of "$n") wiped"
}

for_nodes() {
    local action=$1 target=${2:-} i rc=0
    if [[ -n "$target" ]]; then
        check_node "$target"
        "$action" "$target"
        return
    fi
    for ((i = 1; i <= NODES; i++)); do
        "$action" "$i" || rc=1
    done
    return "$rc"
}

cmd="${1:-}"
case "$cmd" in
    start)
        ensure_bin
        BOOTSTRAP=1
        for ((i = 1; i <= NODES; i++)); do
            [[ -e "$(data_of "$i")" ]] && BOOTSTRAP=0
        done
        for_nodes start_node "${2:-}" ;;
    stop) for_nodes stop_node "${2:-}" ;;
    status) status ;;
    kill) check_node "${2:-}"; kill_node "$2" ;;
    restart) check_node "${2:-}"; ensure_bin; stop_node "$2"; start_node "$2" ;;
    wipe) check_node "${2:-}"; wipe_node "$2" ;;
    rebuild) check_node "${2:-}"; ensure_bin; stop_node "$2"; REBUILD=1 start_node "$2" ;;
    *) die "usage: cluster.sh start [N] | stop [N] | status | kill N | restart N | wipe N | rebuild N" ;;
esac
