//! Idempotent producers: per partition, per producer id, the epoch and the sequences of the
//! last batches written, so a retried batch is answered with its original offset and a
//! skipped or reordered one is refused (Kafka's `enable.idempotence`).
//!
//! The table is derived from the log, never stored apart from it: every data entry that
//! reaches the partition's log (a leader's proposal, a follower's append, the replay after a
//! restart) is fed to [`ProducerTable::on_written`] with its Raft index and stamped offsets.
//! So a new leader after a failover, and a restarted node, know what the old leader accepted.
//! Entries replaced by a Raft conflict are forgotten with them (records carry their index).
//!
//! When retention compacts the log, the table as of the snapshot point is written into the
//! partition's snapshot data (`PartitionSnapshot`), within a byte budget: the producers that
//! wrote most recently are kept. What is lost: producers beyond that budget. A producer id
//! the table does not know is accepted at any sequence, as Kafka does for a producer whose
//! state expired; its next batches are checked again.

use std::collections::{HashMap, VecDeque};

use super::records::BatchInfo;

/// Batches remembered per producer: Kafka's clients keep at most 5 requests in flight per
/// connection with idempotence on, so a retry is always among the last 5 batches.
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;
/// Producers remembered per partition; beyond it the one that wrote least recently is
/// forgotten (its next batch is accepted at any sequence). Bounds the table's memory.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// Encoded bytes of one producer without its batches, and of one batch (see `encode`).
const PRODUCER_HEADER_BYTES: usize = 8 + 2 + 8 + 1;
const BATCH_BYTES: usize = 8 + 4 + 4 + 8;

/// One written batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WrittenBatch {
    index: u64,
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerState {
    epoch: i16,
    /// Oldest first. Invariant: at most `BATCHES_PER_PRODUCER_MAX`, indexes increasing.
    batches: VecDeque<WrittenBatch>,
    /// Raft index of the producer's last batch, to find the least recent producer.
    last_index: u64,
}

/// What to do with a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, a new producer (or epoch), or the next sequence: write it.
    Append,
    /// Already written at `base_offset` by entry `index`: answer with that offset.
    Duplicate { index: u64, base_offset: u64 },
    /// A gap or a reordering: refuse.
    OutOfOrder { expected: i32 },
    /// An older epoch than the producer's current one: refuse.
    Fenced { current: i16 },
}

/// The sequence after `last`, wrapping at `i32::MAX` as Kafka's sequences do.
fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// Last sequence of a batch of `count` records starting at `first` (wrapping).
fn last_sequence(first: i32, count: u64) -> i32 {
    let span = count.saturating_sub(1) % (i32::MAX as u64 + 1);
    ((first as i64 + span as i64) % (i32::MAX as i64 + 1)) as i32
}

#[derive(Debug, Clone, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerState>,
    /// At least the Raft index of every batch in the table (0 when it holds none): a
    /// truncation above it has nothing to forget and skips the walk over every producer,
    /// which would otherwise run for each entry written (every follower append, every
    /// leader's no-op).
    newest_index: u64,
}

/// Two tables are equal when they remember the same producers; `newest_index` is a bound
/// kept for speed, not part of what the table says.
impl PartialEq for ProducerTable {
    fn eq(&self, other: &Self) -> bool {
        self.producers == other.producers
    }
}

impl Eq for ProducerTable {}

impl ProducerTable {
    /// Checks one batch against the table (before it is proposed).
    pub fn check(&self, batch: &BatchInfo) -> SequenceCheck {
        if batch.producer_id < 0 || batch.base_sequence < 0 {
            return SequenceCheck::Append;
        }
        let Some(state) = self.producers.get(&batch.producer_id) else {
            return SequenceCheck::Append;
        };
        if batch.producer_epoch < state.epoch {
            return SequenceCheck::Fenced {
                current: state.epoch,
            };
        }
        if batch.producer_epoch > state.epoch {
            return SequenceCheck::Append;
        }
        let last = last_sequence(batch.base_sequence, batch.record_count);
        if let Some(w) = state
            .batches
            .iter()
            .find(|w| w.first_sequence == batch.base_sequence && w.last_sequence == last)
        {
            return SequenceCheck::Duplicate {
                index: w.index,
                base_offset: w.base_offset,
            };
        }
        match state.batches.back() {
            Some(w) if next_sequence(w.last_sequence) != batch.base_sequence => {
                SequenceCheck::OutOfOrder {
                    expected: next_sequence(w.last_sequence),
                }
            }
            _ => SequenceCheck::Append,
        }
    }

    /// Records the batches of one entry at Raft `index`, written with their offsets stamped
    /// (`base_offset` of each batch as stamped). Entries at or after `index` already recorded
    /// were replaced (a Raft conflict, or the same entry seen again) and are dropped first.
    pub fn on_written(&mut self, index: u64, batches: &[BatchInfo]) {
        self.truncate_from(index);
        for b in batches {
            if b.producer_id < 0 || b.base_sequence < 0 || b.base_offset < 0 {
                continue;
            }
            let written = WrittenBatch {
                index,
                first_sequence: b.base_sequence,
                last_sequence: last_sequence(b.base_sequence, b.record_count),
                base_offset: b.base_offset as u64,
            };
            let state = self
                .producers
                .entry(b.producer_id)
                .or_insert_with(|| ProducerState {
                    epoch: b.producer_epoch,
                    batches: VecDeque::new(),
                    last_index: index,
                });
            if b.producer_epoch != state.epoch {
                // A new epoch starts a new sequence space.
                state.epoch = b.producer_epoch;
                state.batches.clear();
            }
            state.batches.push_back(written);
            state.last_index = index;
            self.newest_index = self.newest_index.max(index);
            while state.batches.len() > BATCHES_PER_PRODUCER_MAX {
                state.batches.pop_front();
            }
        }
        if self.producers.len() > PRODUCERS_PER_PARTITION_MAX {
            if let Some((&oldest, _)) = self.producers.iter().min_by_key(|(_, s)| s.last_index) {
                self.producers.remove(&oldest);
            }
        }
    }

    /// Forgets what entries at or after `index` wrote.
    pub fn truncate_from(&mut self, index: u64) {
        if index > self.newest_index {
            return;
        }
        // Every batch left is below `index`.
        self.newest_index = index.saturating_sub(1);
        self.producers.retain(|_, s| {
            while s.batches.back().is_some_and(|w| w.index >= index) {
                s.batches.pop_back();
            }
            !s.batches.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// The table as it was after entry `index`: what later entries wrote is forgotten.
    pub fn upto(&self, index: u64) -> ProducerTable {
        let mut out = self.clone();
        out.truncate_from(index + 1);
        out
    }

    /// Appends the table to `out`, within `bytes_max` (the producers that wrote most recently
    /// first; the rest are left out, as if expired).
    ///
    /// Encoding (little-endian): `{ u32 count | count * producer }`, producer =
    /// `{ i64 producer_id | i16 epoch | u64 last_index | u8 n | n * batch }`, batch =
    /// `{ u64 index | i32 first_sequence | i32 last_sequence | u64 base_offset }`.
    pub fn encode(&self, out: &mut Vec<u8>, bytes_max: usize) {
        let mut by_recency: Vec<(&i64, &ProducerState)> = self.producers.iter().collect();
        by_recency.sort_by_key(|(pid, s)| (std::cmp::Reverse(s.last_index), **pid));
        let mut body = Vec::new();
        let mut count = 0u32;
        for (pid, s) in by_recency {
            let size = PRODUCER_HEADER_BYTES + s.batches.len() * BATCH_BYTES;
            if 4 + body.len() + size > bytes_max {
                break;
            }
            body.extend_from_slice(&pid.to_le_bytes());
            body.extend_from_slice(&s.epoch.to_le_bytes());
            body.extend_from_slice(&s.last_index.to_le_bytes());
            body.push(s.batches.len() as u8);
            for w in &s.batches {
                body.extend_from_slice(&w.index.to_le_bytes());
                body.extend_from_slice(&w.first_sequence.to_le_bytes());
                body.extend_from_slice(&w.last_sequence.to_le_bytes());
                body.extend_from_slice(&w.base_offset.to_le_bytes());
            }
            count += 1;
        }
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&body);
    }

    /// Reads what [`ProducerTable::encode`] wrote (all of `bytes`), checking every length.
    pub fn decode(bytes: &[u8]) -> Result<ProducerTable, String> {
        let mut cur = bytes;
        let mut take = |n: usize, what: &str| -> Result<&[u8], String> {
            if cur.len() < n {
                return Err(format!("{what} truncated"));
            }
            let (head, rest) = cur.split_at(n);
            cur = rest;
            Ok(head)
        };
        let le8 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let le4 = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
        let count = le4(take(4, "producer count")?) as usize;
        if count > PRODUCERS_PER_PARTITION_MAX {
            return Err(format!(
                "{count} producers, at most {PRODUCERS_PER_PARTITION_MAX}"
            ));
        }
        let mut producers = HashMap::with_capacity(count.min(bytes.len() / PRODUCER_HEADER_BYTES));
        for _ in 0..count {
            let pid = le8(take(8, "producer id")?) as i64;
            let epoch = i16::from_le_bytes(take(2, "producer epoch")?.try_into().unwrap_or([0; 2]));
            let last_index = le8(take(8, "producer last index")?);
            let n = take(1, "producer batch count")?[0] as usize;
            if n == 0 || n > BATCHES_PER_PRODUCER_MAX {
                return Err(format!("producer {pid} with {n} batches"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let index = le8(take(8, "batch index")?);
                let first_sequence = le4(take(4, "batch first sequence")?) as i32;
                let last_sequence = le4(take(4, "batch last sequence")?) as i32;
                let base_offset = le8(take(8, "batch base offset")?);
                if batches
                    .back()
                    .is_some_and(|w: &WrittenBatch| w.index > index)
                {
                    return Err(format!("producer {pid}: batch indexes decrease"));
                }
                batches.push_back(WrittenBatch {
                    index,
                    first_sequence,
                    last_sequence,
                    base_offset,
                });
            }
            let state = ProducerState {
                epoch,
                batches,
                last_index,
            };
            if producers.insert(pid, state).is_some() {
                return Err(format!("producer {pid} listed twice"));
            }
        }
        if !cur.is_empty() {
            return Err(format!("{} trailing bytes", cur.len()));
        }
        let newest_index = producers
            .values()
            .filter_map(|s| s.batches.back().map(|w| w.index))
            .max()
            .unwrap_or(0);
        Ok(ProducerTable {
            producers,
            newest_index,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, count: u64, base_offset: i64) -> BatchInfo {
        BatchInfo {
            position: 0,
            bytes: 0,
            base_offset,
            leader_epoch: 1,
            record_count: count,
            attributes: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut t = ProducerTable::default();
        assert_eq!(t.check(&batch(7, 0, 0, 3, -1)), SequenceCheck::Append);
        t.on_written(10, &[batch(7, 0, 0, 3, 100)]);
        assert_eq!(
            t.check(&batch(7, 0, 0, 3, -1)),
            SequenceCheck::Duplicate {
                index: 10,
                base_offset: 100
            }
        );
        assert_eq!(t.check(&batch(7, 0, 3, 1, -1)), SequenceCheck::Append);
        assert_eq!(
            t.check(&batch(7, 0, 5, 1, -1)),
            SequenceCheck::OutOfOrder { expected: 3 }
        );
        t.on_written(11, &[batch(7, 1, 0, 1, 103)]);
        assert_eq!(
            t.check(&batch(7, 0, 3, 1, -1)),
            SequenceCheck::Fenced { current: 1 }
        );
        // Non-idempotent batches are never checked.
        assert_eq!(t.check(&batch(-1, -1, -1, 1, -1)), SequenceCheck::Append);
    }

    #[test]
    fn replaced_entries_are_forgotten() {
        let mut t = ProducerTable::default();
        t.on_written(1, &[batch(7, 0, 0, 1, 0)]);
        t.on_written(2, &[batch(7, 0, 1, 1, 1)]);
        // A conflict replaces entry 2 with another producer's batch.
        t.on_written(2, &[batch(8, 0, 0, 1, 1)]);
        assert_eq!(t.check(&batch(7, 0, 1, 1, -1)), SequenceCheck::Append);
        assert_eq!(
            t.check(&batch(8, 0, 0, 1, -1)),
            SequenceCheck::Duplicate {
                index: 2,
                base_offset: 1
            }
        );
    }

    #[test]
    fn the_table_survives_encoding_and_damage_is_refused() {
        let mut t = ProducerTable::default();
        t.on_written(1, &[batch(7, 0, 0, 3, 0)]);
        t.on_written(2, &[batch(8, 2, 5, 1, 3)]);
        t.on_written(3, &[batch(7, 0, 3, 2, 4)]);
        let mut bytes = Vec::new();
        t.encode(&mut bytes, usize::MAX);
        assert_eq!(ProducerTable::decode(&bytes), Ok(t.clone()));
        for cut in 0..bytes.len() {
            assert!(
                ProducerTable::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ProducerTable::decode(&longer).is_err());
        // A decoded table knows how far its batches reach: a truncation forgets entry 3's
        // batch there too, and again after it is written a second time.
        let mut decoded = ProducerTable::decode(&bytes).unwrap();
        decoded.truncate_from(3);
        assert_eq!(decoded.check(&batch(7, 0, 3, 2, -1)), SequenceCheck::Append);
        decoded.on_written(3, &[batch(7, 0, 3, 2, 4)]);
        decoded.truncate_from(3);
        assert_eq!(decoded.check(&batch(7, 0, 3, 2, -1)), SequenceCheck::Append);
        assert_eq!(decoded, t.upto(2));
        // The table as of entry 2 forgets entry 3's batch.
        let upto = t.upto(2);
        assert_eq!(upto.check(&batch(7, 0, 3, 2, -1)), SequenceCheck::Append);
        assert_eq!(
            t.check(&batch(7, 0, 3, 2, -1)),
            SequenceCheck::Duplicate {
                index: 3,
                base_offset: 4
            }
        );
        // A small budget keeps the producer that wrote most recently (7, at entry 3).
        let mut small = Vec::new();
        t.encode(&mut small, 4 + PRODUCER_HEADER_BYTES + 2 * BATCH_BYTES);
        let kept = ProducerTable::decode(&small).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.check(&batch(8, 2, 6, 1, -1)), SequenceCheck::Append);
        assert!(matches!(
            kept.check(&batch(7, 0, 0, 3, -1)),
            SequenceCheck::Duplicate { index: 1, .. }
        ));
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(last_sequence(i32::MAX, 2), 0);
        let mut t = ProducerTable::default();
        t.on_written(1, &[batch(7, 0, i32::MAX - 1, 2, 0)]);
        assert_eq!(t.check(&batch(7, 0, 0, 1, -1)), SequenceCheck::Append);
    }
}
