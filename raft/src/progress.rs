//! What a leader knows about each follower, and the flow control of its AppendEntries.
//!
//! A follower is in one of three states:
//! - **Probe**: the leader does not know where the logs match; it sends one AppendEntries and
//!   waits for the answer (or the next heartbeat answer) before sending another.
//! - **Replicate**: the logs match up to `match_index`; the leader streams entries optimistically,
//!   bounded by the in-flight window (count and bytes).
//! - **Snapshot**: the entries the follower needs are compacted; the leader streams a snapshot
//!   in chunks (see `snapshot.rs`) and sends no entries until it is installed.

use std::collections::VecDeque;

use crate::snapshot::SnapshotSend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// The AppendEntries messages in flight to one follower, oldest first, as (last index, bytes).
///
/// Invariant: `count() <= count_max` after every `add` that `is_full` allowed, and `bytes` is
/// the sum of the bytes in `buf`. The buffer allocates only while messages are in flight.
#[derive(Clone, Debug, Default)]
pub struct Inflights {
    buf: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl Inflights {
    pub fn add(&mut self, last_index: u64, bytes: u64) {
        self.buf.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is `<= index` (the follower acknowledged it).
    pub fn free_to(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.buf.front() {
            if last > index {
                break;
            }
            self.bytes -= bytes;
            self.buf.pop_front();
        }
        if self.buf.is_empty() {
            self.buf = VecDeque::new();
        }
    }

    /// Frees the oldest message: a heartbeat answer proves the follower is alive, so the window
    /// must not stay closed forever if an acknowledgement was lost.
    pub fn free_first(&mut self) {
        if let Some((_, bytes)) = self.buf.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.buf = VecDeque::new();
        self.bytes = 0;
    }

    pub fn count(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_full(&self, count_max: usize, bytes_max: u64) -> bool {
        self.buf.len() >= count_max || self.bytes >= bytes_max
    }
}

/// The leader's view of one follower (or learner).
///
/// Invariant: `match_index < next_index`.
#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// In Probe: an AppendEntries is outstanding, wait for its answer.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The highest ReadIndex sequence this follower confirmed by answering a heartbeat.
    pub read_seq_acked: u64,
    pub inflights: Inflights,
    /// Present exactly when `state == Snapshot`.
    pub snapshot: Option<SnapshotSend>,
    /// Heartbeat answers in a row during which `match_index` did not move while the follower
    /// was behind. In Replicate, entries sent optimistically may all have been lost and no
    /// rejection will ever come: after [`STALL_HEARTBEATS_MAX`] the leader probes again.
    pub stalled_heartbeats: u8,
    match_at_heartbeat: u64,
    /// Ticks since the core asked its driver to fetch entries for this follower from disk
    /// (`Ready::fetches`), or `None`. While set, the leader does not read storage for this
    /// follower again; `RawNode::on_entries_fetched` clears it and sends at once.
    pub fetch_ticks: Option<u64>,
    /// The follower said it is being rebuilt (`MessageBody::Rebuilding`) this term. Its
    /// acknowledgements stop at the commit index, so in Probe an acknowledgement that teaches
    /// nothing is expected: the leader then waits for the next heartbeat answer to send again
    /// rather than resending at once (which would loop without end).
    pub rebuilding: bool,
}

/// See [`Progress::stalled_heartbeats`].
pub const STALL_HEARTBEATS_MAX: u8 = 2;

impl Progress {
    pub fn new(next_index: u64) -> Self {
        assert!(next_index >= 1);
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            read_seq_acked: 0,
            inflights: Inflights::default(),
            snapshot: None,
            stalled_heartbeats: 0,
            match_at_heartbeat: 0,
            fetch_ticks: None,
            rebuilding: false,
        }
    }

    /// Records a heartbeat answer; returns whether replication looks stalled (see
    /// [`Progress::stalled_heartbeats`]).
    pub fn on_heartbeat_resp(&mut self, last_index: u64) -> bool {
        if self.match_index < last_index && self.match_index == self.match_at_heartbeat {
            self.stalled_heartbeats = self.stalled_heartbeats.saturating_add(1);
        } else {
            self.stalled_heartbeats = 0;
        }
        self.match_at_heartbeat = self.match_index;
        self.stalled_heartbeats >= STALL_HEARTBEATS_MAX
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            // After a snapshot, the follower holds at least the snapshot's index.
            let snap_index = self.snapshot.as_ref().map_or(0, |s| s.index);
            self.next_index = self
                .next_index
                .max(self.match_index + 1)
                .max(snap_index + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.snapshot = None;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.snapshot = None;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_snapshot(&mut self, send: SnapshotSend) {
        self.state = ProgressState::Snapshot;
        self.snapshot = Some(send);
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// The follower lost its disk and is rebuilt (`MessageBody::Rebuilding`): its log ends at
    /// `last_index` (at most the leader's last index) and what it acknowledged beyond is gone.
    /// The one place `match_index` decreases: lowering it only delays commits.
    pub fn forget_after(&mut self, last_index: u64) {
        self.match_index = self.match_index.min(last_index);
        self.match_at_heartbeat = self.match_index;
        self.stalled_heartbeats = 0;
        self.state = ProgressState::Probe;
        self.snapshot = None;
        self.next_index = last_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
        self.rebuilding = true;
    }

    /// Records an acknowledgement of `index`. Returns whether it taught the leader anything.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// Handles a rejection of the AppendEntries whose `prev_index` was `rejected`. `hint` is
    /// the index to try next, already computed from the follower's hint. Returns false for a
    /// stale rejection (one that answers an older message).
    pub fn maybe_decrease_to(&mut self, rejected: u64, hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            // The logs diverge after `match_index`: fall back to probing from there.
            self.next_index = self.match_index + 1;
            self.become_probe();
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = rejected.min(hint + 1).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// No more AppendEntries may be sent to this follower for now.
    pub fn is_paused(&self, count_max: usize, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(count_max, bytes_max),
            ProgressState::Snapshot => true,
        }
    }

    /// Accounts for an AppendEntries just sent whose last entry is `last_index`.
    pub fn sent_entries(&mut self, last_index: Option<u64>, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next_index = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => unreachable!("no entries are sent while snapshotting"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_closes_by_count_and_bytes_and_reopens_on_ack() {
        let mut pr = Progress::new(1);
        pr.become_replicate();
        for i in 1..=3 {
            assert!(!pr.is_paused(3, 1000));
            pr.sent_entries(Some(i), 10);
        }
        assert!(pr.is_paused(3, 1000));
        assert!(!pr.is_paused(4, 1000));
        assert!(pr.is_paused(4, 30));
        pr.maybe_update(2);
        pr.inflights.free_to(2);
        assert_eq!((pr.inflights.count(), pr.inflights.bytes()), (1, 10));
        assert_eq!(pr.next_index, 4);
    }

    #[test]
    fn probe_backs_off_using_the_hint_but_never_below_match() {
        let mut pr = Progress::new(11);
        pr.match_index = 3;
        assert!(
            !pr.maybe_decrease_to(5, 0),
            "stale rejection of an older probe"
        );
        assert!(pr.maybe_decrease_to(10, 6));
        assert_eq!(pr.next_index, 7);
        assert!(pr.maybe_decrease_to(6, 0));
        assert_eq!(pr.next_index, 4);
    }
}
