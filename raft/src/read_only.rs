//! ReadIndex (Raft dissertation §6.4): linearizable reads without writing to the log.
//!
//! 1. The leader must have committed an entry of its current term (until then its commit index
//!    may be behind the cluster's); requests arriving earlier wait in `waiting_for_commit`.
//! 2. It records its commit index as the read index, tags the request with a fresh sequence
//!    number and sends a heartbeat carrying it.
//! 3. When a quorum (counting itself) has answered a heartbeat carrying that sequence or a later
//!    one, no other leader can have existed at that moment, so the read index is safe.
//!
//! A leader cut off from a quorum never gets step 3, so it never serves a stale read.

use std::collections::VecDeque;

use crate::message::NodeId;

/// A read waiting for quorum confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRead {
    pub seq: u64,
    pub index: u64,
    pub ctx: u64,
    /// Who asked: the leader itself or a follower that forwarded the request.
    pub from: NodeId,
}

/// Invariant: `pending` is sorted by `seq`; `seq` only grows within a term.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    pub seq: u64,
    pub pending: VecDeque<PendingRead>,
    /// (from, ctx) of requests that wait for the leader's first commit in its term.
    pub waiting_for_commit: Vec<(NodeId, u64)>,
}

impl ReadOnly {
    pub fn add(&mut self, index: u64, ctx: u64, from: NodeId) -> u64 {
        self.seq += 1;
        self.pending.push_back(PendingRead {
            seq: self.seq,
            index,
            ctx,
            from,
        });
        self.seq
    }

    /// Removes and returns every request whose sequence a quorum has confirmed.
    pub fn release(&mut self, confirmed_seq: u64) -> Vec<PendingRead> {
        let mut out = Vec::new();
        while self.pending.front().is_some_and(|r| r.seq <= confirmed_seq) {
            if let Some(r) = self.pending.pop_front() {
                out.push(r);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.pending.len() + self.waiting_for_commit.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        *self = ReadOnly::default();
    }
}
