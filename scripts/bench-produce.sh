#!/usr/bin/env bash
# scripts/bench-produce.sh — issue 9's figures in one run: `tern-bench produce` through the
# Kafka client against 1 node and against 3 nodes on loopback (scripts/cluster.sh, acks=all,
# replication factor = nodes), batches of 1 KiB (1 record) and 16 KiB (16 records of 1 KiB),
# 1 and 64 partitions, closed loop and open loop at OPEN_FRACTION of the closed loop's rate;
# and `tern-bench wal` on the same shapes in the same run as the ceiling (one record of the
# batch's size per append, 64 appenders x 1 in flight for 64 partitions, 1 appender x
# CONCURRENCY in flight for 1 partition, one shard per CPU as a node).
#
# Prints a table and ends with one JSON line; JSON of every run, samples and charts go to
# RESULTS. Methodology and the last figures: docs/bench.md.
#
# Environment:
#   BENCH_DIR        scratch data, on a disk file system          [<repo>/bench-out]
#   RESULTS          JSON, samples and PNG charts                  [<repo>/bench-results]
#   BENCH_SECONDS    seconds measured per run                      [10]
#   CONCURRENCY      producer workers (one batch in flight each)   [64]
#   OPEN_FRACTION    open-loop rate as a fraction of closed loop's [0.5]
#   BENCH_QUICK=1    2 s runs, 3-node only, 64 partitions only (a smoke run)
#   BENCH_PORT_OFFSET added to every port                          [20000]
set -euo pipefail

NAME=bench-produce
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
BENCH_DIR=${BENCH_DIR:-$REPO/bench-out}
RESULTS=${RESULTS:-$REPO/bench-results}
SECS=${BENCH_SECONDS:-10}
CONCURRENCY=${CONCURRENCY:-64}
OPEN_FRACTION=${OPEN_FRACTION:-0.5}
NODE_COUNTS=(1 3)
PARTITION_COUNTS=(1 64)
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    SECS=2
    NODE_COUNTS=(3)
    PARTITION_COUNTS=(64)
fi

ensure_tools
build_release
mkdir -p "$BENCH_DIR" "$RESULTS/produce"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS=$(cd "$RESULTS" && pwd)
FS_TYPE=$(check_disk_dir "$BENCH_DIR")
RUN=$BENCH_DIR/produce-$$
mkdir -p "$RUN"
trap 'bench_cleanup; rm -rf "$RUN"' EXIT
ulimit -l unlimited 2>/dev/null || true
OUT=$RESULTS/produce
rm -f "$OUT"/*.json
log "data in $RUN ($FS_TYPE); ${SECS}s per run; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# batch shapes: name records-per-batch record-bytes
BATCHES=("1k 1 1024" "16k 16 1024")

json_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]])' "$1" "$2"; }

for b in "${BATCHES[@]}"; do
    read -r bname brecords bbytes <<<"$b"
    for p in "${PARTITION_COUNTS[@]}"; do
        if [ "$p" = 1 ]; then apps=1; infl=$CONCURRENCY; else apps=$p; infl=1; fi
        settle
        log "wal ceiling: $apps appenders x $infl in flight, $((brecords * bbytes)) B records"
        "$BENCH" wal --json --shards 0 --record-bytes $((brecords * bbytes)) --appenders "$apps" \
            --inflight "$infl" --duration "$SECS" --warmup 1 --dir "$RUN/wal" \
            --samples "$OUT/wal-$bname-p$p.samples.json" --label "engine" >"$OUT/wal-$bname-p$p.json"
        rm -rf "$RUN/wal"
    done
done

for n in "${NODE_COUNTS[@]}"; do
    settle
    log "starting $n tern node(s)"
    tern_start "$n"
    for p in "${PARTITION_COUNTS[@]}"; do
        topic=bench-p$p
        tern_create_topic "$topic" "$p"
        for b in "${BATCHES[@]}"; do
            read -r bname brecords bbytes <<<"$b"
            common=(--server "$(tern_kafka_addr)" --topic "$topic" --create --partitions "$p"
                --replication-factor "$n" --record-bytes "$bbytes" --batch-records "$brecords"
                --concurrency "$CONCURRENCY" --acks all --duration "$SECS" --warmup 1 --json)
            tag=n$n-p$p-$bname
            log "produce $tag closed loop"
            "$BENCH" produce "${common[@]}" --samples "$OUT/produce-$tag-closed.samples.json" \
                --label "$n node(s), closed" >"$OUT/produce-$tag-closed.json"
            bps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(max(1.0, d["batches"]/d["seconds"]*float(sys.argv[2])))' \
                "$OUT/produce-$tag-closed.json" "$OPEN_FRACTION")
            log "produce $tag open loop at $bps batches/s"
            "$BENCH" produce "${common[@]}" --rate "$bps" --samples "$OUT/produce-$tag-open.samples.json" \
                --label "$n node(s), open" >"$OUT/produce-$tag-open.json"
        done
    done
    tern_stop
done

for b in "${BATCHES[@]}"; do
    read -r bname _ <<<"$b"
    for p in "${PARTITION_COUNTS[@]}"; do
        files=("$OUT/wal-$bname-p$p.samples.json")
        for n in "${NODE_COUNTS[@]}"; do files+=("$OUT/produce-n$n-p$p-$bname-closed.samples.json"); done
        "$BENCH" plot --out "$RESULTS/plots" --name "produce-$bname-p$p" \
            --title "produce, $bname batches, $p partition(s), closed loop" "${files[@]}" >/dev/null
    done
done

COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
python3 - "$OUT" "$COMMIT" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$FS_TYPE" <<'EOF'
import glob, json, os, sys
out, commit, cpus, load, fs = sys.argv[1:6]
def load_json(path):
    with open(path) as f:
        return json.load(f)
rows, summary = [], {"bench": "produce", "commit": commit, "cpus": int(cpus), "load": load, "fs": fs}
print(f"tern produce (issue 9), commit {commit}, {cpus} CPUs, load {load}, {fs}")
print(f"{'run':<28}{'records/s':>12}{'MB/s':>9}{'p50 µs':>10}{'p99 µs':>10}{'p99.9 µs':>10}")
for path in sorted(glob.glob(os.path.join(out, "wal-*.json"))):
    if path.endswith(".samples.json"):
        continue
    d = load_json(path)
    name = os.path.basename(path)[:-5]
    print(f"{name:<28}{d['appends_per_s']:>12.0f}{d['write_mbps']:>9.1f}{d['p50_us']:>10.0f}{d['p99_us']:>10.0f}{d['p999_us']:>10.0f}")
    summary[name + "_mbps"] = d["write_mbps"]
for path in sorted(glob.glob(os.path.join(out, "produce-*.json"))):
    if path.endswith(".samples.json"):
        continue
    d = load_json(path)
    name = os.path.basename(path)[:-5]
    l = d["latency"]
    print(f"{name:<28}{d['records_per_s']:>12.0f}{d['mb_per_s']:>9.1f}{l['p50_us']:>10.0f}{l['p99_us']:>10.0f}{l['p999_us']:>10.0f}")
    summary[name.replace("produce-", "") + "_mbps"] = d["mb_per_s"]
    summary[name.replace("produce-", "") + "_p99_us"] = l["p99_us"]
for b in ("1k", "16k"):
    eng = summary.get(f"wal-{b}-p64_mbps")
    three = summary.get(f"n3-p64-{b}-closed_mbps")
    if eng and three is not None:
        r = round(three / eng, 3)
        summary[f"ratio_3node_engine_{b}_p64"] = r
        print(f"3 nodes / engine at 64 partitions, {b} batches: {r} (target >= 0.5)")
print(json.dumps(summary))
EOF
