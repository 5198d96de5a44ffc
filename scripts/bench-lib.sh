# scripts/bench-lib.sh — shared by bench-produce.sh and bench-all.sh (sourced, not run):
# tools, the release build, a tern cluster and an etcd cluster on loopback, fio, settling.
#
# The caller sets RUN (its scratch directory on a disk file system), RESULTS (where JSON and
# PNG files go) and NAME (its name in messages) before sourcing, and calls bench_cleanup from
# its EXIT trap: every process started here is stopped by its pid.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BENCH=$TARGET_DIR/release/tern-bench
TERN=$TARGET_DIR/release/tern
# Ports are offset so a benchmark does not collide with a developer's cluster on the default
# ports of the same loopback addresses.
PORT_OFFSET=${BENCH_PORT_OFFSET:-20000}
ETCD_PIDS=()
TERN_CLUSTER_UP=0

log() { echo "$NAME: $*" >&2; }
die() { echo "$NAME: error: $*" >&2; exit 1; }

apt_install() {
    log "installing $* (apt-get)"
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >&2
}

# Installs what the runs need when missing: fio, etcd (server and etcdctl), a TrueType font
# for the charts, curl for the health checks.
ensure_tools() {
    local missing=()
    command -v python3 >/dev/null || missing+=(python3)
    command -v curl >/dev/null || missing+=(curl)
    [ "${NEED_FIO:-0}" = 1 ] && ! command -v fio >/dev/null && missing+=(fio)
    [ "${NEED_ETCD:-0}" = 1 ] && ! command -v etcd >/dev/null && missing+=(etcd-server)
    [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# One release build of both binaries, raft-engine baseline included (one feature set, so the
# two packages do not rebuild each other's dependencies).
build_release() {
    log "building tern and tern-bench (release, --features tern-bench/raft-engine)"
    (cd "$REPO" && cargo build --release -q -p tern -p tern-bench --features tern-bench/raft-engine) >&2
    [ -x "$BENCH" ] && [ -x "$TERN" ] || die "release binaries missing in $TARGET_DIR/release"
}

check_disk_dir() {
    local fs
    fs=$(df --output=fstype "$1" | tail -1 | tr -d ' ')
    case "$fs" in
        tmpfs|ramfs) die "$1 is on $fs: set BENCH_DIR to a directory on a disk" ;;
    esac
    echo "$fs"
}

# Makes the kernel write back and flush everything, so one run's dirty data does not land on
# the next run's fdatasyncs (see docs/bench.md).
settle() {
    sync
    sleep "${SETTLE_SECONDS:-2}"
}

# --- tern cluster (scripts/cluster.sh on offset ports) -------------------------------------
tern_env() {
    env TERN_CLUSTER_DIR="$RUN/tern-cluster" TERN_BIN="$TERN" TERN_CLUSTER_NODES="$1" \
        TERN_CLUSTER_PORT_OFFSET="$PORT_OFFSET" "${@:2}"
}

# tern_start N: a fresh cluster of N nodes (1 or 3), data under $RUN.
tern_start() {
    rm -rf "$RUN/tern-cluster"
    TERN_NODES=$1
    TERN_CLUSTER_UP=1
    tern_env "$1" "$REPO/scripts/cluster.sh" start >&2 || die "tern cluster of $1 did not start (logs in $RUN/tern-cluster)"
}

tern_stop() {
    if [ "$TERN_CLUSTER_UP" = 1 ]; then
        tern_env "$TERN_NODES" "$REPO/scripts/cluster.sh" stop >&2 || true
        TERN_CLUSTER_UP=0
    fi
    rm -rf "$RUN/tern-cluster"
}

tern_kafka_addr() { echo "127.0.0.1:$((9092 + PORT_OFFSET))"; }

# tern_create_topic TOPIC PARTITIONS: creates the topic (replication factor = nodes) through
# each node in turn until one accepts. The Kafka client sends CreateTopics to whichever node it
# is connected to and retries there, so a node that is not the controller answers
# NotController every time; asking every node reaches the controller.
tern_create_topic() {
    local i
    for ((i = 1; i <= TERN_NODES; i++)); do
        if "$BENCH" produce --server "127.0.0.$i:$((9092 + PORT_OFFSET))" --topic "$1" --create \
            --partitions "$2" --replication-factor "$TERN_NODES" --concurrency 1 --duration 0.2 \
            --warmup 0 --json >"$RUN/create-topic.json" 2>&1; then
            return 0
        fi
    done
    die "no node created topic $1: $(cat "$RUN/create-topic.json")"
}

# --- etcd cluster: 3 members on 127.0.0.1-3, data under $RUN -------------------------------
etcd_client_port() { echo $((2379 + PORT_OFFSET)); }
etcd_peer_port() { echo $((2380 + PORT_OFFSET)); }
etcd_endpoints() {
    local i list=""
    for i in 1 2 3; do list+="${list:+,}127.0.0.$i:$(etcd_client_port)"; done
    echo "$list"
}

etcd_start() {
    local i cluster="" deadline
    rm -rf "$RUN/etcd"
    mkdir -p "$RUN/etcd"
    for i in 1 2 3; do cluster+="${cluster:+,}m$i=http://127.0.0.$i:$(etcd_peer_port)"; done
    for i in 1 2 3; do
        etcd --name "m$i" --data-dir "$RUN/etcd/m$i" \
            --listen-client-urls "http://127.0.0.$i:$(etcd_client_port)" \
            --advertise-client-urls "http://127.0.0.$i:$(etcd_client_port)" \
            --listen-peer-urls "http://127.0.0.$i:$(etcd_peer_port)" \
            --initial-advertise-peer-urls "http://127.0.0.$i:$(etcd_peer_port)" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token tern-bench </dev/null >"$RUN/etcd/m$i.log" 2>&1 &
        ETCD_PIDS+=($!)
    done
    deadline=$((SECONDS + 60))
    for i in 1 2 3; do
        until curl -fsS -m 2 "http://127.0.0.$i:$(etcd_client_port)/health" 2>/dev/null | grep -q '"health":"true"'; do
            (( SECONDS < deadline )) || die "etcd member $i not healthy after 60 s (log $RUN/etcd/m$i.log)"
            sleep 0.2
        done
    done
    log "etcd $(etcd --version | head -1 | awk '{print $3}'): 3 members up ($(etcd_endpoints))"
}

etcd_stop() {
    local pid
    for pid in "${ETCD_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${ETCD_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ETCD_PIDS=()
    rm -rf "$RUN/etcd"
}

bench_cleanup() {
    etcd_stop
    tern_stop
}

# --- fio -----------------------------------------------------------------------------------
fio_engine() {
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

# fio_run OUT.json SECONDS fio-args...: one fio job on a file under $RUN, removed afterwards.
fio_run() {
    local out=$1 secs=$2
    shift 2
    fio --name=job --filename="$RUN/job.fio" --direct=1 --ioengine="$FIO_ENGINE" \
        --output-format=json --time_based --runtime="$secs" --ramp_time=1 --lat_percentiles=1 \
        "$@" >"$out"
    rm -f "$RUN/job.fio"
}
