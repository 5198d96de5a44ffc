#!/usr/bin/env bash
# scripts/bench-callgrind-node.sh — CPU instructions a tern node spends per acknowledged
# record, counted by valgrind's callgrind (a figure other tenants of a shared machine cannot
# move; see docs/bench.md "Instructions per acknowledged record").
#
#   scripts/bench-callgrind-node.sh [TERN_BIN]      # default: target/release/tern
#
# Starts NODES `tern serve` processes (1: --standalone; 3: a cluster on 127.0.0.1-3, the
# scripts/cluster.sh layout on offset ports), every one under callgrind, creates the topic
# and warms it up with WARMUP seconds of load, then counts two windows with
# `callgrind_control` (zero the counters, wait, dump):
#   idle: IDLE seconds without load: what the node spends per second on its own (ticks of
#         every group, heartbeats, timers), which under callgrind's ~50x slowdown would
#         otherwise be charged to the few records a second it manages;
#   load: SECS seconds of `tern-bench produce` (acks=all, 1 KiB records one per request,
#         PARTITIONS partitions, CONCURRENCY workers, replication factor = NODES).
# Records are counted by the nodes (the sum of their
# `tern_kafka_produce_duration_seconds_count`: one record per request, answered by each
# partition's leader) before and after the load window. Reported per node and for all nodes together:
#   raw = Ir(load window) / records
#   net = (Ir(load window) - idle Ir per second x load window seconds) / records
# `net` is the figure to compare between binaries: the idle share of `raw` depends on how
# many records a second the slowed-down node reached, which other tenants move. User space
# only (the kernel's side of reads, writes and fdatasyncs is not counted); every thread of a
# node. The dumps of both windows stay in OUT for `callgrind_annotate --inclusive=yes`.
#
# Environment:
#   NODES          1 or 3                                   [1]
#   PARTITIONS     partitions of the topic                  [64]
#   CONCURRENCY    producer workers                         [64]
#   WARMUP IDLE SECS   seconds of warm-up, idle and load    [5 10 30]
#   SHARDS         shards per node                          [1: under valgrind a wake-up
#                  from one shard's thread to another's takes seconds, so with 2 shards the
#                  node crawls; one shard leaves the cross-shard hop out of the count]
#   OUT            profiles and logs                        [/tmp/tern-callgrind-node]
#   ELECTION_MIN   raft.election_timeout_min of the nodes   [5s: callgrind slows a node
#                  ~50x, and with the default 150ms the partitions of 3 nodes change leader
#                  hundreds of times a minute; heartbeat_interval is a tenth of it, max twice]
#   BENCH_BIN      the load generator                       [target/release/tern-bench]
#   PORT_OFFSET    added to the default ports               [23000]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TERN=${1:-$REPO/target/release/tern}
BENCH=${BENCH_BIN:-$REPO/target/release/tern-bench}
NODES=${NODES:-1}
PARTITIONS=${PARTITIONS:-64}
CONCURRENCY=${CONCURRENCY:-64}
WARMUP=${WARMUP:-5}
IDLE=${IDLE:-10}
SECS=${SECS:-30}
SHARDS=${SHARDS:-1}
OUT=${OUT:-/tmp/tern-callgrind-node}
OFFSET=${PORT_OFFSET:-23000}
ELECTION_MIN=${ELECTION_MIN:-5s}
for tool in valgrind callgrind_control curl python3; do
    command -v "$tool" >/dev/null || { echo "bench-callgrind-node: $tool missing (Debian: valgrind, curl, python3)" >&2; exit 1; }
done
[ "$NODES" = 1 ] || [ "$NODES" = 3 ] || { echo "bench-callgrind-node: NODES must be 1 or 3" >&2; exit 1; }
mkdir -p "$OUT"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

kafka_addr() { echo "127.0.0.$1:$((9092 + OFFSET))"; }
http_addr() { echo "127.0.0.$1:$((9090 + OFFSET))"; }
peer_addr() { echo "127.0.0.$1:$((9093 + OFFSET))"; }

# Starts the nodes under callgrind and waits until node 1 is ready.
start_nodes() {
    local n args peers="" cluster
    cluster=$(cat /proc/sys/kernel/random/uuid)
    python3 -c '
import re, sys
ms = int(float(re.fullmatch(r"([0-9.]+)(ms|s)", sys.argv[1]).group(1)) * (1 if sys.argv[1].endswith("ms") else 1000))
print("[raft]")
print(f"heartbeat_interval = \"{ms // 10 // 10 * 10}ms\"")
print(f"election_timeout_min = \"{ms}ms\"")
print(f"election_timeout_max = \"{2 * ms}ms\"")' "$ELECTION_MIN" >"$OUT/tern.toml"
    for ((n = 1; n <= NODES; n++)); do peers+="${peers:+,}$n=$(peer_addr "$n")"; done
    for ((n = 1; n <= NODES; n++)); do
        rm -rf "$OUT/data-$n"
        if [ "$NODES" = 1 ]; then
            args=(--standalone)
        else
            args=(--node-id "$n" --cluster-id "$cluster" --peer-addr "$(peer_addr "$n")"
                --peers "$peers" --bootstrap)
        fi
        valgrind --tool=callgrind --callgrind-out-file="$OUT/run-node$n.cg" \
            "$TERN" serve --config "$OUT/tern.toml" --data-dir "$OUT/data-$n" --shards "$SHARDS" \
            --kafka-addr "$(kafka_addr "$n")" --http-addr "$(http_addr "$n")" "${args[@]}" \
            </dev/null >"$OUT/node$n.log" 2>&1 &
        PIDS+=($!)
    done
    # Bounded: 600 polls of 0.5 s (callgrind slows start-up ~50x).
    local i
    for ((i = 0; i < 600; i++)); do
        if curl -sf "http://$(http_addr 1)/health" >/dev/null 2>&1 \
            && grep -q "caught_up: node ready" "$OUT/node1.log"; then
            return 0
        fi
        sleep 0.5
    done
    echo "bench-callgrind-node: node 1 did not come up (log $OUT/node1.log)" >&2
    exit 1
}

# Stops every node with SIGTERM and waits for its exit.
stop_nodes() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

total_ir() {
    python3 -c '
import sys
ir = None
for line in open(sys.argv[1]):
    if line.startswith("summary:") or line.startswith("totals:"):
        ir = int(line.split()[1])
print(ir)' "$1"
}

# Produce requests answered by every node (the client sends each partition's records to its
# leader, wherever it is).
produced() {
    local n total=0 c
    for ((n = 1; n <= NODES; n++)); do
        c=$(curl -sf "http://$(http_addr "$n")/metrics" \
            | awk '$1 == "tern_kafka_produce_duration_seconds_count" { print $2 }')
        [ -n "$c" ] || { echo "bench-callgrind-node: no produce count from node $n" >&2; exit 1; }
        total=$((total + ${c%.*}))
    done
    echo "$total"
}

# callgrind_control on every node: -z (zero the counters) or -d (dump them to <file>.N).
control() {
    local p
    for p in "${PIDS[@]}"; do callgrind_control "$1" "$p" >/dev/null 2>&1; done
}

# Dump number $2 of node $1, once callgrind has written it (bounded: 120 polls of 0.5 s).
dump_ir() {
    local f="$OUT/run-node$1.cg.$2" i
    for ((i = 0; i < 120; i++)); do
        if [ -s "$f" ] && grep -q '^totals:' "$f"; then
            total_ir "$f"
            return 0
        fi
        sleep 0.5
    done
    echo "bench-callgrind-node: no dump $f" >&2
    exit 1
}

# load SECONDS TAG: one run of the load generator; fails the script if it fails.
load() {
    try_load "$@" || { echo "bench-callgrind-node: the load failed (see $OUT/$2.bench.log)" >&2; exit 1; }
}

try_load() {
    "$BENCH" produce --server "$(kafka_addr 1)" --topic cg --create --partitions "$PARTITIONS" \
        --replication-factor "$NODES" --record-bytes 1024 --batch-records 1 \
        --concurrency "$CONCURRENCY" --acks all --duration "$1" --warmup 0 --json \
        >"$OUT/$2.json" 2>"$OUT/$2.bench.log"
}

rm -f "$OUT"/run-node*.cg*
start_nodes
# The new topic's partitions elect their leaders first (up to 2 x ELECTION_MIN); bounded:
# 60 tries, 2 s apart.
for ((i = 0; i < 60; i++)); do
    try_load "$WARMUP" warmup && break
    sleep 2
done
[ "$i" -lt 60 ] || { echo "bench-callgrind-node: the warm-up never succeeded (see $OUT/warmup.bench.log)" >&2; exit 1; }
control -z
t0=$(date +%s.%N)
sleep "$IDLE"
control -d
t1=$(date +%s.%N)
r0=$(produced)
control -z
t2=$(date +%s.%N)
load "$SECS" load
control -d
t3=$(date +%s.%N)
r1=$(produced)
idle=() busy=()
for ((n = 1; n <= NODES; n++)); do
    idle+=("$(dump_ir "$n" 1)")
    busy+=("$(dump_ir "$n" 2)")
done
stop_nodes
python3 -c '
import sys
nodes = int(sys.argv[1])
t0, t1, t2, t3 = (float(x) for x in sys.argv[2:6])
r0, r1 = int(sys.argv[6]), int(sys.argv[7])
idle = [int(x) for x in sys.argv[8:8 + nodes]]
busy = [int(x) for x in sys.argv[8 + nodes:8 + 2 * nodes]]
records, secs = r1 - r0, t3 - t2
print(f"records: {records} in {secs:.1f} s ({records / secs:.0f}/s under callgrind); idle window {t1 - t0:.1f} s")
def line(name, i, b):
    rate = i / (t1 - t0)
    print(f"{name}: raw {b / records:8.0f}  net {(b - rate * secs) / records:8.0f} Ir per acknowledged record"
          f"  (idle {rate / 1e6:.1f} M Ir/s)")
for n in range(nodes):
    line(f"node {n + 1}", idle[n], busy[n])
if nodes > 1:
    line("all nodes", sum(idle), sum(busy))
' "$NODES" "$t0" "$t1" "$t2" "$t3" "$r0" "$r1" "${idle[@]}" "${busy[@]}"
