#!/usr/bin/env bash
# scripts/bench-idle.sh — what idle partitions cost, with quiescence of idle groups on and off
# in the same run (docs/raft.md, "Quiescence of idle groups"; figures: docs/bench.md).
#
# For each partition count: a fresh 3-node cluster (scripts/cluster.sh) with
# raft.quiesce_idle_groups on, then off; one topic of that many partitions (replication 3);
# SETTLE_SECONDS to settle; then the CPU time the three `tern serve` processes used over
# MEASURE_SECONDS (utime + stime from /proc/PID/stat), and node 1's tern_raft_groups_quiet.
# With FAILOVER_KILLS > 0, also the failover of an idle (quiet) partition: SIGKILL its
# leader, time until `tern produce` through another node is acknowledged, restart, repeat.
#
#   scripts/bench-idle.sh [PARTITIONS...]        default: 1000 3000 10000
#
# Environment:
#   SETTLE_SECONDS   [20]   MEASURE_SECONDS [10]   FAILOVER_KILLS [0]
#   TERN_BIN         the tern binary [target/release/tern, built if missing]
#   BENCH_IDLE_DIR   cluster directories go under it [/tmp/tern-bench-idle]
# Prints one line per measurement: `partitions=N quiesce=on|off cpus=X quiet_groups=Q` and
# `failover quiesce=on|off kill=K ms=T`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SETTLE="${SETTLE_SECONDS:-20}"
MEASURE="${MEASURE_SECONDS:-10}"
KILLS="${FAILOVER_KILLS:-0}"
BASE="${BENCH_IDLE_DIR:-/tmp/tern-bench-idle}"
BIN="${TERN_BIN:-$ROOT/target/release/tern}"
[[ -x "$BIN" ]] || (cd "$ROOT" && cargo build --release --quiet)
export TERN_BIN="$BIN"
COUNTS=("$@")
[[ ${#COUNTS[@]} -gt 0 ]] || COUNTS=(1000 3000 10000)

stop_cluster() { "$ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true; }
trap stop_cluster EXIT

cpu_ticks() {
    local sum=0 pid
    for pid in "$@"; do
        local -a f
        read -r -a f <"/proc/$pid/stat"
        sum=$((sum + f[13] + f[14]))
    done
    echo "$sum"
}

leader_of_partition_0() {
    kcat -L -b 127.0.0.1:9092 -t "$1" -J 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["topics"][0]["partitions"][0]["leader"])'
}

run() {
    local partitions=$1 quiesce=$2
    export TERN_CLUSTER_DIR="$BASE/p$partitions-$quiesce"
    stop_cluster
    rm -rf "$TERN_CLUSTER_DIR"
    mkdir -p "$TERN_CLUSTER_DIR"
    local flag=true
    [[ $quiesce == on ]] || flag=false
    printf '[raft]\nquiesce_idle_groups = %s\n' "$flag" >"$TERN_CLUSTER_DIR/tern.toml"
    export TERN_SERVE_ARGS="--config $TERN_CLUSTER_DIR/tern.toml"
    "$ROOT/scripts/cluster.sh" start >/dev/null
    "$BIN" create-topic idle --partitions "$partitions" --replication-factor 3 --timeout-s 120 >/dev/null
    sleep "$SETTLE"
    local pids
    pids=$(cat "$TERN_CLUSTER_DIR"/node-*.pid)
    local hz a b
    hz=$(getconf CLK_TCK)
    # shellcheck disable=SC2086
    a=$(cpu_ticks $pids)
    sleep "$MEASURE"
    # shellcheck disable=SC2086
    b=$(cpu_ticks $pids)
    local quiet
    quiet=$(curl -s 127.0.0.1:9090/metrics | awk '/^tern_raft_groups_quiet/ {print $2}')
    echo "partitions=$partitions quiesce=$quiesce cpus=$(python3 -c "print(round(($b - $a) / $hz / $MEASURE, 3))") quiet_groups=${quiet:-?}"
    local k
    for ((k = 1; k <= KILLS; k++)); do
        sleep 3
        local leader other t0 t1
        leader=$(leader_of_partition_0 idle)
        other=$((leader % 3 + 1))
        t0=$(date +%s%N)
        "$ROOT/scripts/cluster.sh" kill "$leader" >/dev/null
        echo "kill $k" | "$BIN" produce idle --server "127.0.0.$other:9092" --timeout-s 10 >/dev/null
        t1=$(date +%s%N)
        echo "failover quiesce=$quiesce kill=$k ms=$(((t1 - t0) / 1000000))"
        "$ROOT/scripts/cluster.sh" restart "$leader" >/dev/null
    done
    stop_cluster
}

for n in "${COUNTS[@]}"; do
    run "$n" on
    run "$n" off
done
