//! The shard's group ledger: which Raft groups this shard has made promises in, and which of
//! them lost their replica and are being rebuilt (docs/replication.md, "One lost partition on
//! an intact node").
//!
//! A group's promises (its vote, the entries it acknowledged) live in the group's own engine
//! state. An offline change to one group can take that state away while the rest of the data
//! directory stays intact: `tern import-topic --force` deletes the group before writing the
//! file's records and leaves it deleted when it fails; a replica purged while its removal was
//! still uncommitted; an engine recovery that dropped the group. Restarted from nothing, the
//! replica would vote again in terms its old self voted in, and acknowledge entries it does
//! not hold. Its own state cannot tell "never ran here" (a topic created while the node was
//! down: safe to start as a normal member) from "ran here and lost it" (not safe). The
//! ledger can: it is kept outside the group, as the `GroupMeta` record of a reserved engine
//! group of the shard ([`ledger_group`]), written in the same round write batch as the
//! group's first durable state, so a group with promises is always listed (atomically: one
//! batch, one fsync).
//!
//! At start a group the ledger lists but whose engine state is empty is **lost**: it is
//! marked rebuilding in the ledger (durable no later than its first new state, same batch
//! rule) and started in the core's rebuilding mode (`RawNode::set_rebuilding`): no vote, no
//! campaign, no acknowledgement above its leader's commit, exactly as a wiped node's groups
//! (docs/replication.md section 5). A crash mid-rebuild restarts it rebuilding (the mark is
//! still there). Once it holds what its leader had committed when it first heard from it,
//! `RawNode::finish_rebuild` takes the current term's vote for that leader, and the mark is
//! cleared in the batch that makes that vote durable.
//!
//! A group whose durable commit index is past its last entry (committed entries cut offline:
//! `tern repair --skip-corrupt` cuts a group's log at its first hole, an engine recovery that
//! lost the group's tail) kept its vote but not the entries it acknowledged: it starts from
//! the committed prefix it still holds, rebuilding in the same way (`EngineLog::
//! cap_commit_at_last_index`), where it used to refuse to start.
//!
//! A group the shard deletes itself (topic deleted, replica moved away) leaves the ledger in a
//! later round: until then a restart would only be over-cautious with it (rebuild a replica
//! that is placed here again).
//!
//! Not detected: a group whose state was *replaced* (a successful `import-topic --force`):
//! it has state, so it is trusted as this replica's own, as any other operator restore.

use std::collections::BTreeSet;

/// The engine group whose `GroupMeta` record holds shard `shard`'s ledger: the largest id
/// that `shard_for_group` places on that shard. Partition groups are numbered upwards from a
/// small base and stay far below it (`PARTITIONS_MAX`), the controller is group 0.
pub fn ledger_group(shard: u32, shards: u32) -> u64 {
    let mut id = u64::MAX;
    // Each try lands on the shard with probability 1/shards: a few tries.
    while tern_engine::shard_for_group(id, shards.max(1)) != shard {
        id -= 1;
    }
    id
}

/// What the ledger knows (see the module doc).
///
/// Invariant: `rebuilding` is a subset of `hosted`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLedger {
    /// Groups that wrote durable state on this shard and were not deleted since.
    hosted: BTreeSet<u64>,
    /// Groups that lost their state and are not rebuilt yet.
    rebuilding: BTreeSet<u64>,
}

/// How a group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// Its own state is trusted (or it never ran here): a normal member.
    Normal,
    /// It lost its state now, or earlier and is not rebuilt yet: rebuilding mode.
    Rebuilding,
}

const MAGIC: u32 = u32::from_le_bytes(*b"TRGL");
const VERSION: u16 = 1;

impl GroupLedger {
    pub fn is_hosted(&self, group: u64) -> bool {
        self.hosted.contains(&group)
    }

    pub fn is_rebuilding(&self, group: u64) -> bool {
        self.rebuilding.contains(&group)
    }

    pub fn rebuilding(&self) -> impl Iterator<Item = u64> + '_ {
        self.rebuilding.iter().copied()
    }

    /// The decision for a group starting now; `has_state`: the engine holds entries, a hard
    /// state or a snapshot point for it; `lost_entries`: its durable commit index is past its
    /// last entry (committed entries were cut offline, e.g. by `tern repair --skip-corrupt`
    /// at a hole). Returns whether the ledger changed (it must be written, no later than the
    /// group's next state).
    pub fn on_start(
        &mut self,
        group: u64,
        has_state: bool,
        lost_entries: bool,
    ) -> (GroupStart, bool) {
        if self.rebuilding.contains(&group) {
            return (GroupStart::Rebuilding, false);
        }
        if lost_entries {
            // Its acknowledgements of the cut entries are promises it no longer keeps.
            self.hosted.insert(group);
            self.rebuilding.insert(group);
            return (GroupStart::Rebuilding, true);
        }
        match (self.hosted.contains(&group), has_state) {
            // Promises made here, state gone: lost.
            (true, false) => {
                self.rebuilding.insert(group);
                (GroupStart::Rebuilding, true)
            }
            (true, true) => (GroupStart::Normal, false),
            // State from before the ledger existed (or from an import into a new
            // directory): listed from now on.
            (false, true) => {
                self.hosted.insert(group);
                (GroupStart::Normal, true)
            }
            (false, false) => (GroupStart::Normal, false),
        }
    }

    /// The group writes durable state in this round. Returns whether the ledger changed.
    pub fn on_state_written(&mut self, group: u64) -> bool {
        self.hosted.insert(group)
    }

    /// The group finished rebuilding (its vote is taken). Returns whether the ledger changed.
    pub fn on_rebuilt(&mut self, group: u64) -> bool {
        self.rebuilding.remove(&group)
    }

    /// The shard deleted the group's state. Returns whether the ledger changed.
    pub fn on_deleted(&mut self, group: u64) -> bool {
        let r = self.rebuilding.remove(&group);
        self.hosted.remove(&group) || r
    }

    /// Encoding (little-endian): `{ u32 magic "TRGL" | u16 version (1) | u16 reserved (0) |
    /// u32 crc32c (of the body) | body }`, body = `{ set hosted | set rebuilding }`, set =
    /// `{ u32 runs | runs * (varint gap | varint length - 1) }`: runs of consecutive ids in
    /// increasing order, each starting `gap` ids after the id following the previous run
    /// (the first: after id 0, so `gap` is its first id), LEB128
    /// varints. A dense set (one shard) is a few bytes; a hashed one (ids spread over
    /// shards) about 2 bytes per group.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        encode_set(&self.hosted, &mut body);
        encode_set(&self.rebuilding, &mut body);
        super::meta_record::frame(MAGIC, VERSION, &body)
    }

    /// Checks length, magic, version and checksum before reading a field, then that the
    /// sets are well formed and `rebuilding` is inside `hosted`.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let body = super::meta_record::unframe(bytes, MAGIC, VERSION)?;
        let (hosted, rest) = decode_set(body)?;
        let (rebuilding, rest) = decode_set(rest)?;
        if !rest.is_empty() {
            return Err(format!("{} bytes after the sets", rest.len()));
        }
        if !rebuilding.is_subset(&hosted) {
            return Err("a rebuilding group is not listed as hosted".into());
        }
        Ok(GroupLedger { hosted, rebuilding })
    }
}

fn encode_set(set: &BTreeSet<u64>, out: &mut Vec<u8>) {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &id in set {
        match runs.last_mut() {
            Some((start, len)) if *start + *len == id => *len += 1,
            _ => runs.push((id, 1)),
        }
    }
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    let mut next = 0u64;
    for (start, len) in runs {
        put_varint(out, start - next);
        put_varint(out, len - 1);
        next = start + len;
    }
}

fn decode_set(bytes: &[u8]) -> Result<(BTreeSet<u64>, &[u8]), String> {
    let Some((n, mut rest)) = bytes.split_first_chunk::<4>() else {
        return Err("truncated set".into());
    };
    let runs = u32::from_le_bytes(*n) as usize;
    // Each run takes at least two bytes: a count past that is damage, not a reason to loop.
    if runs > rest.len() / 2 {
        return Err(format!("{runs} runs in {} bytes", rest.len()));
    }
    let mut set = BTreeSet::new();
    let mut next = 0u64;
    for _ in 0..runs {
        let (gap, r) = take_varint(rest)?;
        let (len_minus_one, r) = take_varint(r)?;
        rest = r;
        let start = next
            .checked_add(gap)
            .ok_or_else(|| "group id overflows".to_string())?;
        let end = start
            .checked_add(len_minus_one)
            .ok_or_else(|| "group id overflows".to_string())?;
        // Bounded by the engine's 64 KiB meta record in practice; refuse absurd runs anyway.
        if len_minus_one >= 1 << 24 || set.len() as u64 + len_minus_one >= 1 << 24 {
            return Err(format!("a run of {} groups", len_minus_one + 1));
        }
        set.extend(start..=end);
        next = end
            .checked_add(1)
            .ok_or_else(|| "group id overflows".to_string())?;
    }
    Ok((set, rest))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err("varint overflows".into());
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &bytes[i + 1..]));
        }
    }
    Err("truncated varint".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_with_promises_and_no_state_is_lost_until_rebuilt() {
        let mut l = GroupLedger::default();
        // Never ran here (a topic created while the node was down): a normal member.
        assert_eq!(l.on_start(5, false, false), (GroupStart::Normal, false));
        // Its first durable state lists it, in the same batch.
        assert!(l.on_state_written(5));
        assert!(!l.on_state_written(5));
        assert_eq!(l.on_start(5, true, false), (GroupStart::Normal, false));
        // State gone: lost, and the ledger must say so durably.
        assert_eq!(l.on_start(5, false, false), (GroupStart::Rebuilding, true));
        // A restart mid-rebuild, whether or not it has state again by then.
        assert_eq!(l.on_start(5, true, false), (GroupStart::Rebuilding, false));
        assert_eq!(l.on_start(5, false, false), (GroupStart::Rebuilding, false));
        assert!(l.on_rebuilt(5));
        assert_eq!(l.on_start(5, true, false), (GroupStart::Normal, false));
        // State from before the ledger existed is listed at its start.
        assert_eq!(l.on_start(9, true, false), (GroupStart::Normal, true));
        assert!(l.is_hosted(9));
        // A group the shard deleted itself is forgotten.
        assert!(l.on_deleted(9));
        assert_eq!(l.on_start(9, false, false), (GroupStart::Normal, false));
        // Committed entries cut offline: rebuilding, whether or not it was listed.
        assert_eq!(l.on_start(11, true, true), (GroupStart::Rebuilding, true));
        assert!(l.is_hosted(11) && l.is_rebuilding(11));
        assert_eq!(l.on_start(11, true, false), (GroupStart::Rebuilding, false));
    }

    #[test]
    fn round_trip_and_every_truncation_or_flip_is_refused() {
        let mut l = GroupLedger::default();
        for g in [0, 1, 2, 3, 7, 8, 1000, 1_000_000, 1_000_001, u64::MAX / 2] {
            l.on_state_written(g);
        }
        l.on_start(7, false, false);
        l.on_start(1_000_000, false, false);
        let bytes = l.encode();
        assert_eq!(GroupLedger::decode(&bytes), Ok(l.clone()));
        assert_eq!(
            GroupLedger::decode(&GroupLedger::default().encode()),
            Ok(GroupLedger::default())
        );
        for cut in 0..bytes.len() {
            assert!(GroupLedger::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(GroupLedger::decode(&bad).is_err(), "flip {i}.{bit}");
            }
        }
    }

    #[test]
    fn a_dense_ledger_is_small_and_a_hashed_one_fits_the_engine_record() {
        let mut dense = GroupLedger::default();
        for g in 1..100_000 {
            dense.on_state_written(g);
        }
        assert!(dense.encode().len() < 32);
        // A quarter of the ids (four shards) of the cluster's largest partition count.
        let mut spread = GroupLedger::default();
        for g in (1..100_000u64).filter(|g| tern_engine::shard_for_group(*g, 4) == 1) {
            spread.on_state_written(g);
        }
        let len = spread.encode().len();
        assert!(len <= tern_engine::constants::GROUP_META_BYTES_MAX, "{len}");
        assert_eq!(GroupLedger::decode(&spread.encode()), Ok(spread));
    }

    #[test]
    fn the_ledger_group_is_on_its_shard_and_no_partition_group() {
        for shards in [1, 2, 3, 8, 64] {
            let ids: BTreeSet<u64> = (0..shards).map(|s| ledger_group(s, shards)).collect();
            assert_eq!(ids.len(), shards as usize);
            for s in 0..shards {
                let id = ledger_group(s, shards);
                assert_eq!(tern_engine::shard_for_group(id, shards), s);
                assert!(id > u64::MAX / 2);
            }
        }
    }
}
