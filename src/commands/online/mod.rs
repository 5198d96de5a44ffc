//! The online commands: they talk to a running node over the Kafka protocol through
//! `tern_net::kafka_client` (create-topic, list-topics, delete-topic, produce, consume), or
//! over the node's HTTP endpoints where Kafka has no request for it (raft-info,
//! cluster-status: [`status`], [`http_client`]).
//!
//! Exit codes (on top of the offline ones): 3 when the server cannot be reached or does not
//! answer in time, 4 when it answers with a refusal (unknown topic, topic exists, no leader
//! after the retries, any other Kafka error). A closed stdout (`| head`) ends a command
//! quietly with 0.

pub mod cluster;
pub mod consume;
pub mod http_client;
pub mod produce;
pub mod status;
pub mod topics;

use std::io::{self, Write};
use std::time::Duration;

use clap::Args;
use tern_net::kafka_client::{Client, ClientConfig, ClientError};

use crate::error::CliResult;

/// The server could not be reached, or did not answer in time.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The server answered with a refusal.
pub const EXIT_REFUSED: u8 = 4;

/// Where the node is and how long to wait for it.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Kafka address of any node of the cluster (HOST:PORT); the others are found from there.
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    pub server: String,
    /// Bound on connecting and on each request, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub timeout_s: u64,
}

impl ServerArgs {
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.server.clone());
        let timeout = Duration::from_secs(self.timeout_s.max(1));
        config.connect.client_id = "tern-cli".to_string();
        config.connect.connect_timeout = timeout;
        config.connect.request_timeout = timeout;
        config.server_timeout = timeout;
        config
    }

    pub fn connect(&self) -> CliResult<Client> {
        Ok(Client::connect(self.client_config())?)
    }
}

/// The exit code of a client error: see the module docs.
pub fn client_exit_code(e: &ClientError) -> u8 {
    if e.is_connection() {
        EXIT_UNREACHABLE
    } else {
        EXIT_REFUSED
    }
}

/// Writes to stdout; a closed stdout (the reader went away) is reported as `Ok(false)` so the
/// command ends quietly instead of failing.
pub struct Out {
    inner: io::BufWriter<io::Stdout>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            inner: io::BufWriter::new(io::stdout()),
        }
    }

    /// Writes `bytes`; false once the reader has gone.
    pub fn write(&mut self, bytes: &[u8]) -> CliResult<bool> {
        quiet_on_broken_pipe(self.inner.write_all(bytes))
    }

    pub fn line(&mut self, text: &str) -> CliResult<bool> {
        if !self.write(text.as_bytes())? {
            return Ok(false);
        }
        self.write(b"\n")
    }

    pub fn flush(&mut self) -> CliResult<bool> {
        quiet_on_broken_pipe(self.inner.flush())
    }
}

fn quiet_on_broken_pipe(r: io::Result<()>) -> CliResult<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(crate::error::CliError::io("<stdout>", e)),
    }
}
