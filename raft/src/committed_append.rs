//! Why [`RawNode::append_committed`](crate::RawNode::append_committed) refused a chunk of
//! committed entries (docs/replication.md, section 4).
//!
//! The recovery stream hands a follower entries that a caught-up replica had committed. They
//! enter the log exactly as an AppendEntries would put them there, with one difference: the
//! sender vouches that every entry is committed, so an entry that contradicts one this member
//! has committed is not a leader change to follow but proof that one of the two logs is
//! corrupt ([`AppendCommittedError::Corrupt`]). Every refusal changes nothing.

use crate::log::StorageError;
use crate::validate::StepError;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendCommittedError {
    /// Only a follower takes streamed entries: a leader already holds every committed entry
    /// (Leader Completeness), and a candidate's log must not change under its vote requests.
    #[error("only a follower appends streamed entries")]
    NotFollower,
    /// The chunk breaks a rule every correct sender keeps (entries not numbered one by one
    /// after `prev_index`, terms going backwards, a configuration that does not decode).
    #[error("malformed chunk: {0}")]
    Malformed(StepError),
    /// An entry above the commit index the server sent with it: the server promised only
    /// committed entries.
    #[error("entry {index} is above the server's commit {server_commit}")]
    BeyondServerCommit { index: u64, server_commit: u64 },
    /// The chunk starts after the end of this log: ask again from `last_index + 1`.
    #[error("chunk after index {prev_index} leaves a gap after our last index {last_index}")]
    Gap { prev_index: u64, last_index: u64 },
    /// Our entry at `prev_index` has another term, and it is not committed here: our suffix
    /// from there is a deposed leader's. Ask again from our commit index + 1; that chunk
    /// replaces the suffix.
    #[error("our entry {prev_index} has term {ours}, the chunk expects {theirs}")]
    PrevMismatch {
        prev_index: u64,
        ours: u64,
        theirs: u64,
    },
    /// The chunk contradicts an entry committed here: two committed entries at one index
    /// cannot both exist, so this log or the server's is corrupt. Nothing was changed; the
    /// driver must not take entries from that server again without a repair.
    #[error("entry {index}: committed here with term {ours}, the chunk says term {theirs}")]
    Corrupt { index: u64, ours: u64, theirs: u64 },
    /// Storage could not answer (the entry could not be read now): retry later.
    #[error("raft storage: {0}")]
    Storage(StorageError),
}
