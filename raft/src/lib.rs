//! tern-raft: a sans-IO Raft core and the deterministic simulator that hunts its bugs.
//!
//! The core never reads a clock, spawns a thread or touches a file or socket. The caller (one
//! shard, driving thousands of groups) feeds it inputs and carries out its outputs. The full
//! contract is in `docs/raft.md`; in short, for each group:
//!
//! 1. Feed inputs: [`RawNode::tick`] every tick (10 ms in tern), [`RawNode::step`] for every
//!    message from a peer, and local requests ([`RawNode::propose`],
//!    [`RawNode::propose_conf_change`], [`RawNode::read_index`], [`RawNode::transfer_leader`],
//!    [`RawNode::report_unreachable`], [`RawNode::report_snapshot_failed`]), and committed
//!    entries a follower pulled from a caught-up replica ([`RawNode::append_committed`]: the
//!    recovery stream; they come out in `Ready::entries` like appended ones).
//! 2. If [`RawNode::has_ready`], take a [`Ready`] with [`RawNode::ready`].
//! 3. Send at once the messages marked `before_persist` (the leader's AppendEntries leave in
//!    parallel with its own fsync).
//! 4. Persist, as one ordered batch: `snapshot`, then `entries`, then `hard_state`.
//! 5. Apply `committed_entries` (and install `snapshot` into the state machine first); they are
//!    already durable locally. Serve `read_states` once their index is applied.
//! 6. When the batch of step 4 is durable (batches complete in order): send the remaining
//!    messages, then call [`RawNode::on_persisted`] with the `Ready`'s `persist_ack`.
//! 7. Start the asynchronous reads in `fetches` (storage answered `Unavailable` for entries
//!    the core needed: older entries on disk, out of the cache). When one has filled storage's
//!    cache, call [`RawNode::on_entries_fetched`] with it: the core retries at once (the next
//!    `Ready` carries the AppendEntries, or the entries to apply) rather than on a later tick.
//!
//! Steps 4 and 6 may overlap with later rounds: the next `Ready` may be taken before the
//! previous batch is durable.
#![forbid(unsafe_code)]

pub mod committed_append;
pub mod config;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod raft;
pub mod read_only;
pub mod ready;
pub mod rebuild;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
pub mod storage;
pub mod validate;

pub use committed_append::AppendCommittedError;
pub use config::{Config, ConfigError};
pub use log::{LogStorage, StorageError};
pub use message::{
    ConfState, Entry, EntryKind, HardState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta,
    NO_NODE,
};
pub use raft::{ConfChange, Error, ProposeError, RawNode, Role, Status};
pub use ready::{EntryFetch, FetchPurpose, OutMessage, PersistAck, ReadState, Ready};
pub use storage::{MemStorage, SlowDisk};
pub use validate::{check_message, StepError};
