//! `tern serve`: a thin shell over `tern::node` (flags → config → logging → run).

use std::io::IsTerminal;

use tern::node::config::{LogFormat, NodeConfig, ServeFlags};
use tern::node::serve::{self, EXIT_REFUSED, EXIT_STOPPED};

pub const SERVE_HELP: &str = "\
With no arguments: a standalone single-node cluster on ./tern-data, Kafka clients on
127.0.0.1:9092, peers on 127.0.0.1:9093. With --peers: a member of a multi-node cluster
(--bootstrap when creating it; scripts/cluster.sh does). Kafka APIs: docs/clients.md.

Exit codes:
  0  stopped cleanly after SIGTERM/SIGINT
  1  failed while recovering or running (WAL damage the recovery mode refuses, fsync
     error): see the log and docs/operations/recovery.md
  2  refused to start: bad configuration (the key is named), identity mismatch, admission
     refused, or the data directory is locked by another process
  3  the stop outlived shutdown_timeout, or a second signal came: exited without the clean
     close (crash-safe: the next start replays the WAL)

Log lines start with a stable word: identity, admission, recovery, replay, caught_up,
shutdown. Keys and defaults: docs/configuration.md. Runbook: docs/operations/node.md";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to files stay greppable.
        .with_ansi(std::io::stderr().is_terminal());
    // A subscriber already set (tests running in-process) is fine: keep it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Returns the process exit code.
pub fn run(flags: ServeFlags) -> u8 {
    let cfg = match NodeConfig::load(&flags) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_REFUSED;
        }
    };
    init_logging(cfg.log_format);
    match serve::run(&cfg) {
        Ok(()) => EXIT_STOPPED,
        // serve::run logged the error (also in JSON, for log shippers).
        Err(e) => e.exit_code(),
    }
}
