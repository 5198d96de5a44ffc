#!/usr/bin/env bash
# scripts/bench-wal.sh — the WAL benchmark next to its fio baselines, in one go, on one file
# system. Methodology and latest figures: docs/bench.md.
#
#   1. fio 4 KiB O_DIRECT write + fdatasync at queue depth 1          -> fio_sync_*_us
#   2. tern-bench wal: 1 appender x 1 in flight, 4 KiB records        -> tern_sync_*_us
#   3. fio sequential O_DIRECT write, 1 MiB blocks, iodepth 16        -> fio_write_mbps
#      (plus, for the analysis, 2 MiB writes each followed by fdatasync at queue depth 1,
#      which is what one tern shard's group commit asks of the device -> fio_write_fsync_mbps)
#   4. tern-bench wal: 64 appenders x 16 in flight, 4 KiB records     -> tern_write_mbps
#   5. tern-bench recovery: write RECOVERY_GIB, reopen with indexes, then by scanning
#
# The last line of stdout is one JSON object (keys documented in docs/bench.md); progress
# goes to stderr.
#
# fio's per-write latency is compared as write latency + fdatasync latency: fio reports the
# two separately (`write.lat_ns`, `sync.lat_ns`), while tern acknowledges an append only after
# the fdatasync covering it, so one tern latency spans both. Percentiles of the two are added
# (p50 + p50, p99.9 + p99.9): close to the percentile of the sum when the write part is small
# and steady, and on the generous side for fio at the tail.
#
# Environment:
#   BENCH_DIR      where all data goes (default: <repo>/bench-out); must be a disk file system
#   BENCH_SECONDS  seconds per measured run (default 10)
#   RECOVERY_GIB   GiB written for the recovery run (default 2)
#   SHARDS         tern shards (default: number of CPUs, as a tern node)
#   FIO_ENGINE     force a fio ioengine (default: io_uring, else libaio, else psync)
#   TERN_BENCH_ARGS extra arguments for every tern-bench run (e.g. "--io-memory-bytes 64MiB")
#   SETTLE_SECONDS pause after the `sync` between runs (default 2)
#   KEEP=1         keep fio files and tern data directories
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$REPO/bench-out}
BENCH_SECONDS=${BENCH_SECONDS:-10}
RECOVERY_GIB=${RECOVERY_GIB:-2}
SHARDS=${SHARDS:-$(nproc)}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BIN=$TARGET_DIR/release/tern-bench

log() { echo "bench-wal: $*" >&2; }
die() { echo "bench-wal: error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is needed to read fio's and tern-bench's JSON"

# --- tools -------------------------------------------------------------------------------
if ! command -v fio >/dev/null; then
    log "fio not found: installing it (apt-get)"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2 && apt-get install -y -qq fio >&2
    else
        sudo apt-get update -qq >&2 && sudo apt-get install -y -qq fio >&2
    fi
fi
log "building tern-bench (release)"
(cd "$REPO" && cargo build --release -q -p tern-bench) >&2
[ -x "$BIN" ] || die "$BIN was not built"

# glommio registers I/O memory with io_uring; a higher limit is harmless (we may not be root).
ulimit -l unlimited 2>/dev/null || true

# --- the data directory --------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
FS_TYPE=$(df --output=fstype "$BENCH_DIR" | tail -1 | tr -d ' ')
case "$FS_TYPE" in
    tmpfs|ramfs) die "$BENCH_DIR is on $FS_TYPE: set BENCH_DIR to a directory on a disk" ;;
esac
RUN=$BENCH_DIR/run-$$
mkdir -p "$RUN"
cleanup() {
    if [ "$KEEP" = 1 ]; then
        log "kept $RUN"
    else
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
KEEP_FLAG=()
[ "$KEEP" = 1 ] && KEEP_FLAG=(--keep)
# Word-split on purpose: a list of flags.
read -r -a EXTRA <<<"${TERN_BENCH_ARGS:-}"
LOADAVG=$(cut -d' ' -f1 /proc/loadavg)
log "data in $RUN ($FS_TYPE, $(df --output=source "$BENCH_DIR" | tail -1)); ${BENCH_SECONDS}s per run, $SHARDS shard(s)"

# --- fio ----------------------------------------------------------------------------------
fio_engine() {
    if [ -n "${FIO_ENGINE:-}" ]; then
        echo "$FIO_ENGINE"
        return
    fi
    local e
    for e in io_uring libaio psync; do
        if fio --name=probe --filename="$RUN/probe.fio" --size=1M --rw=write --bs=4k \
            --direct=1 --ioengine="$e" --output-format=json >/dev/null 2>&1; then
            rm -f "$RUN/probe.fio"
            echo "$e"
            return
        fi
    done
    die "fio can run none of io_uring, libaio, psync with O_DIRECT in $RUN"
}
ENGINE=$(fio_engine)
log "fio ioengine: $ENGINE"

FIO_COMMON=(--direct=1 --ioengine="$ENGINE" --output-format=json --time_based
    --runtime="$BENCH_SECONDS" --ramp_time=1 --lat_percentiles=1)

# Runs go in pairs (fio, then the matching tern run) and each starts from a quiet device:
# `settle` makes the kernel write back and flush everything before the next run. Without it
# the fdatasyncs of one run pay for the gigabytes the previous run left in a write-back cache
# (the host's, on a virtual disk), and the order of the runs decides the result.
settle() {
    local t0=$SECONDS
    sync
    sleep "${SETTLE_SECONDS:-2}"
    log "  (settled in $((SECONDS - t0)) s)"
}

settle
log "1/5 fio: 4 KiB write + fdatasync, iodepth 1 (latency)"
fio --name=sync-write --filename="$RUN/sync-write.fio" --size=1G --rw=write --bs=4k \
    --iodepth=1 --fdatasync=1 "${FIO_COMMON[@]}" >"$RUN/fio-sync.json"
rm -f "$RUN/sync-write.fio"
settle
log "2/5 tern-bench wal: 1 appender x 1 in flight, 4 KiB records (latency)"
"$BIN" wal --json --record-bytes 4096 --appenders 1 --inflight 1 --shards "$SHARDS" \
    --duration "$BENCH_SECONDS" --warmup 1 --dir "$RUN/tern-latency" "${KEEP_FLAG[@]}" "${EXTRA[@]}" \
    >"$RUN/tern-latency.json"
settle
log "3/5 fio: sequential write, 1 MiB blocks, iodepth 16 (throughput)"
fio --name=seq-write --filename="$RUN/seq-write.fio" --size=4G --rw=write --bs=1M \
    --iodepth=16 "${FIO_COMMON[@]}" >"$RUN/fio-seq.json"
rm -f "$RUN/seq-write.fio"
settle
log "3/5 fio: 2 MiB write + fdatasync, iodepth 1 (one tern shard's pattern, for the analysis)"
fio --name=batch-sync --filename="$RUN/batch-sync.fio" --size=4G --rw=write --bs=2M \
    --iodepth=1 --fdatasync=1 "${FIO_COMMON[@]}" >"$RUN/fio-batch-sync.json"
rm -f "$RUN/batch-sync.fio"
settle
log "4/5 tern-bench wal: 64 appenders x 16 in flight, 4 KiB records (throughput)"
"$BIN" wal --json --record-bytes 4096 --appenders 64 --inflight 16 --shards "$SHARDS" \
    --duration "$BENCH_SECONDS" --warmup 1 --dir "$RUN/tern-throughput" "${KEEP_FLAG[@]}" "${EXTRA[@]}" \
    >"$RUN/tern-throughput.json"
settle
log "5/5 tern-bench recovery: write ${RECOVERY_GIB} GiB, reopen with indexes, then by scanning"
"$BIN" recovery --json --gib "$RECOVERY_GIB" --shards "$SHARDS" \
    --dir "$RUN/tern-recovery" "${KEEP_FLAG[@]}" "${EXTRA[@]}" >"$RUN/tern-recovery.json"

# --- summary and the JSON line ------------------------------------------------------------
python3 - "$RUN" "$ENGINE" "$FS_TYPE" "$SHARDS" "$BENCH_SECONDS" "$LOADAVG" "${TERN_BENCH_ARGS:-}" <<'EOF'
import json, sys

run, engine, fs_type, shards, seconds, loadavg, extra = sys.argv[1:8]

def load(name):
    with open(f"{run}/{name}") as f:
        return json.load(f)

def pct(lat, p):
    """A percentile of a fio latency block, in µs."""
    return lat.get("percentile", {}).get(p, 0) / 1000.0

def fio_lat(op):
    # lat_ns (submit to completion) when --lat_percentiles=1 took effect, else clat_ns.
    return op["lat_ns"] if "percentile" in op.get("lat_ns", {}) else op["clat_ns"]

seq = load("fio-seq.json")["jobs"][0]["write"]
batch = load("fio-batch-sync.json")["jobs"][0]
sync_job = load("fio-sync.json")["jobs"][0]
sw, ss = fio_lat(sync_job["write"]), sync_job["sync"]["lat_ns"]
tt = load("tern-throughput.json")
tl = load("tern-latency.json")
rec = load("tern-recovery.json")

r1 = lambda x: round(x, 1)
r3 = lambda x: round(x, 3)
fio_write_mbps = seq["bw_bytes"] / 1e6
fio_p50 = pct(sw, "50.000000") + pct(ss, "50.000000")
fio_p99 = pct(sw, "99.000000") + pct(ss, "99.000000")
fio_p999 = pct(sw, "99.900000") + pct(ss, "99.900000")
scan = rec.get("scan") or {}
out = {
    "fio_write_mbps": r1(fio_write_mbps),
    "tern_write_mbps": tt["write_mbps"],
    "throughput_ratio": r3(tt["write_mbps"] / fio_write_mbps) if fio_write_mbps else None,
    "fio_sync_p50_us": r1(fio_p50),
    "tern_sync_p50_us": tl["p50_us"],
    "latency_ratio_p50": r3(tl["p50_us"] / fio_p50) if fio_p50 else None,
    "fio_sync_p999_us": r1(fio_p999),
    "tern_sync_p999_us": tl["p999_us"],
    "recovery_gib": rec["indexed"]["gib"],
    "recovery_indexed_ms": rec["indexed"]["wall_ms"],
    "recovery_scan_gbps": scan.get("gbps"),
    # Extras, for the analysis.
    "latency_ratio_p999": r3(tl["p999_us"] / fio_p999) if fio_p999 else None,
    "fio_sync_p99_us": r1(fio_p99),
    "tern_sync_p99_us": tl["p99_us"],
    "fio_sync_write_p50_us": r1(pct(sw, "50.000000")),
    "fio_sync_fdatasync_p50_us": r1(pct(ss, "50.000000")),
    "fio_sync_iops": r1(sync_job["write"]["iops"]),
    "tern_sync_appends_per_s": tl["appends_per_s"],
    "tern_sync_avg_write_us": tl.get("avg_write_us"),
    "tern_sync_avg_fsync_us": tl.get("avg_fsync_us"),
    "fio_write_iops": r1(seq["iops"]),
    "fio_write_fsync_mbps": r1(batch["write"]["bw_bytes"] / 1e6),
    "fio_write_fsync_sync_p50_us": r1(pct(batch["sync"]["lat_ns"], "50.000000")),
    "tern_appends_per_s": tt["appends_per_s"],
    "tern_write_p50_us": tt["p50_us"],
    "tern_write_p999_us": tt["p999_us"],
    "tern_avg_batch_kib": tt["avg_batch_kib"],
    "tern_fsyncs_per_s": tt["fsyncs_per_s"],
    "tern_avg_write_us": tt.get("avg_write_us"),
    "tern_avg_fsync_us": tt.get("avg_fsync_us"),
    "recovery_indexed_engine_ms": rec["indexed"]["engine_ms"],
    "recovery_scan_ms": scan.get("wall_ms"),
    "recovery_scan_engine_ms": scan.get("engine_ms"),
    "recovery_write_mbps": (rec.get("written") or {}).get("write_mbps"),
    "shards": int(shards),
    "bench_seconds": float(seconds),
    "fio_ioengine": engine,
    "fs_type": fs_type,
    "tern_bench_args": extra,
    # Other work on the machine skews every figure: the 1-minute load average at the start.
    "loadavg_start": float(loadavg),
}
targets = {
    "throughput_ratio >= 0.9": (out["throughput_ratio"] or 0) >= 0.9,
    "latency_ratio_p50 <= 1.3": out["latency_ratio_p50"] is not None and out["latency_ratio_p50"] <= 1.3,
    "tern p99.9 <= 2 x fio p99.9": fio_p999 > 0 and tl["p999_us"] <= 2 * fio_p999,
    "recovery with indexes < 1 s": rec["indexed"]["wall_ms"] < 1000,
    "scan recovery >= 1 GB/s": (scan.get("gbps") or 0) >= 1.0,
}
out["targets_met"] = sum(targets.values())
out["targets_total"] = len(targets)

print()
print(f"WAL benchmark on {fs_type} ({shards} shard(s), fio {engine}, {seconds} s per run)")
print(f"  throughput   fio seq 1 MiB qd16      {fio_write_mbps:10.1f} MB/s")
print(f"               fio 2 MiB + fdatasync   {out['fio_write_fsync_mbps']:10.1f} MB/s")
print(f"               tern 64 x 16 x 4 KiB    {tt['write_mbps']:10.1f} MB/s"
      f"   ratio {out['throughput_ratio']}   (batches {tt['avg_batch_kib']} KiB, {tt['fsyncs_per_s']} fsyncs/s)")
print(f"  latency µs   {'p50':>10} {'p99':>10} {'p99.9':>10}")
print(f"    fio 4 KiB+fdatasync {fio_p50:10.1f} {fio_p99:10.1f} {fio_p999:10.1f}   (write {pct(sw, '50.000000'):.1f} + fdatasync {pct(ss, '50.000000'):.1f} at p50)")
print(f"    tern 1 x 1 x 4 KiB  {tl['p50_us']:10.1f} {tl['p99_us']:10.1f} {tl['p999_us']:10.1f}   ratio p50 {out['latency_ratio_p50']}, p99.9 {out['latency_ratio_p999']}")
print(f"  recovery     {rec['indexed']['gib']} GiB with indexes {rec['indexed']['wall_ms']} ms; "
      f"scan {scan.get('wall_ms')} ms = {scan.get('gbps')} GB/s")
print("  targets      " + "; ".join(f"{k}: {'ok' if v else 'MISSED'}" for k, v in targets.items()))
print(json.dumps(out, separators=(",", ":")))
EOF
