//! What a message from a peer must satisfy before the core acts on it.
//!
//! Messages come from other processes over the network: a bug, a version mix-up, a corrupted
//! frame that passed its checksum, or a misrouted connection can deliver a message whose
//! fields contradict each other. The core must neither panic on it nor let it corrupt its log,
//! so [`RawNode::step`](crate::RawNode::step) refuses such a message with a [`StepError`] and
//! changes nothing.
//!
//! Two kinds of checks:
//! - [`check_message`]: rules that hold for every message a correct peer sends, whatever the
//!   receiver's state (entries contiguous after `prev_index`, terms not going backwards, a
//!   snapshot chunk inside its snapshot, ...). The transport may call it itself, before
//!   routing, so that these rules are written once.
//! - Checks against the receiver's state, done by `step` where the state is at hand (an
//!   acknowledgement of an index the leader never had, a read sequence it never sent, a
//!   second leader in one term, ...).
//!
//! A message that is merely late (an older term, an answer to a request the node gave up on)
//! is not an error: Raft expects those and `step` handles them as it prescribes.

use crate::message::{ConfState, Entry, EntryKind, Message, MessageBody, NodeId, NO_NODE};

/// Terms above this are refused: no cluster reaches them (2^63 elections), and refusing them
/// keeps `term + 1` from overflowing anywhere in the core.
pub const TERM_MAX: u64 = u64::MAX >> 1;

/// Indexes above this are refused, for the same reason (`index + 1` never overflows).
pub const INDEX_MAX: u64 = u64::MAX >> 1;

/// Why `RawNode::step` refused a message. Nothing changed in the node. Except where noted, a
/// correct peer never sends such a message: the driver should log it with the peer's address
/// and count it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Addressed to node `to`, not to this one (misrouted).
    #[error("message addressed to node {to}")]
    WrongRecipient { to: NodeId },
    /// Sent from node id 0, which means "no node".
    #[error("message from node id 0")]
    FromNoNode,
    /// Claims to come from this node itself.
    #[error("message claims to come from this node")]
    FromSelf,
    /// A term or index beyond [`TERM_MAX`] / [`INDEX_MAX`].
    #[error("{what} {value} out of range")]
    OutOfRange { what: &'static str, value: u64 },
    /// The entries of an AppendEntries do not follow `prev_index` one by one.
    #[error("entries not contiguous: expected index {expected}, found {found}")]
    EntriesNotContiguous { expected: u64, found: u64 },
    /// An entry's term is below the term before it (or below `prev_term`): terms in a log
    /// never go backwards.
    #[error("entry {index} has term {term}, below the term {previous} before it")]
    EntryTermsGoBack {
        index: u64,
        term: u64,
        previous: u64,
    },
    /// A term in the message (an entry's, `prev_term`, a log's last term, a snapshot's) is above
    /// the sender's own term.
    #[error("{what} {term} is above the sender's term")]
    TermAboveSenderTerm { what: &'static str, term: u64 },
    /// Term 0 (which no entry has) where a real entry's term is needed, or a non-zero term at
    /// index 0.
    #[error("{what} at index {index}: term 0 only belongs to index 0")]
    TermZeroMismatch { what: &'static str, index: u64 },
    /// A configuration entry or snapshot configuration that does not decode or is empty.
    #[error("configuration at index {index} does not decode or is empty")]
    BadConfiguration { index: u64 },
    /// A rejection whose hint is above the rejected index.
    #[error("rejection hint {hint_index} above rejected index {index}")]
    HintAboveIndex { hint_index: u64, index: u64 },
    /// A snapshot chunk that does not fit inside its snapshot.
    #[error(
        "snapshot chunk at offset {offset} of {len} bytes past the snapshot's {size_bytes} bytes"
    )]
    SnapshotChunkPastSize {
        offset: u64,
        len: u64,
        size_bytes: u64,
    },
    /// A snapshot larger than `Config::snapshot_bytes_max`.
    #[error("snapshot of {size_bytes} bytes exceeds snapshot_bytes_max {max}")]
    SnapshotTooLarge { size_bytes: u64, max: u64 },
    /// A follower acknowledged (or rejected) an index this leader never had.
    #[error("answer about index {index} beyond the leader's last index {last_index}")]
    IndexBeyondLog { index: u64, last_index: u64 },
    /// A heartbeat answer confirms a read sequence this leader never sent.
    #[error("heartbeat answer confirms read sequence {read_seq}, only {sent} sent")]
    ReadSeqNeverSent { read_seq: u64, sent: u64 },
    /// A leader's message from a node that is not the leader this node knows in this term
    /// (two leaders in one term), or received by the leader itself.
    #[error("leader message in a term whose leader is node {leader}")]
    ConflictingLeader { leader: NodeId },
    /// `TimeoutNow` from a node that is not the leader this node knows in this term.
    #[error("TimeoutNow not from the leader")]
    TimeoutNowNotFromLeader,
    /// An answer to a read this node did not forward to that leader. A correct leader can
    /// cause this: the answer to a read this node forgot when its leader changed or when
    /// newer reads pushed it out (bounded by `pending_reads_max`); dropping it is harmless,
    /// the reader times out and retries.
    #[error("read index answer for unknown request {ctx}")]
    UnknownReadIndexResp { ctx: u64 },
}

impl StepError {
    /// Whether only a faulty (or misconfigured, or misrouting) peer sends such a message.
    /// `false` for the one refusal a correct peer can cause ([`StepError::UnknownReadIndexResp`]).
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, StepError::UnknownReadIndexResp { .. })
    }
}

/// The rules every message from a correct peer satisfies, whatever the receiver's state (see
/// the module docs). Does not look at `to`: the transport routes by it.
pub fn check_message(m: &Message) -> Result<(), StepError> {
    if m.from == NO_NODE {
        return Err(StepError::FromNoNode);
    }
    check_term(m.term, "message term")?;
    match &m.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            check_index(*commit, "commit")?;
            check_entries(*prev_index, *prev_term, entries, m.term)?;
        }
        MessageBody::AppendResp {
            index,
            reject,
            hint_index,
            hint_term,
        } => {
            check_index(*index, "index")?;
            if *reject && hint_index > index {
                return Err(StepError::HintAboveIndex {
                    hint_index: *hint_index,
                    index: *index,
                });
            }
            if *hint_term > m.term {
                return Err(StepError::TermAboveSenderTerm {
                    what: "hint_term",
                    term: *hint_term,
                });
            }
        }
        MessageBody::Heartbeat { commit, .. } => check_index(*commit, "commit")?,
        MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => {
            check_index(*last_index, "last_index")?;
            check_entry_term(*last_index, *last_term, "last_term")?;
            if *last_term > m.term {
                return Err(StepError::TermAboveSenderTerm {
                    what: "last_term",
                    term: *last_term,
                });
            }
        }
        MessageBody::Snapshot { meta, offset, data } => {
            check_index(meta.index, "snapshot index")?;
            check_entry_term(meta.index, meta.term, "snapshot term")?;
            if meta.term > m.term {
                return Err(StepError::TermAboveSenderTerm {
                    what: "snapshot term",
                    term: meta.term,
                });
            }
            if !conf_is_usable(Some(meta.conf.clone()).filter(ConfState::is_well_formed)) {
                return Err(StepError::BadConfiguration { index: meta.index });
            }
            let len = data.len() as u64;
            if offset
                .checked_add(len)
                .is_none_or(|end| end > meta.size_bytes)
            {
                return Err(StepError::SnapshotChunkPastSize {
                    offset: *offset,
                    len,
                    size_bytes: meta.size_bytes,
                });
            }
        }
        MessageBody::ReadIndexResp { index, .. } => check_index(*index, "read index")?,
        MessageBody::Rebuilding { last_index } => {
            check_index(*last_index, "rebuilding last index")?
        }
        MessageBody::HeartbeatResp { .. }
        | MessageBody::VoteResp { .. }
        | MessageBody::SnapshotResp { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. } => {}
    }
    Ok(())
}

/// The entries of an AppendEntries (or of a recovery chunk, `RawNode::append_committed`) as
/// a correct peer sends them: `prev_index` in range, entries numbered one by one after it,
/// terms real, never going backwards from `prev_term` and never above `term_max` (the
/// sender's term; `TERM_MAX` when the sender has none), configuration entries that decode.
pub fn check_entries(
    prev_index: u64,
    prev_term: u64,
    entries: &[Entry],
    term_max: u64,
) -> Result<(), StepError> {
    check_index(prev_index, "prev_index")?;
    check_entry_term(prev_index, prev_term, "prev_term")?;
    if prev_term > term_max {
        return Err(StepError::TermAboveSenderTerm {
            what: "prev_term",
            term: prev_term,
        });
    }
    let mut previous = prev_term;
    for (i, e) in entries.iter().enumerate() {
        let expected = prev_index
            .checked_add(i as u64 + 1)
            .filter(|x| *x <= INDEX_MAX)
            .ok_or(StepError::OutOfRange {
                what: "entry index",
                value: u64::MAX,
            })?;
        if e.index != expected {
            return Err(StepError::EntriesNotContiguous {
                expected,
                found: e.index,
            });
        }
        check_entry_term(e.index, e.term, "entry term")?;
        if e.term < previous {
            return Err(StepError::EntryTermsGoBack {
                index: e.index,
                term: e.term,
                previous,
            });
        }
        if e.term > term_max {
            return Err(StepError::TermAboveSenderTerm {
                what: "entry term",
                term: e.term,
            });
        }
        if e.kind == EntryKind::ConfChange && !conf_is_usable(ConfState::decode(&e.data)) {
            return Err(StepError::BadConfiguration { index: e.index });
        }
        previous = e.term;
    }
    Ok(())
}

fn check_term(term: u64, what: &'static str) -> Result<(), StepError> {
    if term > TERM_MAX {
        return Err(StepError::OutOfRange { what, value: term });
    }
    Ok(())
}

pub(crate) fn check_index(index: u64, what: &'static str) -> Result<(), StepError> {
    if index > INDEX_MAX {
        return Err(StepError::OutOfRange { what, value: index });
    }
    Ok(())
}

/// Index 0 (before the first entry) has term 0 and every real entry a term of at least 1:
/// the core relies on it (term 0 matches nothing real).
fn check_entry_term(index: u64, term: u64, what: &'static str) -> Result<(), StepError> {
    if (index == 0) != (term == 0) {
        return Err(StepError::TermZeroMismatch { what, index });
    }
    Ok(())
}

/// A configuration the core can adopt: decodes, well formed, at least one voter.
fn conf_is_usable(conf: Option<ConfState>) -> bool {
    conf.is_some_and(|c| !c.voters.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Entry, SnapshotMeta};

    fn append(prev_index: u64, prev_term: u64, ents: &[(u64, u64)]) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 5,
            body: MessageBody::Append {
                prev_index,
                prev_term,
                entries: ents
                    .iter()
                    .map(|&(term, index)| Entry {
                        term,
                        index,
                        kind: EntryKind::Normal,
                        data: vec![],
                    })
                    .collect(),
                commit: 0,
            },
        }
    }

    #[test]
    fn append_entries_must_follow_prev_index_with_terms_not_going_back() {
        assert_eq!(check_message(&append(3, 2, &[(2, 4), (3, 5)])), Ok(()));
        assert_eq!(check_message(&append(0, 0, &[(1, 1)])), Ok(()));
        assert_eq!(
            check_message(&append(3, 2, &[(2, 5)])),
            Err(StepError::EntriesNotContiguous {
                expected: 4,
                found: 5
            })
        );
        assert!(matches!(
            check_message(&append(3, 2, &[(3, 4), (2, 5)])),
            Err(StepError::EntryTermsGoBack { index: 5, .. })
        ));
        assert!(matches!(
            check_message(&append(3, 3, &[(2, 4)])),
            Err(StepError::EntryTermsGoBack { index: 4, .. })
        ));
        assert!(matches!(
            check_message(&append(3, 2, &[(6, 4)])),
            Err(StepError::TermAboveSenderTerm { .. })
        ));
        assert!(matches!(
            check_message(&append(3, 0, &[])),
            Err(StepError::TermZeroMismatch { .. })
        ));
        assert!(matches!(
            check_message(&append(u64::MAX, 2, &[])),
            Err(StepError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_message(&append(INDEX_MAX, 2, &[(2, INDEX_MAX + 1)])),
            Err(StepError::OutOfRange { .. })
        ));
    }

    #[test]
    fn snapshot_chunk_must_fit_its_snapshot_and_carry_a_configuration() {
        let chunk = |offset: u64, len: usize, voters: &[u64]| Message {
            from: 1,
            to: 2,
            term: 5,
            body: MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 4,
                    conf: ConfState::with_voters(voters),
                    size_bytes: 8,
                },
                offset,
                data: vec![0; len],
            },
        };
        assert_eq!(check_message(&chunk(4, 4, &[1, 2])), Ok(()));
        assert!(matches!(
            check_message(&chunk(9, 0, &[1, 2])),
            Err(StepError::SnapshotChunkPastSize { .. })
        ));
        assert!(matches!(
            check_message(&chunk(u64::MAX, 1, &[1, 2])),
            Err(StepError::SnapshotChunkPastSize { .. })
        ));
        assert!(matches!(
            check_message(&chunk(0, 1, &[])),
            Err(StepError::BadConfiguration { .. })
        ));
    }

    #[test]
    fn sender_zero_hint_above_index_and_huge_terms_are_refused() {
        let mut m = append(0, 0, &[]);
        m.from = NO_NODE;
        assert_eq!(check_message(&m), Err(StepError::FromNoNode));
        m.from = 1;
        m.term = u64::MAX;
        assert!(matches!(
            check_message(&m),
            Err(StepError::OutOfRange { .. })
        ));
        let resp = Message {
            from: 2,
            to: 1,
            term: 5,
            body: MessageBody::AppendResp {
                index: 3,
                reject: true,
                hint_index: 4,
                hint_term: 1,
            },
        };
        assert!(matches!(
            check_message(&resp),
            Err(StepError::HintAboveIndex { .. })
        ));
    }
}
