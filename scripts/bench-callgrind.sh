#!/usr/bin/env bash
# scripts/bench-callgrind.sh — CPU instructions per append of `tern-bench wal`, counted by
# valgrind's callgrind: a figure that other tenants of a shared machine cannot move (wall-clock
# figures there only mean something as ratios inside one run). See docs/bench.md.
#
#   scripts/bench-callgrind.sh [BIN...]     # default: target/release/tern-bench
#
# For every binary and shape it runs `wal --appends N1` and `wal --appends N2` under callgrind
# and reports (Ir(N2) - Ir(N1)) / (appends(N2) - appends(N1)): start-up (recovery, executor,
# segment preparation) cancels out. User-space instructions only: the kernel's share of a
# write or fdatasync is not counted. Instructions of every thread (valgrind runs them one at a
# time). Profiles are kept in OUT for `callgrind_annotate`.
#
# Environment:
#   SHAPES   shape names, space-separated        [seq 64x1k 1x4k]
#   N1, N2   appends of the short and long run   [20000 60000; a tenth of that for 1x4k,
#            whose appends wait for one fdatasync each]
#   SHARDS   shards                              [1]
#   OUT      where profiles and logs go          [/tmp/tern-callgrind]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHAPES=${SHAPES:-seq 64x1k 1x4k}
N1=${N1:-20000}
N2=${N2:-60000}
SHARDS=${SHARDS:-1}
OUT=${OUT:-/tmp/tern-callgrind}
BINS=("$@")
[ "${#BINS[@]}" -gt 0 ] || BINS=("$REPO/target/release/tern-bench")
command -v valgrind >/dev/null || { echo "bench-callgrind: valgrind missing (apt-get install -y valgrind)" >&2; exit 1; }
mkdir -p "$OUT"

shape_args() {
    case "$1" in
        seq) echo "--appenders 64 --inflight 16 --record-bytes 4096" ;;
        64x1k) echo "--appenders 64 --inflight 1 --record-bytes 1024" ;;
        1x4k) echo "--appenders 1 --inflight 1 --record-bytes 4096" ;;
        *) echo "bench-callgrind: unknown shape $1" >&2; exit 1 ;;
    esac
}

# Runs one binary on one shape for $3 appends; prints "instructions appends batches".
one_run() {
    local bin=$1 shape=$2 n=$3 tag
    tag="$(basename "$bin")-$shape-$n"
    # shellcheck disable=SC2046
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.cg" \
        "$bin" wal $(shape_args "$shape") --shards "$SHARDS" --appends "$n" --json \
        >"$OUT/$tag.json" 2>"$OUT/$tag.log"
    python3 - "$OUT/$tag.cg" "$OUT/$tag.json" <<'EOF'
import json, sys
ir = None
for line in open(sys.argv[1]):
    if line.startswith("summary:") or line.startswith("totals:"):
        ir = int(line.split()[1])
j = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
print(ir, j["appends"], j["batches"])
EOF
}

printf '%-28s %-6s %12s %10s %14s\n' binary shape "Ir/append" "batches" "appends/batch"
for shape in $SHAPES; do
    n1=$N1 n2=$N2
    [ "$shape" = 1x4k ] && n1=$((N1 / 10)) n2=$((N2 / 10))
    for bin in "${BINS[@]}"; do
        read -r i1 a1 b1 < <(one_run "$bin" "$shape" "$n1")
        read -r i2 a2 b2 < <(one_run "$bin" "$shape" "$n2")
        python3 -c "
i=($i2-$i1)/($a2-$a1); b=$b2-$b1
print('%-28s %-6s %12.0f %10d %14.1f' % ('$(basename "$bin")', '$shape', i, b, ($a2-$a1)/max(b,1)))"
    done
done
