//! Chunked, resumable snapshot transfer.
//!
//! The leader reads chunks of its current snapshot through `LogStorage::snapshot_chunk` and
//! sends one chunk at a time. The follower keeps the bytes received so far and answers each
//! chunk with the offset it wants next, so a transfer interrupted half way (lost chunk, leader
//! change, leader restart) resumes from the follower's offset rather than from zero, as long as
//! the snapshot is the same one (same index and term). A chunk without an answer within
//! `snapshot_retry_ticks` is sent again. After the last chunk the follower installs the
//! snapshot and, once it is persisted, acknowledges it with an `AppendResp` at its index.

use crate::message::SnapshotMeta;

/// Leader side: the transfer to one follower.
///
/// Invariant: `offset_acked <= meta.size_bytes`.
#[derive(Clone, Debug)]
pub struct SnapshotSend {
    pub index: u64,
    pub meta: SnapshotMeta,
    /// The follower holds the snapshot's bytes `[0, offset_acked)`.
    pub offset_acked: u64,
    /// A chunk is outstanding.
    pub chunk_in_flight: bool,
    pub ticks_since_send: u64,
}

impl SnapshotSend {
    pub fn new(meta: SnapshotMeta) -> Self {
        SnapshotSend {
            index: meta.index,
            meta,
            offset_acked: 0,
            chunk_in_flight: false,
            ticks_since_send: 0,
        }
    }

    /// Records the follower's answer. Returns whether a chunk should be sent now.
    pub fn on_ack(&mut self, next_offset: u64) -> bool {
        self.offset_acked = next_offset.min(self.meta.size_bytes);
        self.chunk_in_flight = false;
        self.offset_acked < self.meta.size_bytes
    }

    /// Counts a tick. Returns whether the outstanding chunk should be sent again.
    pub fn tick(&mut self, retry_ticks: u64) -> bool {
        self.ticks_since_send += 1;
        if self.ticks_since_send >= retry_ticks {
            self.chunk_in_flight = false;
            return true;
        }
        false
    }
}

/// Follower side: the snapshot being received.
///
/// Invariant: `data.len() as u64 <= meta.size_bytes`.
#[derive(Clone, Debug)]
pub struct SnapshotRecv {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// What a follower does with a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Ask the leader to continue from this offset.
    Continue(u64),
    /// All bytes are here: install.
    Complete,
}

impl SnapshotRecv {
    /// Accepts the chunk at `offset` of the snapshot `meta` into `slot`, replacing a transfer of
    /// a different snapshot. Out-of-order, duplicate and gap chunks answer with the offset the
    /// follower needs, which is how a transfer resumes.
    pub fn accept(
        slot: &mut Option<SnapshotRecv>,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> ChunkOutcome {
        let same = slot
            .as_ref()
            .is_some_and(|r| r.meta.index == meta.index && r.meta.term == meta.term);
        if !same {
            *slot = None;
            if offset != 0 {
                return ChunkOutcome::Continue(0);
            }
            *slot = Some(SnapshotRecv {
                meta: meta.clone(),
                data: Vec::new(),
            });
        }
        let Some(recv) = slot.as_mut() else {
            return ChunkOutcome::Continue(0);
        };
        let have = recv.data.len() as u64;
        if offset == have && have + data.len() as u64 <= recv.meta.size_bytes {
            recv.data.extend_from_slice(data);
        }
        if recv.data.len() as u64 == recv.meta.size_bytes {
            ChunkOutcome::Complete
        } else {
            ChunkOutcome::Continue(recv.data.len() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64, size_bytes: u64) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term: 1,
            size_bytes,
            ..Default::default()
        }
    }

    #[test]
    fn receiver_resumes_from_its_offset_and_restarts_for_a_new_snapshot() {
        let mut slot = None;
        let m = meta(10, 6);
        assert_eq!(
            SnapshotRecv::accept(&mut slot, &m, 2, b"cd"),
            ChunkOutcome::Continue(0)
        );
        assert_eq!(
            SnapshotRecv::accept(&mut slot, &m, 0, b"ab"),
            ChunkOutcome::Continue(2)
        );
        assert_eq!(
            SnapshotRecv::accept(&mut slot, &m, 0, b"ab"),
            ChunkOutcome::Continue(2),
            "duplicate"
        );
        assert_eq!(
            SnapshotRecv::accept(&mut slot, &m, 4, b"ef"),
            ChunkOutcome::Continue(2),
            "gap"
        );
        assert_eq!(
            SnapshotRecv::accept(&mut slot, &m, 2, b"cd"),
            ChunkOutcome::Continue(4)
        );
        assert_eq!(
            SnapshotRecv::accept(&mut slot, &m, 4, b"ef"),
            ChunkOutcome::Complete
        );
        assert_eq!(
            slot.as_ref().map(|r| r.data.clone()),
            Some(b"abcdef".to_vec())
        );
        let newer = meta(20, 2);
        assert_eq!(
            SnapshotRecv::accept(&mut slot, &newer, 0, b"x"),
            ChunkOutcome::Continue(1)
        );
    }

    #[test]
    fn sender_retries_after_silence() {
        let mut send = SnapshotSend::new(meta(10, 6));
        send.chunk_in_flight = true;
        assert!(!send.tick(2));
        assert!(send.tick(2));
        assert!(!send.chunk_in_flight);
        assert!(send.on_ack(4));
        assert!(!send.on_ack(6));
    }
}
