//! One Raft group hosted by a shard: the core, its log over the engine, and its state machine
//! (the controller's metadata, or a partition's offsets) with the produce requests waiting on
//! it.

use std::collections::BTreeMap;

use tern_engine::storage::Storage;
use tern_raft::{RawNode, Role};

use super::controller::{ControllerState, HostedGroup};
use super::log_store::EngineLog;
use super::partition::OffsetMap;
use super::producers::ProducerTable;
use super::requests::{Acks, ProduceReply, Reply, RequestError};

/// What a group's committed entries are applied to.
// Nearly every group is a partition (one controller per node): boxing the partition's state
// would add an indirection to every produce and fetch to save memory on one group.
#[allow(clippy::large_enum_variant)]
pub enum Machine {
    /// Group 0. Its state is rebuilt at start from its snapshot and the committed entries after
    /// it (the controller's log is small).
    Controller(Box<ControllerState>),
    /// A partition: its state is the log itself; applying only moves the high watermark and
    /// answers the producers. Offsets come from the end offsets kept per entry.
    Partition {
        hosted: HostedGroup,
        offsets: OffsetMap,
        /// Idempotent producers, derived from the entries written (see `producers`).
        producers: ProducerTable,
    },
}

/// A produce waiting for its entry to be durable enough for its `acks`.
pub struct PendingProduce {
    pub term: u64,
    pub base_offset: u64,
    pub acks: Acks,
    pub reply: Reply<ProduceReply>,
}

/// A controller request waiting for its command to be applied.
pub struct PendingCommand {
    pub term: u64,
    pub reply: futures_channel::oneshot::Sender<Result<super::controller::Outcome, RequestError>>,
}

pub struct Group<S: Storage> {
    pub raw: RawNode<EngineLog<S>>,
    pub machine: Machine,
    /// By Raft index.
    pub produces: BTreeMap<u64, PendingProduce>,
    pub commands: BTreeMap<u64, PendingCommand>,
    /// The role when the driver last looked, to notice leadership changes.
    pub last_role: Role,
    /// The next offset to stamp on a proposal while this node leads in `leader_term`, or None
    /// until it is computed from the offset map after becoming leader.
    pub next_offset: Option<(u64, u64)>,
    /// Set when the group stopped on an error it cannot get past (a damaged committed entry);
    /// it then neither steps nor proposes, and says why.
    pub halted: Option<String>,
    /// The highest index a compaction was planned up to (written in a round, maybe not yet
    /// durable: the log's snapshot point catches up when it is).
    pub compacted_to: u64,
}

impl<S: Storage> Group<S> {
    pub fn new(raw: RawNode<EngineLog<S>>, machine: Machine) -> Self {
        let last_role = raw.role();
        Group {
            raw,
            machine,
            produces: BTreeMap::new(),
            commands: BTreeMap::new(),
            last_role,
            next_offset: None,
            halted: None,
            compacted_to: 0,
        }
    }

    /// Answers every waiting request with `err` (leadership lost, group removed, shard
    /// failed). A produce may still commit under the next leader: the error says the outcome
    /// is unknown, as Kafka does, and an idempotent producer's retry is deduplicated.
    pub fn fail_pending(&mut self, err: RequestError) {
        for (_, p) in std::mem::take(&mut self.produces) {
            let _ = p.reply.send(Err(err.clone()));
        }
        for (_, c) in std::mem::take(&mut self.commands) {
            let _ = c.reply.send(Err(err.clone()));
        }
    }

    pub fn leader_hint(&self) -> RequestError {
        RequestError::NotLeader {
            leader: self.raw.leader(),
        }
    }
}
