#!/usr/bin/env bash
# scripts/bench-all.sh — issue 13's table: every shape next to its baseline, in one run, on
# one file system, alternating tern and the peer (A B A B ...) so that the machine's noise
# falls on both; figures are medians over ROUNDS. Prints the table and ends with one JSON line;
# JSON of every run, samples and PNG charts (latency CDF per shape, throughput per second)
# go to RESULTS. Methodology and the last full run: docs/bench.md.
#
#   shape        tern                                           baseline
#   wal-seq      wal 64 appenders x 16 in flight, 4 KiB          fio sequential O_DIRECT write, 1 MiB, iodepth 16
#   wal-64x1k    wal 64 appenders x 1 in flight, 1 KiB           raft-engine, 64 threads x 1 KiB, sync writes
#   wal-1x4k     wal 1 appender x 1 in flight, 4 KiB             raft-engine, 1 thread; fio 4 KiB write + fdatasync, iodepth 1
#   produce      3 nodes, acks=all, 64 partitions, 1 KiB         etcd, 3 members, 1 KiB puts, same concurrency
#                records (1 per request), closed loop
#   produce-open the same, open loop at OPEN_FRACTION of tern's  etcd at the same rate
#                closed-loop rate
#   e2e          produce-open's rate with --end-to-end on a      (none: reported)
#                topic of E2E_PARTITIONS: send -> fetched by a consumer per partition
#   recovery     recovery --cluster: node 2 of 3 SIGKILLed with   < 1 s + reading the unindexed
#                RECOVERY_GIB of WAL, restarted to /ready; again  segments (measured in the run);
#                with RECOVERY_PARTITIONS more partitions;       rebuild >= 0.7 x min(fio, budget)
#                rebuild and repair when the node has them
#
# Environment:
#   BENCH_DIR      scratch data, on a disk file system            [<repo>/bench-out]
#   RESULTS        JSON, samples and charts                        [<repo>/bench-results]
#   BENCH_SECONDS  seconds measured per run                        [10]
#   ROUNDS         A B rounds per shape (medians reported)         [2]
#   CONCURRENCY    producer / etcd client workers                  [64]
#   OPEN_FRACTION  open-loop rate as a fraction of tern's max      [0.5]
#   E2E_PARTITIONS partitions of the end-to-end topic               [4]
#   RECOVERY_GIB   GiB of WAL on the restarted node                [1]
#   RECOVERY_PARTITIONS partitions of recovery's second restart    [1000]
#   SHAPES         the shapes to run, space-separated              [all of the above]
#   BENCH_QUICK=1  a smoke run: 2 s per run, 1 round, recovery with 0.05 GiB and 64 partitions
#   BENCH_PORT_OFFSET added to every port                          [20000]
#   SETTLE_SECONDS pause after `sync` before every disk run        [2]
set -euo pipefail

NAME=bench-all
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
BENCH_DIR=${BENCH_DIR:-$REPO/bench-out}
RESULTS=${RESULTS:-$REPO/bench-results}
SECS=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-2}
CONCURRENCY=${CONCURRENCY:-64}
OPEN_FRACTION=${OPEN_FRACTION:-0.5}
E2E_PARTITIONS=${E2E_PARTITIONS:-4}
RECOVERY_GIB=${RECOVERY_GIB:-1}
RECOVERY_PARTITIONS=${RECOVERY_PARTITIONS:-1000}
SHAPES=${SHAPES:-wal-seq wal-64x1k wal-1x4k produce produce-open e2e recovery}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    SECS=2
    ROUNDS=1
    RECOVERY_GIB=0.05
    RECOVERY_PARTITIONS=64
fi
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"

NEED_FIO=1 NEED_ETCD=1 ensure_tools
build_release
mkdir -p "$BENCH_DIR" "$RESULTS/all"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RESULTS=$(cd "$RESULTS" && pwd)
FS_TYPE=$(check_disk_dir "$BENCH_DIR")
RUN=$BENCH_DIR/all-$$
mkdir -p "$RUN"
# recovery_cleanup: tern-bench recovery --cluster stops its nodes itself, unless it was killed.
recovery_cleanup() {
    if [ -d "$RUN/recovery/cluster" ]; then
        TERN_CLUSTER_DIR="$RUN/recovery/cluster" TERN_BIN="$TERN" \
            TERN_CLUSTER_PORT_OFFSET="$((PORT_OFFSET + 100))" "$REPO/scripts/cluster.sh" stop >/dev/null 2>&1 || true
    fi
}
trap 'bench_cleanup; recovery_cleanup; rm -rf "$RUN"' EXIT
ulimit -l unlimited 2>/dev/null || true
OUT=$RESULTS/all
rm -f "$OUT"/*.json
FIO_ENGINE=${FIO_ENGINE:-$(fio_engine)}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "data in $RUN ($FS_TYPE); ${SECS}s per run, $ROUNDS round(s); fio $FIO_ENGINE; load $LOAD_START"

has_shape() { [[ " $SHAPES " == *" $1 "* ]]; }

# tern_wal OUT APPENDERS INFLIGHT BYTES: one tern-bench wal run, one shard per CPU (as a node).
tern_wal() {
    settle
    "$BENCH" wal --json --shards 0 --appenders "$2" --inflight "$3" --record-bytes "$4" \
        --duration "$SECS" --warmup 1 --dir "$RUN/wal" --samples "${1%.json}.samples.json" \
        --label tern >"$1"
    rm -rf "$RUN/wal"
}

# raft_engine OUT WRITERS INFLIGHT BYTES
raft_engine() {
    settle
    "$BENCH" raft-engine --json --appenders "$2" --inflight "$3" --record-bytes "$4" \
        --duration "$SECS" --warmup 1 --dir "$RUN/raft-engine" \
        --samples "${1%.json}.samples.json" >"$1"
    rm -rf "$RUN/raft-engine"
}

for ((r = 1; r <= ROUNDS; r++)); do
    if has_shape wal-seq; then
        log "round $r: wal-seq — tern, then fio"
        tern_wal "$OUT/wal-seq-tern-$r.json" 64 16 4096
        settle
        fio_run "$OUT/wal-seq-fio-$r.json" "$SECS" --size=4G --rw=write --bs=1M --iodepth=16
    fi
    if has_shape wal-64x1k; then
        log "round $r: wal-64x1k — tern, then raft-engine (64 threads)"
        tern_wal "$OUT/wal-64x1k-tern-$r.json" 64 1 1024
        raft_engine "$OUT/wal-64x1k-raftengine-$r.json" 64 1 1024
    fi
    if has_shape wal-1x4k; then
        log "round $r: wal-1x4k — tern, raft-engine, fio write + fdatasync"
        tern_wal "$OUT/wal-1x4k-tern-$r.json" 1 1 4096
        raft_engine "$OUT/wal-1x4k-raftengine-$r.json" 1 1 4096
        settle
        fio_run "$OUT/wal-1x4k-fio-$r.json" "$SECS" --size=1G --rw=write --bs=4k --iodepth=1 --fdatasync=1
    fi
done

if has_shape produce || has_shape produce-open; then
    settle
    log "starting 3 tern nodes and 3 etcd members"
    tern_start 3
    etcd_start
    tern_create_topic bench 64
    produce_common=(--server "$(tern_kafka_addr)" --topic bench --create --partitions 64
        --replication-factor 3 --record-bytes 1024 --batch-records 1 --concurrency "$CONCURRENCY"
        --acks all --duration "$SECS" --warmup 1 --json)
    etcd_common=(--endpoints "$(etcd_endpoints)" --value-bytes 1024 --concurrency "$CONCURRENCY"
        --duration "$SECS" --warmup 1 --json)
    for ((r = 1; r <= ROUNDS; r++)); do
        log "round $r: produce (closed loop, $CONCURRENCY workers) — tern, then etcd"
        "$BENCH" produce "${produce_common[@]}" --samples "$OUT/produce-tern-$r.samples.json" \
            --label tern >"$OUT/produce-tern-$r.json"
        "$BENCH" etcd "${etcd_common[@]}" --samples "$OUT/produce-etcd-$r.samples.json" \
            >"$OUT/produce-etcd-$r.json"
    done
    if has_shape produce-open; then
        # The rate: OPEN_FRACTION of the median of tern's closed-loop rounds.
        rate=$(python3 - "$OUT" "$OPEN_FRACTION" <<'EOF'
import glob, json, statistics, sys
rates = [json.load(open(p))["records_per_s"] for p in glob.glob(f"{sys.argv[1]}/produce-tern-[0-9]*.json")
         if not p.endswith(".samples.json")]
print(round(max(1.0, statistics.median(rates) * float(sys.argv[2])), 1) if rates else "")
EOF
)
        [ -n "$rate" ] || die "produce-open needs the closed-loop produce shape (SHAPES) to set its rate"
        for ((r = 1; r <= ROUNDS; r++)); do
            log "round $r: produce-open at $rate/s — tern, then etcd"
            "$BENCH" produce "${produce_common[@]}" --rate "$rate" \
                --samples "$OUT/produce-open-tern-$r.samples.json" --label tern \
                >"$OUT/produce-open-tern-$r.json"
            "$BENCH" etcd "${etcd_common[@]}" --rate "$rate" \
                --samples "$OUT/produce-open-etcd-$r.samples.json" >"$OUT/produce-open-etcd-$r.json"
        done
    fi
    if has_shape e2e && [ -n "${rate:-}" ]; then
        # Its own topic of E2E_PARTITIONS partitions: the client fetches one partition per
        # request, so a consumer thread per partition of a 64-partition topic would spin 64
        # fetch loops on the same 2 cores as the nodes and starve the producers.
        tern_create_topic bench-e2e "$E2E_PARTITIONS"
        log "e2e: produce at $rate/s to $E2E_PARTITIONS partitions, a consumer each (send -> fetched)"
        "$BENCH" produce --server "$(tern_kafka_addr)" --topic bench-e2e --record-bytes 1024 \
            --batch-records 1 --concurrency "$CONCURRENCY" --acks all --duration "$SECS" \
            --warmup 1 --json --rate "$rate" --end-to-end >"$OUT/e2e-tern-1.json"
    fi
    etcd_stop
    tern_stop
fi

if has_shape recovery; then
    settle
    log "recovery: node 2 of 3 with $RECOVERY_GIB GiB of WAL, then $RECOVERY_PARTITIONS more partitions"
    "$BENCH" recovery --cluster --json --gib "$RECOVERY_GIB" --many-partitions "$RECOVERY_PARTITIONS" \
        --load-seconds "$SECS" --port-offset "$((PORT_OFFSET + 100))" --dir "$RUN/recovery" \
        --tern-bin "$TERN" --cluster-script "$REPO/scripts/cluster.sh" >"$OUT/recovery-tern-1.json"
fi

# Charts of the last round: tern and its peer on one chart per shape.
for shape in wal-64x1k wal-1x4k produce produce-open wal-seq; do
    files=()
    for who in tern raftengine etcd; do
        f="$OUT/$shape-$who-$ROUNDS.samples.json"
        [ -f "$f" ] && files+=("$f")
    done
    if [ "${#files[@]}" -gt 0 ]; then
        "$BENCH" plot --out "$RESULTS/plots" --name "$shape" --title "$shape" "${files[@]}" >/dev/null
    fi
done

COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
python3 - "$OUT" "$ROUNDS" "$COMMIT" "$(nproc)" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$FS_TYPE" "$CONCURRENCY" <<'EOF'
import json, os, statistics, sys
out, rounds, commit, cpus, load0, load1, fs, conc = sys.argv[1:9]
rounds = int(rounds)

def runs(name):
    docs = []
    for r in range(1, rounds + 1):
        p = os.path.join(out, f"{name}-{r}.json")
        if os.path.exists(p):
            with open(p) as f:
                docs.append(json.load(f))
    return docs

def med(docs, get):
    vals = [get(d) for d in docs]
    return round(statistics.median(vals), 1) if vals else None

def fio_lat(op):
    return op["lat_ns"] if "percentile" in op.get("lat_ns", {}) else op["clat_ns"]

def fio_pct(op, p):
    return op.get("percentile", {}).get(p, 0) / 1000.0

def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None

j = {"bench": "all", "commit": commit, "cpus": int(cpus), "load_start": load0, "load_end": load1,
     "fs": fs, "rounds": rounds, "concurrency": int(conc)}
rows = []  # shape, figure, tern, peer, ratio, target

t, f = runs("wal-seq-tern"), runs("wal-seq-fio")
if t and f:
    tm = med(t, lambda d: d["write_mbps"])
    fm = med(f, lambda d: d["jobs"][0]["write"]["bw_bytes"] / 1e6)
    j.update(wal_seq_tern_mbps=tm, wal_seq_fio_mbps=fm, wal_seq_ratio=ratio(tm, fm))
    rows.append(("wal 64x16x4KiB", "MB/s vs fio seq", tm, fm, ratio(tm, fm), ">= 0.9"))

t, e = runs("wal-64x1k-tern"), runs("wal-64x1k-raftengine")
if t and e:
    ta, ea = med(t, lambda d: d["appends_per_s"]), med(e, lambda d: d["appends_per_s"])
    tp, ep = med(t, lambda d: d["p999_us"]), med(e, lambda d: d["p999_us"])
    j.update(wal_64x1k_tern_appends_per_s=ta, wal_64x1k_raftengine_appends_per_s=ea,
             wal_64x1k_ratio=ratio(ta, ea), wal_64x1k_tern_p999_us=tp, wal_64x1k_raftengine_p999_us=ep)
    rows.append(("wal 64x1KiB", "appends/s vs raft-engine", ta, ea, ratio(ta, ea), ">= 2"))
    rows.append(("wal 64x1KiB", "p99.9 µs vs raft-engine", tp, ep, ratio(tp, ep), "<= 1"))

t, e, f = runs("wal-1x4k-tern"), runs("wal-1x4k-raftengine"), runs("wal-1x4k-fio")
if t and e:
    tp, ep = med(t, lambda d: d["p50_us"]), med(e, lambda d: d["p50_us"])
    j.update(wal_1x4k_tern_p50_us=tp, wal_1x4k_raftengine_p50_us=ep, wal_1x4k_p50_ratio=ratio(tp, ep))
    rows.append(("wal 1x4KiB", "p50 µs vs raft-engine", tp, ep, ratio(tp, ep), "<= 0.5"))
if t and f:
    tp = med(t, lambda d: d["p999_us"])
    fp = med(f, lambda d: fio_pct(fio_lat(d["jobs"][0]["write"]), "99.900000")
             + fio_pct(d["jobs"][0]["sync"]["lat_ns"], "99.900000"))
    j.update(wal_1x4k_tern_p999_us=tp, wal_1x4k_fio_p999_us=fp, wal_1x4k_p999_ratio=ratio(tp, fp))
    rows.append(("wal 1x4KiB", "p99.9 µs vs fio write+fdatasync", tp, fp, ratio(tp, fp), "<= 2"))

t, e = runs("produce-tern"), runs("produce-etcd")
if t and e:
    tr, er = med(t, lambda d: d["records_per_s"]), med(e, lambda d: d["puts_per_s"])
    j.update(produce_tern_records_per_s=tr, produce_etcd_puts_per_s=er, produce_ratio=ratio(tr, er),
             produce_tern_p99_us=med(t, lambda d: d["latency"]["p99_us"]),
             produce_etcd_p99_us=med(e, lambda d: d["latency"]["p99_us"]))
    rows.append((f"3-node produce, {conc} workers", "records/s vs etcd puts/s", tr, er, ratio(tr, er), ">= 5"))

t, e = runs("produce-open-tern"), runs("produce-open-etcd")
if t and e:
    tp, ep = med(t, lambda d: d["latency"]["p99_us"]), med(e, lambda d: d["latency"]["p99_us"])
    rate = t[0].get("rate_batches_per_s")
    j.update(produce_open_rate=rate, produce_open_tern_p99_us=tp, produce_open_etcd_p99_us=ep,
             produce_open_p99_ratio=ratio(tp, ep),
             produce_open_tern_records_per_s=med(t, lambda d: d["records_per_s"]),
             produce_open_etcd_puts_per_s=med(e, lambda d: d["puts_per_s"]))
    rows.append((f"open loop at {rate}/s", "p99 µs vs etcd", tp, ep, ratio(tp, ep), "<= 0.5"))

e = runs("e2e-tern")
if e and e[0].get("end_to_end"):
    l = e[0]["end_to_end"]
    j.update(e2e_rate=e[0].get("rate_batches_per_s"), e2e_p50_us=l["p50_us"], e2e_p99_us=l["p99_us"],
             e2e_ack_p50_us=e[0]["latency"]["p50_us"], e2e_ack_p99_us=e[0]["latency"]["p99_us"])
    rows.append((f"end-to-end at {e[0].get('rate_batches_per_s')}/s", "p50 µs (send -> fetched)", l["p50_us"], None, None, "report"))
    rows.append((f"end-to-end at {e[0].get('rate_batches_per_s')}/s", "p99 µs (send -> fetched)", l["p99_us"], None, None, "report"))
else:
    rows.append(("end-to-end produce->fetch", "p50/p99", None, None, None, "not measured"))
    j["end_to_end"] = "not measured"

for d in runs("recovery-tern")[:1]:
    def restart_row(label, r):
        if not r:
            return
        rows.append((label, "ms to /ready vs target", r["ready_ms"], r["target_ms"],
                     ratio(r["ready_ms"], r["target_ms"]), "<= 1"))
    r = d["restart"]
    j.update(recovery_ready_ms=r["ready_ms"], recovery_target_ms=r["target_ms"],
             recovery_replay_ms=r["node"]["replay_ms"], recovery_catch_up_ms=r["node"]["catch_up_ms"])
    restart_row(f"restart, {r['wal_bytes'] / 2**30:.2f} GiB WAL", r)
    m = d.get("many_partitions") or {}
    if m.get("restart"):
        j.update(recovery_many_partitions=m["partitions"], recovery_many_ready_ms=m["restart"]["ready_ms"])
        restart_row(f"restart, +{m['partitions']} partitions", m["restart"])
    elif m:
        j["recovery_many_error"] = m.get("error")
        rows.append((f"restart, +{m['partitions']} partitions", "failed: " + str(m.get("error"))[:60], None, None, None, "report"))
    for phase in ("rebuild", "repair"):
        p = d[phase]
        if "skipped" in p:
            j[f"recovery_{phase}"] = p["skipped"]
            rows.append((phase, "skipped", None, None, None, p["skipped"]))
        elif phase == "rebuild":
            j.update(recovery_rebuild_bytes_per_s=p["bytes_per_s"], recovery_rebuild_ratio=p["ratio"])
            rows.append(("rebuild", "bytes/s vs min(fio, budget)", p["bytes_per_s"], None, p["ratio"], ">= 0.7"))

print(f"issue 13, commit {commit}, {cpus} CPUs, {fs}, load {load0} -> {load1}, medians of {rounds} round(s)")
print(f"{'shape':<30}{'figure':<34}{'tern':>12}{'peer':>12}{'ratio':>8}  target")
fmt = lambda x: "-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)
for shape, fig, a, b, r, target in rows:
    print(f"{shape:<30}{fig:<34}{fmt(a):>12}{fmt(b):>12}{('-' if r is None else f'{r:.3f}'):>8}  {target}")
print(json.dumps(j))
EOF
