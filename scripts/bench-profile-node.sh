#!/usr/bin/env bash
# scripts/bench-profile-node.sh — where a tern node spends its time under produce load: starts
# 3 nodes on loopback, runs `tern-bench produce` (acks=all, 64 partitions, 1 KiB records, one per
# request, closed loop) and records node 1 with `perf record -g` meanwhile. Writes the report
# (self time, call graphs folded) to RESULTS/profile/node1.txt and prints its top lines.
#
# Environment: BENCH_DIR, RESULTS, BENCH_PORT_OFFSET as bench-produce.sh; PROFILE_SECONDS [10];
# CONCURRENCY [64]. Needs perf (Debian: linux-perf, installed when missing).
set -euo pipefail

NAME=bench-profile-node
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
BENCH_DIR=${BENCH_DIR:-$REPO/bench-out}
RESULTS=${RESULTS:-$REPO/bench-results}
SECS=${PROFILE_SECONDS:-10}
CONCURRENCY=${CONCURRENCY:-64}

ensure_tools
command -v perf >/dev/null || apt_install linux-perf
build_release
mkdir -p "$BENCH_DIR" "$RESULTS/profile"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS=$(cd "$RESULTS" && pwd)
check_disk_dir "$BENCH_DIR" >/dev/null
RUN=$BENCH_DIR/profile-$$
mkdir -p "$RUN"
LOAD_PID=
trap '[ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null; bench_cleanup; rm -rf "$RUN"' EXIT

tern_start 3
node1=$(cat "$RUN/tern-cluster/node-1.pid")
tern_create_topic bench 64
"$BENCH" produce --server "$(tern_kafka_addr)" --topic bench --create --partitions 64 \
    --replication-factor 3 --record-bytes 1024 --batch-records 1 --concurrency "$CONCURRENCY" \
    --acks all --duration $((SECS + 2)) --warmup 1 >"$RESULTS/profile/produce.txt" &
LOAD_PID=$!
sleep 2
log "perf record (DWARF call graphs) on node 1 (pid $node1) for ${SECS}s"
perf record -q --call-graph dwarf,16384 -F 499 -p "$node1" -o "$RUN/perf.data" -- sleep "$SECS" 2>/dev/null
wait "$LOAD_PID" || die "the produce load failed (see $RESULTS/profile/produce.txt)"
LOAD_PID=
perf report -i "$RUN/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio \
    -g none 2>/dev/null >"$RESULTS/profile/node1.txt"
perf report -i "$RUN/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null \
    >"$RESULTS/profile/node1-threads.txt"
# Who calls the allocator: the tern frames above malloc/free, by share of samples.
perf report -i "$RUN/perf.data" --no-children --stdio --symbols malloc,_int_malloc,cfree@GLIBC_2.2.5,_int_free,__memmove_avx512_unaligned_erms \
    -g caller,0.5,callee,function,percent --percent-limit 0.5 --max-stack 24 2>/dev/null >"$RESULTS/profile/node1-alloc-callers.txt" || true
cat "$RESULTS/profile/produce.txt"
grep -v '^#' "$RESULTS/profile/node1-threads.txt" | grep -v '^$' | head -12
grep -v '^#' "$RESULTS/profile/node1.txt" | grep -v '^$' | head -40
