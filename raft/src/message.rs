//! Log entries, persistent state and the messages Raft peers exchange.
//!
//! The persisted types ([`Entry`], [`HardState`], [`SnapshotMeta`]) are plain data so that the
//! engine can store them per group as `(term, index, payload)` and `(term, vote, commit)`.

/// A node's identity inside one Raft group. `0` is reserved for "nobody" ([`NO_NODE`]).
pub type NodeId = u64;

/// "No node": no vote cast, no leader known.
pub const NO_NODE: NodeId = 0;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data (or an empty no-op appended by a new leader).
    Normal,
    /// A complete [`ConfState`] encoded with [`ConfState::encode`]; takes effect when applied.
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

/// Fixed per-entry overhead used when counting bytes for flow control.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// The size used by flow control and batching limits.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The state that must be durable before certain messages leave (see `Ready`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: u64,
    /// Who this node voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    pub commit: u64,
}

/// A group's membership. `voters_outgoing` is non-empty only in a joint configuration
/// (C_old,new), where every decision needs a majority of `voters` AND of `voters_outgoing`.
///
/// Invariant: the three lists are sorted, without duplicates, and `learners` is disjoint from
/// `voters` and from `voters_outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub voters_outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A simple (non-joint) configuration of voters only.
    pub fn with_voters(voters: &[NodeId]) -> Self {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            voters_outgoing: Vec::new(),
            learners: Vec::new(),
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// A voter in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok() || self.voters_outgoing.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member (voters of both halves and learners), sorted, without duplicates.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Encoding: `{ u32 n | n * u64 }` for voters, then voters_outgoing, then learners;
    /// all little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 8 * self.members().len() * 2);
        for list in [&self.voters, &self.voters_outgoing, &self.learners] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list.iter() {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// The inverse of [`ConfState::encode`]; `None` on malformed input.
    pub fn decode(mut buf: &[u8]) -> Option<ConfState> {
        let mut lists: [Vec<NodeId>; 3] = Default::default();
        for list in lists.iter_mut() {
            let (len, rest) = buf.split_first_chunk::<4>()?;
            let count = u32::from_le_bytes(*len) as usize;
            buf = rest;
            if buf.len() < count.checked_mul(8)? {
                return None;
            }
            for _ in 0..count {
                let (id, rest) = buf.split_first_chunk::<8>()?;
                list.push(u64::from_le_bytes(*id));
                buf = rest;
            }
        }
        if !buf.is_empty() {
            return None;
        }
        let [voters, voters_outgoing, learners] = lists;
        let conf = ConfState {
            voters,
            voters_outgoing,
            learners,
        };
        conf.is_well_formed().then_some(conf)
    }

    /// Checks the invariant documented on the type.
    pub fn is_well_formed(&self) -> bool {
        let sorted = |l: &[NodeId]| l.windows(2).all(|w| w[0] < w[1]) && !l.contains(&NO_NODE);
        sorted(&self.voters)
            && sorted(&self.voters_outgoing)
            && sorted(&self.learners)
            && self.learners.iter().all(|l| !self.is_voter(*l))
    }
}

/// Describes a snapshot: the state machine as of `index` (whose entry had `term`), with the
/// configuration in force at that index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf: ConfState,
    /// Total size of the snapshot data, so a receiver knows when the last chunk arrived.
    pub size_bytes: u64,
}

/// A complete snapshot, handed to the application to install.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// A message between two members of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for a granted pre-vote: the term the pre-candidate will campaign in).
    pub term: u64,
    pub body: MessageBody,
}

/// The message kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// AppendEntries. An empty `entries` still carries `commit`.
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// Reply to `Append` (and the final reply to a snapshot). On success `index` is the last
    /// index the follower has durably and that matches the leader's log. On rejection `index`
    /// is the rejected `prev_index`, and `(hint_index, hint_term)` let the leader skip a whole
    /// conflicting term at once: the follower's largest index `<= prev_index` whose term is
    /// `<= prev_term`, and that index's term.
    AppendResp {
        index: u64,
        reject: bool,
        hint_index: u64,
        hint_term: u64,
    },
    /// Leader liveness and commit propagation; `read_seq` confirms pending ReadIndex requests.
    /// `commit` is at most what the receiver is known to hold. `quiesce`: the leader has nothing
    /// in flight and sends no more heartbeats until something happens; a receiver holding
    /// exactly the log up to `commit`, all of it committed, stops counting election ticks.
    Heartbeat {
        commit: u64,
        read_seq: u64,
        quiesce: bool,
    },
    HeartbeatResp {
        read_seq: u64,
    },
    /// RequestVote, or a pre-vote (`pre`) which changes no state on the receiver. `transfer`
    /// marks an election started by leadership transfer, which voters allow even while they
    /// still hear from a leader.
    Vote {
        pre: bool,
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    VoteResp {
        pre: bool,
        reject: bool,
    },
    /// One chunk of a snapshot, starting at byte `offset` of the snapshot data.
    Snapshot {
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
    },
    /// The receiver holds the first `next_offset` bytes of snapshot `index`; send from there.
    SnapshotResp {
        index: u64,
        next_offset: u64,
    },
    /// Leadership transfer: campaign now, without pre-vote.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of a local read request.
    ReadIndex {
        ctx: u64,
    },
    ReadIndexResp {
        ctx: u64,
        index: u64,
    },
    /// A member that lost its disk and is being rebuilt tells its leader that its log ends at
    /// `last_index`: whatever it acknowledged before is gone, so the leader lowers its
    /// `match_index` to at most this and probes from `last_index + 1` (docs/replication.md,
    /// section 5). Lowering a match index only ever delays commits, so a stale copy is harmless.
    Rebuilding {
        last_index: u64,
    },
}

impl MessageBody {
    /// Short name used in traces.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "App",
            MessageBody::AppendResp { .. } => "AppResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResp { .. } => "HeartbeatResp",
            MessageBody::Vote { pre: true, .. } => "PreVote",
            MessageBody::Vote { pre: false, .. } => "Vote",
            MessageBody::VoteResp { pre: true, .. } => "PreVoteResp",
            MessageBody::VoteResp { pre: false, .. } => "VoteResp",
            MessageBody::Snapshot { .. } => "Snap",
            MessageBody::SnapshotResp { .. } => "SnapResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResp { .. } => "ReadIndexResp",
            MessageBody::Rebuilding { .. } => "Rebuilding",
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}->{} {} term={}",
            self.from,
            self.to,
            self.body.name(),
            self.term
        )?;
        match &self.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                write!(f, " prev=({prev_index},{prev_term}) commit={commit} ents=[")?;
                for (i, e) in entries.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    write!(f, "{sep}{}/{}", e.term, e.index)?;
                }
                write!(f, "]")
            }
            MessageBody::AppendResp {
                index,
                reject: false,
                ..
            } => write!(f, " index={index}"),
            MessageBody::AppendResp {
                index,
                reject: true,
                hint_index,
                hint_term,
            } => {
                write!(f, " reject index={index} hint=({hint_index},{hint_term})")
            }
            MessageBody::Heartbeat {
                commit,
                read_seq,
                quiesce,
            } => {
                write!(f, " commit={commit} read_seq={read_seq}")?;
                if *quiesce {
                    write!(f, " quiesce")?;
                }
                Ok(())
            }
            MessageBody::HeartbeatResp { read_seq } => write!(f, " read_seq={read_seq}"),
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
                ..
            } => {
                write!(f, " last=({last_index},{last_term})")?;
                if *transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            MessageBody::VoteResp { reject, .. } => {
                write!(f, "{}", if *reject { " reject" } else { " grant" })
            }
            MessageBody::Snapshot { meta, offset, data } => write!(
                f,
                " snap=({},{}) offset={offset} len={} size={}",
                meta.index,
                meta.term,
                data.len(),
                meta.size_bytes
            ),
            MessageBody::SnapshotResp { index, next_offset } => {
                write!(f, " snap_index={index} next_offset={next_offset}")
            }
            MessageBody::TimeoutNow => Ok(()),
            MessageBody::ReadIndex { ctx } => write!(f, " ctx={ctx}"),
            MessageBody::ReadIndexResp { ctx, index } => write!(f, " ctx={ctx} index={index}"),
            MessageBody::Rebuilding { last_index } => write!(f, " last_index={last_index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_state_round_trips_and_rejects_garbage() {
        let conf = ConfState {
            voters: vec![1, 2, 3],
            voters_outgoing: vec![1, 2],
            learners: vec![7],
        };
        assert_eq!(ConfState::decode(&conf.encode()), Some(conf));
        assert_eq!(ConfState::decode(&[1, 0, 0]), None);
        assert_eq!(ConfState::decode(&[5, 0, 0, 0, 1]), None);
        let overlapping = ConfState {
            voters: vec![1],
            voters_outgoing: vec![],
            learners: vec![1],
        };
        assert_eq!(ConfState::decode(&overlapping.encode()), None);
    }
}
