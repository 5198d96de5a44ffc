//! tern-bench: latency, throughput and recovery-time benchmarks of the tern engine.
//!
//! `tern-bench wal` (no arguments) runs a ~11 s append benchmark on a temporary directory and
//! prints a latency/throughput table; `tern-bench recovery` writes N GiB, reopens the data
//! directory and times recovery with and without the sealed-segment indexes.
//! `tern-bench produce` loads a running node through the Kafka client; `tern-bench etcd` and
//! `tern-bench raft-engine` (cargo feature `raft-engine`) are the peers it is compared with,
//! and `tern-bench plot` draws their `--samples` as PNG charts.
//! `scripts/bench-all.sh` and `scripts/bench-produce.sh` run them side by side.
//! `scripts/bench-wal.sh` runs both next to fio baselines on the same file system.
//! Methodology: `docs/bench.md`.

mod cluster_proc;
mod data_dir;
mod error;
mod etcd_cmd;
mod load;
mod output;
mod plot_cmd;
mod produce_cmd;
#[cfg(feature = "raft-engine")]
mod raft_engine_cmd;
mod recovery_cluster;
mod recovery_cmd;
mod report;
mod samples;
mod thread_load;
mod wal_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tern_engine::{EngineConfig, WalConfig};

use crate::error::{BenchError, Result};

/// Benchmarks of the tern engine: WAL append latency and throughput, and recovery time.
///
/// Every run uses its own data directory (a fresh temporary one on a disk file system unless
/// --dir is given) and can print one JSON object (--json) instead of a table.
#[derive(Parser, Debug)]
#[command(name = "tern-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append 4 KiB records from concurrent appenders; print throughput and ack latency.
    ///
    /// Each appender is one Raft group placed on its shard by group id; it keeps up to
    /// --inflight appends queued and measures each from enqueue (closed loop) or from its
    /// intended send time (--rate, open loop) until the fdatasync covering it completes.
    /// With no arguments: 16 appenders x 4 in flight, 1 shard, 1 s warm-up + 10 s.
    Wal(WalArgs),
    /// Write N GiB, then reopen and time recovery with sealed-segment indexes and by scanning;
    /// with --cluster, time a node of a 3-node loopback cluster restarting, rebuilding and
    /// repairing instead.
    ///
    /// The data is written with indexes; the scan run reopens with use_sealed_index=false and
    /// ignores them. Page caches are dropped before each reopen when running as root (segments
    /// are read with O_DIRECT anyway). With --gib 0 and --dir D, times recovery of D as it is.
    Recovery(RecoveryArgs),
    /// Produce to a running node through tern's Kafka client; print records/s, MB/s and
    /// ack latency (closed loop, or open loop with --rate).
    ///
    /// Start a node first (`tern serve`); --create makes the topic. Latency is per batch,
    /// from send (closed loop) or from its intended send time (open loop) to the ack.
    Produce(produce_cmd::ProduceArgs),
    /// Put values into a running etcd cluster through its v3 JSON gateway, with the same load
    /// generator as `produce` (the peer baseline of a 3-node produce).
    Etcd(etcd_cmd::EtcdArgs),
    /// The raft-engine crate on `wal`'s workload shapes (N writers x K in flight run as N x K
    /// threads, sync writes). Built only with the cargo feature `raft-engine`.
    #[cfg(feature = "raft-engine")]
    RaftEngine(raft_engine_cmd::RaftEngineArgs),
    /// Draw PNG charts (latency CDF, throughput per second) of runs saved with --samples.
    Plot(plot_cmd::PlotArgs),
}

#[derive(Args, Debug, Clone)]
pub struct WalArgs {
    /// Payload bytes of each record (one record per append).
    #[arg(long, default_value_t = 4096)]
    pub record_bytes: usize,
    /// Concurrent appenders, one Raft group each (ids 1..=N, placed by tern's shard function).
    #[arg(long, default_value_t = 16)]
    pub appenders: u64,
    /// Appends each appender keeps queued and not yet durable.
    #[arg(long, default_value_t = 4)]
    pub inflight: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stop after this many appends in all (split evenly over the shards) instead of after
    /// --duration, and count every one of them (no warm-up): a fixed amount of work, for
    /// instruction counts under `valgrind --tool=callgrind`.
    #[arg(long, conflicts_with_all = ["duration", "warmup"])]
    pub appends: Option<u64>,
    /// Open loop: total appends per second over all appenders, on a fixed schedule; latency
    /// counts from each append's intended send time. Without it: closed loop, as fast as
    /// acknowledgements allow.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub samples: samples::SamplesArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RecoveryArgs {
    /// GiB of records to write before timing recovery (0: write nothing, time --dir as is)
    /// [default: 2; with --cluster 1, produced through the cluster with replication 3].
    #[arg(long)]
    pub gib: Option<f64>,
    /// Payload bytes of each record written.
    #[arg(long, default_value_t = 4096)]
    pub record_bytes: usize,
    /// Concurrent appenders (Raft groups) writing the data.
    #[arg(long, default_value_t = 64)]
    pub appenders: u64,
    /// Appends each appender keeps in flight while writing.
    #[arg(long, default_value_t = 16)]
    pub inflight: u64,
    /// Only time the run with indexes (skip the scan run).
    #[arg(long)]
    pub no_scan: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub cluster: recovery_cluster::ClusterArgs,
}

/// Engine settings; unset ones keep `WalConfig`'s defaults.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Shards (pinned executors, one WAL each); 0 = one per CPU. A data directory keeps the
    /// count it was created with.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Upper bound of one group-commit batch, e.g. 2MiB [default: 2MiB].
    #[arg(long, value_parser = parse_bytes)]
    pub batch_bytes_max: Option<u64>,
    /// How long a small batch may wait to fill, µs [default: 0].
    #[arg(long)]
    pub batch_delay_us: Option<u64>,
    /// Segment file size, e.g. 64MiB [default: 64MiB].
    #[arg(long, value_parser = parse_bytes)]
    pub segment_bytes: Option<u64>,
    /// Bytes accepted but not yet written before appenders wait [default: 4 x batch-bytes-max].
    #[arg(long, value_parser = parse_bytes)]
    pub pending_bytes_max: Option<u64>,
    /// Memory each shard reserves (and registers with io_uring) for I/O buffers, e.g. 64MiB
    /// [default: the engine's, 32MiB]. Batch and read buffers that fit come from it; the rest
    /// are allocated per batch. Registration needs `ulimit -l` of at least shards x this (or
    /// root); without it the arena is still used, unregistered.
    #[arg(long, value_parser = parse_bytes)]
    pub io_memory_bytes: Option<u64>,
    /// Batches written or being written and not yet durable, per shard [default: 2].
    #[arg(long)]
    pub batches_inflight: Option<usize>,
    /// Do not pin shard k to CPU k.
    #[arg(long)]
    pub no_pin: bool,
    /// Only fallocate new segments instead of zero-filling them ahead of time (see
    /// `WalConfig::prefill_segments`).
    #[arg(long)]
    pub no_prefill: bool,
    /// How each batch is made durable: `fdatasync` (write, then fdatasync) or `dsync` (one
    /// write through an O_DSYNC handle) [default: the engine's, fdatasync].
    #[arg(long)]
    pub wal_sync: Option<tern_engine::WalSync>,
}

#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Data directory (created if missing; must be empty or a tern data directory).
    /// Default: a fresh directory under $TMPDIR or /tmp (the current directory if that is
    /// tmpfs).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the data directory (e.g. to practise the operator CLI on it).
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object on one line instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl EngineArgs {
    pub fn config(&self) -> Result<EngineConfig> {
        let mut wal = WalConfig::default();
        if let Some(b) = self.batch_bytes_max {
            wal.batch_bytes_max = b;
            wal.pending_bytes_max = wal.pending_bytes_max.max(4 * b);
        }
        if let Some(p) = self.pending_bytes_max {
            wal.pending_bytes_max = p;
        }
        if let Some(us) = self.batch_delay_us {
            wal.batch_delay_max = Duration::from_micros(us);
        }
        if let Some(s) = self.segment_bytes {
            wal.segment_bytes = s;
        }
        wal.prefill_segments = !self.no_prefill;
        if let Some(n) = self.batches_inflight {
            wal.batches_inflight_max = n;
        }
        if let Some(sync) = self.wal_sync {
            wal.sync = sync;
        }
        let mut cfg = EngineConfig {
            pin_cpus: !self.no_pin,
            wal,
            ..EngineConfig::default()
        };
        if self.shards != 0 {
            cfg.shards = self.shards;
        }
        if let Some(m) = self.io_memory_bytes {
            cfg.io_memory_bytes = m as usize;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Parses a byte count: a plain number or one with a unit (`bytesize`: K, M, G are powers of
/// 1000; KiB, MiB, GiB powers of 1024).
fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?} is not a byte count ({e}; examples: 4096, 64KiB, 2MiB)"))
}

/// Checks the load-shaping arguments shared by both commands.
pub fn check_load(record_bytes: usize, appenders: u64, inflight: u64) -> Result<()> {
    if record_bytes == 0 {
        return Err(BenchError::Arg {
            arg: "record-bytes",
            why: "must be at least 1".into(),
        });
    }
    if appenders == 0 {
        return Err(BenchError::Arg {
            arg: "appenders",
            why: "must be at least 1".into(),
        });
    }
    if inflight == 0 {
        return Err(BenchError::Arg {
            arg: "inflight",
            why: "must be at least 1".into(),
        });
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // With --json anywhere on the line every error is also one JSON object on stdout, as
    // a result would be: scripts parse stdout whatever went wrong.
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            let informational = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if !e.use_stderr() || informational {
                return ExitCode::SUCCESS;
            }
            // The message without the usage lines that follow it, on one line.
            let text = e.render().to_string();
            let message = text.split("\n\n").next().unwrap_or_default();
            let message: Vec<&str> = message.split_whitespace().collect();
            let message = message.join(" ");
            let first = message.strip_prefix("error: ").unwrap_or(&message);
            json_error(
                json,
                first.strip_prefix("error: ").unwrap_or(first),
                EXIT_USAGE,
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command {
        Command::Wal(args) => wal_cmd::run(&args),
        Command::Recovery(args) if args.cluster.cluster => recovery_cluster::run(&args),
        Command::Recovery(args) => recovery_cmd::run(&args),
        Command::Produce(args) => produce_cmd::run(&args),
        Command::Etcd(args) => etcd_cmd::run(&args),
        #[cfg(feature = "raft-engine")]
        Command::RaftEngine(args) => raft_engine_cmd::run(&args),
        Command::Plot(args) => plot_cmd::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::StdoutClosed) => ExitCode::from(EXIT_STDOUT_CLOSED),
        Err(e) => {
            eprintln!("tern-bench: error: {e}");
            json_error(json, &e.to_string(), EXIT_FAILED);
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A run that failed (load, I/O, bad value).
const EXIT_FAILED: u8 = 1;
/// A command line the parser refused.
const EXIT_USAGE: u8 = 2;
/// stdout was closed by its reader: 128 + SIGPIPE, as a shell reports for `grep`.
const EXIT_STDOUT_CLOSED: u8 = 141;

fn json_error(json: bool, message: &str, code: u8) {
    if json {
        let doc = serde_json::json!({ "error": message, "exit_code": code });
        let _ = say!("{doc}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("2MiB"), Ok(2 << 20));
        assert_eq!(parse_bytes("2M"), Ok(2_000_000));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("2 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
    }

    #[test]
    fn wal_runs_with_no_arguments() {
        let cli = Cli::try_parse_from(["tern-bench", "wal"]).unwrap();
        let Command::Wal(args) = cli.command else {
            panic!("expected wal");
        };
        assert_eq!(args.record_bytes, 4096);
        assert_eq!(args.engine.shards, 1);
        args.engine.config().unwrap();
    }
}
