//! `tern`: the node binary and operator CLI. The offline commands below work on the data
//! directory of a stopped node; see docs/operations/recovery.md for the runbooks they carry
//! out.

mod commands;
mod error;
mod import_marker;
mod output;
mod progress;
mod target;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{CliError, EXIT_ERROR, EXIT_STDOUT_CLOSED};

const EXIT_CODES: &str = "\
Exit codes (every command):
  0  clean: nothing wrong was found, or the command did all it was asked
  1  problems found (verify-data, scan, dump, inspect-index, rebuild-index), or left
     unrepaired (repair: damage that needs --skip-corrupt, or a --dry-run with work to do)
  2  usage or I/O error, not a tern data directory, or the directory is locked by a
     running node (stop it first)
  3  online commands: the server cannot be reached or does not answer in time (is
     `tern serve` running? check --server)
  4  online commands: the server refused (unknown topic, topic exists, no leader after
     the retries, any other Kafka error; the message names it)
141  stdout was closed by its reader (`| head`): the command stopped quietly, as grep does

Commands that change a data directory take its LOCK file exclusively and refuse while a
node or another command holds it. Commands that only read (verify-data, scan, dump,
inspect-index, export-topic, repair --dry-run, rebuild-index --dry-run) take it shared, so
they run side by side; on a read-only file system without a LOCK file they take none and
say so. With --json each command prints one JSON document on stdout, errors included.
Online commands (create-topic, list-topics, delete-topic, produce, consume) talk to a
running node over the Kafka protocol (--server, default 127.0.0.1:9092); consume --json
prints one document per record. raft-info and cluster-status ask a node's HTTP endpoint
(--http, default 127.0.0.1:9090). Runbooks: docs/operations/recovery.md";

/// tern: a thread-per-core, io_uring-based, Raft-replicated log store.
#[derive(Parser, Debug)]
#[command(name = "tern", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct Common {
    /// Print one JSON document on stdout instead of text (no progress bars).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check every segment, record checksum and header, every sealed index against the data,
    /// the seal chain, each group's log and hard state. Each problem names file, offset,
    /// shard, group and index.
    #[command(after_help = EXIT_CODES)]
    VerifyData(commands::verify::VerifyArgs),
    /// Scan one segment: record count, index range per group, the last valid offset, and
    /// (with --verbose) the checksum status of every record.
    #[command(after_help = EXIT_CODES)]
    Scan(commands::segment::ScanArgs),
    /// Print records (header fields and a payload preview) of a data directory or segment.
    #[command(after_help = EXIT_CODES)]
    Dump(commands::dump::DumpArgs),
    /// Truncate a torn tail to the last valid record; with --skip-corrupt also cut corrupt
    /// records out of the middle, listing every loss. Removed bytes go to
    /// DIR/quarantine/<time>-repair/ (with a MANIFEST) first.
    #[command(after_help = EXIT_CODES)]
    Repair(commands::repair::RepairArgs),
    /// Rebuild missing, corrupt or stale sealed-segment indexes by scanning the segments.
    #[command(after_help = EXIT_CODES)]
    RebuildIndex(commands::repair::RebuildIndexArgs),
    /// Decode one sealed-segment index file and compare it with its segment.
    #[command(after_help = EXIT_CODES)]
    InspectIndex(commands::repair::InspectIndexArgs),
    /// Export one topic (until topics exist: one Raft group, named by its id) to a
    /// versioned, checksummed file (docs/export-format.md).
    #[command(after_help = EXIT_CODES)]
    ExportTopic(commands::topic::ExportArgs),
    /// Import a file written by export-topic into a data directory (created if missing or
    /// empty), through the engine's own write path.
    #[command(after_help = EXIT_CODES)]
    ImportTopic(commands::import::ImportArgs),
    /// Write a practice data directory through the real engine (for runbook drills and tests).
    #[command(after_help = EXIT_CODES)]
    Generate(commands::generate::GenerateArgs),
    /// Create a topic on a running node (online).
    #[command(after_help = EXIT_CODES)]
    CreateTopic(commands::online::topics::CreateTopicArgs),
    /// List the nodes, topics and partitions (with leaders) of a running cluster (online).
    #[command(after_help = EXIT_CODES)]
    ListTopics(commands::online::topics::ListTopicsArgs),
    /// Delete a topic and its data on a running cluster (online).
    #[command(after_help = EXIT_CODES)]
    DeleteTopic(commands::online::topics::DeleteTopicArgs),
    /// Append each line of stdin (or --file) as a record to a topic's partition (online).
    #[command(after_help = EXIT_CODES)]
    Produce(commands::online::produce::ProduceArgs),
    /// Print the records of a topic's partition from an offset; --follow waits for more
    /// (online).
    #[command(after_help = EXIT_CODES)]
    Consume(commands::online::consume::ConsumeArgs),
    /// Per Raft group on one node: term, vote, commit, applied, last index, role, leader,
    /// voters and learners (online, over the node's HTTP endpoint --http).
    #[command(after_help = EXIT_CODES)]
    RaftInfo(commands::online::status::RaftInfoArgs),
    /// Members with their addresses and health, topics, who leads each partition and each
    /// replica's lag, as one node knows them (online, over its HTTP endpoint --http).
    #[command(after_help = EXIT_CODES)]
    ClusterStatus(commands::online::status::ClusterStatusArgs),
    /// Change the layout of a running cluster: `tern cluster transfer-leader` (online).
    #[command(after_help = EXIT_CODES)]
    Cluster(commands::online::cluster::ClusterArgs),
    /// Run the node (defaults: a standalone single-node cluster on ./tern-data). Partial
    /// for now: see the status below.
    #[command(after_help = commands::serve::SERVE_HELP)]
    Serve(tern::node::config::ServeFlags),
}

/// Engine warnings (a torn tail cut, an index rebuilt, a chain record created) go to stderr
/// while `import-topic` and `generate` run the engine; `RUST_LOG` sets the level (default
/// `warn`). Colours only on a terminal, so logs and redirected stderr stay plain text.
fn install_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Only this function sets the global subscriber; were one set already, keep it.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if !matches!(cli.command, Command::Serve(_)) {
        // `tern serve` installs its own (text or JSON, from its configuration).
        install_tracing();
    }
    let json = match &cli.command {
        Command::VerifyData(a) => a.common.json,
        Command::Scan(a) => a.common.json,
        Command::Dump(a) => a.common.json,
        Command::Repair(a) => a.common.json,
        Command::RebuildIndex(a) => a.common.json,
        Command::InspectIndex(a) => a.common.json,
        Command::ExportTopic(a) => a.common.json,
        Command::ImportTopic(a) => a.common.json,
        Command::Generate(a) => a.common.json,
        Command::CreateTopic(a) => a.common.json,
        Command::ListTopics(a) => a.common.json,
        Command::DeleteTopic(a) => a.common.json,
        Command::Produce(a) => a.common.json,
        Command::Consume(a) => a.common.json,
        Command::RaftInfo(a) => a.common.json,
        Command::ClusterStatus(a) => a.common.json,
        Command::Cluster(a) => a.json(),
        // serve logs instead of printing one result.
        Command::Serve(_) => false,
    };
    let result = match cli.command {
        Command::VerifyData(a) => commands::verify::run(a),
        Command::Scan(a) => commands::segment::scan(a),
        Command::Dump(a) => commands::dump::run(a),
        Command::Repair(a) => commands::repair::repair(a),
        Command::RebuildIndex(a) => commands::repair::rebuild_index(a),
        Command::InspectIndex(a) => commands::repair::inspect_index(a),
        Command::ExportTopic(a) => commands::topic::export(a),
        Command::ImportTopic(a) => commands::import::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::CreateTopic(a) => commands::online::topics::create(a),
        Command::ListTopics(a) => commands::online::topics::list(a),
        Command::DeleteTopic(a) => commands::online::topics::delete(a),
        Command::Produce(a) => commands::online::produce::run(a),
        Command::Consume(a) => commands::online::consume::run(a),
        Command::RaftInfo(a) => commands::online::status::raft_info(a),
        Command::ClusterStatus(a) => commands::online::status::cluster_status(a),
        Command::Cluster(a) => commands::online::cluster::run(a),
        Command::Serve(flags) => return ExitCode::from(commands::serve::run(flags)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(CliError::StdoutClosed) => ExitCode::from(EXIT_STDOUT_CLOSED),
        Err(e) => {
            report_error(&e, json);
            ExitCode::from(e.exit_code())
        }
    }
}

fn report_error(e: &CliError, json: bool) {
    eprintln!("error: {e}");
    if json {
        let doc = serde_json::json!({ "error": e.to_string(), "exit_code": e.exit_code() });
        // Nothing more to do if stdout is gone as well: the message is on stderr.
        let _ = say!("{doc}");
    }
}

/// A command line the parser refused: clap's message on stderr, and with `--json` anywhere
/// on the line also the same JSON error document every command prints (scripts parse stdout
/// whatever went wrong). Help and version requests print as usual.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os().any(|a| a == "--json");
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !json {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { 0 });
    }
    let _ = e.print();
    // The message without the usage lines that follow it, on one line.
    let text = e.render().to_string();
    let message = text.split("\n\n").next().unwrap_or_default();
    let message: Vec<&str> = message.split_whitespace().collect();
    let message = message.join(" ");
    let first = message.strip_prefix("error: ").unwrap_or(&message);
    let doc = serde_json::json!({ "error": first, "exit_code": EXIT_ERROR });
    let _ = say!("{doc}");
    ExitCode::from(EXIT_ERROR)
}
