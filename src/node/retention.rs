//! Retention: how far a partition's log prefix must be compacted for the topic's
//! `retention.bytes` and `retention.ms`.
//!
//! Every replica decides for itself (compaction is local in Raft: the snapshot point of each
//! replica may differ, and a follower too far behind receives the leader's snapshot). The
//! rule looks only at the replica's applied entries, oldest first:
//! - size: drop the oldest entries until the payload bytes of the applied entries after the
//!   snapshot point are at most `bytes_max`. This is a pure function of the applied log
//!   prefix, so replicas that applied the same entries compact to the same point.
//! - age: drop the oldest entries whose newest record timestamp (the v2 batch header's
//!   `max_timestamp`) is older than `now - age_ms_max`, stopping at the first entry that is
//!   not. Entries without records (a leader's no-op) do not hold the prefix back. `now` is
//!   the replica's clock, so replicas agree up to their clock skew and check interval (Kafka
//!   also judges age by each broker's clock); an idle partition still expires.
//!
//! The larger of the two points wins. docs/ARCHITECTURE.md ("Retention") says why this is
//! safe when replicas disagree.

use super::controller::Retention;
use super::partition::OffsetMap;

/// Ticks between two retention checks of a shard's partitions (100 × 10 ms = 1 s): retention
/// is coarse, and a check walks each partition's offset map.
pub const RETENTION_CHECK_TICKS: u64 = 100;

/// The index up to which the log must be compacted (an entry in `(snapshot point, applied]`),
/// or None when retention asks for nothing more. After a restart the oldest entries are known
/// only by the spans of the offset checkpoint's marks (`OffsetMap::iter`): there the point is
/// a span's end, so a span is kept whole until all of it may go.
pub fn retention_point(
    map: &OffsetMap,
    applied: u64,
    retention: &Retention,
    now_ms: i64,
) -> Option<u64> {
    let mut point = None;
    if let Some(bytes_max) = retention.bytes_max {
        let mut retained = map.bytes_upto(applied);
        for (index, facts) in map.iter().take_while(|(i, _)| *i <= applied) {
            if retained <= bytes_max {
                break;
            }
            retained -= facts.bytes;
            point = Some(index);
        }
    }
    if let Some(age_ms_max) = retention.age_ms_max {
        let cutoff = now_ms.saturating_sub(i64::try_from(age_ms_max).unwrap_or(i64::MAX));
        // The applied entries before the first one holding a record at or after the cutoff
        // have aged out; the point is the last of them that holds records (trailing entries
        // without records are only dropped behind an expired record: an empty partition's
        // no-op is not "expired"). The walk stops at that first young entry, so a check of
        // a log whose records are all young reads one entry, not the whole map (it runs
        // every RETENTION_CHECK_TICKS for every partition).
        let mut expired = None;
        for (index, facts) in map.iter().take_while(|(i, _)| *i <= applied) {
            match facts.max_timestamp_ms {
                Some(ts) if ts >= cutoff => break,
                Some(_) => expired = Some(index),
                None => {}
            }
        }
        point = point.max(expired);
    }
    point
}

#[cfg(test)]
mod tests {
    use super::super::partition::EntryFacts;
    use super::*;

    fn map(entries: &[(u64, Option<i64>)]) -> OffsetMap {
        let mut end = 0;
        OffsetMap::new(
            0,
            0,
            entries.iter().map(|&(bytes, ts)| {
                end += u64::from(ts.is_some());
                EntryFacts {
                    end_offset: end,
                    bytes,
                    max_timestamp_ms: ts,
                }
            }),
        )
    }

    #[test]
    fn size_drops_the_oldest_applied_entries_until_the_rest_fits() {
        let m = map(&[
            (100, Some(1)),
            (100, Some(2)),
            (100, Some(3)),
            (100, Some(4)),
        ]);
        let bytes = |b| Retention {
            bytes_max: Some(b),
            age_ms_max: None,
        };
        assert_eq!(retention_point(&m, 4, &bytes(400), 0), None);
        assert_eq!(retention_point(&m, 4, &bytes(399), 0), Some(1));
        assert_eq!(retention_point(&m, 4, &bytes(200), 0), Some(2));
        assert_eq!(retention_point(&m, 4, &bytes(0), 0), Some(4));
        // Only applied entries count and are compacted.
        assert_eq!(retention_point(&m, 2, &bytes(100), 0), Some(1));
        assert_eq!(retention_point(&m, 0, &bytes(0), 0), None);
        assert_eq!(retention_point(&m, 4, &Retention::default(), 0), None);
    }

    #[test]
    fn age_drops_the_expired_prefix_and_stops_at_the_first_fresh_entry() {
        let m = map(&[
            (0, None),
            (10, Some(1_000)),
            (10, Some(5_000)),
            (0, None),
            (10, Some(2_000)),
            (10, Some(9_000)),
        ]);
        let age = |ms| Retention {
            bytes_max: None,
            age_ms_max: Some(ms),
        };
        // now 10 000, keep 6 s: cutoff 4 000; entry 3 (5 000) is fresh and holds the rest.
        assert_eq!(retention_point(&m, 6, &age(6_000), 10_000), Some(2));
        // Keep 4 s: cutoff 6 000; entry 6 (9 000) is fresh; the no-op at 4 goes with 5.
        assert_eq!(retention_point(&m, 6, &age(4_000), 10_000), Some(5));
        // Nothing expired.
        assert_eq!(retention_point(&m, 6, &age(60_000), 10_000), None);
        // A log of no-ops only is not expired.
        let noops = map(&[(0, None), (0, None)]);
        assert_eq!(retention_point(&noops, 2, &age(1), 10_000), None);
        // The larger of the two points wins.
        let both = Retention {
            bytes_max: Some(15),
            age_ms_max: Some(6_000),
        };
        assert_eq!(retention_point(&m, 6, &both, 10_000), Some(5));
    }
}
