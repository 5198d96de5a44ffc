//! `RawNode`: the Raft state machine of one group member. See the crate docs for how to drive it.

use std::collections::VecDeque;

use crate::committed_append::AppendCommittedError;
use crate::config::{Config, ConfigError};
use crate::log::{LogStorage, RaftLog, StorageError};
use crate::message::{
    ConfState, Entry, EntryKind, HardState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta,
    NO_NODE,
};
use crate::progress::{Progress, ProgressState};
use crate::quorum::{self, VoteResult};
use crate::read_only::ReadOnly;
use crate::ready::{EntryFetch, FetchPurpose, OutMessage, PersistAck, ReadState, Ready};
use crate::rebuild::Rebuild;
use crate::snapshot::{ChunkOutcome, SnapshotRecv, SnapshotSend};
use crate::validate::{check_entries, check_index, check_message, StepError, TERM_MAX};

/// The role a member plays in the current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Collecting pre-votes; the term is not yet incremented.
    PreCandidate,
    Candidate,
    Leader,
}

/// Why `RawNode::new` failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(ConfigError),
    #[error("raft storage: {0}")]
    Storage(StorageError),
    /// The persisted state contradicts itself (for example commit beyond the last index).
    #[error("raft state corrupt: {0}")]
    Corrupt(&'static str),
}

/// Why a proposal, read, configuration change or transfer was refused. None of these changed
/// any state: the caller may retry (at the leader, or later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts this; `leader` is the known leader or [`NO_NODE`].
    #[error("not the leader (leader: {leader})")]
    NotLeader { leader: NodeId },
    /// A leadership transfer is under way; proposals resume when it ends.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// A configuration change is not yet applied (or this leader has not yet committed an
    /// entry of its own term, or a joint configuration is being left).
    #[error("a configuration change is pending")]
    ConfChangePending,
    /// A bounded queue is full (`uncommitted_bytes_max`, `pending_reads_max`).
    #[error("too much work queued")]
    Backpressure,
    /// The requested change or transfer target is not valid.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

/// A requested membership: the voters and learners wanted after the change.
///
/// When the voters change, the leader first enters the joint configuration (C_old,new) and
/// leaves it automatically once that is applied. A voter cannot become a learner in one step
/// (remove it, then add it as a learner).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfChange {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// A read-only view of a member, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub vote: NodeId,
    pub leader: NodeId,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub persisted_index: u64,
    pub conf: ConfState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignKind {
    PreVote,
    Election,
    Transfer,
}

/// The Raft state of one group member. Cheap: a few hundred bytes plus the unstable log,
/// progress of peers only while leading, and buffers proportional to work in flight.
pub struct RawNode<S: LogStorage> {
    cfg: Config,
    term: u64,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    log: RaftLog<S>,
    /// Leader only: one entry per other member. Empty otherwise.
    progress: Vec<(NodeId, Progress)>,
    /// Candidate and pre-candidate only: answers received this round.
    votes: Vec<(NodeId, bool)>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_timeout: u64,
    rng: u64,
    /// Leader only: the member leadership is being transferred to, or [`NO_NODE`].
    transferee: NodeId,
    /// Leader only: index of the last configuration entry it appended (or of its last entry
    /// when it was elected). No new change is accepted until it is applied, which is also how
    /// a new leader commits an entry of its own term before changing the configuration.
    pending_conf_index: u64,
    /// Leader only: the index of the no-op it appended when elected. Once it is committed the
    /// leader's commit index is the cluster's, and reads may be served (Raft §6.4). Known
    /// without reading storage, whose term lookups may answer `Unavailable`.
    term_start_index: u64,
    reads: ReadOnly,
    read_states: Vec<ReadState>,
    msgs: Vec<OutMessage>,
    snap_recv: Option<SnapshotRecv>,
    prev_hard_state: HardState,
    /// Leader only: bytes appended but not yet applied, bounded by `uncommitted_bytes_max`.
    uncommitted_bytes: u64,
    /// Follower only: (leader, ctx) of reads forwarded to the leader and not yet answered,
    /// oldest first, at most `pending_reads_max` (the oldest is forgotten first; its reader
    /// times out). An answer must match one of them.
    forwarded_reads: VecDeque<(NodeId, u64)>,
    /// Entry reads to hand to the driver in the next `Ready` (at most one per follower).
    fetches: Vec<EntryFetch>,
    /// Ticks since the core asked for committed entries to apply that storage could not read,
    /// or `None`. While set, `ready` does not read them again (and `has_ready` does not report
    /// them), so a driver is not spun by entries it cannot yet hand out.
    apply_fetch_ticks: Option<u64>,
    /// The highest commit index a leader has told this member (in AppendEntries or a
    /// heartbeat), for status pages: a follower's lag is `leader_commit_heard - commit`.
    /// Never decreases: a committed index stays committed across terms.
    leader_commit_heard: u64,
    /// Set while this member is being rebuilt after losing its disk: it votes for nobody,
    /// never campaigns, and its acknowledgements count towards nothing (`crate::rebuild`).
    rebuild: Option<Rebuild>,
    /// Quiet (`Config::quiesce`): a leader that sent its quiesce heartbeat, or a follower
    /// that received one. Ticks change nothing; any message or local request other than the
    /// quiesce heartbeat and its answers wakes the member (see [`RawNode::unquiesce`]).
    quiet: bool,
}

impl<S: LogStorage> RawNode<S> {
    /// Starts (or restarts) a member from what `storage` holds.
    pub fn new(cfg: Config, storage: S) -> Result<Self, Error> {
        cfg.validate().map_err(Error::Config)?;
        let hs = storage.initial_state().map_err(Error::Storage)?;
        let meta = storage.snapshot_meta();
        let last = storage.last_index();
        let committed = hs.commit.max(meta.index);
        if committed > last {
            return Err(Error::Corrupt(
                "hard state commit is beyond the last persisted index",
            ));
        }
        let applied = cfg.applied.max(meta.index);
        if applied > committed {
            return Err(Error::Corrupt("applied index is beyond the commit index"));
        }
        let confs = crate::log::load_confs(&storage, committed).map_err(|e| match e {
            crate::log::LoadConfError::Storage(e) => Error::Storage(e),
            crate::log::LoadConfError::Corrupt(what) => Error::Corrupt(what),
        })?;
        let rng = if cfg.seed == 0 {
            cfg.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
        } else {
            cfg.seed
        };
        let mut node = RawNode {
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: NO_NODE,
            log: RaftLog::new(storage, committed, applied, confs),
            progress: Vec::new(),
            votes: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: cfg.election_ticks_min,
            rng,
            transferee: NO_NODE,
            pending_conf_index: 0,
            term_start_index: 0,
            reads: ReadOnly::default(),
            read_states: Vec::new(),
            msgs: Vec::new(),
            snap_recv: None,
            prev_hard_state: HardState {
                term: hs.term,
                vote: hs.vote,
                commit: committed,
            },
            uncommitted_bytes: 0,
            forwarded_reads: VecDeque::new(),
            fetches: Vec::new(),
            apply_fetch_ticks: None,
            leader_commit_heard: 0,
            rebuild: None,
            quiet: false,
            cfg,
        };
        node.become_follower(hs.term, NO_NODE);
        Ok(node)
    }

    // ----- Observers -------------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> u64 {
        self.term
    }
    pub fn leader(&self) -> NodeId {
        self.leader
    }
    pub fn commit(&self) -> u64 {
        self.log.committed
    }
    pub fn applied(&self) -> u64 {
        self.log.applied
    }
    /// The configuration in force: the latest in the log, committed or not (Raft §6).
    pub fn conf(&self) -> &ConfState {
        self.log.conf()
    }
    /// The index of the entry (or snapshot) that set the configuration in force: an
    /// application compacting its log up to `i >= conf_index()` records `conf()` with it.
    pub fn conf_index(&self) -> u64 {
        self.log.conf_index()
    }
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// The term of entry `index`, if it is in the log (or is the snapshot's index).
    pub fn log_term(&self, index: u64) -> Option<u64> {
        if index > self.log.last_index() {
            return None;
        }
        self.log.term(index).ok()
    }
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, pr)| pr)
    }
    pub fn storage(&self) -> &S {
        &self.log.storage
    }
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
    /// Who this member voted for in the current term ([`NO_NODE`]: nobody).
    /// Whether the member is quiet (see [`Config::quiesce`]): its ticks change nothing, so a
    /// driver may skip them.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    pub fn vote(&self) -> NodeId {
        self.vote
    }

    /// The leader's commit index as this member last heard it; a leader's own commit.
    pub fn leader_commit(&self) -> u64 {
        if self.role == Role::Leader {
            self.log.committed
        } else {
            self.leader_commit_heard.max(self.log.committed)
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.cfg.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted_index(),
            conf: self.log.conf().clone(),
        }
    }

    /// Being rebuilt (see [`RawNode::set_rebuilding`]).
    pub fn is_rebuilding(&self) -> bool {
        self.rebuild.is_some()
    }

    /// The commit index this member must hold before it may finish rebuilding (`None`: not
    /// rebuilding, or no leader heard yet).
    pub fn rebuild_target(&self) -> Option<u64> {
        self.rebuild.and_then(|r| r.target())
    }

    /// Rebuilding, and ready to finish: it durably holds and has committed everything its
    /// leader had committed when the rebuild began, and it follows a leader in its term.
    pub fn rebuild_caught_up(&self) -> bool {
        self.rebuild.is_some_and(|r| {
            r.caught_up(self.log.committed, self.log.persisted_index())
                && self.role == Role::Follower
                && self.leader != NO_NODE
        })
    }

    // ----- Inputs ----------------------------------------------------------------------------

    /// This member lost its disk (the driver knows: tern's `NODE` file says `rebuilding=1`).
    /// Until [`RawNode::finish_rebuild`] it grants no votes, never campaigns, confirms no
    /// reads, and acknowledges entries only up to the commit index their leader sent, so the
    /// leader commits nothing because of it (docs/replication.md, section 5). Call it before
    /// the first `step` of this start; a leader steps down.
    pub fn set_rebuilding(&mut self) {
        self.wake(0);
        if self.role != Role::Follower {
            self.become_follower(self.term, NO_NODE);
        }
        self.rebuild = Some(Rebuild::default());
    }

    /// Leaves rebuilding once [`RawNode::rebuild_caught_up`]; returns whether it did. The
    /// driver calls it only after it has durably cleared its own rebuilding flag (for every
    /// group of the node at once). The member then records a vote for the leader it follows
    /// in the current term, if it has none: its old self may have voted in this term, and a
    /// vote taken makes it refuse any other candidate here, while a vote for the leader that
    /// already won adds nothing to any election. The vote goes out in the next `Ready`'s
    /// hard state.
    pub fn finish_rebuild(&mut self) -> bool {
        if !self.rebuild_caught_up() {
            return false;
        }
        if self.vote == NO_NODE {
            self.vote = self.leader;
        }
        self.rebuild = None;
        true
    }

    /// Appends entries that a caught-up replica had committed (the recovery stream,
    /// docs/replication.md section 4): `entries` follow `prev_index` one by one, the last at
    /// or below `server_commit`, the commit index the server sent with them.
    ///
    /// As an AppendEntries: `prev_index` must be in the log (`prev_index <= last_index`) with
    /// `prev_term`; entries already present with the same term are skipped; an entry whose
    /// term differs from ours *above* our commit index truncates our suffix from there. Unlike
    /// an AppendEntries, a difference *at or below* our commit index is refused as
    /// [`AppendCommittedError::Corrupt`]. Entries the snapshot already covers are skipped.
    ///
    /// The new entries go out in the next `Ready`'s `entries` (persisted as appended ones, in
    /// the same batch as the hard state) and the commit index moves to
    /// `min(last new index, server_commit)`, carried by that `Ready`'s hard state (with the
    /// term of the chunk's last entry when it is above ours: the member moves to that term, as
    /// on any message of it, so its log never holds a term above its own): applying,
    /// and a rebuild's `rebuild_caught_up`, wait until they are durable. Nothing is sent to
    /// anyone: a rebuilding member still acknowledges to its leader only what the leader's own
    /// commit covers. Returns the index of the last entry of the chunk (or, when the snapshot
    /// covered all of it, our last index). On an error nothing changed.
    pub fn append_committed(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        entries: &[Entry],
        server_commit: u64,
    ) -> Result<u64, AppendCommittedError> {
        self.wake(0);
        if self.role != Role::Follower {
            return Err(AppendCommittedError::NotFollower);
        }
        check_entries(prev_index, prev_term, entries, TERM_MAX)
            .map_err(AppendCommittedError::Malformed)?;
        check_index(server_commit, "server commit").map_err(AppendCommittedError::Malformed)?;
        if let Some(last) = entries.last() {
            if last.index > server_commit {
                return Err(AppendCommittedError::BeyondServerCommit {
                    index: last.index,
                    server_commit,
                });
            }
        }
        // Terms never fall along the chunk (checked above): the last is the highest.
        let top_term = entries.last().map_or(prev_term, |e| e.term);
        let last_index = self.log.last_index();
        if prev_index > last_index {
            return Err(AppendCommittedError::Gap {
                prev_index,
                last_index,
            });
        }
        // Entries at or below the snapshot are committed here and compacted: skip them, and
        // start from the snapshot's index, whose term the chunk then tells us.
        let snapshot_index = self.log.first_index() - 1;
        let (prev_index, prev_term, entries) = if prev_index < snapshot_index {
            let skip = (snapshot_index - prev_index) as usize;
            let Some(at_snapshot) = entries.get(skip - 1) else {
                // All at or below our snapshot, so at or below our term too: nothing to do.
                return Ok(last_index);
            };
            (snapshot_index, at_snapshot.term, &entries[skip..])
        } else {
            (prev_index, prev_term, entries)
        };
        let committed = self.log.committed;
        let ours = self
            .log
            .term(prev_index)
            .map_err(AppendCommittedError::Storage)?;
        if ours != prev_term {
            if prev_index <= committed {
                return Err(AppendCommittedError::Corrupt {
                    index: prev_index,
                    ours,
                    theirs: prev_term,
                });
            }
            return Err(AppendCommittedError::PrevMismatch {
                prev_index,
                ours,
                theirs: prev_term,
            });
        }
        // The first entry not already in the log with the same term; every one before it is.
        let mut first_new = entries.len();
        for (i, e) in entries.iter().enumerate() {
            if e.index > last_index {
                first_new = i;
                break;
            }
            let ours = self
                .log
                .term(e.index)
                .map_err(AppendCommittedError::Storage)?;
            if ours != e.term {
                if e.index <= committed {
                    return Err(AppendCommittedError::Corrupt {
                        index: e.index,
                        ours,
                        theirs: e.term,
                    });
                }
                first_new = i;
                break;
            }
        }
        // A log never holds an entry of a term above the member's own (its votes and vote
        // requests rely on it, and so does every check that a peer's answer fits its term):
        // a chunk from a newer term moves the member to it, as any message of that term would.
        if top_term > self.term {
            self.become_follower(top_term, NO_NODE);
        }
        self.log.append(&entries[first_new..]);
        let last_new = prev_index + entries.len() as u64;
        self.log.commit_to(server_commit.min(last_new));
        Ok(last_new)
    }

    /// Advances logical time by one tick. A quiet member has nothing to time: it has no
    /// fetch outstanding, and its election or heartbeat timer is stopped.
    pub fn tick(&mut self) {
        if self.quiet {
            return;
        }
        self.tick_fetches();
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Starts an election now (tests and bootstrap); honours pre-vote.
    pub fn campaign(&mut self) {
        self.wake(0);
        let kind = if self.cfg.pre_vote {
            CampaignKind::PreVote
        } else {
            CampaignKind::Election
        };
        self.campaign_as(kind);
    }

    /// Appends `data` as a new entry. Returns its (term, index): the proposal is committed
    /// exactly when the entry applied at that index has that term.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        self.wake(0);
        self.check_can_propose()?;
        let bytes = data.len() as u64 + crate::message::ENTRY_OVERHEAD_BYTES;
        let limit = self.cfg.uncommitted_bytes_max;
        if limit > 0 && self.uncommitted_bytes > 0 && self.uncommitted_bytes + bytes > limit {
            return Err(ProposeError::Backpressure);
        }
        let index = self.append_entry(EntryKind::Normal, data);
        self.uncommitted_bytes += bytes;
        self.bcast_append();
        Ok((self.term, index))
    }

    /// Proposes a membership change (see [`ConfChange`]). Returns the entry's (term, index).
    pub fn propose_conf_change(&mut self, change: &ConfChange) -> Result<(u64, u64), ProposeError> {
        self.wake(0);
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.committed || self.log.conf().is_joint() {
            return Err(ProposeError::ConfChangePending);
        }
        let mut voters = change.voters.clone();
        voters.sort_unstable();
        voters.dedup();
        let mut learners = change.learners.clone();
        learners.sort_unstable();
        learners.dedup();
        if voters.is_empty() {
            return Err(ProposeError::Invalid(
                "a configuration needs at least one voter",
            ));
        }
        if voters.contains(&NO_NODE) || learners.contains(&NO_NODE) {
            return Err(ProposeError::Invalid("node id 0 is reserved"));
        }
        if learners.iter().any(|l| voters.contains(l)) {
            return Err(ProposeError::Invalid(
                "a node cannot be both voter and learner",
            ));
        }
        if learners.iter().any(|l| self.log.conf().voters.contains(l)) {
            return Err(ProposeError::Invalid(
                "demote a voter by removing it, then adding a learner",
            ));
        }
        let outgoing = if voters == self.log.conf().voters {
            Vec::new()
        } else {
            self.log.conf().voters.clone()
        };
        let next = ConfState {
            voters,
            voters_outgoing: outgoing,
            learners,
        };
        debug_assert!(next.is_well_formed());
        let index = self.append_entry(EntryKind::ConfChange, next.encode());
        self.pending_conf_index = index;
        self.sync_progress();
        self.bcast_append();
        Ok((self.term, index))
    }

    /// Requests a linearizable read tagged `ctx`. A `ReadState { ctx, index }` comes out of a
    /// later `Ready` once leadership is confirmed; serve the read after applying `index`.
    /// Requests lost to a leader change never answer: the caller times out and retries.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        // A quiet leader holds no lease: waking sends heartbeats, whose answers confirm it.
        self.wake(0);
        if self.role == Role::Leader {
            return self.leader_read(self.cfg.id, ctx);
        }
        if self.leader == NO_NODE {
            return Err(ProposeError::NotLeader { leader: NO_NODE });
        }
        if self.forwarded_reads.len() >= self.cfg.pending_reads_max {
            self.forwarded_reads.pop_front();
        }
        self.forwarded_reads.push_back((self.leader, ctx));
        self.send(self.leader, MessageBody::ReadIndex { ctx }, true);
        Ok(())
    }

    /// Hands leadership to voter `to`: the leader stops taking proposals, brings `to` up to
    /// date, then tells it to campaign at once. Abandoned after `election_ticks_min` ticks.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.wake(0);
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.cfg.id {
            return Ok(());
        }
        if !self.log.conf().voters.contains(&to) || self.pr_index(to).is_none() {
            return Err(ProposeError::Invalid("transfer target is not a voter"));
        }
        if self.transferee == to {
            return Ok(());
        }
        self.transferee = to;
        self.election_elapsed = 0;
        self.maybe_send_timeout_now(to);
        if self.transferee != NO_NODE {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// The transport could not reach `to`: stop streaming optimistically, probe instead.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(i) = self.pr_index(to) {
            // A member unreachable now may have missed the quiesce heartbeat.
            self.wake(0);
            let pr = &mut self.progress[i].1;
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// The transport failed to deliver a snapshot chunk to `to`: resend it on the next tick
    /// from the last offset the follower confirmed.
    pub fn report_snapshot_failed(&mut self, to: NodeId) {
        if let Some(i) = self.pr_index(to) {
            if let Some(send) = self.progress[i].1.snapshot.as_mut() {
                send.chunk_in_flight = false;
                send.ticks_since_send = self.cfg.snapshot_retry_ticks.saturating_sub(1);
            }
        }
    }

    /// Handles a message from a peer. Messages from an older term, and answers that come
    /// too late, are dropped or answered as Raft prescribes (`Ok`). A message that no correct
    /// peer sends in this situation (misaddressed, fields that contradict each other or this
    /// node's state: see [`StepError`] and `validate.rs`) is refused with the reason and
    /// changes nothing (except that a well-formed message of a higher term first moves the
    /// node to that term, as any message does); it never panics.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.cfg.id {
            return Err(StepError::WrongRecipient { to: m.to });
        }
        if m.from == self.cfg.id {
            return Err(StepError::FromSelf);
        }
        check_message(&m)?;
        if self.quiet && !self.keeps_quiet(&m) {
            self.wake(0);
        }
        if let MessageBody::Snapshot { meta, .. } = &m.body {
            if meta.size_bytes > self.cfg.snapshot_bytes_max {
                return Err(StepError::SnapshotTooLarge {
                    size_bytes: meta.size_bytes,
                    max: self.cfg.snapshot_bytes_max,
                });
            }
        }
        if m.term > self.term {
            if let MessageBody::Vote { transfer, pre, .. } = m.body {
                // Check-quorum's lease: while we hear from a leader, ignore disruptive
                // candidates (a partitioned node coming back), unless it is a transfer.
                let in_lease = self.cfg.check_quorum
                    && self.leader != NO_NODE
                    && self.election_elapsed < self.cfg.election_ticks_min;
                if in_lease && !transfer {
                    if pre {
                        self.expedite_snapshot(m.from);
                    }
                    return Ok(());
                }
            }
            match m.body {
                MessageBody::Vote { pre: true, .. } => {}
                MessageBody::VoteResp {
                    pre: true,
                    reject: false,
                } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NO_NODE),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // Tell a stale leader about the newer term so it steps down; without this
                    // a node kept out of elections by pre-vote could never catch it up.
                    self.send(m.from, MessageBody::HeartbeatResp { read_seq: 0 }, true);
                }
                MessageBody::Vote { pre: true, .. } => {
                    self.send(
                        m.from,
                        MessageBody::VoteResp {
                            pre: true,
                            reject: true,
                        },
                        true,
                    );
                    self.expedite_snapshot(m.from);
                }
                _ => {}
            }
            return Ok(());
        }
        if let MessageBody::Vote {
            pre,
            last_index,
            last_term,
            ..
        } = m.body
        {
            self.handle_vote(m.from, m.term, pre, last_index, last_term);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    /// Entries asked for in `Ready::fetches` are now in storage's cache: retry at once what
    /// needed them (an AppendEntries to that follower, or applying). A completion that no
    /// longer matches anything (leadership lost, follower removed, fetch forgotten after
    /// `fetch_retry_ticks`) changes nothing.
    pub fn on_entries_fetched(&mut self, fetch: EntryFetch) {
        match fetch.purpose {
            FetchPurpose::Replicate { to } => {
                let Some(i) = self.pr_index(to) else { return };
                if self.progress[i].1.fetch_ticks.take().is_none() {
                    return;
                }
                // Bounded by the in-flight window (or one message while probing).
                while self.send_append(to, false) {}
            }
            FetchPurpose::Apply => self.apply_fetch_ticks = None,
        }
    }

    /// Whether `ready` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || self.hard_state() != self.prev_hard_state
            || self.log.has_unpersisted()
            || (self.log.has_next_committed() && self.apply_fetch_ticks.is_none())
            || !self.read_states.is_empty()
            || !self.fetches.is_empty()
    }

    /// Collects the work to do; see [`Ready`] for the order. Everything returned is
    /// considered handed out: the next `Ready` contains only newer work.
    pub fn ready(&mut self) -> Ready {
        let mut rd = Ready {
            snapshot: self.log.take_snapshot(),
            ..Default::default()
        };
        if let Some(s) = &rd.snapshot {
            self.log.applied = self.log.applied.max(s.meta.index);
            rd.persist_ack.snapshot = Some(s.meta.index);
        }
        rd.entries = self.log.take_unpersisted();
        rd.persist_ack.entries = rd.entries.last().map(|e| (e.term, e.index));
        let hs = self.hard_state();
        if hs != self.prev_hard_state {
            rd.hard_state = Some(hs);
            rd.persist_ack.hard_state = Some(hs);
            self.prev_hard_state = hs;
        }
        if self.apply_fetch_ticks.is_none() {
            match self.log.next_committed(self.cfg.apply_bytes_max) {
                Ok(committed) => {
                    for e in &committed {
                        assert_eq!(e.index, self.log.applied + 1, "applying out of order");
                        self.log.applied = e.index;
                        if self.role == Role::Leader {
                            self.uncommitted_bytes =
                                self.uncommitted_bytes.saturating_sub(e.size_bytes());
                        }
                    }
                    rd.committed_entries = committed;
                }
                Err(StorageError::Unavailable) => {
                    self.apply_fetch_ticks = Some(0);
                    self.fetches.push(EntryFetch {
                        purpose: FetchPurpose::Apply,
                        low: self.log.applied + 1,
                        high: self.log.applicable_index() + 1,
                        bytes_max: self.cfg.apply_bytes_max,
                    });
                }
                // Committed entries are never compacted before they are applied (compaction
                // is the application's, at or below what it applied); nothing to do.
                Err(_) => {}
            }
        }
        rd.messages = std::mem::take(&mut self.msgs);
        rd.fetches = std::mem::take(&mut self.fetches);
        rd.read_states = std::mem::take(&mut self.read_states);
        rd
    }

    /// Reports that a `Ready` was persisted (pass its `persist_ack`). Acknowledgements must
    /// come in the order the `Ready`s were produced.
    pub fn on_persisted(&mut self, ack: PersistAck) {
        if let Some(index) = ack.snapshot {
            self.log.stable_snapshot_to(index);
        }
        if let Some((term, index)) = ack.entries {
            self.log.stable_to(term, index);
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.bcast_append();
        }
        if let Some(hs) = ack.hard_state {
            // A candidate's own vote counts only once it is durable: otherwise a restart could
            // let it vote again in the same term.
            if self.role == Role::Candidate && hs.term == self.term && hs.vote == self.cfg.id {
                match self.poll(self.cfg.id, true) {
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, NO_NODE),
                    VoteResult::Pending => {}
                }
            }
        }
    }

    // ----- Roles -----------------------------------------------------------------------------

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_timeout = self.random_timeout();
        self.votes.clear();
        self.progress = Vec::new();
        self.transferee = NO_NODE;
        self.reads.clear();
        self.forwarded_reads.clear();
        self.uncommitted_bytes = 0;
        self.quiet = false;
    }

    // ----- Quiescence ------------------------------------------------------------------------

    /// Wakes a quiet member because its driver has not heard from the node of a member of
    /// this group for `silent_ticks` ticks (the node-pair liveness of docs/raft.md,
    /// "Quiescence of idle groups"). A follower whose leader lives on the silent node passes
    /// the silence it observed: its election timer resumes as if it had counted those ticks
    /// itself, so a failover takes no longer than without quiescence. Any other wake-up
    /// passes 0. A leader heartbeats at once and starts a full check-quorum period. Does
    /// nothing to a member that is not quiet.
    pub fn unquiesce(&mut self, silent_ticks: u64) {
        self.wake(silent_ticks);
    }

    fn wake(&mut self, silent_ticks: u64) {
        if !self.quiet {
            return;
        }
        self.quiet = false;
        if self.role == Role::Leader {
            self.election_elapsed = 0;
            self.heartbeat_elapsed = 0;
            // Answers from before the quiet spell say nothing about now.
            for (_, pr) in self.progress.iter_mut() {
                pr.recent_active = false;
            }
            self.bcast_heartbeat(false);
        } else {
            self.election_elapsed = silent_ticks;
        }
    }

    /// The messages a quiet member takes without waking: the quiesce heartbeat again (a
    /// duplicate), at a leader the answers to it, and anything from a node outside the
    /// configuration (a removed member that never learnt it was removed campaigns for ever;
    /// what it says changes nothing here, or changes the term, which wakes by itself).
    fn keeps_quiet(&self, m: &Message) -> bool {
        if !self.log.conf().contains(m.from) {
            return true;
        }
        if m.term != self.term {
            return false;
        }
        match m.body {
            MessageBody::Heartbeat { quiesce, .. } => quiesce && m.from == self.leader,
            MessageBody::HeartbeatResp { read_seq } => {
                self.role == Role::Leader && read_seq <= self.reads.seq
            }
            _ => false,
        }
    }

    /// A leader may go quiet when nothing is in flight: every member holds and has
    /// acknowledged its whole log, and answered since the last check-quorum round; everything is committed, applied and durable
    /// here; no read, transfer, snapshot, entry fetch or configuration change is pending.
    fn may_go_quiet_as_leader(&self) -> bool {
        let last = self.log.last_index();
        self.cfg.quiesce
            && self.role == Role::Leader
            && self.rebuild.is_none()
            && !self.log.conf().is_joint()
            && self.transferee == NO_NODE
            && self.reads.is_empty()
            && self.log.committed == last
            && self.log.applied == last
            && self.log.persisted_index() == last
            && !self.log.has_unpersisted()
            && self.apply_fetch_ticks.is_none()
            && self.fetches.is_empty()
            // Probe is fine when the member holds everything: after `report_unreachable` an
            // idle group has no entry to send that would bring it back to Replicate.
            && self.progress.iter().all(|(_, pr)| {
                pr.match_index == last
                    && pr.recent_active
                    && pr.snapshot.is_none()
                    && pr.fetch_ticks.is_none()
            })
    }

    /// A follower goes quiet on its leader's quiesce heartbeat when it holds exactly the
    /// leader's log, committed and applied, with nothing of its own pending.
    fn may_go_quiet_as_follower(&self, leader_commit: u64) -> bool {
        let last = self.log.last_index();
        self.cfg.quiesce
            && self.rebuild.is_none()
            && leader_commit == last
            && self.log.committed == last
            && self.log.applied == last
            && self.log.persisted_index() == last
            && !self.log.has_unpersisted()
            && self.apply_fetch_ticks.is_none()
    }

    fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.votes.clear();
        self.leader = NO_NODE;
        self.randomized_timeout = self.random_timeout();
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.reset(self.term + 1);
        self.vote = self.cfg.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        let term = self.term;
        let vote = self.vote;
        self.reset(term);
        self.vote = vote;
        self.role = Role::Leader;
        self.leader = self.cfg.id;
        let next = self.log.last_index() + 1;
        for id in self.log.conf().members() {
            if id != self.cfg.id {
                let mut pr = Progress::new(next);
                pr.recent_active = true;
                self.progress.push((id, pr));
            }
        }
        // Raft §8: a new leader commits a no-op of its term, which also commits (indirectly)
        // everything before it and enables ReadIndex and configuration changes: no change is
        // accepted until the no-op is committed (the fix for the single-server change bug).
        self.pending_conf_index = self.append_entry(EntryKind::Normal, Vec::new());
        self.term_start_index = self.pending_conf_index;
        self.bcast_append();
    }

    /// May this node start an election? Only a voter of its latest configuration.
    fn promotable(&self) -> bool {
        self.log.conf().is_voter(self.cfg.id)
    }

    fn campaign_as(&mut self, kind: CampaignKind) {
        if self.role == Role::Leader || !self.promotable() || self.rebuild.is_some() {
            return;
        }
        let Ok(last_term) = self.log.last_term() else {
            return;
        };
        let last_index = self.log.last_index();
        let pre = kind == CampaignKind::PreVote;
        if pre {
            self.become_pre_candidate();
            // A pre-vote changes nothing durable, so our own counts at once.
            if self.poll(self.cfg.id, true) == VoteResult::Won {
                self.campaign_as(CampaignKind::Election);
                return;
            }
        } else {
            self.become_candidate();
        }
        let term = if pre { self.term + 1 } else { self.term };
        let mut voters = self.log.conf().voters.clone();
        voters.extend_from_slice(&self.log.conf().voters_outgoing);
        voters.sort_unstable();
        voters.dedup();
        for id in voters {
            if id == self.cfg.id {
                continue;
            }
            let body = MessageBody::Vote {
                pre,
                last_index,
                last_term,
                transfer: kind == CampaignKind::Transfer,
            };
            // A vote request may leave only once our own vote (term, vote) is durable.
            self.send_with_term(id, term, body, pre);
        }
    }

    fn poll(&mut self, from: NodeId, granted: bool) -> VoteResult {
        if !self.votes.iter().any(|(id, _)| *id == from) {
            self.votes.push((from, granted));
        }
        let votes = &self.votes;
        quorum::vote_result(self.log.conf(), |id| {
            votes.iter().find(|(v, _)| *v == id).map(|(_, g)| *g)
        })
    }

    /// Forgets entry fetches the driver did not complete in time (the read failed or was
    /// dropped): the entries are asked for again when next needed.
    fn tick_fetches(&mut self) {
        let limit = self.cfg.fetch_retry_ticks;
        let expire = |ticks: &mut Option<u64>| {
            if let Some(t) = ticks.as_mut() {
                *t += 1;
                if *t >= limit {
                    *ticks = None;
                }
            }
        };
        expire(&mut self.apply_fetch_ticks);
        for (_, pr) in self.progress.iter_mut() {
            expire(&mut pr.fetch_ticks);
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_timeout {
            self.election_elapsed = 0;
            self.randomized_timeout = self.random_timeout();
            if self.rebuild.is_some() {
                self.announce_rebuilding();
            } else if self.promotable() {
                self.campaign();
            }
        }
    }

    /// A rebuilding member never campaigns; when it has heard no leader for an election
    /// timeout it says where its log ends to its leader, or to every member when it knows
    /// none. Otherwise a quiet leader, which believes the member still holds what its old
    /// self acknowledged and sends nothing, would never hear of it: the member's restart may
    /// have been too quick for the leader's node to notice (docs/raft.md, "Quiescence").
    fn announce_rebuilding(&mut self) {
        if self.leader != NO_NODE {
            self.send_rebuilding(self.leader);
            return;
        }
        let me = self.cfg.id;
        for id in self.log.conf().members() {
            if id != me {
                self.send_rebuilding(id);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks_min {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                let progress = &self.progress;
                let me = self.cfg.id;
                let active = quorum::vote_result(self.log.conf(), |id| {
                    Some(id == me || progress.iter().any(|(p, pr)| *p == id && pr.recent_active))
                });
                if active != VoteResult::Won {
                    self.become_follower(self.term, NO_NODE);
                    return;
                }
                for (_, pr) in self.progress.iter_mut() {
                    pr.recent_active = false;
                }
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.transferee = NO_NODE;
        }
        let retry = self.cfg.snapshot_retry_ticks;
        let mut resend = Vec::new();
        for (id, pr) in self.progress.iter_mut() {
            if let Some(send) = pr.snapshot.as_mut() {
                if send.tick(retry) {
                    resend.push(*id);
                }
            }
        }
        for id in resend {
            self.send_snapshot_chunk(id);
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            // An idle leader's last heartbeat tells its followers to stop their timers.
            let quiesce = self.may_go_quiet_as_leader();
            self.bcast_heartbeat(quiesce);
            self.quiet = quiesce;
        }
    }

    // ----- Message handling ------------------------------------------------------------------

    /// A pre-vote from a replica this leader is streaming a snapshot to: the replica has not
    /// heard from the leader for an election timeout, so the chunk in flight was most likely
    /// lost. Send it again now instead of after `snapshot_retry_ticks` (Ra PR #589: a lagging
    /// follower in snapshot back-off gets its snapshot as soon as the leader reasserts
    /// leadership). The chunk restarts at the follower's last confirmed offset, which a
    /// receiver accepts again.
    fn expedite_snapshot(&mut self, from: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        let Some(i) = self.pr_index(from) else { return };
        if let Some(send) = self.progress[i].1.snapshot.as_mut() {
            send.chunk_in_flight = false;
            self.send_snapshot_chunk(from);
        }
    }

    fn handle_vote(&mut self, from: NodeId, term: u64, pre: bool, last_index: u64, last_term: u64) {
        if pre {
            self.expedite_snapshot(from);
        }
        let can_vote = self.vote == from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre && term > self.term);
        // A rebuilding member cannot know whom its old self voted for.
        if can_vote && self.rebuild.is_none() && self.log.is_up_to_date(last_index, last_term) {
            // A granted vote is a promise: it leaves only once durable.
            self.send_with_term(
                from,
                term,
                MessageBody::VoteResp { pre, reject: false },
                pre,
            );
            if !pre {
                self.election_elapsed = 0;
                self.vote = from;
            }
        } else {
            self.send(from, MessageBody::VoteResp { pre, reject: true }, true);
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), StepError> {
        let from_leader = matches!(
            m.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
        );
        if from_leader && self.leader != NO_NODE && self.leader != m.from {
            // Election Safety: one leader per term. Following the second would mix two logs.
            return Err(StepError::ConflictingLeader {
                leader: self.leader,
            });
        }
        match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.leader_commit_heard = self.leader_commit_heard.max(commit);
                if let Some(r) = self.rebuild.as_mut() {
                    r.heard_leader_commit(commit);
                }
                self.handle_append(m.from, prev_index, prev_term, commit, &entries);
            }
            MessageBody::Heartbeat {
                commit,
                read_seq,
                quiesce,
            } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.leader_commit_heard = self.leader_commit_heard.max(commit);
                // The leader sends at most what it knows we durably hold.
                self.log.commit_to(commit.min(self.log.last_index()));
                // Confirming a read says "I have voted for no newer leader", which a rebuilding
                // member cannot know.
                // A heartbeat's commit is capped at what the leader believes we hold, so it is
                // no rebuild target: only an AppendEntries carries the leader's commit.
                let read_seq = if self.rebuild.is_some() { 0 } else { read_seq };
                self.send(m.from, MessageBody::HeartbeatResp { read_seq }, true);
                let no_target = self.rebuild.is_some_and(|r| r.target().is_none());
                if self.rebuild.is_some() && commit > self.log.last_index() || no_target {
                    // The leader believes we hold what our old self acknowledged; or we
                    // restarted mid-rebuild already holding its whole log, and an idle leader
                    // would send no AppendEntries (the only carrier of a target) for ever.
                    // Either way its answer is an AppendEntries from our last index.
                    self.send_rebuilding(m.from);
                }
                if quiesce && self.may_go_quiet_as_follower(commit) {
                    self.quiet = true;
                }
            }
            MessageBody::Snapshot { meta, offset, data } => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_snapshot(m.from, meta, offset, &data);
            }
            MessageBody::TimeoutNow => {
                // Unknown leader (we restarted since it caught us up): campaigning is always
                // safe, so honour it; a known other leader contradicts the sender.
                if self.leader != NO_NODE && m.from != self.leader {
                    return Err(StepError::TimeoutNowNotFromLeader);
                }
                self.campaign_as(CampaignKind::Transfer)
            }
            MessageBody::ReadIndexResp { ctx, index } => {
                let Some(at) = self
                    .forwarded_reads
                    .iter()
                    .position(|&(leader, c)| leader == m.from && c == ctx)
                else {
                    return Err(StepError::UnknownReadIndexResp { ctx });
                };
                self.forwarded_reads.remove(at);
                self.read_states.push(ReadState { ctx, index })
            }
            _ => {}
        }
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                // A leader exists in our term.
                self.become_follower(m.term, m.from);
                return self.step_follower(m);
            }
            MessageBody::VoteResp { pre, reject } => {
                if pre != (self.role == Role::PreCandidate) {
                    return Ok(());
                }
                match self.poll(m.from, !reject) {
                    VoteResult::Won if pre => self.campaign_as(CampaignKind::Election),
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, NO_NODE),
                    VoteResult::Pending => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn step_leader(&mut self, m: Message) -> Result<(), StepError> {
        match &m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                return Err(StepError::ConflictingLeader {
                    leader: self.cfg.id,
                })
            }
            MessageBody::AppendResp { index, .. } if *index > self.log.last_index() => {
                // Within its term a leader's log only grows: it never sent this index.
                return Err(StepError::IndexBeyondLog {
                    index: *index,
                    last_index: self.log.last_index(),
                });
            }
            MessageBody::HeartbeatResp { read_seq } if *read_seq > self.reads.seq => {
                // Counting it would confirm reads no quorum confirmed (stale reads).
                return Err(StepError::ReadSeqNeverSent {
                    read_seq: *read_seq,
                    sent: self.reads.seq,
                });
            }
            _ => {}
        }
        let Some(i) = self.pr_index(m.from) else {
            // Not (or no longer) a member: nothing it says counts.
            return Ok(());
        };
        self.progress[i].1.recent_active = true;
        match m.body {
            MessageBody::AppendResp {
                index,
                reject,
                hint_index,
                hint_term,
            } => self.handle_append_resp(m.from, i, index, reject, hint_index, hint_term),
            MessageBody::HeartbeatResp { read_seq } => {
                let pr = &mut self.progress[i].1;
                pr.read_seq_acked = pr.read_seq_acked.max(read_seq);
                pr.probe_sent = false;
                if pr.on_heartbeat_resp(self.log.last_index())
                    && pr.state == ProgressState::Replicate
                {
                    pr.stalled_heartbeats = 0;
                    pr.become_probe();
                }
                if pr.state == ProgressState::Replicate
                    && pr
                        .inflights
                        .is_full(self.cfg.inflight_msgs_max, self.cfg.inflight_bytes_max)
                {
                    pr.inflights.free_first();
                }
                if pr.match_index < self.log.last_index() {
                    // A follower in Probe whose probe was lost (sent before it was reachable)
                    // gets a new one, empty if everything was sent optimistically: without
                    // it an idle group never finds where a new or returning member is.
                    let probe = pr.state == ProgressState::Probe;
                    self.send_append(m.from, probe);
                }
                self.release_reads();
            }
            MessageBody::SnapshotResp { index, next_offset } => {
                let pr = &mut self.progress[i].1;
                if let Some(send) = pr.snapshot.as_mut() {
                    if send.index == index && send.on_ack(next_offset) {
                        self.send_snapshot_chunk(m.from);
                    }
                }
            }
            MessageBody::ReadIndex { ctx } => {
                // Refusals are not reported: the follower's caller times out.
                let _ = self.leader_read(m.from, ctx);
            }
            MessageBody::Rebuilding { last_index } => {
                let last_index = last_index.min(self.log.last_index());
                // An AppendEntries goes out even with no entries in it when it brings news:
                // to a member we believed to hold our whole log (it restarted mid-rebuild and
                // needs our commit, its target, which only an AppendEntries carries), or when
                // our commit is above what it acknowledged (it holds the entries, but a
                // heartbeat's commit stops at its match index, so it would never commit them
                // on an idle group). Without news, only entries go out: an empty one to a
                // member that acknowledges less than it holds would be answered with
                // `Rebuilding` again, for ever.
                let pr = &self.progress[i].1;
                let news =
                    pr.match_index >= self.log.last_index() || self.log.committed > pr.match_index;
                self.progress[i].1.forget_after(last_index);
                self.send_append(m.from, news);
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        commit: u64,
        entries: &[Entry],
    ) {
        if prev_index < self.log.committed {
            self.ack_committed(from, commit);
            return;
        }
        // `step` checked the entries (contiguous after `prev_index`, terms in order,
        // configurations decode) before we got here.
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries)
        {
            Ok(Some(last_new)) => {
                // A snapshot half received from an earlier leader is of no use once entries
                // past it are committed here; drop its buffer (up to `snapshot_bytes_max`).
                if self
                    .snap_recv
                    .as_ref()
                    .is_some_and(|r| r.meta.index <= self.log.committed)
                {
                    self.snap_recv = None;
                }
                let index = match self.rebuild {
                    Some(_) => Rebuild::ack_index(last_new, commit),
                    None => last_new,
                };
                if index < last_new {
                    // Not an acknowledgement of the rest, but where to continue from.
                    self.send_rebuilding(from);
                }
                let body = MessageBody::AppendResp {
                    index,
                    reject: false,
                    hint_index: 0,
                    hint_term: 0,
                };
                self.send(from, body, false);
            }
            Ok(None) => {
                if self.rebuild.is_some() && prev_index > self.log.last_index() {
                    // A leader in Replicate ignores rejections at or below the match index
                    // our old self earned: tell it that match is gone.
                    self.send_rebuilding(from);
                }
                let hint_index = self.find_conflict_by_term(prev_index, prev_term);
                let hint_term = self.log.term(hint_index).unwrap_or(0);
                let body = MessageBody::AppendResp {
                    index: prev_index,
                    reject: true,
                    hint_index,
                    hint_term,
                };
                self.send(from, body, false);
            }
            // Storage cannot answer now; the leader resends.
            Err(_) => {}
        }
    }

    /// The largest index `<= index` whose term is `<= term` (or the first index we cannot
    /// read). Used on both sides of fast backtracking: a follower's rejection skips a whole
    /// conflicting term instead of one entry per round trip.
    fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut i = index.min(self.log.last_index());
        // Bounded by the log length: each step moves one entry back.
        while i > 0 {
            match self.log.term(i) {
                Ok(t) if t > term => i -= 1,
                _ => break,
            }
        }
        i
    }

    fn handle_append_resp(
        &mut self,
        from: NodeId,
        i: usize,
        index: u64,
        reject: bool,
        hint_index: u64,
        hint_term: u64,
    ) {
        if reject {
            if self.progress[i].1.state == ProgressState::Snapshot {
                return;
            }
            let hint = if hint_term > 0 {
                self.find_conflict_by_term(hint_index, hint_term)
            } else {
                hint_index
            };
            if self.progress[i].1.maybe_decrease_to(index, hint) {
                self.send_append(from, false);
            }
            return;
        }
        let last_index = self.log.last_index();
        let pr = &mut self.progress[i].1;
        if pr.maybe_update(index) {
            let mut snapshot_done = false;
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot => {
                    if pr
                        .snapshot
                        .as_ref()
                        .is_none_or(|s| pr.match_index >= s.index)
                    {
                        pr.become_replicate();
                        snapshot_done = true;
                    }
                }
                ProgressState::Replicate => pr.inflights.free_to(index),
            }
            if self.maybe_commit() {
                self.bcast_append();
            }
            let mut sent = false;
            while self.send_append(from, false) {
                sent = true;
            }
            // A rebuilding member learns its target only from an AppendEntries (a heartbeat's
            // commit is capped by what we think it holds). Caught up by a snapshot alone, it
            // would get none until the next write to this group: send it an empty one.
            if snapshot_done && !sent && self.progress[i].1.rebuilding {
                self.send_append(from, true);
            }
            if from == self.transferee {
                self.maybe_send_timeout_now(from);
            }
        } else if pr.state == ProgressState::Probe && pr.match_index < last_index && !pr.rebuilding
        {
            pr.probe_sent = false;
            self.send_append(from, false);
        }
    }

    /// Tells the leader this rebuilding member's log ends at its last index. It reports less
    /// than any acknowledgement, so it need not wait for persistence.
    fn send_rebuilding(&mut self, to: NodeId) {
        let last_index = self.log.last_index();
        self.send(to, MessageBody::Rebuilding { last_index }, true);
    }

    /// Answers a leader with an accepting AppendResp at our commit index: everything up to
    /// it is committed here, so whatever the leader sent below it is already in place. A
    /// rebuilding member answers at most `vouched`, what the leader's message itself vouches
    /// committed (its commit index, a snapshot's index): its commit may have come from the
    /// recovery stream, above anything this leader told it (`crate::rebuild`).
    fn ack_committed(&mut self, to: NodeId, vouched: u64) {
        let index = match self.rebuild {
            Some(_) => self.log.committed.min(vouched),
            None => self.log.committed,
        };
        self.send(
            to,
            MessageBody::AppendResp {
                index,
                reject: false,
                hint_index: 0,
                hint_term: 0,
            },
            false,
        );
    }

    fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        if meta.index <= self.log.committed {
            // Already have it (or newer): tell the leader where we are.
            self.ack_committed(from, meta.index);
            return;
        }
        match SnapshotRecv::accept(&mut self.snap_recv, &meta, offset, data) {
            ChunkOutcome::Continue(next_offset) => {
                self.send(
                    from,
                    MessageBody::SnapshotResp {
                        index: meta.index,
                        next_offset,
                    },
                    true,
                );
            }
            ChunkOutcome::Complete => {
                let data = self.snap_recv.take().map(|r| r.data).unwrap_or_default();
                let index = meta.index;
                if self.log.match_term(index, meta.term) == Ok(true) {
                    // Our log already contains the snapshot's last entry: just commit.
                    self.log.commit_to(index);
                } else {
                    self.log.restore(Snapshot { meta, data });
                }
                // Acknowledged like entries: only once the snapshot is durable.
                self.send(
                    from,
                    MessageBody::AppendResp {
                        index,
                        reject: false,
                        hint_index: 0,
                        hint_term: 0,
                    },
                    false,
                );
            }
        }
    }

    // ----- Leader machinery ------------------------------------------------------------------

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee != NO_NODE {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> u64 {
        let index = self.log.last_index() + 1;
        self.log.append(&[Entry {
            term: self.term,
            index,
            kind,
            data,
        }]);
        index
    }

    fn pr_index(&self, id: NodeId) -> Option<usize> {
        self.progress.iter().position(|(p, _)| *p == id)
    }

    /// Raft §5.3/§5.4.2: commit the highest index stored on a quorum, counting this leader
    /// only for what it has persisted, and only if that entry is of the current term.
    fn maybe_commit(&mut self) -> bool {
        let persisted = self.log.persisted_index();
        let me = self.cfg.id;
        let progress = &self.progress;
        let quorum_index = quorum::committed_index(self.log.conf(), |id| {
            if id == me {
                persisted
            } else {
                progress
                    .iter()
                    .find(|(p, _)| *p == id)
                    .map_or(0, |(_, pr)| pr.match_index)
            }
        });
        // Never report as committed what is not durable here (also covers an empty config).
        let index = quorum_index.min(persisted);
        if index <= self.log.committed || self.log.term(index) != Ok(self.term) {
            return false;
        }
        let first_in_term = self.log.committed < self.term_start_index;
        self.log.commit_to(index);
        if first_in_term {
            for (from, ctx) in std::mem::take(&mut self.reads.waiting_for_commit) {
                let _ = self.leader_read(from, ctx);
            }
        }
        self.after_commit();
        true
    }

    fn bcast_append(&mut self) {
        let ids: Vec<NodeId> = self.progress.iter().map(|(id, _)| *id).collect();
        for id in ids {
            self.send_append(id, true);
        }
    }

    fn bcast_heartbeat(&mut self, quiesce: bool) {
        let read_seq = self.reads.seq;
        let committed = self.log.committed;
        let (me, term) = (self.cfg.id, self.term);
        for (id, pr) in &self.progress {
            let body = MessageBody::Heartbeat {
                commit: pr.match_index.min(committed),
                read_seq,
                quiesce,
            };
            let msg = Message {
                from: me,
                to: *id,
                term,
                body,
            };
            self.msgs.push(OutMessage {
                msg,
                before_persist: true,
            });
        }
    }

    /// Sends entries from `next_index` to `to` if flow control allows. An empty message (to
    /// carry the commit index) only when `allow_empty`. Returns whether entries were sent.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(i) = self.pr_index(to) else {
            return false;
        };
        let last_index = self.log.last_index();
        let pr = &self.progress[i].1;
        if pr.is_paused(self.cfg.inflight_msgs_max, self.cfg.inflight_bytes_max)
            || pr.fetch_ticks.is_some()
        {
            return false;
        }
        if pr.next_index > last_index && !allow_empty {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let prev_term = self.log.term(prev_index);
        let entries = self
            .log
            .entries(pr.next_index, last_index + 1, self.cfg.append_bytes_max);
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted), _) | (_, Err(StorageError::Compacted)) => {
                self.start_snapshot(to);
                return false;
            }
            (Err(StorageError::Unavailable), _) | (_, Err(StorageError::Unavailable)) => {
                self.request_fetch(i);
                return false;
            }
            // Not returned by `term` or `entries`.
            (Err(StorageError::SnapshotOutOfDate), _)
            | (_, Err(StorageError::SnapshotOutOfDate)) => return false,
        };
        let last = entries.last().map(|e| e.index);
        let bytes = entries.iter().map(Entry::size_bytes).sum();
        self.progress[i].1.sent_entries(last, bytes);
        let commit = self.log.committed;
        let sent = !entries.is_empty();
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
            true,
        );
        sent
    }

    /// Storage could not read what follower `progress[i]` needs: ask the driver to read the
    /// entries storage holds from its `next_index` on (and the term before them), enough for
    /// the whole in-flight window when streaming, and wait for `on_entries_fetched`.
    fn request_fetch(&mut self, i: usize) {
        let (to, pr) = (self.progress[i].0, &self.progress[i].1);
        let low = pr.next_index;
        let high = (self.log.storage.last_index().min(self.log.last_index()) + 1).max(low);
        let bytes_max = if pr.state == ProgressState::Replicate {
            let window = self
                .cfg
                .append_bytes_max
                .saturating_mul(self.cfg.inflight_msgs_max as u64);
            window
                .min(self.cfg.inflight_bytes_max)
                .max(self.cfg.append_bytes_max)
        } else {
            self.cfg.append_bytes_max
        };
        self.progress[i].1.fetch_ticks = Some(0);
        self.fetches.push(EntryFetch {
            purpose: FetchPurpose::Replicate { to },
            low,
            high,
            bytes_max,
        });
    }

    fn start_snapshot(&mut self, to: NodeId) {
        let meta = self.log.storage.snapshot_meta();
        let Some(i) = self.pr_index(to) else { return };
        self.progress[i].1.become_snapshot(SnapshotSend::new(meta));
        self.send_snapshot_chunk(to);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(i) = self.pr_index(to) else { return };
        let chunk_bytes = self.cfg.snapshot_chunk_bytes;
        let Some(send) = self.progress[i].1.snapshot.as_mut() else {
            return;
        };
        send.ticks_since_send = 0;
        let mut result =
            self.log
                .storage
                .snapshot_chunk(send.index, send.offset_acked, chunk_bytes);
        if result == Err(StorageError::SnapshotOutOfDate) {
            // Compaction produced a newer snapshot: start over with it.
            *send = SnapshotSend::new(self.log.storage.snapshot_meta());
            result = self.log.storage.snapshot_chunk(send.index, 0, chunk_bytes);
        }
        let Ok(data) = result else { return };
        send.chunk_in_flight = true;
        let body = MessageBody::Snapshot {
            meta: send.meta.clone(),
            offset: send.offset_acked,
            data,
        };
        self.send(to, body, true);
    }

    fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let Some(i) = self.pr_index(to) else { return };
        // Only a fully caught-up target: a lagging one would lose the election (its log is
        // behind) after having disrupted the cluster.
        if self.progress[i].1.match_index == self.log.last_index() {
            self.send(to, MessageBody::TimeoutNow, true);
        }
    }

    fn leader_read(&mut self, from: NodeId, ctx: u64) -> Result<(), ProposeError> {
        if self.reads.len() >= self.cfg.pending_reads_max {
            return Err(ProposeError::Backpressure);
        }
        // Not a term lookup in storage: one answering `Unavailable` here would park the read
        // until the next first commit of a term, which never comes.
        if self.log.committed < self.term_start_index {
            self.reads.waiting_for_commit.push((from, ctx));
            return Ok(());
        }
        let index = self.log.committed;
        let me = self.cfg.id;
        if quorum::vote_result(self.log.conf(), |id| Some(id == me)) == VoteResult::Won {
            self.respond_read(from, ctx, index);
            return Ok(());
        }
        self.reads.add(index, ctx, from);
        self.bcast_heartbeat(false);
        Ok(())
    }

    fn respond_read(&mut self, from: NodeId, ctx: u64, index: u64) {
        if from == self.cfg.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(from, MessageBody::ReadIndexResp { ctx, index }, true);
        }
    }

    fn release_reads(&mut self) {
        if self.reads.pending.is_empty() {
            return;
        }
        let me = self.cfg.id;
        let progress = &self.progress;
        let confirmed = quorum::committed_index(self.log.conf(), |id| {
            if id == me {
                u64::MAX
            } else {
                progress
                    .iter()
                    .find(|(p, _)| *p == id)
                    .map_or(0, |(_, pr)| pr.read_seq_acked)
            }
        });
        for r in self.reads.release(confirmed) {
            self.respond_read(r.from, r.ctx, r.index);
        }
    }

    /// Makes the leader's progress set match the configuration in force.
    fn sync_progress(&mut self) {
        let members = self.log.conf().members();
        self.progress.retain(|(id, _)| members.contains(id));
        let next_index = self.log.last_index() + 1;
        for id in members {
            if id != self.cfg.id && !self.progress.iter().any(|(p, _)| *p == id) {
                let mut pr = Progress::new(next_index);
                pr.recent_active = true;
                self.progress.push((id, pr));
            }
        }
        if self.transferee != NO_NODE && !self.log.conf().voters.contains(&self.transferee) {
            self.transferee = NO_NODE;
        }
    }

    /// Configuration work a leader does once its latest configuration is committed: leave a
    /// joint configuration (Raft §6: C_new is proposed once C_old,new is committed), or step
    /// down when the committed configuration no longer includes it.
    fn after_commit(&mut self) {
        if self.role != Role::Leader || self.log.conf_index() > self.log.committed {
            return;
        }
        if !self.log.conf().is_voter(self.cfg.id) {
            // The others learn the commit index from this last broadcast.
            self.bcast_append();
            self.become_follower(self.term, NO_NODE);
            return;
        }
        if self.log.conf().is_joint() {
            let conf = self.log.conf();
            let leave = ConfState {
                voters: conf.voters.clone(),
                voters_outgoing: Vec::new(),
                learners: conf.learners.clone(),
            };
            self.pending_conf_index = self.append_entry(EntryKind::ConfChange, leave.encode());
            self.sync_progress();
            self.bcast_append();
        }
    }

    // ----- Helpers ---------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody, before_persist: bool) {
        self.send_with_term(to, self.term, body, before_persist);
    }

    fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody, before_persist: bool) {
        let msg = Message {
            from: self.cfg.id,
            to,
            term,
            body,
        };
        self.msgs.push(OutMessage {
            msg,
            before_persist,
        });
    }

    /// Uniform in `[election_ticks_min, election_ticks_max)` (splitmix64).
    fn random_timeout(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let span = self.cfg.election_ticks_max - self.cfg.election_ticks_min;
        self.cfg.election_ticks_min + z % span
    }
}
