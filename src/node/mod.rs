//! The node: what `tern serve` runs. Reading order: [`config`] (settings and where they come
//! from) → [`identity`] (the data directory's NODE file) → [`bootstrap`] (may a new node
//! vote?) → [`controller`] (cluster metadata, group 0) → [`serve`] (start-up, the shards) →
//! [`stop`] (signals, a bounded shutdown).

pub mod bootstrap;
pub mod compaction;
pub mod config;
pub mod controller;
pub mod fetch_wait;
pub mod force_new_cluster;
pub mod group;
pub mod group_ledger;
pub mod http;
pub mod identity;
pub mod kafka;
pub mod leader_balance;
pub mod log_store;
pub mod meta_record;
pub mod node_reports;
pub mod offset_checkpoint;
pub mod partition;
pub mod planted;
pub mod producers;
pub mod rebuild;
pub mod records;
pub mod recovery_budget;
pub mod recovery_stream_rules;
pub mod repair;
pub mod replica_moves;
pub mod requests;
pub mod retention;
pub mod runtime;
pub mod serve;
pub mod shard;
pub mod snapshot_meta;
pub mod standalone;
pub mod stats;
pub mod stop;

/// Why a group could not start or had to stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("group {group}: damaged state: {what}")]
    Corrupt { group: u64, what: String },
    #[error("group {group}: raft refused to start: {what}")]
    Raft { group: u64, what: String },
    #[error("engine: {0}")]
    Engine(String),
    /// A read found entry `index` damaged (it is being repaired from peers).
    #[error("group {group}: entry {index} is damaged: {what}")]
    DamagedEntry {
        group: u64,
        index: u64,
        what: String,
    },
}

impl NodeError {
    /// An engine error, keeping the identity of a damaged entry so it can be repaired.
    pub fn from_engine(e: tern_engine::Error) -> Self {
        match repair::damaged_entry(&e) {
            Some((group, index)) => NodeError::DamagedEntry {
                group,
                index,
                what: e.to_string(),
            },
            None => NodeError::Engine(e.to_string()),
        }
    }
}

#[cfg(test)]
mod install_crash_tests;
#[cfg(test)]
mod shard_tests;
#[cfg(test)]
pub mod sim;
