//! The pulling side of the recovery stream, as rules without I/O (docs/replication.md,
//! section 2): which fetches a rebuilding group has outstanding, from whom, how many, and what
//! it does on a chunk, a refusal or a timeout. `shard/recovery_stream.rs` carries the rules out
//! (sends the fetches, appends the chunks through `RawNode::append_committed`).
//!
//! - **Position.** A fetch asks from the first index not already covered: the follower's
//!   last index + 1 (its durable log after a restart: the stream resumes there), then past
//!   every chunk held or requested. A chunk's end is known once it arrives; a request's is
//!   predicted from the mean entry size seen (`chunk_bytes / mean`), so a chunk shorter than
//!   predicted leaves a hole that the next fetch fills. Before the first chunk, one fetch.
//! - **Window.** At most `chunks_inflight_max` chunks requested or held per group (a slow
//!   receiver holds at most that many chunks); halved (down to 1) on a timeout, grown by one
//!   per chunk appended.
//! - **Servers.** All new requests go to one server at a time, chosen from the group's other
//!   members, followers first (the leader serves produce); on `NotCaughtUp`, `Compacted`, a
//!   timeout, `Busy` or a chunk that does not fit, the next one. Any caught-up replica's
//!   committed prefix is the leader's, so the choice is only about load.
//! - **Back-off.** After a timeout, or when every server refused in a row: wait 100 ms
//!   doubling to 10 s, plus up to half of it again as jitter, before fetching again; reset by
//!   the next chunk appended.
//! - **Busy.** A server whose recovery budget is spent says how long until it has some again
//!   (`retry_after_ms`, its debt over its rate): the puller waits that long, keeps its window
//!   and the other requests that server is already reading (each is answered on its own), and
//!   asks the next server. Treating it as a failure (halve, back off 100 ms or more, forget
//!   the requests in flight and drop their chunks when they arrive) held a rebuild at ~0.6 of
//!   its budget: the server's bucket runs dry briefly many times a second at full rate.
//! - **Corruption.** A server whose chunk contradicts an entry committed here is not asked
//!   again by this pull (one of the two logs is corrupt; the repair path owns that).

use std::collections::{BTreeMap, BTreeSet};

use tern_net::{RecoveryChunk, RecoveryRefuseReason};
use tern_raft::message::NodeId;

/// The stream's settings (`[recovery]` in `tern.toml`), with times in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Bytes a fetch asks for (a chunk holds at least one entry, so one larger entry still
    /// goes).
    pub chunk_bytes: u64,
    /// Chunks requested or held per group at once.
    pub chunks_inflight_max: u32,
    /// Ticks a fetch waits for its answer.
    pub chunk_timeout_ticks: u64,
    /// A rebuilding group pulls only while its log ends more than this many entries before
    /// its leader's commit; AppendEntries carries it the rest of the way.
    pub lag_entries_max: u64,
    /// First back-off, and its ceiling, in ticks.
    pub backoff_min_ticks: u64,
    pub backoff_max_ticks: u64,
    /// Milliseconds per tick, to turn a server's `Busy { retry_after_ms }` into ticks.
    pub tick_ms: u64,
}

/// One fetch to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchOrder {
    pub server: NodeId,
    pub from_index: u64,
    pub bytes_max: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outstanding {
    server: NodeId,
    from_index: u64,
    deadline: u64,
}

/// Why a chunk was not appended (what `RawNode::append_committed` said).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkFault {
    /// Our entry at the chunk's `prev_index` differs and is not committed: ask again from
    /// our commit index + 1, which replaces the suffix.
    PrevMismatch { commit: u64 },
    /// The chunk contradicts a committed entry here.
    Corrupt,
    /// Anything else (malformed, storage busy): drop it and ask again.
    Other,
}

/// The pull of one group.
#[derive(Debug)]
pub struct Pull {
    limits: StreamLimits,
    outstanding: Vec<Outstanding>,
    /// Chunks received, waiting for the log to reach their `prev_index`, by `prev_index`.
    held: BTreeMap<u64, (NodeId, RecoveryChunk)>,
    window: u32,
    /// Index into the server list of the current server.
    cursor: usize,
    /// Servers not to ask again (their chunk contradicted a committed entry here).
    excluded: BTreeSet<NodeId>,
    backoff_ticks: u64,
    retry_at: u64,
    refusals_in_row: usize,
    /// Entries and their bytes received, for the predicted length of a request.
    seen: (u64, u64),
    /// Where to ask from instead of the last index + 1 (after a `PrevMismatch`).
    restart_from: Option<u64>,
    rng: u64,
}

impl Pull {
    pub fn new(limits: StreamLimits, seed: u64) -> Self {
        Pull {
            limits,
            outstanding: Vec::new(),
            held: BTreeMap::new(),
            window: limits.chunks_inflight_max.max(1),
            cursor: 0,
            excluded: BTreeSet::new(),
            backoff_ticks: 0,
            retry_at: 0,
            refusals_in_row: 0,
            seen: (0, 0),
            restart_from: None,
            rng: seed | 1,
        }
    }

    /// The entries a request is expected to bring (at least 1).
    fn predicted_entries(&self) -> u64 {
        let (entries, bytes) = self.seen;
        if entries == 0 || bytes == 0 {
            return 1;
        }
        let mean = (bytes / entries).max(1);
        (self.limits.chunk_bytes / mean).max(1)
    }

    /// The first index from `start` on that no held chunk or outstanding request covers.
    fn first_uncovered(&self, start: u64) -> u64 {
        let span = self.predicted_entries();
        let mut next = start;
        loop {
            let held_end = self
                .held
                .iter()
                .filter(|(&prev, _)| prev < next)
                .map(|(&prev, (_, c))| prev + c.entries.len() as u64 + 1)
                .max()
                .unwrap_or(0);
            let asked_end = self
                .outstanding
                .iter()
                .filter(|o| o.from_index <= next)
                .map(|o| o.from_index + span)
                .max()
                .unwrap_or(0);
            let end = held_end.max(asked_end);
            if end <= next {
                return next;
            }
            next = end;
        }
    }

    /// The server to ask now: the `cursor`-th of `servers` not excluded.
    fn server(&self, servers: &[NodeId]) -> Option<NodeId> {
        let usable: Vec<NodeId> = servers
            .iter()
            .copied()
            .filter(|s| !self.excluded.contains(s))
            .collect();
        (!usable.is_empty()).then(|| usable[self.cursor % usable.len()])
    }

    /// The fetches to send at tick `now`. `last_index` is the follower's log end, `upto` the
    /// last index worth asking for (its leader's commit as heard), `servers` the candidates in
    /// preference order; nothing while backing off or when the budget says no (`may_start`).
    pub fn due(
        &mut self,
        now: u64,
        last_index: u64,
        upto: u64,
        servers: &[NodeId],
        may_start: bool,
    ) -> Vec<FetchOrder> {
        let mut orders = Vec::new();
        if now < self.retry_at || !may_start {
            return orders;
        }
        let Some(server) = self.server(servers) else {
            return orders;
        };
        // Until a chunk taught us the entry size, one request at a time.
        let window = if self.seen.0 == 0 { 1 } else { self.window };
        let start = self.restart_from.unwrap_or(last_index + 1);
        while self.outstanding.len() + self.held.len() < window as usize {
            let from_index = self.first_uncovered(start);
            if from_index > upto {
                break;
            }
            self.outstanding.push(Outstanding {
                server,
                from_index,
                deadline: now + self.limits.chunk_timeout_ticks,
            });
            orders.push(FetchOrder {
                server,
                from_index,
                bytes_max: self.limits.chunk_bytes,
            });
        }
        orders
    }

    /// A chunk arrived from `from`. Kept when it answers a request of ours, else dropped
    /// (late, after its timeout: asked again since).
    pub fn on_chunk(&mut self, from: NodeId, chunk: RecoveryChunk) -> bool {
        let asked = chunk.prev_index + 1;
        let Some(at) = self
            .outstanding
            .iter()
            .position(|o| o.server == from && o.from_index == asked)
        else {
            return false;
        };
        self.outstanding.remove(at);
        if chunk.entries.is_empty() {
            // Nothing past `prev_index` is committed there yet: another server may know more.
            self.next_server();
            return false;
        }
        let bytes: u64 = chunk.entries.iter().map(|e| e.data.len() as u64).sum();
        self.seen.0 += chunk.entries.len() as u64;
        self.seen.1 += bytes;
        self.held.insert(chunk.prev_index, (from, chunk));
        true
    }

    /// The next held chunk that starts within the log (its `prev_index <= last_index`), to
    /// append now. Chunks wholly at or below `last_index` are taken too: the core skips the
    /// entries it holds (and checks them against committed ones).
    pub fn next_ready(&mut self, last_index: u64) -> Option<(NodeId, RecoveryChunk)> {
        let (&prev, _) = self.held.iter().next()?;
        if prev > last_index {
            return None;
        }
        self.held.remove(&prev)
    }

    /// Puts back a chunk `next_ready` gave that could not be appended yet (the round's write
    /// batch was full).
    pub fn put_back(&mut self, from: NodeId, chunk: RecoveryChunk) {
        self.held.insert(chunk.prev_index, (from, chunk));
    }

    /// A chunk was appended: the stream works, so stop backing off and widen the window.
    pub fn on_appended(&mut self) {
        self.backoff_ticks = 0;
        self.retry_at = 0;
        self.refusals_in_row = 0;
        self.restart_from = None;
        self.window = (self.window + 1).min(self.limits.chunks_inflight_max.max(1));
    }

    /// A chunk from `from` could not be appended.
    pub fn on_fault(&mut self, from: NodeId, fault: ChunkFault, now: u64, servers: usize) {
        self.forget_requests_to(from);
        match fault {
            ChunkFault::PrevMismatch { commit } => {
                self.held.clear();
                self.restart_from = Some(commit + 1);
            }
            ChunkFault::Corrupt => {
                self.excluded.insert(from);
                self.held.retain(|_, (server, _)| *server != from);
            }
            ChunkFault::Other => self.refused(now, servers),
        }
    }

    /// The server answered our fetch from `from_index` with a refusal.
    pub fn on_refuse(
        &mut self,
        from: NodeId,
        from_index: u64,
        reason: RecoveryRefuseReason,
        now: u64,
        servers: usize,
    ) {
        let before = self.outstanding.len();
        self.outstanding
            .retain(|o| !(o.server == from && o.from_index == from_index));
        if self.outstanding.len() == before {
            return; // not (or no longer) ours
        }
        match reason {
            RecoveryRefuseReason::Busy { retry_after_ms } => {
                // Throttled, not failing: wait as long as the server says (at least a tick)
                // and keep everything else.
                let ticks = u64::from(retry_after_ms)
                    .div_ceil(self.limits.tick_ms.max(1))
                    .clamp(1, self.limits.backoff_max_ticks.max(1));
                self.retry_at = self.retry_at.max(now + ticks);
                self.next_server();
            }
            RecoveryRefuseReason::NotCaughtUp | RecoveryRefuseReason::Compacted { .. } => {
                // Compacted: the entries before `log_start` come with a snapshot, which the
                // leader sends through the core's own transfer; another replica may still
                // hold them. Whatever else that server was asked, it will not serve either.
                self.forget_requests_to(from);
                self.refused(now, servers);
            }
        }
    }

    /// Fetches past their deadline at tick `now` are given up: halve the window, back off,
    /// and ask the next server.
    pub fn expire(&mut self, now: u64) {
        let before = self.outstanding.len();
        self.outstanding.retain(|o| o.deadline > now);
        if self.outstanding.len() < before {
            self.shrink_and_back_off(now);
            self.next_server();
        }
    }

    /// A server refused or failed: move on; once every server did in a row, back off.
    fn refused(&mut self, now: u64, servers: usize) {
        self.refusals_in_row += 1;
        self.next_server();
        if self.refusals_in_row >= servers.max(1) {
            self.refusals_in_row = 0;
            self.back_off(now);
        }
    }

    fn forget_requests_to(&mut self, server: NodeId) {
        self.outstanding.retain(|o| o.server != server);
    }

    fn next_server(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
    }

    fn shrink_and_back_off(&mut self, now: u64) {
        self.window = (self.window / 2).max(1);
        self.back_off(now);
    }

    fn back_off(&mut self, now: u64) {
        self.backoff_ticks = if self.backoff_ticks == 0 {
            self.limits.backoff_min_ticks
        } else {
            (self.backoff_ticks * 2).min(self.limits.backoff_max_ticks)
        }
        .max(1);
        // splitmix64: deterministic jitter (the node simulation replays a seed exactly).
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let jitter = z % (self.backoff_ticks / 2 + 1);
        self.retry_at = now + self.backoff_ticks + jitter;
    }

    /// Fetches outstanding (for status pages and tests).
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Chunks held (for tests).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The current window.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The tick before which no fetch is sent.
    pub fn retry_at(&self) -> u64 {
        self.retry_at
    }
}

/// The order in which a rebuilding member asks the other members of its group: followers
/// first (the leader serves produce), rotated by the group id so that the groups of one node
/// spread their reads over the replicas; the leader last.
pub fn server_order(members: &[NodeId], me: NodeId, leader: NodeId, group: u64) -> Vec<NodeId> {
    let mut followers: Vec<NodeId> = members
        .iter()
        .copied()
        .filter(|&m| m != me && m != leader)
        .collect();
    followers.sort_unstable();
    followers.dedup();
    if !followers.is_empty() {
        let k = (group % followers.len() as u64) as usize;
        followers.rotate_left(k);
    }
    if leader != me && members.contains(&leader) {
        followers.push(leader);
    }
    followers
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_raft::message::{Entry, EntryKind};

    fn limits() -> StreamLimits {
        StreamLimits {
            chunk_bytes: 1000,
            chunks_inflight_max: 4,
            chunk_timeout_ticks: 50,
            lag_entries_max: 10,
            backoff_min_ticks: 10,
            backoff_max_ticks: 1000,
            tick_ms: 10,
        }
    }

    fn chunk(prev_index: u64, count: u64, entry_bytes: usize) -> RecoveryChunk {
        RecoveryChunk {
            snapshot_index: 0,
            server_commit: 10_000,
            prev_index,
            prev_term: u64::from(prev_index > 0),
            entries: (prev_index + 1..=prev_index + count)
                .map(|index| Entry {
                    term: 1,
                    index,
                    kind: EntryKind::Normal,
                    data: vec![0; entry_bytes],
                })
                .collect(),
        }
    }

    #[test]
    fn one_fetch_until_the_entry_size_is_known_then_a_window_of_predicted_chunks() {
        let mut p = Pull::new(limits(), 1);
        let orders = p.due(0, 0, 1000, &[2, 3], true);
        assert_eq!(
            orders,
            vec![FetchOrder {
                server: 2,
                from_index: 1,
                bytes_max: 1000
            }]
        );
        assert!(p.due(1, 0, 1000, &[2, 3], true).is_empty(), "one at a time");
        // 10 entries of 100 bytes: the next requests are predicted 10 entries apart.
        assert!(p.on_chunk(2, chunk(0, 10, 100)));
        let from: Vec<u64> = p
            .due(2, 0, 1000, &[2, 3], true)
            .iter()
            .map(|o| o.from_index)
            .collect();
        assert_eq!(
            from,
            vec![11, 21, 31],
            "the held chunk counts in the window of 4"
        );
        assert_eq!(p.next_ready(0).map(|(_, c)| c.prev_index), Some(0));
        p.on_appended();
        assert_eq!(p.due(3, 10, 1000, &[2, 3], true)[0].from_index, 41);
    }

    #[test]
    fn a_short_chunk_leaves_a_hole_that_the_next_fetch_fills() {
        let mut p = Pull::new(limits(), 1);
        p.due(0, 0, 1000, &[2], true);
        p.on_chunk(2, chunk(0, 10, 100));
        let _ = p.next_ready(0);
        p.on_appended();
        let asked: Vec<u64> = p
            .due(1, 10, 1000, &[2], true)
            .iter()
            .map(|o| o.from_index)
            .collect();
        assert_eq!(asked, vec![11, 21, 31, 41]);
        // The chunk from 11 holds 4 entries only (large ones): 15..=20 is a hole.
        assert!(p.on_chunk(2, chunk(10, 4, 250)));
        let (_, c) = p.next_ready(10).expect("starts at our end");
        assert_eq!(c.prev_index, 10);
        p.on_appended();
        assert_eq!(
            p.due(2, 14, 1000, &[2], true)
                .iter()
                .map(|o| o.from_index)
                .collect::<Vec<_>>(),
            vec![15],
            "the hole, before anything past the requests in flight"
        );
        // A chunk after the hole waits until the log reaches it.
        assert!(p.on_chunk(2, chunk(20, 10, 100)));
        assert!(p.next_ready(14).is_none());
    }

    #[test]
    fn a_timeout_halves_the_window_backs_off_with_jitter_and_moves_to_the_next_server() {
        let mut p = Pull::new(limits(), 7);
        p.due(0, 0, 1000, &[2, 3], true);
        p.on_chunk(2, chunk(0, 10, 100));
        let _ = p.next_ready(0);
        p.on_appended();
        assert_eq!(p.due(1, 10, 1000, &[2, 3], true).len(), 4);
        p.expire(50);
        assert_eq!(p.outstanding(), 4, "not yet due");
        p.expire(51);
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.window(), 2);
        let retry = p.retry_at();
        assert!(
            (61..=66).contains(&retry),
            "10 ticks plus up to 5 of jitter: {retry}"
        );
        assert!(p.due(retry - 1, 10, 1000, &[2, 3], true).is_empty());
        let orders = p.due(retry, 10, 1000, &[2, 3], true);
        assert_eq!(orders.len(), 2);
        assert!(orders.iter().all(|o| o.server == 3 && o.from_index >= 11));
        assert_eq!(orders[0].from_index, 11, "resumes where the log ends");
        // Repeated timeouts double the back-off up to the ceiling, and the window stays >= 1.
        let mut now = retry;
        let mut last_wait = 0;
        for _ in 0..12 {
            p.expire(now + 1000);
            now += 1000;
            let wait = p.retry_at() - now;
            assert!(wait >= last_wait.min(1000) / 2, "{wait} after {last_wait}");
            last_wait = wait;
            p.due(p.retry_at(), 10, 1000, &[2, 3], true);
            now = p.retry_at();
        }
        assert_eq!(p.window(), 1);
        assert!(
            last_wait <= 1500,
            "ceiling 1000 ticks plus jitter: {last_wait}"
        );
    }

    #[test]
    fn refusals_move_on_and_back_off_only_when_every_server_refused() {
        let mut p = Pull::new(limits(), 3);
        let o = p.due(0, 0, 1000, &[2, 3], true)[0];
        p.on_refuse(2, o.from_index, RecoveryRefuseReason::NotCaughtUp, 0, 2);
        assert_eq!(p.retry_at(), 0, "one refusal: ask the next at once");
        let o = p.due(0, 0, 1000, &[2, 3], true)[0];
        assert_eq!(o.server, 3);
        p.on_refuse(3, o.from_index, RecoveryRefuseReason::NotCaughtUp, 0, 2);
        assert!(p.retry_at() >= 10, "both refused: back off");
        // A refusal for a fetch we did not send changes nothing.
        let before = p.retry_at();
        p.on_refuse(
            3,
            99,
            RecoveryRefuseReason::Busy { retry_after_ms: 5 },
            0,
            2,
        );
        assert_eq!(p.retry_at(), before);
    }

    #[test]
    fn busy_waits_what_the_server_said_and_keeps_the_window_and_the_other_requests() {
        let mut p = Pull::new(limits(), 5);
        p.due(0, 0, 1000, &[2, 3], true);
        p.on_chunk(2, chunk(0, 10, 100));
        let _ = p.next_ready(0);
        p.on_appended();
        let orders = p.due(1, 10, 1000, &[2, 3], true);
        assert_eq!(orders.len(), 4);
        assert!(orders.iter().all(|o| o.server == 2));
        // The server's budget ran dry for the third request: 25 ms = 3 ticks of 10 ms.
        p.on_refuse(
            2,
            orders[2].from_index,
            RecoveryRefuseReason::Busy { retry_after_ms: 25 },
            1,
            2,
        );
        assert_eq!(p.window(), 4, "throttled, not failing: the window stays");
        assert_eq!(p.outstanding(), 3, "the requests being read are kept");
        assert_eq!(p.retry_at(), 4);
        assert!(p.due(3, 10, 1000, &[2, 3], true).is_empty());
        // The refused range is asked again, of the next server.
        let again = p.due(4, 10, 1000, &[2, 3], true);
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].server, again[0].from_index),
            (3, orders[2].from_index)
        );
        // The kept requests' chunks are still taken when they arrive.
        assert!(p.on_chunk(2, chunk(orders[0].from_index - 1, 10, 100)));
    }

    #[test]
    fn a_corrupt_server_is_not_asked_again_and_a_mismatch_restarts_after_the_commit() {
        let mut p = Pull::new(limits(), 3);
        p.due(0, 0, 1000, &[2, 3], true);
        p.on_fault(2, ChunkFault::Corrupt, 0, 2);
        for _ in 0..3 {
            let orders = p.due(0, 0, 1000, &[2, 3], true);
            assert!(orders.iter().all(|o| o.server == 3), "{orders:?}");
            p.expire(10_000);
            p.due(p.retry_at(), 0, 1000, &[2, 3], true);
        }
        let mut p = Pull::new(limits(), 3);
        p.due(0, 40, 1000, &[2], true);
        p.on_fault(2, ChunkFault::PrevMismatch { commit: 30 }, 0, 1);
        assert_eq!(p.due(0, 40, 1000, &[2], true)[0].from_index, 31);
    }

    #[test]
    fn late_and_unasked_chunks_are_dropped_and_nothing_past_upto_is_asked() {
        let mut p = Pull::new(limits(), 3);
        assert!(!p.on_chunk(2, chunk(0, 3, 10)), "never asked");
        p.due(0, 0, 1000, &[2], true);
        p.expire(100);
        assert!(!p.on_chunk(2, chunk(0, 3, 10)), "timed out before it came");
        assert_eq!(p.held(), 0);
        let mut p = Pull::new(limits(), 3);
        assert!(p.due(0, 50, 50, &[2], true).is_empty(), "nothing to ask");
        assert!(p.due(0, 0, 50, &[2], false).is_empty(), "budget says wait");
    }

    #[test]
    fn followers_first_spread_by_group_then_the_leader() {
        assert_eq!(server_order(&[1, 2, 3, 4], 1, 2, 0), vec![3, 4, 2]);
        assert_eq!(server_order(&[1, 2, 3, 4], 1, 2, 1), vec![4, 3, 2]);
        assert_eq!(server_order(&[1, 2], 1, 2, 5), vec![2]);
        assert_eq!(
            server_order(&[1, 2, 3], 1, 0, 0),
            vec![2, 3],
            "no leader known"
        );
    }
}
