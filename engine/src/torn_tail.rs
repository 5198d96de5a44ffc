//! The one rule that tells a torn tail from corruption. Recovery, `verify-data`, `repair`,
//! `tern scan` and the scanner's tolerate-any resume decision all call it, with the same
//! inputs: the [`Damage`] the scanner describes (which carries the last valid batch
//! sequence before it, taken from the shard's earlier segments when the damage is the
//! segment's first batch) and whether the segment is the shard's last one.
//!
//! Every batch header carries the highest batch sequence the writer knew durable when it
//! formed the batch (`aux` of the batch header, docs/format.md). A batch that failed to reach
//! the disk whole was never acknowledged, and no batch formed after it can have claimed it
//! durable. So:
//!
//! | where         | a later valid batch claims the damaged one durable | verdict       |
//! |---------------|----------------------------------------------------|---------------|
//! | last segment  | no                                                 | torn tail     |
//! | last segment  | yes                                                | corruption    |
//! | sealed segment (a successor exists) | either                       | corruption    |
//!
//! Corruption whose batch frame is intact (every record header readable, only entry records
//! fail their checksum) is **passable** ([`passable`]): the batch was acknowledged, so its
//! valid records are applied and its damaged entries stay in their groups' logs, to be
//! repaired from peers; [`crate::repaired`] then says whether each one already was. The same
//! bytes in a torn tail are never passed: they were never acknowledged.

use crate::scan::Damage;

/// What a damaged region of a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageClass {
    /// Bytes of writes that never completed: never acknowledged, safe to truncate.
    TornTail,
    /// Acknowledged data is damaged: recovery stops (or, in tolerate-any, skips it).
    Corruption,
}

impl DamageClass {
    pub fn name(self) -> &'static str {
        match self {
            DamageClass::TornTail => "torn-tail",
            DamageClass::Corruption => "corruption",
        }
    }
}

/// The sequence the damaged batch had: its own when its header was readable, else one past
/// the last valid batch before it (batch sequences grow by one per batch of a shard).
pub fn damaged_batch_seq(d: &Damage) -> u64 {
    d.batch_seq
        .unwrap_or(d.last_seq_before.map_or(1, |s| s + 1))
}

/// Whether a valid batch after the damage proves the damaged batch was made durable (and so
/// may have been acknowledged).
pub fn proven_durable(d: &Damage) -> bool {
    let damaged = damaged_batch_seq(d);
    d.later_batches.iter().any(|b| b.durable_seq >= damaged)
}

/// The rule. `is_last_segment`: the segment is the newest of its shard that holds data (an
/// unused prepared spare after it does not count).
pub fn classify(d: &Damage, is_last_segment: bool) -> DamageClass {
    if is_last_segment && !proven_durable(d) {
        DamageClass::TornTail
    } else {
        DamageClass::Corruption
    }
}

/// Whether a scan may pass over a batch whose frame is intact and whose only damage is in
/// entry records (the scanner checks the frame): exactly when the rule calls the damage
/// corruption, i.e. the batch was acknowledged. Its damaged entries are then kept at their
/// place in the log (never dropped: they may be committed) and judged by
/// [`crate::repaired::judge`].
pub fn passable(d: &Damage, is_last_segment: bool) -> bool {
    classify(d, is_last_segment) == DamageClass::Corruption
}

/// The same rule for a segment whose header is unreadable. The header and the segment's first
/// batch are made durable by one fdatasync, so the segment was once durable exactly when a
/// batch in it claims a batch sequence durable past `durable_before` (the last batch of the
/// shard's earlier segments). `durable_seqs`: the `durable_seq` of every valid batch header
/// found in the segment. A last segment nothing proves durable was being created when the
/// node stopped: never acknowledged.
pub fn classify_headerless(
    durable_seqs: impl IntoIterator<Item = u64>,
    durable_before: u64,
    is_last_segment: bool,
) -> DamageClass {
    let proven = durable_seqs.into_iter().any(|s| s > durable_before);
    if is_last_segment && !proven {
        DamageClass::TornTail
    } else {
        DamageClass::Corruption
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::DecodeError;
    use crate::scan::LaterBatch;

    fn damage(
        batch_seq: Option<u64>,
        last_seq_before: Option<u64>,
        later: &[(u64, u64)],
    ) -> Damage {
        Damage {
            offset: 4096,
            record_offset: 4096,
            reason: DecodeError::Zero,
            batch_seq,
            last_seq_before,
            group: None,
            index: None,
            later_batches: later
                .iter()
                .map(|&(seq, durable_seq)| LaterBatch {
                    offset: 8192,
                    seq,
                    durable_seq,
                })
                .collect(),
            garbage_end: 12288,
        }
    }

    #[test]
    fn a_later_batch_claiming_the_damaged_one_durable_makes_it_corruption() {
        // Damaged batch 11 (header unreadable, last valid 10); batch 12 says 11 was durable.
        let d = damage(None, Some(10), &[(12, 11)]);
        assert_eq!(damaged_batch_seq(&d), 11);
        assert_eq!(classify(&d, true), DamageClass::Corruption);
        // Batch 12 formed while 11 was in flight: 11 may never have been acknowledged.
        let d = damage(None, Some(10), &[(12, 10)]);
        assert_eq!(classify(&d, true), DamageClass::TornTail);
    }

    #[test]
    fn the_last_sequence_before_comes_from_earlier_segments_for_a_first_batch() {
        // First batch of a segment damaged, the shard's last valid batch was 40 (in the
        // previous segment); a later batch claims 40 durable, not 41: a torn tail. Without the
        // earlier segments the rule would guess sequence 1 and call it corruption.
        let d = damage(None, Some(40), &[(42, 40)]);
        assert_eq!(classify(&d, true), DamageClass::TornTail);
        let d = damage(None, None, &[(42, 40)]);
        assert_eq!(classify(&d, true), DamageClass::Corruption);
    }

    #[test]
    fn a_headerless_segment_is_torn_unless_a_batch_in_it_proves_it_durable() {
        assert_eq!(classify_headerless([], 9, true), DamageClass::TornTail);
        assert_eq!(classify_headerless([9, 8], 9, true), DamageClass::TornTail);
        assert_eq!(classify_headerless([10], 9, true), DamageClass::Corruption);
        assert_eq!(classify_headerless([], 9, false), DamageClass::Corruption);
    }

    #[test]
    fn damage_in_a_sealed_segment_is_always_corruption() {
        let d = damage(Some(7), Some(6), &[]);
        assert_eq!(classify(&d, true), DamageClass::TornTail);
        assert_eq!(classify(&d, false), DamageClass::Corruption);
    }
}
