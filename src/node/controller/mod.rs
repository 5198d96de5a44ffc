//! The controller: cluster metadata replicated in its own Raft group (group 0) on the
//! voters. It holds the members (node id → peer, Kafka and HTTP addresses), the topics (name,
//! UUID, partition count, replication factor, retention, read-only flag) and where each
//! partition's replicas are placed.
//!
//! Reading order: [`command`] (the Raft entry payloads and their encoding) → [`state`] (the
//! deterministic `apply`) → [`placement`] → [`snapshot`] → [`reconcile`] (what a node
//! hosts). Encodings are in docs/format.md, "Controller".
//!
//! **Group ids.** Group 0 is the controller. Partition groups get ids from a counter in the
//! state, starting at [`FIRST_PARTITION_GROUP`]: a topic of P partitions created when the
//! counter is at b gets groups b, b+1, …, b+P−1 (partition p → group b+p), recorded in the
//! state. Ids are never reused, so leftover data of a deleted partition can never be taken
//! for a new one's. The shard of a group is `tern_engine::shard_for_group(group, shards)`.

pub mod codec;
pub mod command;
pub mod offline;
pub mod placement;
pub mod reconcile;
pub mod snapshot;
pub mod state;

pub use codec::CodecError;
pub use command::{Command, Member, Retention, TopicSpec};
pub use reconcile::{desired_groups, plan, HostedGroup, ReconcilePlan};
pub use state::{ControllerState, Outcome, Partition, Rejection, ReplicaAdded, Topic};

/// The controller's own Raft group.
pub const CONTROLLER_GROUP: u64 = 0;
/// The first partition group id.
pub const FIRST_PARTITION_GROUP: u64 = 1;
/// Kafka's limit on topic names.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions of one topic, at most.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// Partitions in the cluster, at most: bounds the controller state (and its snapshot, about
/// 40 bytes per partition at RF 3) and the groups a node may have to host.
pub const PARTITIONS_MAX: u64 = 100_000;
/// Replicas of one partition, at most: more voters make every commit slower for little gain.
pub const REPLICATION_FACTOR_MAX: u8 = 7;
/// Cluster members, at most.
pub const MEMBERS_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// The caller applied out of order (or twice): a bug in the driver, reported rather than
    /// applied.
    #[error("controller: index {index} does not follow the applied index {applied}")]
    IndexNotAfterApplied { index: u64, applied: u64 },
    /// A committed entry that does not decode: the controller group must stop applying (its
    /// log is damaged or was written by a newer version) rather than skip it.
    #[error("controller: committed entry {index} does not decode: {source}")]
    Decode {
        index: u64,
        #[source]
        source: CodecError,
    },
}

#[cfg(test)]
mod tests;
