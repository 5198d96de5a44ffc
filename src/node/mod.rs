//! The node: what `tern serve` runs. Reading order: [`config`] (settings and where they come
//! from) → [`identity`] (the data directory's NODE file) → [`bootstrap`] (may a new node
//! vote?) → [`controller`] (cluster metadata, group 0) → [`serve`] (start-up, the shards) →
//! [`stop`] (signals, a bounded shutdown).

pub mod bootstrap;
pub mod compaction;
pub mod config;
pub mod controller;
pub mod fetch_wait;
pub mod group;
pub mod http;
pub mod identity;
pub mod kafka;
pub mod leader_balance;
pub mod log_store;
pub mod partition;
pub mod planted;
pub mod producers;
pub mod records;
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
}

#[cfg(test)]
mod shard_tests;
#[cfg(test)]
pub mod sim;
