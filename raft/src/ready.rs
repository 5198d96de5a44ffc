//! `Ready`: everything the core asks its driver to do, and the order to do it in.

use crate::message::{Entry, HardState, Message, NodeId, Snapshot};

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

/// Why the core wants entries that storage could not read at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchPurpose {
    /// To build an AppendEntries for peer `to` (leader only).
    Replicate { to: NodeId },
    /// To hand committed entries to the application.
    Apply,
}

/// An asynchronous read the core asks of its driver, because `LogStorage::entries` (or
/// `term`) answered `Unavailable`: bring into storage's cache the term of entry `low - 1` and
/// entries `[low, high)` (at least the first, then as many as fit in about `bytes_max`; none
/// when `low == high`), so that `term` and `entries` answer for them, then call
/// `RawNode::on_entries_fetched(fetch)`. The core sends (or applies) at once
/// from there instead of waiting for a tick or a message. A fetch that never completes (the
/// read failed, the driver dropped it) is forgotten after `Config::fetch_retry_ticks`, and the
/// core asks again the next time it needs the entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryFetch {
    pub purpose: FetchPurpose,
    pub low: u64,
    pub high: u64,
    pub bytes_max: u64,
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
/// 6. Start the reads in `fetches` (independent of steps 1-5); as each completes, call
///    `RawNode::on_entries_fetched` with it.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub messages: Vec<OutMessage>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub persist_ack: PersistAck,
    /// Entries to read asynchronously into storage's cache (see [`EntryFetch`]).
    pub fetches: Vec<EntryFetch>,
}

impl Ready {
    /// Whether step 2 has anything to write (if not, step 5 may run at once unless an earlier
    /// batch is still being persisted).
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }
}
