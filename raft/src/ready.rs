//! `Ready`: everything the core asks its driver to do, and the order to do it in.

use crate::message::{Entry, HardState, Message, Snapshot};

/// A message to send, with the persistence rule that governs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutMessage {
    pub msg: Message,
    /// `true`: may leave at once, in parallel with the local fsync (a leader's AppendEntries
    /// and heartbeats, pre-votes, snapshot chunks). `false`: must not leave until everything
    /// in this `Ready` (and every earlier one) is durable, because it promises durable state:
    /// an acknowledgement of entries, a granted vote, a vote request (the candidate's own vote).
    pub before_persist: bool,
}

/// A confirmed ReadIndex request: once the state machine has applied `index`, a read issued
/// as request `ctx` may be served from it and is linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: u64,
}

/// What to report back through `RawNode::on_persisted` once a `Ready`'s writes are durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistAck {
    pub hard_state: Option<HardState>,
    /// (term, index) of the last entry written.
    pub entries: Option<(u64, u64)>,
    /// Index of the snapshot installed.
    pub snapshot: Option<u64>,
}

/// One batch of work. Process it in this order (see the crate docs for the whole loop):
///
/// 1. Send `messages` with `before_persist == true`.
/// 2. Persist, in this order and as one batch that becomes durable in order with earlier
///    batches: `snapshot` (replacing the log), `entries` (truncating any suffix they replace),
///    `hard_state`.
/// 3. Apply `committed_entries` in order (and `snapshot` to the state machine first, if any).
///    These are already durable locally, so this step need not wait for step 2.
/// 4. Serve `read_states` once the state machine has applied their index.
/// 5. When step 2 is durable: send the messages with `before_persist == false`, then call
///    `RawNode::on_persisted(persist_ack)`.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub messages: Vec<OutMessage>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub persist_ack: PersistAck,
}

impl Ready {
    /// Whether step 2 has anything to write (if not, step 5 may run at once unless an earlier
    /// batch is still being persisted).
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }
}
