//! The node-wide recovery bandwidth budget and the per-shard cap on partitions recovering at
//! once (docs/replication.md, section 6; `[recovery]` in docs/configuration.md).
//!
//! What is charged: catch-up traffic only, never live replication. On a leader, the entries
//! it reads back from disk for a follower that fell behind its cache (`FetchPurpose::Replicate`
//! reads); on a replica being rebuilt, the entries (and snapshot chunks) it receives.
//!
//! How it is shared: each shard owns a token bucket filled at `budget / shards` bytes per
//! second, one tick at a time (simulated time in the node simulation, so runs repeat). A
//! charge is taken whole once the bytes are known (the bucket may go into debt); new work
//! starts only while the bucket holds tokens, so the long-run rate is the budget and one
//! read or message at most overshoots it. Once a second a shard settles: it tells the other
//! shards (through the shard channels, [`super::shard::ShardMsg::RecoveryLend`]) whether it
//! wanted more than its share, and, if it did not while another shard did, lends what it
//! left of its share in that second to the shards that asked, and pays for it out of its
//! next second. No cross-shard hop per charge.
//!
//! Everything here is plain state driven by the shard's loop (no clock, no I/O), so the tests
//! below walk it tick by tick.

use std::collections::{BTreeMap, BTreeSet};

/// `[recovery]` as a shard uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryLimits {
    /// Node-wide bytes per second for catch-up traffic; 0 = no limit.
    pub bytes_per_sec_max: u64,
    /// Partitions (the controller included) receiving catch-up data at once on one shard.
    pub partitions_per_shard_max: u32,
    /// Catch-up reads run in a low-share glommio task queue. Off only in the node
    /// simulation: its runs must replay exactly, and queue shares follow real CPU time.
    pub low_priority_reads: bool,
    /// A partition writes an offset checkpoint once this many payload bytes were applied
    /// since its last one (besides every `CHECKPOINT_ENTRIES` entries): what a restart reads
    /// past the newest checkpoint (src/node/offset_checkpoint.rs).
    pub offset_checkpoint_bytes: u64,
    /// The recovery stream's chunk size, window, timeout and reach.
    pub stream: super::recovery_stream_rules::StreamLimits,
}

impl Default for RecoveryLimits {
    fn default() -> Self {
        RecoveryLimits {
            bytes_per_sec_max: 100 << 20,
            partitions_per_shard_max: 2,
            low_priority_reads: true,
            offset_checkpoint_bytes: super::offset_checkpoint::CHECKPOINT_BYTES,
            stream: super::config::RecoverySection::default().stream_limits(TICK_MS_DEFAULT),
        }
    }
}

/// The node's tick (`tern serve` ticks every 10 ms), for converting the stream's times.
const TICK_MS_DEFAULT: u64 = 10;

impl RecoveryLimits {
    /// The limits `[recovery]` sets, the stream's times counted in ticks of `tick`.
    pub fn new(r: &super::config::RecoverySection, tick: std::time::Duration) -> Self {
        RecoveryLimits {
            bytes_per_sec_max: r.bandwidth_bytes_per_sec_max.as_u64(),
            partitions_per_shard_max: r.partitions_per_shard_max,
            low_priority_reads: true,
            offset_checkpoint_bytes: r.offset_checkpoint_bytes.as_u64(),
            stream: r.stream_limits(tick.as_millis() as u64),
        }
    }
}

/// Which way catch-up bytes went, for `tern_snapshot_transfer_bytes_total{direction}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by a replica being rebuilt.
    In,
    /// Read from disk and sent to a follower behind the leader's cache.
    Out,
}

/// What a shard tells the others once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lend {
    pub shard: u32,
    /// Work on this shard waited for tokens during the second just settled.
    pub wanted: bool,
    /// What this shard left of its share in the second just settled, given to the shards
    /// that wanted more (0 when it wanted itself, or nobody else did).
    pub spare: u64,
}

/// Counters and the last second's rate, copied into `/metrics` and `/v1/cluster`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    /// Catch-up bytes (both directions) charged during the last settled second.
    pub bytes_last_sec: u64,
    /// The bucket's tokens now (negative: in debt).
    pub tokens: i64,
}

/// One shard's token bucket.
///
/// Invariant: `tokens <= capacity()` after every refill (borrowed tokens excepted, which are
/// spent within the next second). The capacity is a tenth of a second of the own share: a
/// burst small enough that each second stays within its budget (a full second's burst let a
/// rebuild run at twice the budget in its first second, `tern-bench recovery --cluster`).
#[derive(Debug)]
pub struct RecoveryBudget {
    shard: u32,
    shards: u32,
    /// This shard's own share, bytes per second; 0 = no limit.
    share_per_sec: u64,
    ticks_per_sec: u64,
    /// Ticks since start, to spread the share over a second without rounding loss.
    ticks: u64,
    tokens: i64,
    /// Some work waited for tokens since the last settle.
    wanted: bool,
    /// Shards that said they wanted more at their last settle (this one included when so).
    wanting: BTreeSet<u32>,
    /// Spare tokens other shards announced and this shard has not yet taken, by lender.
    offers: BTreeMap<u32, u64>,
    charged_this_sec: u64,
    stats: BudgetStats,
}

impl RecoveryBudget {
    /// `tick` is the shard's Raft tick; a budget of 0 means no limit.
    pub fn new(shard: u32, shards: u32, bytes_per_sec_max: u64, tick: std::time::Duration) -> Self {
        let shards = shards.max(1);
        let tick_ms = (tick.as_millis() as u64).max(1);
        let share_per_sec = if bytes_per_sec_max == 0 {
            0
        } else {
            (bytes_per_sec_max / u64::from(shards)).max(1)
        };
        RecoveryBudget {
            shard,
            shards,
            share_per_sec,
            ticks_per_sec: (1000 / tick_ms).max(1),
            ticks: 0,
            // Start full: a rebuild begins at once.
            tokens: Self::capacity_of(share_per_sec),
            wanted: false,
            wanting: BTreeSet::new(),
            offers: BTreeMap::new(),
            charged_this_sec: 0,
            stats: BudgetStats {
                tokens: Self::capacity_of(share_per_sec),
                ..BudgetStats::default()
            },
        }
    }

    pub fn unlimited(&self) -> bool {
        self.share_per_sec == 0
    }

    /// Tokens a bucket holds at most: a tenth of a second of the own share.
    fn capacity(&self) -> i64 {
        Self::capacity_of(self.share_per_sec)
    }

    fn capacity_of(share_per_sec: u64) -> i64 {
        (share_per_sec / 10).max(1).min(i64::MAX as u64) as i64
    }

    /// Whether new catch-up work may start now. A refusal is remembered: this shard then
    /// asks the others for their spare share at the next settle.
    pub fn may_start(&mut self) -> bool {
        if self.unlimited() || self.tokens > 0 {
            return true;
        }
        self.wanted = true;
        false
    }

    /// Milliseconds until [`Self::may_start`] says yes again without lending: the debt over
    /// this shard's own rate, at least one tick (0 while it says yes). What a server tells a
    /// puller it refuses as `Busy`.
    pub fn retry_after_ms(&self) -> u32 {
        if self.unlimited() || self.tokens > 0 {
            return 0;
        }
        let tick_ms = (1000 / self.ticks_per_sec).max(1);
        let debt = self.tokens.unsigned_abs() + 1;
        let ms = (debt.saturating_mul(1000)).div_ceil(self.share_per_sec);
        ms.clamp(tick_ms, 10_000) as u32
    }

    /// Catch-up bytes moved (read for a follower, or received while rebuilding).
    pub fn charge(&mut self, bytes: u64, direction: Direction) {
        match direction {
            Direction::In => self.stats.bytes_in_total += bytes,
            Direction::Out => self.stats.bytes_out_total += bytes,
        }
        self.charged_this_sec = self.charged_this_sec.saturating_add(bytes);
        if !self.unlimited() {
            self.tokens = self
                .tokens
                .saturating_sub(bytes.min(i64::MAX as u64) as i64);
        }
    }

    /// One tick: refill; once a second, settle and return what to tell the other shards
    /// (`None` on other ticks, and always with a single shard).
    pub fn tick(&mut self) -> Option<Lend> {
        let t = self.ticks % self.ticks_per_sec;
        self.ticks += 1;
        if !self.unlimited() {
            // The share spread over the second's ticks, the remainder on the last ones.
            let before = self.share_per_sec * t / self.ticks_per_sec;
            let after = self.share_per_sec * (t + 1) / self.ticks_per_sec;
            let refill = (after - before).min(i64::MAX as u64) as i64;
            if self.tokens < self.capacity() {
                self.tokens = self.tokens.saturating_add(refill).min(self.capacity());
            }
        }
        self.stats.tokens = self.tokens;
        if t + 1 < self.ticks_per_sec {
            return None;
        }
        Some(self.settle())
    }

    /// The end of a second.
    fn settle(&mut self) -> Lend {
        let charged = std::mem::take(&mut self.charged_this_sec);
        self.stats.bytes_last_sec = charged;
        let wanted = std::mem::take(&mut self.wanted);
        if wanted {
            self.wanting.insert(self.shard);
        } else {
            self.wanting.remove(&self.shard);
        }
        // Take what the others offered, shared among the shards that asked.
        if wanted && !self.unlimited() {
            let offered: u64 = std::mem::take(&mut self.offers).values().sum();
            let askers = self.wanting.len().max(1) as u64;
            let borrowed = (offered / askers).min(i64::MAX as u64) as i64;
            self.tokens = self.tokens.saturating_add(borrowed);
        } else {
            self.offers.clear();
        }
        // Lend what this shard left of its share in the second just ended, and pay for it
        // out of the next one (the bucket goes into debt): the node as a whole then never
        // moves more than its budget plus the buckets' bursts, however the shards take turns.
        let others_want = self.wanting.iter().any(|&s| s != self.shard);
        let spare = if !wanted && others_want && !self.unlimited() {
            self.share_per_sec.saturating_sub(charged)
        } else {
            0
        };
        self.tokens = self
            .tokens
            .saturating_sub(spare.min(i64::MAX as u64) as i64);
        self.stats.tokens = self.tokens;
        Lend {
            shard: self.shard,
            wanted,
            spare,
        }
    }

    /// Another shard's settle.
    pub fn on_lend(&mut self, lend: Lend) {
        if lend.shard == self.shard || lend.shard >= self.shards {
            return;
        }
        if lend.wanted {
            self.wanting.insert(lend.shard);
        } else {
            self.wanting.remove(&lend.shard);
        }
        if lend.spare > 0 {
            // A lender that settles twice before this shard does: its newest offer replaces
            // the older one (the older tokens were its own, and it kept none of them).
            *self.offers.entry(lend.shard).or_default() += lend.spare;
        }
    }

    pub fn stats(&self) -> BudgetStats {
        self.stats
    }
}

/// Which of a shard's rebuilding groups may receive catch-up data now: at most `cap`, the
/// controller group first (nothing else can be placed without it). At each tick the free
/// slots go to the groups with the fewest entries behind (most partitions healthy soonest),
/// then by group id; between ticks a free slot goes to the first group whose data arrives
/// ([`Admission::try_admit`]). A group keeps its slot until it is rebuilt (or leaves the
/// shard).
#[derive(Debug, Default)]
pub struct Admission {
    admitted: BTreeSet<u64>,
}

/// A rebuilding group asking for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub group: u64,
    pub controller: bool,
    pub entries_behind: u64,
}

impl Admission {
    /// Recomputes the admitted set from the groups still rebuilding.
    pub fn update(&mut self, candidates: &[Candidate], cap: u32) {
        let still: BTreeSet<u64> = candidates.iter().map(|c| c.group).collect();
        self.admitted.retain(|g| still.contains(g));
        let mut waiting: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| !self.admitted.contains(&c.group))
            .collect();
        waiting.sort_by_key(|c| (!c.controller, c.entries_behind, c.group));
        // The controller is never kept waiting behind partitions: it may exceed the cap by one.
        for c in waiting {
            if self.admitted.len() < cap.max(1) as usize || c.controller {
                self.admitted.insert(c.group);
            }
        }
    }

    /// Admits `group` at once if a slot is free (between two `update`s, so a group's first
    /// messages are not dropped while slots stand empty). Returns whether it is admitted.
    pub fn try_admit(&mut self, group: u64, controller: bool, cap: u32) -> bool {
        if self.admitted.contains(&group) {
            return true;
        }
        if self.admitted.len() < cap.max(1) as usize || controller {
            self.admitted.insert(group);
            return true;
        }
        false
    }

    pub fn is_admitted(&self, group: u64) -> bool {
        self.admitted.contains(&group)
    }

    /// Groups receiving catch-up data now (`tern_snapshot_transfer_active`).
    pub fn active(&self) -> usize {
        self.admitted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_budget_of_zero_never_refuses_and_still_counts() {
        let mut b = RecoveryBudget::new(0, 2, 0, TICK);
        b.charge(u64::MAX / 2, Direction::Out);
        assert!(b.may_start());
        b.charge(10, Direction::In);
        assert_eq!(b.stats().bytes_in_total, 10);
        for _ in 0..100 {
            b.tick();
        }
        assert_eq!(b.stats().bytes_last_sec, u64::MAX / 2 + 10);
    }

    /// A shard that reads as fast as the bucket lets it moves its share per second, give or
    /// take one read.
    #[test]
    fn one_shard_moves_its_share_per_second() {
        let mut b = RecoveryBudget::new(0, 1, 1_000_000, TICK);
        let mut moved = 0u64;
        for _ in 0..1000 {
            // Ten seconds of ticks.
            while b.may_start() {
                b.charge(30_000, Direction::Out);
                moved += 30_000;
            }
            b.tick();
        }
        // Plus the initial burst (a tenth of a second) and at most one read of debt.
        assert!(moved >= 10_000_000, "{moved}");
        assert!(moved <= 10_100_000 + 30_000, "{moved}");
    }

    /// A spent bucket says how long until it holds tokens again: its debt over its rate,
    /// never less than a tick, and the wait it names is enough.
    #[test]
    fn retry_after_is_the_debt_over_the_rate() {
        // 1 MB/s on one shard: 10 000 bytes per 10 ms tick, a burst of 100 000.
        let mut b = RecoveryBudget::new(0, 1, 1_000_000, TICK);
        assert_eq!(b.retry_after_ms(), 0, "a full bucket does not refuse");
        b.charge(100_000, Direction::Out);
        assert!(!b.may_start());
        assert_eq!(b.retry_after_ms(), 10, "an empty bucket: one tick");
        b.charge(45_000, Direction::Out);
        let wait = b.retry_after_ms();
        assert_eq!(wait, 46, "45 001 bytes at 1 MB/s");
        for _ in 0..wait.div_ceil(10) {
            b.tick();
        }
        assert!(b.may_start(), "the wait named was enough");
        b.charge(u64::MAX / 2, Direction::Out);
        assert_eq!(b.retry_after_ms(), 10_000, "capped at 10 s");
    }

    /// Two shards, one idle: the busy one gets the idle one's spare share after a second,
    /// and the node as a whole stays within the budget.
    #[test]
    fn an_idle_shards_share_is_lent_to_the_shard_that_asked() {
        let mut busy = RecoveryBudget::new(0, 2, 2_000_000, TICK);
        let mut idle = RecoveryBudget::new(1, 2, 2_000_000, TICK);
        let mut moved = 0u64;
        for _ in 0..2000 {
            while busy.may_start() {
                busy.charge(10_000, Direction::In);
                moved += 10_000;
            }
            // Shard 1 settles first in each second, then shard 0 (order is arbitrary).
            let l1 = idle.tick();
            let l0 = busy.tick();
            if let Some(l) = l1 {
                busy.on_lend(l);
            }
            if let Some(l) = l0 {
                idle.on_lend(l);
            }
        }
        // Twenty seconds: alone, the busy shard would get ~1 MB/s (20 MB); with the idle
        // shard's share it gets close to 2 MB/s, never more than the node's budget.
        assert!(moved > 35_000_000, "{moved}");
        assert!(moved <= 40_000_000 + 110_000, "{moved}");
    }

    #[test]
    fn both_busy_shards_keep_their_own_share() {
        let mut a = RecoveryBudget::new(0, 2, 2_000_000, TICK);
        let mut b = RecoveryBudget::new(1, 2, 2_000_000, TICK);
        let (mut ma, mut mb) = (0u64, 0u64);
        for _ in 0..1000 {
            while a.may_start() {
                a.charge(10_000, Direction::In);
                ma += 10_000;
            }
            while b.may_start() {
                b.charge(10_000, Direction::Out);
                mb += 10_000;
            }
            let (la, lb) = (a.tick(), b.tick());
            if let Some(l) = la {
                b.on_lend(l);
            }
            if let Some(l) = lb {
                a.on_lend(l);
            }
        }
        for m in [ma, mb] {
            assert!((10_000_000..=10_110_000).contains(&m), "{ma} {mb}");
        }
    }

    #[test]
    fn the_controller_goes_first_then_the_fewest_entries_behind() {
        let c = |group, controller, entries_behind| Candidate {
            group,
            controller,
            entries_behind,
        };
        let mut a = Admission::default();
        a.update(&[c(5, false, 10), c(6, false, 3), c(7, false, 100)], 2);
        assert!(a.is_admitted(5) && a.is_admitted(6) && !a.is_admitted(7));
        // The controller turns up rebuilding later: it is admitted at once, over the cap.
        a.update(
            &[
                c(0, true, 1000),
                c(5, false, 10),
                c(6, false, 3),
                c(7, false, 1),
            ],
            2,
        );
        assert!(a.is_admitted(0) && a.is_admitted(5) && a.is_admitted(6));
        assert!(!a.is_admitted(7), "admitted groups keep their slot");
        // Group 6 rebuilt: it leaves; the controller still holds one of the two slots.
        a.update(&[c(0, true, 900), c(5, false, 9), c(7, false, 1)], 2);
        assert!(!a.is_admitted(7));
        a.update(&[c(5, false, 9), c(7, false, 1)], 2);
        assert!(a.is_admitted(7));
        assert_eq!(a.active(), 2);
        assert!(!a.try_admit(8, false, 2), "no free slot");
        assert!(a.try_admit(0, true, 2), "the controller never waits");
        a.update(&[c(5, false, 9)], 2);
        assert!(a.try_admit(8, false, 2));
    }
}
