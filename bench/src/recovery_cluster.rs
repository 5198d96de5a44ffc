//! `tern-bench recovery --cluster`: recovery of one node of a 3-node loopback cluster
//! (`scripts/cluster.sh`, node i on 127.0.0.i), every phase timed twice: by the node itself
//! (its JSON log lines `replay`/`caught_up` and `/metrics`) and from outside (SIGKILL ->
//! process start -> `/health` 200 -> `/ready` 200).
//!
//! Phases (issue 12, "Recovery time, measured"):
//! 1. restart-to-ready after SIGKILL of node 2 holding --gib of WAL, then the same once a
//!    topic of --many-partitions partitions exists (each partition a Raft group on every node).
//!    Target: ready in < 1 s plus the time to read what no sealed index covers; that time is
//!    measured here by reading the unindexed segment files (O_DIRECT, as the engine reads) while
//!    the node is down, so the comparison uses this disk, this run;
//! 2. rebuild of a wiped node 2 (`cluster.sh wipe 2`, `tern serve --rebuild`): bytes/s against
//!    min(fio sequential write bandwidth measured in this run, --recovery-budget), and produce
//!    p99 on a load topic during the rebuild against the same load before it;
//! 3. repair of one corrupt record on a follower: node 2 is stopped (so it restarts as a
//!    follower of every partition), one bit is flipped in the payload of a committed entry of
//!    its data directory (preferably in a segment no sealed index covers, so recovery finds it
//!    at start; else a sealed one, found when the partition starts or is read), the node is
//!    started, and the time from its `damaged entry detected` line to a clean `tern
//!    verify-data` of its stopped directory is measured (with the repair itself, the stop and
//!    the verify as parts).
//!
//! Phase 2 needs a node feature that may not be in the binary yet; it is detected at run time
//! from `tern serve --help` and reported as skipped (with the reason), never guessed. Phase 3
//! is skipped (saying why) when no entry to damage is found or the node logs no repair.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tern_net::kafka_client::{Acks, Client, ClientConfig, Producer};

use crate::cluster_proc::{self, Cluster};
use crate::data_dir::{BenchDir, FsInfo};
use crate::error::{BenchError, Result};
use crate::produce_cmd::ProduceOp;
use crate::report::{latency_table, round1, round3, LatencyUs};
use crate::thread_load::{self, Schedule};
use crate::{say, RecoveryArgs};

const GIB: f64 = (1u64 << 30) as f64;
/// The budget: ready within this, plus the time to read what is not indexed.
const READY_BUDGET_MS: f64 = 1000.0;
/// A rebuild meets its target at this fraction of min(disk write bandwidth, budget).
const REBUILD_TARGET_FRACTION: f64 = 0.7;
/// How often the outside clock probes the restarting node.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// The node logs `caught_up: node ready` within its ready poll (200 ms) of `/ready`; wait
/// this long for the line after `/ready` answered.
const READY_LINE_WAIT: Duration = Duration::from_secs(5);
/// Bytes read per O_DIRECT read when timing the unindexed segments.
const READ_CHUNK: usize = 1 << 20;
/// O_DIRECT needs buffers and offsets aligned to the logical block size (4 KiB covers it).
const DIRECT_ALIGN: usize = 4096;
/// Partitions of the many-partition topic a batch is produced to, timed one by one. Not all
/// of them: at 10 000 groups one acks=all produce took ~2 s on the loaded test machine
/// (docs/bench.md), so filling every partition would take hours.
const PROBE_PARTITIONS: u32 = 8;
/// fio's file for the disk write bandwidth, per run.
const FIO_BYTES: &str = "256M";

const DATA_TOPIC: &str = "recovery-data";
const MANY_TOPIC: &str = "recovery-many";
const LOAD_TOPIC: &str = "recovery-load";

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Time recovery of node 2 of a 3-node loopback cluster (scripts/cluster.sh) instead of
    /// the engine alone: restart after SIGKILL, rebuild after wipe, repair of a corrupt record.
    #[arg(long)]
    pub cluster: bool,
    /// --cluster: partitions of the topic the --gib of data is produced to (replication 3).
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// --cluster: partitions of the second topic, after which the restart is timed again
    /// (0 skips it; the figure is 10000).
    #[arg(long, default_value_t = 256)]
    pub many_partitions: u32,
    /// --cluster: producer threads writing the data (one batch in flight each).
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// --cluster: records per produce batch.
    #[arg(long, default_value_t = 16)]
    pub batch_records: usize,
    /// --cluster: seconds of produce load measured before and during the rebuild.
    #[arg(long, default_value_t = 5.0)]
    pub load_seconds: f64,
    /// --cluster: the node binary [default: `tern` next to tern-bench].
    #[arg(long)]
    pub tern_bin: Option<PathBuf>,
    /// --cluster: scripts/cluster.sh [default: found from tern-bench's target directory].
    #[arg(long)]
    pub cluster_script: Option<PathBuf>,
    /// --cluster: added to every port (TERN_CLUSTER_PORT_OFFSET), so runs can share the machine.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u32,
    /// --cluster: the nodes' `[recovery] bandwidth_bytes_per_sec_max` (the rebuild's budget;
    /// the default is the node's default).
    #[arg(long, value_parser = crate::parse_bytes, default_value = "100MiB")]
    pub recovery_budget: u64,
    /// --cluster: bound of each wait for a node to come up or be ready, seconds.
    #[arg(long, default_value_t = 600)]
    pub start_timeout: u64,
}

/// Data produced through the cluster before the restarts.
#[derive(Debug, Serialize)]
struct Written {
    topic: &'static str,
    partitions: u32,
    bytes: u64,
    gib: f64,
    seconds: f64,
    mb_per_s: f64,
}

/// One SIGKILL + restart of a node, timed from outside and by the node.
#[derive(Debug, Serialize)]
struct Restart {
    /// Bytes of WAL segment files in the node's data directory when it was killed.
    wal_bytes: u64,
    /// Segment files no sealed index covers (the open segment of each shard), read in full.
    unindexed_files: usize,
    unindexed_bytes: u64,
    unindexed_read_ms: f64,
    /// Whether that read bypassed the page cache (O_DIRECT), as the engine's does.
    unindexed_read_direct: bool,
    /// `cluster.sh kill`: SIGKILL until the process is gone.
    kill_ms: f64,
    /// From `cluster.sh start` to the node's pid file naming a live process.
    process_ms: Option<f64>,
    /// From `cluster.sh start` to `/health` answering 200.
    health_ms: Option<f64>,
    /// From `cluster.sh start` to `/ready` answering 200.
    ready_ms: f64,
    node: NodePhases,
    /// READY_BUDGET_MS + unindexed_read_ms.
    target_ms: f64,
    met: bool,
}

/// The node's own account of its start, from its log lines.
#[derive(Debug, Default, Serialize)]
struct NodePhases {
    /// `caught_up: every shard recovered`: WAL replay of every shard, since process start.
    replay_ms: Option<u64>,
    /// The slowest shard's `replay: shard recovered` elapsed_ms (the engine alone).
    shard_replay_ms_max: Option<u64>,
    replayed_bytes: u64,
    replayed_records: u64,
    segments: u64,
    rebuilt_indexes: u64,
    /// Raft groups (partition replicas and the controller) the shards initialised.
    groups: u64,
    /// The last `group started` line, since the node's `starting tern` line (log timestamps).
    groups_initialised_ms: Option<u64>,
    /// `caught_up: group applied its leader's commit`: first and last group, since the node's
    /// `starting tern` line (log timestamps), as groups_initialised_ms.
    first_group_caught_up_ms: Option<u64>,
    last_group_caught_up_ms: Option<u64>,
    /// `caught_up: node ready`: catch-up after replay, and the whole start.
    catch_up_ms: Option<u64>,
    total_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ManyPartitions {
    partitions: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_ms: Option<f64>,
    /// One batch (acks=all) to each of PROBE_PARTITIONS partitions spread over the topic, one
    /// after the other: what a produce costs once the node carries this many groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    produce_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<Restart>,
    /// Where it broke, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Probe {
    batches: u32,
    mean_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Rebuild {
    bytes: u64,
    ready_ms: f64,
    bytes_per_s: f64,
    fio_write_bytes_per_s: Option<f64>,
    budget_bytes_per_s: u64,
    /// bytes_per_s / min(fio, budget); the target is >= REBUILD_TARGET_FRACTION.
    ratio: f64,
    met: bool,
    load_before: LatencyUs,
    load_during: LatencyUs,
}

/// Phase 3: one damaged entry on node 2, from detection to a clean verify-data.
#[derive(Debug, Serialize)]
struct Repair {
    /// The damaged record: segment file name, offset, group and index.
    segment: String,
    offset: u64,
    group: u64,
    index: u64,
    /// Whether a sealed index covered the segment (then recovery does not read it).
    sealed: bool,
    /// The node's reason when it detected the damage (recovery, or a failed read).
    detected_by: String,
    /// `cluster.sh start` to the node's `entry repaired from peer` line (outside clock).
    start_to_repaired_ms: f64,
    /// The node's `took_ms`: from detection to the copy written and durable.
    detect_to_repaired_ms: u64,
    /// `cluster.sh stop` of the node (graceful), and `tern verify-data` of its directory.
    stop_ms: f64,
    verify_ms: f64,
    /// From the node's detection line to verify-data exiting clean (log timestamp to wall
    /// clock, same machine).
    detect_to_clean_ms: f64,
    verify_clean: bool,
    /// verify-data's `repaired-entry` warnings (the damaged bytes stay, superseded).
    repaired_warnings: u64,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Phase<T> {
    Ran(T),
    Skipped { skipped: String },
}

#[derive(Serialize)]
struct Report<'a> {
    bench: &'static str,
    nodes: u32,
    node: u32,
    record_bytes: usize,
    written: &'a Written,
    restart: &'a Restart,
    #[serde(skip_serializing_if = "Option::is_none")]
    many_partitions: Option<&'a ManyPartitions>,
    rebuild: &'a Phase<Rebuild>,
    repair: &'a Phase<Repair>,
    /// /proc/loadavg at the end: the machine is shared, figures move with it.
    loadavg: String,
    dir: String,
    #[serde(flatten)]
    fs: &'a FsInfo,
    kept: bool,
}

/// The node restarted, rebuilt and repaired (a follower or leader, whatever the cluster chose).
const NODE: u32 = 2;

pub fn run(args: &RecoveryArgs) -> Result<()> {
    let a = &args.cluster;
    check(args)?;
    let gib = args.gib.unwrap_or(1.0);
    let bin = match &a.tern_bin {
        Some(b) => b.clone(),
        None => beside_exe("tern")?,
    };
    let script = match &a.cluster_script {
        Some(s) => s.clone(),
        None => find_cluster_script()?,
    };
    for p in [&bin, &script] {
        if !p.is_file() {
            return Err(BenchError::Cluster(format!(
                "{} does not exist",
                p.display()
            )));
        }
    }
    let quiet = args.output.json;
    let dir = BenchDir::prepare(args.output.dir.as_deref(), args.output.keep)?;
    let mut cluster = Cluster::new(
        script,
        bin,
        dir.path().join("cluster"),
        a.port_offset,
        a.start_timeout,
    );
    // The nodes get the budget the rebuild is measured against.
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[recovery]\nbandwidth_bytes_per_sec_max = \"{} B\"\n",
            a.recovery_budget
        ),
    )
    .map_err(|e| BenchError::io(&config, e))?;
    cluster.serve_args = format!("--config {}", config.display());
    let serve_help = help_text(&cluster, &["serve", "--help"])?;
    let rebuild_available = serve_help.contains("--rebuild");

    cluster.script(&["start"])?;
    if !quiet {
        say!(
            "tern-bench recovery --cluster: 3 nodes in {} ({})",
            dir.path().display(),
            dir.fs.fs_type
        )?;
    }
    // Creating a topic waits for a leader of every partition; thousands of Raft groups
    // elect for longer than the client's default server timeout, so the admin client
    // waits as long as a node start may take.
    let mut admin_config = ClientConfig::new(cluster.kafka_addr(1));
    admin_config.server_timeout = Duration::from_secs(a.start_timeout);
    let mut admin = Client::connect(admin_config)?;
    admin.create_topic(DATA_TOPIC, a.partitions as i32, 3)?;
    if rebuild_available {
        admin.create_topic(LOAD_TOPIC, a.partitions as i32, 3)?;
    }
    let written = write(&cluster, DATA_TOPIC, a.partitions, (gib * GIB) as u64, args)?;
    if !quiet {
        say!(
            "  written       {:.3} GiB to {} partitions in {:.1} s ({:.1} MB/s, replication 3)",
            written.gib,
            written.partitions,
            written.seconds,
            written.mb_per_s
        )?;
    }

    let restart = restart(&cluster, NODE, a.start_timeout)?;
    if !quiet {
        print_restart("restart", &restart)?;
    }

    let many = (a.many_partitions > 0).then(|| many_partitions(&cluster, &mut admin, args));
    if let (Some(m), false) = (&many, quiet) {
        match &m.restart {
            Some(r) => {
                let p = m.produce_probe.as_ref();
                say!(
                    "  +{} partitions: created (leaders elected) in {:.0} ms; a produce to {} of them: mean {:.0} ms, max {:.0} ms",
                    m.partitions,
                    m.create_ms.unwrap_or_default(),
                    p.map_or(0, |p| p.batches),
                    p.map_or(0.0, |p| p.mean_ms),
                    p.map_or(0.0, |p| p.max_ms)
                )?;
                print_restart("restart", r)?;
            }
            None => say!(
                "  {} partitions: failed: {}",
                m.partitions,
                m.error.as_deref().unwrap_or("")
            )?,
        }
    }

    let rebuild = if rebuild_available {
        Phase::Ran(rebuild(&cluster, args)?)
    } else {
        Phase::Skipped {
            skipped: "rebuild not available (tern serve --rebuild missing)".into(),
        }
    };
    if !quiet {
        match &rebuild {
            Phase::Ran(r) => print_rebuild(r)?,
            Phase::Skipped { skipped } => say!("  rebuild       skipped: {skipped}")?,
        }
    }
    // Repair from peers needs no option: a node repairs a damaged entry it finds. The phase
    // needs a node built with it (its log line), which the run finds out by doing it.
    let repair = repair(&cluster, a.start_timeout)?;
    if !quiet {
        match &repair {
            Phase::Ran(r) => print_repair(r)?,
            Phase::Skipped { skipped } => say!("  repair        skipped: {skipped}")?,
        }
    }

    drop(admin);
    cluster.script(&["stop"])?;
    drop(cluster);
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let dir_path = dir.path().display().to_string();
    let fs = dir.fs.clone();
    let kept = dir.finish()?;
    if quiet {
        let report = Report {
            bench: "recovery-cluster",
            nodes: 3,
            node: NODE,
            record_bytes: args.record_bytes,
            written: &written,
            restart: &restart,
            many_partitions: many.as_ref(),
            rebuild: &rebuild,
            repair: &repair,
            loadavg,
            dir: dir_path,
            fs: &fs,
            kept: kept.is_some(),
        };
        say!("{}", serde_json::to_string(&report)?)?;
    } else {
        say!("  loadavg       {loadavg}")?;
        if let Some(p) = kept {
            say!("  kept cluster directory {}", p.display())?;
        }
    }
    Ok(())
}

fn check(args: &RecoveryArgs) -> Result<()> {
    let a = &args.cluster;
    let bad = |arg, why: &str| {
        Err(BenchError::Arg {
            arg,
            why: why.to_string(),
        })
    };
    if args.gib.is_some_and(|g| !(g.is_finite() && g > 0.0)) {
        return bad("gib", "must be more than 0 with --cluster");
    }
    if args.record_bytes == 0 || a.batch_records == 0 || a.producers == 0 {
        return bad(
            "record-bytes",
            "record-bytes, batch-records and producers must be at least 1",
        );
    }
    if a.partitions == 0 || a.partitions > i32::MAX as u32 || a.many_partitions > i32::MAX as u32 {
        return bad("partitions", "must be 1 to 2^31-1");
    }
    if !(a.load_seconds.is_finite() && a.load_seconds > 0.0) {
        return bad("load-seconds", "must be more than 0");
    }
    if a.port_offset > 50_000 {
        return bad("port-offset", "must be 0 to 50000 (as cluster.sh takes it)");
    }
    Ok(())
}

/// `NAME` in the directory of the running tern-bench (cargo puts both binaries there).
fn beside_exe(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| BenchError::io("tern-bench", e))?;
    Ok(exe.with_file_name(name))
}

/// scripts/cluster.sh of the checkout tern-bench was built in (target/<profile>/tern-bench).
fn find_cluster_script() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| BenchError::io("tern-bench", e))?;
    exe.ancestors()
        .map(|d| d.join("scripts/cluster.sh"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BenchError::Cluster(
                "scripts/cluster.sh not found above tern-bench; pass --cluster-script".into(),
            )
        })
}

fn help_text(c: &Cluster, args: &[&str]) -> Result<String> {
    let out = c.tern(args)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn connect(c: &Cluster) -> Result<Client> {
    Ok(Client::connect(ClientConfig::new(c.kafka_addr(1)))?)
}

fn secs_ms(d: Duration) -> f64 {
    round1(d.as_secs_f64() * 1e3)
}

/// Produces `bytes` of payload to `partitions` partitions of `topic` (acks=all) from
/// --producers threads, each sending to its partitions in turn.
fn write(
    c: &Cluster,
    topic: &'static str,
    partitions: u32,
    bytes: u64,
    args: &RecoveryArgs,
) -> Result<Written> {
    let a = &args.cluster;
    let batch_bytes = (args.record_bytes * a.batch_records) as u64;
    let claimed = AtomicU64::new(0);
    let started = Instant::now();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..a.producers)
            .map(|w| {
                let claimed = &claimed;
                scope.spawn(move || -> Result<()> {
                    let client = connect(c)?;
                    let mut producer = Producer::new(client, Acks::All, true)?;
                    let value = vec![0x5a_u8; args.record_bytes];
                    let values: Vec<&[u8]> = vec![value.as_slice(); a.batch_records];
                    // Bounded by `bytes`: every turn claims one batch of it.
                    for k in 0u64.. {
                        if claimed.fetch_add(batch_bytes, Ordering::Relaxed) >= bytes {
                            break;
                        }
                        let p = (w as u64 + k * a.producers as u64) % partitions as u64;
                        producer.send(topic, p as i32, &values)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap_or_else(|_| {
                Err(BenchError::Cluster("a producer thread panicked".into()))
            })?;
        }
        Ok::<_, BenchError>(())
    })?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let written = claimed
        .load(Ordering::Relaxed)
        .min(bytes.div_ceil(batch_bytes) * batch_bytes);
    Ok(Written {
        topic,
        partitions,
        bytes: written,
        gib: round3(written as f64 / GIB),
        seconds: round1(seconds),
        mb_per_s: round1(written as f64 / seconds / 1e6),
    })
}

/// Kills the `cluster.sh start` child if the caller leaves before it finished (an error on
/// the way): the nodes themselves are stopped by the Cluster guard.
struct StartChild(Option<Child>);

impl StartChild {
    fn take(&mut self) -> Option<Child> {
        self.0.take()
    }
}

impl Drop for StartChild {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the outside clock saw of a starting node.
struct OutsideTimes {
    process_ms: Option<f64>,
    health_ms: Option<f64>,
    ready_ms: f64,
}

/// Starts `node` through cluster.sh with `serve_args` and probes it every PROBE_EVERY until
/// `/ready` answers 200 (bounded by `timeout_s`); returns the outside times once the script
/// also finished.
fn start_and_probe(
    c: &Cluster,
    node: u32,
    serve_args: &str,
    timeout_s: u64,
) -> Result<OutsideTimes> {
    let spawned = Instant::now();
    let mut child = StartChild(Some(c.spawn_start(node, serve_args)?));
    let deadline = spawned + Duration::from_secs(timeout_s);
    let http = c.http_addr(node);
    let (mut process_ms, mut health_ms) = (None, None);
    let ready_ms = loop {
        if Instant::now() >= deadline {
            return Err(BenchError::Cluster(format!(
                "node {node} not ready {timeout_s} s after start (see {})",
                c.log(node).display()
            )));
        }
        if process_ms.is_none()
            && c.pid(node)
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            process_ms = Some(secs_ms(spawned.elapsed()));
        }
        if health_ms.is_none()
            && cluster_proc::http_get(&http, "/health").is_some_and(|(s, _)| s == 200)
        {
            health_ms = Some(secs_ms(spawned.elapsed()));
        }
        if health_ms.is_some()
            && cluster_proc::http_get(&http, "/ready").is_some_and(|(s, _)| s == 200)
        {
            break secs_ms(spawned.elapsed());
        }
        // The script returns once the node replayed its WAL (often before /ready); it
        // returns with a failure when the node did not start: stop probing then.
        let failed = child
            .0
            .as_mut()
            .and_then(|ch| ch.try_wait().ok().flatten())
            .is_some_and(|status| !status.success());
        if failed {
            if let Some(ch) = child.take() {
                cluster_proc::finish_start(ch, node)?;
            }
            return Err(BenchError::Cluster(format!("node {node} did not start")));
        }
        thread::sleep(PROBE_EVERY);
    };
    if let Some(ch) = child.take() {
        cluster_proc::finish_start(ch, node)?;
    }
    Ok(OutsideTimes {
        process_ms,
        health_ms,
        ready_ms,
    })
}

/// SIGKILLs `node`, times the read of its unindexed segments while it is down, starts it
/// again and times each phase.
fn restart(c: &Cluster, node: u32, timeout_s: u64) -> Result<Restart> {
    let started = Instant::now();
    c.script(&["kill", &node.to_string()])?;
    let kill_ms = secs_ms(started.elapsed());
    let segments = segment_files(&c.data(node))?;
    let wal_bytes = segments.iter().map(|s| s.bytes).sum();
    let unindexed: Vec<&Segment> = segments.iter().filter(|s| !s.indexed).collect();
    let read_started = Instant::now();
    let mut direct = true;
    let mut unindexed_bytes = 0;
    for s in &unindexed {
        let (n, d) = read_whole(&s.path)?;
        unindexed_bytes += n;
        direct &= d;
    }
    let unindexed_read_ms = secs_ms(read_started.elapsed());

    let log = c.log(node);
    let log_from = cluster_proc::file_len(&log);
    let outside = start_and_probe(c, node, "", timeout_s)?;
    let node_phases = node_phases(&log, log_from)?;
    let target_ms = round1(READY_BUDGET_MS + unindexed_read_ms);
    Ok(Restart {
        wal_bytes,
        unindexed_files: unindexed.len(),
        unindexed_bytes,
        unindexed_read_ms,
        unindexed_read_direct: direct,
        kill_ms,
        process_ms: outside.process_ms,
        health_ms: outside.health_ms,
        ready_ms: outside.ready_ms,
        node: node_phases,
        target_ms,
        met: outside.ready_ms <= target_ms,
    })
}

/// Reads the node's phase lines logged since byte `from` of its log, waiting (bounded) for
/// the final `caught_up: node ready` line.
fn node_phases(log: &Path, from: u64) -> Result<NodePhases> {
    let deadline = Instant::now() + READY_LINE_WAIT;
    let events = loop {
        let events = cluster_proc::log_events(log, from)?;
        let done = events
            .iter()
            .any(|e| e.message.starts_with("caught_up: node ready"));
        if done || Instant::now() >= deadline {
            break events;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let u = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
    let mut p = NodePhases::default();
    let start_at = events
        .iter()
        .find(|e| e.message.starts_with("starting tern"))
        .and_then(|e| e.at_ms);
    for e in &events {
        let (message, f) = (&e.message, &e.fields);
        if message.starts_with("group started") {
            if let (Some(from), Some(at)) = (start_at, e.at_ms) {
                let ms = cluster_proc::ms_between(from, at) as u64;
                p.groups_initialised_ms = p.groups_initialised_ms.max(Some(ms));
            }
        } else if message.starts_with("replay: shard recovered") {
            p.shard_replay_ms_max = p.shard_replay_ms_max.max(u(f, "elapsed_ms"));
            p.replayed_bytes += u(f, "bytes").unwrap_or(0);
            p.replayed_records += u(f, "records").unwrap_or(0);
            p.segments += u(f, "segments").unwrap_or(0);
            p.rebuilt_indexes += u(f, "rebuilt_indexes").unwrap_or(0);
            p.groups += u(f, "groups").unwrap_or(0);
        } else if message.starts_with("caught_up: every shard recovered") {
            p.replay_ms = u(f, "replay_ms");
        } else if message.starts_with("caught_up: group applied") {
            if let (Some(from), Some(at)) = (start_at, e.at_ms) {
                let ms = Some(cluster_proc::ms_between(from, at) as u64);
                p.first_group_caught_up_ms = p.first_group_caught_up_ms.or(ms).min(ms);
                p.last_group_caught_up_ms = p.last_group_caught_up_ms.max(ms);
            }
        } else if message.starts_with("caught_up: node ready") {
            p.catch_up_ms = u(f, "catch_up_ms");
            // The value the node split its phases at (the same as the earlier line's, read
            // at the same moment; this one is what catch_up_ms was computed from).
            p.replay_ms = u(f, "replay_ms").or(p.replay_ms);
            p.total_ms = u(f, "total_ms");
        }
    }
    Ok(p)
}

struct Segment {
    path: PathBuf,
    bytes: u64,
    /// A sealed index `<id>.idx` sits beside it (docs/format.md), so recovery need not scan it.
    indexed: bool,
}

/// The WAL segment files of every shard of a data directory.
fn segment_files(data: &Path) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(data).map_err(|e| BenchError::io(data, e))?;
    for shard in entries.flatten() {
        let is_shard = shard.file_name().to_string_lossy().starts_with("shard-");
        if !is_shard || !shard.path().is_dir() {
            continue;
        }
        let dir = shard.path();
        let files = std::fs::read_dir(&dir).map_err(|e| BenchError::io(&dir, e))?;
        for f in files.flatten() {
            let path = f.path();
            if path.extension().is_some_and(|e| e == "wal") {
                let bytes = f.metadata().map_err(|e| BenchError::io(&path, e))?.len();
                let indexed = path.with_extension("idx").is_file();
                out.push(Segment {
                    path,
                    bytes,
                    indexed,
                });
            }
        }
    }
    Ok(out)
}

/// Reads a whole file, with O_DIRECT when the file system allows it (as the engine reads
/// segments), so the time is the device's and not the page cache's. Returns (bytes, direct).
fn read_whole(path: &Path) -> Result<(u64, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let (mut file, is_direct) = match direct {
        Ok(f) => (f, true),
        Err(_) => (
            File::open(path).map_err(|e| BenchError::io(path, e))?,
            false,
        ),
    };
    let mut buf = vec![0u8; READ_CHUNK + DIRECT_ALIGN];
    let skew = buf.as_ptr().align_offset(DIRECT_ALIGN);
    let chunk = &mut buf[skew..skew + READ_CHUNK];
    let mut total = 0u64;
    // Bounded by the file's length: every read returns fewer bytes only at its end.
    loop {
        let n = file.read(chunk).map_err(|e| BenchError::io(path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok((total, is_direct))
}

/// A topic of --many-partitions partitions, one batch in each, then the restart again. A
/// failure is the finding (where the node breaks), so it is reported, not raised.
fn many_partitions(c: &Cluster, admin: &mut Client, args: &RecoveryArgs) -> ManyPartitions {
    let n = args.cluster.many_partitions;
    let mut m = ManyPartitions {
        partitions: n,
        create_ms: None,
        produce_probe: None,
        restart: None,
        error: None,
    };
    let started = Instant::now();
    if let Err(e) = admin.create_topic(MANY_TOPIC, n as i32, 3) {
        m.error = Some(format!("creating the topic: {e}"));
        return m;
    }
    m.create_ms = Some(secs_ms(started.elapsed()));
    match probe(c, n, args) {
        Ok(p) => m.produce_probe = Some(p),
        Err(e) => {
            m.error = Some(format!("producing to the new partitions: {e}"));
            return m;
        }
    }
    match restart(c, NODE, args.cluster.start_timeout) {
        Ok(r) => m.restart = Some(r),
        Err(e) => m.error = Some(format!("restart: {e}")),
    }
    m
}

/// One batch to each of PROBE_PARTITIONS partitions of MANY_TOPIC, spread evenly, timed.
fn probe(c: &Cluster, partitions: u32, args: &RecoveryArgs) -> Result<Probe> {
    let mut producer = Producer::new(connect(c)?, Acks::All, true)?;
    let value = vec![0x5a_u8; args.record_bytes];
    let values: Vec<&[u8]> = vec![value.as_slice(); args.cluster.batch_records];
    let batches = PROBE_PARTITIONS.min(partitions);
    let (mut sum, mut max) = (0.0, 0.0_f64);
    for k in 0..batches {
        let p = (k as u64 * partitions as u64 / batches as u64) as i32;
        let started = Instant::now();
        producer.send(MANY_TOPIC, p, &values)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        sum += ms;
        max = max.max(ms);
    }
    Ok(Probe {
        batches,
        mean_ms: round1(sum / batches.max(1) as f64),
        max_ms: round1(max),
    })
}

/// Produce load on the load topic for --load-seconds (closed loop, acks=all): p99 etc.
fn load(c: &Cluster, args: &RecoveryArgs) -> Result<LatencyUs> {
    let a = &args.cluster;
    let schedule = Schedule {
        workers: a.producers,
        warmup: Duration::ZERO,
        duration: Duration::from_secs_f64(a.load_seconds),
        rate: None,
    };
    let partitions: Vec<i32> = (0..a.partitions as i32).collect();
    let totals = thread_load::run(schedule, |w| {
        let producer = Producer::new(connect(c)?, Acks::All, true)?;
        // This worker's partitions: w, w + producers, ... (at least one).
        let mine: Vec<i32> = partitions
            .iter()
            .copied()
            .skip(w % partitions.len())
            .step_by(a.producers)
            .collect();
        Ok(ProduceOp::new(
            producer,
            LOAD_TOPIC,
            vec![vec![0x5a; args.record_bytes]; a.batch_records],
            mine,
        ))
    })?;
    Ok(LatencyUs::from_ns(&totals.latency_ns))
}

/// fio's sequential write bandwidth (bytes/s, 1 MiB O_DIRECT writes + fsync) in `dir`; None
/// when fio is not installed or fails (the report says so by the missing figure).
fn fio_write_bandwidth(dir: &Path) -> Option<f64> {
    let file = dir.join("fio-rebuild.tmp");
    let out = Command::new("fio")
        .arg("--name=rebuild-disk")
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--size={FIO_BYTES}"))
        .args([
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--ioengine=psync",
            "--end_fsync=1",
            "--output-format=json",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&file);
    let out = out.ok().filter(|o| o.status.success())?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("jobs")?
        .get(0)?
        .get("write")?
        .get("bw_bytes")?
        .as_f64()
}

/// Wipes node 2 and starts it with `--rebuild`, timing it to `/ready` under produce load.
fn rebuild(c: &Cluster, args: &RecoveryArgs) -> Result<Rebuild> {
    let a = &args.cluster;
    let load_before = load(c, args)?;
    let fio = fio_write_bandwidth(c.data(1).parent().unwrap_or(Path::new(".")));
    let node = NODE.to_string();
    c.script(&["kill", &node])?;
    c.script(&["wipe", &node])?;
    let (outside, load_during) = thread::scope(|scope| {
        let during = scope.spawn(|| load(c, args));
        let outside = start_and_probe(c, NODE, "--rebuild", a.start_timeout);
        let during = during
            .join()
            .unwrap_or_else(|_| Err(BenchError::Cluster("the load thread panicked".into())));
        (outside, during)
    });
    let outside = outside?;
    let load_during = load_during?;
    let metrics = cluster_proc::http_get(&c.http_addr(NODE), "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let transferred = cluster_proc::metric(
        &metrics,
        "tern_snapshot_transfer_bytes_total",
        Some("direction=\"in\""),
    );
    // The bytes node 2 received while rebuilding, counted by the node itself. A data
    // directory's size is no substitute: it counts preallocated segments, not data.
    let bytes = transferred.map(|b| b as u64).ok_or_else(|| {
        BenchError::Cluster(format!(
            "node {NODE}'s /metrics has no tern_snapshot_transfer_bytes_total{{direction=\"in\"}}: the rebuilt bytes are unknown"
        ))
    })?;
    let bytes_per_s = bytes as f64 / (outside.ready_ms / 1e3).max(1e-9);
    let limit = fio.map_or(a.recovery_budget as f64, |f| {
        f.min(a.recovery_budget as f64)
    });
    let ratio = round3(bytes_per_s / limit.max(1.0));
    Ok(Rebuild {
        bytes,
        ready_ms: outside.ready_ms,
        bytes_per_s: round1(bytes_per_s),
        fio_write_bytes_per_s: fio.map(round1),
        budget_bytes_per_s: a.recovery_budget,
        ratio,
        met: ratio >= REBUILD_TARGET_FRACTION,
        load_before,
        load_during,
    })
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |ms| format!("{ms:.0} ms"))
}

fn opt_u(v: Option<u64>) -> String {
    v.map_or("-".into(), |ms| format!("{ms} ms"))
}

fn print_restart(label: &str, r: &Restart) -> Result<()> {
    let n = &r.node;
    say!(
        "  {label:<13} node {NODE} after SIGKILL, {:.3} GiB of WAL, {} groups",
        r.wal_bytes as f64 / GIB,
        n.groups
    )?;
    say!(
        "    outside     kill {:.0} ms | start -> process {} -> /health 200 {} -> /ready 200 {:.0} ms",
        r.kill_ms,
        opt_ms(r.process_ms),
        opt_ms(r.health_ms),
        r.ready_ms
    )?;
    say!(
        "    node        replay {} (slowest shard {}; {:.3} GiB, {} records, {} segments, {} indexes rebuilt) | groups initialised {} | groups caught up {} .. {} | catch-up {} | total {}",
        opt_u(n.replay_ms),
        opt_u(n.shard_replay_ms_max),
        n.replayed_bytes as f64 / GIB,
        n.replayed_records,
        n.segments,
        n.rebuilt_indexes,
        opt_u(n.groups_initialised_ms),
        opt_u(n.first_group_caught_up_ms),
        opt_u(n.last_group_caught_up_ms),
        opt_u(n.catch_up_ms),
        opt_u(n.total_ms)
    )?;
    say!(
        "    target      < 1 s + reading the unindexed {} file(s) ({:.1} MiB, {:.0} ms{}) = {:.0} ms: ready in {:.0} ms, {}",
        r.unindexed_files,
        r.unindexed_bytes as f64 / (1u64 << 20) as f64,
        r.unindexed_read_ms,
        if r.unindexed_read_direct { ", O_DIRECT" } else { ", page cache" },
        r.target_ms,
        r.ready_ms,
        if r.met { "met" } else { "missed" }
    )?;
    Ok(())
}

fn print_repair(r: &Repair) -> Result<()> {
    say!(
        "  repair        entry {}/{} of node {NODE} ({} segment {}) damaged; detected by {}; repaired {} ms after detection ({:.0} ms after start); stop {:.0} ms, verify-data {:.0} ms: clean {} ({} repaired-entry); detection to clean verify-data {:.0} ms",
        r.group,
        r.index,
        if r.sealed { "sealed" } else { "open" },
        r.segment,
        r.detected_by,
        r.detect_to_repaired_ms,
        r.start_to_repaired_ms,
        r.stop_ms,
        r.verify_ms,
        r.verify_clean,
        r.repaired_warnings,
        r.detect_to_clean_ms
    )?;
    Ok(())
}

/// The entry to damage: (segment path, sealed, record offset, payload bytes, group, index).
type Victim = (PathBuf, bool, u64, u64, u64, u64);

/// A committed partition entry (group != 0, with a payload) of the stopped node's directory
/// with at least `LATER_BATCHES_MIN` batches after its own in the same segment (so a later
/// batch proves it durable, and it is not the tail). Segments no sealed index covers first.
fn repair_victim(c: &Cluster, node: u32) -> Result<Option<Victim>> {
    const LATER_BATCHES_MIN: usize = 3;
    let mut segments = segment_files(&c.data(node))?;
    segments.sort_by_key(|s| (s.indexed, s.path.clone()));
    for seg in segments {
        let out = c.tern(&[
            "dump",
            "--path",
            &seg.path.display().to_string(),
            "--json",
            "--preview-bytes",
            "0",
        ])?;
        let Ok(doc) = serde_json::from_slice::<Value>(&out.stdout) else {
            continue;
        };
        let Some(records) = doc["records"].as_array() else {
            continue;
        };
        let seqs: Vec<u64> = records
            .iter()
            .filter_map(|r| r["batch_seq"].as_u64())
            .collect();
        let entries: Vec<&Value> = records
            .iter()
            .filter(|r| {
                r["kind"] == "entry"
                    && r["group"].as_u64().is_some_and(|g| g != 0)
                    && r["payload_bytes"].as_u64().is_some_and(|b| b > 0)
                    && r["batch_seq"].as_u64().is_some_and(|b| {
                        let mut later: Vec<u64> = seqs.iter().copied().filter(|s| *s > b).collect();
                        later.dedup();
                        later.len() >= LATER_BATCHES_MIN
                    })
            })
            .collect();
        if let Some(r) = entries.get(entries.len() / 2) {
            let u = |k: &str| r[k].as_u64().unwrap_or(0);
            return Ok(Some((
                seg.path.clone(),
                seg.indexed,
                u("offset"),
                u("payload_bytes"),
                u("group"),
                u("index"),
            )));
        }
    }
    Ok(None)
}

/// Phase 3 (see the module's comment).
fn repair(c: &Cluster, timeout_s: u64) -> Result<Phase<Repair>> {
    let node = NODE.to_string();
    c.script(&["stop", &node])?;
    let Some((path, sealed, offset, payload_bytes, group, index)) = repair_victim(c, NODE)? else {
        c.script(&["start", &node])?;
        return Ok(Phase::Skipped {
            skipped: "no committed entry with later batches found on node 2".into(),
        });
    };
    flip_bit(&path, offset + 64 + payload_bytes / 2)?;
    let log = c.log(NODE);
    let log_from = cluster_proc::file_len(&log);
    let started = Instant::now();
    c.script(&["start", &node])?;
    let deadline = started + Duration::from_secs(timeout_s);
    // Bounded by `timeout_s`.
    let (detected, repaired, start_to_repaired_ms) = loop {
        let events = cluster_proc::log_events(&log, log_from)?;
        let detected = events
            .iter()
            .find(|e| e.message.starts_with("damaged entry detected"))
            .cloned();
        let repaired = events
            .iter()
            .find(|e| e.message.starts_with("entry repaired from peer"))
            .cloned();
        if let (Some(d), Some(r)) = (detected, repaired) {
            break (d, r, secs_ms(started.elapsed()));
        }
        if Instant::now() >= deadline {
            return Ok(Phase::Skipped {
                skipped: format!(
                    "node 2 logged no `entry repaired from peer` within {timeout_s} s (see {})",
                    log.display()
                ),
            });
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stop_started = Instant::now();
    c.script(&["stop", &node])?;
    let stop_ms = secs_ms(stop_started.elapsed());
    let verify_started = Instant::now();
    let out = c.tern(&[
        "verify-data",
        "--path",
        &c.data(NODE).display().to_string(),
        "--json",
    ])?;
    let verify_ms = secs_ms(verify_started.elapsed());
    let clean_at = time_of_day_now_ms();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let repaired_warnings = doc["warnings"].as_array().map_or(0, |w| {
        w.iter().filter(|p| p["code"] == "repaired-entry").count() as u64
    });
    let verify_clean = out.status.success() && doc["clean"] == true;
    c.script(&["start", &node])?;
    let detected_by = if detected.message.contains("found by recovery") {
        "recovery".to_string()
    } else {
        "a read".to_string()
    };
    Ok(Phase::Ran(Repair {
        segment: path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        offset,
        group,
        index,
        sealed,
        detected_by,
        start_to_repaired_ms,
        detect_to_repaired_ms: repaired
            .fields
            .get("took_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        stop_ms,
        verify_ms,
        detect_to_clean_ms: detected
            .at_ms
            .map_or(0.0, |d| round1(cluster_proc::ms_between(d, clean_at))),
        verify_clean,
        repaired_warnings,
    }))
}

/// The wall clock's time of day, ms (as the node's log timestamps, UTC).
fn time_of_day_now_ms() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_millis() % 86_400_000) as f64
}

/// Flips one bit of the byte at `at` of `path` and syncs it (the damage phase 3 repairs).
fn flip_bit(path: &Path, at: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| BenchError::io(path, e))?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)
        .map_err(|e| BenchError::io(path, e))?;
    b[0] ^= 0x10;
    f.write_all_at(&b, at)
        .map_err(|e| BenchError::io(path, e))?;
    f.sync_all().map_err(|e| BenchError::io(path, e))
}

fn print_rebuild(r: &Rebuild) -> Result<()> {
    say!(
        "  rebuild       node {NODE} wiped, --rebuild: ready in {:.0} ms, {:.1} MiB received at {:.1} MB/s",
        r.ready_ms,
        r.bytes as f64 / (1u64 << 20) as f64,
        r.bytes_per_s / 1e6
    )?;
    say!(
        "    target      >= {REBUILD_TARGET_FRACTION} x min(fio write {}, budget {:.1} MB/s): {:.2}, {}",
        r.fio_write_bytes_per_s
            .map_or("-".into(), |f| format!("{:.1} MB/s", f / 1e6)),
        r.budget_bytes_per_s as f64 / 1e6,
        r.ratio,
        if r.met { "met" } else { "missed" }
    )?;
    say!(
        "    produce before the rebuild:\n{}",
        latency_table(&r.load_before)
    )?;
    say!(
        "    produce during the rebuild:\n{}",
        latency_table(&r.load_during)
    )?;
    Ok(())
}
