//! `tern cluster …`: operations on a running cluster's layout. For now
//! `tern cluster transfer-leader` (membership changes, `add-node` and `remove-node`, are
//! described in docs/operations/node.md and not yet wired).

use clap::{Args, Subcommand};

use super::topics::print_json;
use super::{Out, ServerArgs};
use crate::error::{CliResult, EXIT_CLEAN};
use crate::Common;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Move the leadership of one partition to another of its replicas: the node becomes the
    /// partition's preferred leader, and the current leader hands over once it is caught up.
    /// Waits (up to --timeout-s) until the node leads.
    TransferLeader(TransferLeaderArgs),
}

#[derive(Args, Debug)]
pub struct TransferLeaderArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub partition: i32,
    /// Node id of the replica to lead.
    #[arg(long)]
    pub to: i32,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub common: Common,
}

impl ClusterArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            ClusterCommand::TransferLeader(a) => a.common.json,
        }
    }
}

pub fn run(a: ClusterArgs) -> CliResult<u8> {
    match a.command {
        ClusterCommand::TransferLeader(a) => transfer_leader(a),
    }
}

fn transfer_leader(a: TransferLeaderArgs) -> CliResult<u8> {
    let mut client = a.server.connect()?;
    client.transfer_leader(&a.topic, a.partition, a.to)?;
    if a.common.json {
        return print_json(&serde_json::json!({
            "topic": a.topic,
            "partition": a.partition,
            "leader": a.to,
        }));
    }
    let mut out = Out::new();
    out.line(&format!(
        "node {} leads {} partition {}",
        a.to, a.topic, a.partition
    ))?;
    out.flush()?;
    Ok(EXIT_CLEAN)
}
