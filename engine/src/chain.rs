//! The segment chain of a shard: which segments its log is made of, recorded durably in
//! `shard-<k>/CHAIN` (format: [`crate::format::chain`]) so that losing a segment that was once
//! durable is detected, not silently replayed around.
//!
//! A seal names the next segment, which catches a hole in the middle of the chain, but not a
//! missing newest or oldest segment, nor a segment replaced by another valid one. The chain
//! record names the first and the last segment and, for every sealed one, what its seal
//! covered. It is rewritten (temp file + fdatasync + rename + directory fsync):
//!
//! - at each roll, **after** the new segment's header and checkpoint are durable and
//!   **before** anything is written into it: so every segment the record names has a durable
//!   header, and no acknowledged batch lives in a segment the record does not name;
//! - at each purge, **before** any file is deleted: so a segment the record names is never
//!   deleted by tern itself, and segments below its first are leftovers of an interrupted
//!   purge (recovery finishes deleting them).
//!
//! Recovery and `tern verify-data` apply the same checks ([`check_files`], [`check_segment`]),
//! so the engine refuses to start on exactly what verify-data reports.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};
use crate::format::chain::{ChainLink, ChainRecord};
use crate::format::SegmentHeader;
use crate::scan::{ScanStop, SegmentScan};
use crate::storage::{read_file, write_file_atomic, Storage};

/// File name of the chain record inside a shard directory.
pub const CHAIN_FILE: &str = "CHAIN";

pub fn chain_path(shard_dir: &Path) -> PathBuf {
    shard_dir.join(CHAIN_FILE)
}

/// Reads a shard's chain record: `None` when there is none (a shard that never created a
/// segment, or a directory written before the chain record existed).
pub async fn read_chain<S: Storage>(storage: &S, dir: &Path) -> Result<Option<ChainRecord>> {
    let path = chain_path(dir);
    if !storage
        .exists(&path)
        .await
        .map_err(|e| Error::io(&path, e))?
    {
        return Ok(None);
    }
    let bytes = read_file(storage, &path)
        .await
        .map_err(|e| Error::io(&path, e))?;
    ChainRecord::decode(&bytes)
        .map(Some)
        .map_err(|e| Error::Corruption {
            at: Location {
                file: path,
                offset: 0,
                group: None,
                index: None,
            },
            what: format!("chain record unreadable: {e}"),
        })
}

/// Writes a shard's chain record durably (temp file + fdatasync + rename + directory fsync).
pub async fn write_chain<S: Storage>(storage: &S, dir: &Path, chain: &ChainRecord) -> Result<()> {
    let path = chain_path(dir);
    write_file_atomic(storage, &path, &chain.encode())
        .await
        .map_err(|e| Error::io(&path, e))
}

/// The chain after a roll: `sealed` (the segment just sealed, if any) joins the links and
/// `new_id`, whose first batch (the checkpoint) has sequence `first_batch_seq` (0 if none),
/// becomes the last segment.
pub fn rolled(
    prev: Option<&ChainRecord>,
    shard: u32,
    sealed: Option<ChainLink>,
    new_id: u64,
    first_batch_seq: u64,
) -> ChainRecord {
    let mut links = prev.map(|c| c.links.clone()).unwrap_or_default();
    if let Some(l) = sealed {
        if links
            .last()
            .is_none_or(|last| last.segment_id < l.segment_id)
        {
            links.push(l);
        }
    }
    let first_segment = links
        .first()
        .map(|l| l.segment_id)
        .or(prev.map(|c| c.first_segment))
        .unwrap_or(new_id);
    ChainRecord {
        shard,
        first_segment,
        last_segment: new_id,
        last_first_batch_seq: first_batch_seq,
        links,
    }
}

/// The chain after a purge deletes every segment below `new_first`.
pub fn purged(prev: &ChainRecord, new_first: u64) -> ChainRecord {
    let mut next = prev.clone();
    next.links.retain(|l| l.segment_id >= new_first);
    next.first_segment = new_first.max(prev.first_segment);
    next
}

/// One way the segments on disk disagree with the chain record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    /// Stable short name: `missing-segment`, `segment-truncated`, `segment-replaced`,
    /// `segment-header`, `segment-beyond-chain`, `chain-shard`.
    pub code: &'static str,
    pub segment: Option<u64>,
    /// Where in the segment the difference starts (0: the file as a whole).
    pub offset: u64,
    pub what: String,
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

fn problem(code: &'static str, segment: Option<u64>, what: String) -> ChainProblem {
    ChainProblem {
        code,
        segment,
        offset: 0,
        what,
    }
}

/// Checks the list of segment ids in a shard directory against its chain record, before
/// anything is read or changed. `ids` are sorted and exclude a trailing unused spare above the
/// chain's last segment. Segments below the chain's first are not problems (an interrupted
/// purge left them: see [`purge_leftovers`]).
pub fn check_files(chain: &ChainRecord, shard: u32, ids: &[u64]) -> Vec<ChainProblem> {
    let mut out = Vec::new();
    if chain.shard != shard {
        out.push(problem(
            "chain-shard",
            None,
            format!(
                "chain record belongs to shard {}, found in shard {shard}",
                chain.shard
            ),
        ));
    }
    let missing: Vec<u64> = (chain.first_segment..=chain.last_segment)
        .filter(|id| ids.binary_search(id).is_err())
        .collect();
    if !missing.is_empty() {
        out.push(problem(
            "missing-segment",
            missing.first().copied(),
            format!(
                "segment{} {} missing: the chain record names segments {}..={} as durable",
                if missing.len() > 1 { "s" } else { "" },
                id_ranges(&missing),
                chain.first_segment,
                chain.last_segment
            ),
        ));
    }
    // The writer records a new segment before writing any acknowledged batch into it, so one
    // segment past the last may exist (a crash between its checkpoint and the record), not two.
    for &id in ids.iter().filter(|&&id| id > chain.last_segment + 1) {
        out.push(problem(
            "segment-beyond-chain",
            Some(id),
            format!(
                "segment {id} is beyond the chain's last segment {} (not written by this shard's writer)",
                chain.last_segment
            ),
        ));
    }
    out
}

/// Segments an interrupted purge left below the chain's first segment.
pub fn purge_leftovers(chain: &ChainRecord, ids: &[u64]) -> Vec<u64> {
    ids.iter()
        .copied()
        .filter(|&id| id < chain.first_segment)
        .collect()
}

/// What one segment was seen to hold, by recovery (from its index or a scan) or by verify.
#[derive(Debug, Clone)]
pub struct SegmentSeen {
    pub id: u64,
    /// The decoded header, `None` if it is unreadable.
    pub header: Option<SegmentHeader>,
    /// Whether an unreadable header is a chain problem. Recovery from a sealed index never
    /// reads the header again (the records' checksums cover the data), so there it is not.
    pub header_required: bool,
    /// The preallocated size the segment must still have (from its header or its index).
    pub segment_bytes: u64,
    pub file_len: u64,
    pub first_batch_seq: Option<u64>,
    pub last_batch_seq: Option<u64>,
    /// Offset just past the last valid batch.
    pub data_end: u64,
    pub sealed: bool,
    /// The scan stopped at damage: recovery and verify report it with its exact place, so the
    /// comparison with what was sealed is skipped.
    pub damaged: bool,
}

impl SegmentSeen {
    /// What a scan of segment `id` saw (recovery and verify both build it here).
    pub fn from_scan(id: u64, scan: &SegmentScan) -> Self {
        SegmentSeen {
            id,
            header: scan.header,
            header_required: true,
            segment_bytes: scan.header.map_or(0, |h| h.segment_bytes),
            file_len: scan.file_len,
            first_batch_seq: scan.first_batch_seq,
            last_batch_seq: scan.last_batch_seq,
            data_end: scan.valid_end,
            sealed: matches!(scan.stop, ScanStop::Sealed { .. }),
            damaged: matches!(scan.stop, ScanStop::Damaged(_)) || !scan.skipped.is_empty(),
        }
    }

    /// The link a chain record keeps for this segment, if it is sealed.
    pub fn link(&self) -> Option<ChainLink> {
        self.sealed.then(|| ChainLink {
            segment_id: self.id,
            first_batch_seq: self.first_batch_seq.unwrap_or(0),
            seal_batch_seq: self.last_batch_seq.unwrap_or(0),
            data_end: self.data_end,
        })
    }
}

/// Checks one segment named by the chain against what the chain recorded: a durable header
/// naming this segment and shard, the full preallocated length (a shorter file was truncated),
/// for a sealed segment the same seal and end, for the last segment its first batch.
pub fn check_segment(chain: &ChainRecord, shard: u32, seen: &SegmentSeen) -> Option<ChainProblem> {
    let id = seen.id;
    if id < chain.first_segment || id > chain.last_segment {
        return None;
    }
    match &seen.header {
        None if seen.header_required => {
            return Some(problem(
                "segment-header",
                Some(id),
                format!(
                    "segment {id} has an unreadable header, but the chain record names it as durable"
                ),
            ));
        }
        None => {}
        Some(h) if h.segment_id != id || h.shard != shard => {
            return Some(problem(
                "segment-replaced",
                Some(id),
                format!(
                    "segment {id} was replaced: its header names segment {} of shard {}",
                    h.segment_id, h.shard
                ),
            ));
        }
        Some(_) => {}
    }
    if seen.file_len < seen.segment_bytes {
        return Some(problem(
            "segment-truncated",
            Some(id),
            format!(
                "segment {id} was truncated: {} bytes, its header says {}",
                seen.file_len, seen.segment_bytes
            ),
        ));
    }
    if seen.damaged {
        return None;
    }
    if let Some(link) = chain.links.iter().find(|l| l.segment_id == id) {
        let same = seen.sealed
            && seen.last_batch_seq == Some(link.seal_batch_seq)
            && seen.data_end == link.data_end
            && seen.first_batch_seq.unwrap_or(0) >= link.first_batch_seq;
        if !same {
            return Some(ChainProblem {
                offset: seen.data_end,
                ..problem(
                    "segment-replaced",
                Some(id),
                format!(
                    "segment {id} does not hold what was sealed: chain record says batches {}..={} ending at {}, found {} ending at {}",
                    link.first_batch_seq,
                    link.seal_batch_seq,
                    link.data_end,
                    match (seen.first_batch_seq, seen.last_batch_seq) {
                        (Some(a), Some(b)) => format!("batches {a}..={b}{}", if seen.sealed { "" } else { " without a seal" }),
                        _ => "no batch".to_string(),
                    },
                    seen.data_end
                ),
            )
            });
        }
    } else if id == chain.last_segment
        && chain.last_first_batch_seq != 0
        && seen.first_batch_seq != Some(chain.last_first_batch_seq)
    {
        return Some(problem(
            "segment-replaced",
            Some(id),
            format!(
                "segment {id} was replaced or emptied: its first batch should be {}, found {}",
                chain.last_first_batch_seq,
                seen.first_batch_seq
                    .map_or("no batch".to_string(), |s| format!("batch {s}"))
            ),
        ));
    }
    None
}

/// The chain record describing the segments recovery kept (`seen`, oldest first): what a
/// directory without one gets, and what replaces one after recovery changed the chain.
pub fn from_seen(shard: u32, seen: &[SegmentSeen]) -> Option<ChainRecord> {
    let first = seen.first()?.id;
    let last = seen.last()?;
    let links = seen.iter().filter_map(|s| s.link()).collect::<Vec<_>>();
    // Links must be consecutive from the first segment: stop at the first unsealed one.
    let links: Vec<ChainLink> = links
        .into_iter()
        .zip(first..)
        .take_while(|(l, id)| l.segment_id == *id)
        .map(|(l, _)| l)
        .collect();
    let last_segment = if last.sealed {
        last.id
    } else {
        first + links.len() as u64
    };
    let last_first_batch_seq = if last.sealed {
        0
    } else {
        last.first_batch_seq.unwrap_or(0)
    };
    Some(ChainRecord {
        shard,
        first_segment: first,
        last_segment: last_segment.max(first),
        last_first_batch_seq,
        links,
    })
}

/// `1..=3, 7` style list of ids.
fn id_ranges(ids: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u64) -> ChainLink {
        ChainLink {
            segment_id: id,
            first_batch_seq: id * 10,
            seal_batch_seq: id * 10 + 9,
            data_end: 8192,
        }
    }

    #[test]
    fn roll_and_purge_keep_links_consecutive() {
        let c = rolled(None, 0, None, 1, 0);
        assert_eq!((c.first_segment, c.last_segment), (1, 1));
        let c = rolled(Some(&c), 0, Some(link(1)), 2, 20);
        let c = rolled(Some(&c), 0, Some(link(2)), 3, 30);
        assert_eq!(c.links.len(), 2);
        let c = purged(&c, 3);
        assert_eq!((c.first_segment, c.last_segment, c.links.len()), (3, 3, 0));
        assert_eq!(ChainRecord::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn missing_first_middle_last_and_beyond_are_named() {
        let c = rolled(
            Some(&rolled(
                Some(&rolled(None, 0, None, 1, 0)),
                0,
                Some(link(1)),
                2,
                20,
            )),
            0,
            Some(link(2)),
            3,
            30,
        );
        assert!(check_files(&c, 0, &[1, 2, 3]).is_empty());
        assert!(check_files(&c, 0, &[1, 2, 3, 4]).is_empty());
        for (ids, missing) in [(&[2u64, 3][..], 1), (&[1, 3][..], 2), (&[1, 2][..], 3)] {
            let p = check_files(&c, 0, ids);
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].segment, Some(missing));
        }
        assert_eq!(check_files(&c, 0, &[1, 2, 3, 5]).len(), 1);
        assert_eq!(check_files(&c, 1, &[1, 2, 3]).len(), 1);
        assert_eq!(purge_leftovers(&purged(&c, 2), &[1, 2, 3]), vec![1]);
        assert_eq!(id_ranges(&[1, 2, 3, 7, 9, 10]), "1..=3, 7, 9..=10");
    }
}
