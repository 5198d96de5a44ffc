//! Recovery of one shard's WAL directory: rebuild the group table from sealed-segment
//! indexes (or by scanning when an index is missing or corrupt), scan the open segment, and
//! decide what to do with damage.
//!
//! Decision table (also walked as data by `tests/recovery_table.rs`):
//!
//! | where                               | what the scan saw                                  | tolerate-tail            | absolute | tolerate-any                    |
//! |-------------------------------------|----------------------------------------------------|--------------------------|----------|---------------------------------|
//! | any segment                         | valid batches                                      | apply                    | apply    | apply                           |
//! | last segment                        | zero block, only zeros after                       | clean end, resume there  | same     | same                            |
//! | last segment                        | bad/zero batch, no later batch says it was durable | torn tail: quarantine + zero it, report | stop | torn tail: as tolerate-tail |
//! | last segment                        | bad batch, a later batch says it was durable       | stop (corruption)        | stop     | quarantine region, skip, report |
//! | sealed segment, or last segment with a later batch proving it durable | an entry record fails its checksum, the batch's frame intact (every header readable) | keep the entry at its place, start, repair it from peers (see below) | stop | as tolerate-tail |
//! | same                                | that damaged entry superseded by a later Repair record of the same (group, index, term) | apply (repaired) | apply | apply |
//! | same                                | that damaged entry's header contradicts the log (not the next entry of a known group, term out of order, a committed entry missing, its place taken by a non-Repair record) | stop (corruption) | stop | log it, continue |
//! | sealed segment (has a successor)    | any other damage, or no seal                       | stop (corruption)        | stop     | quarantine region, skip, report |
//! | last segment                        | valid header, no batch, only zeros (an unused spare) | set aside, reused as the next segment | same | same |
//! | last segment                        | header unreadable, nothing after the header block  | prepared, header lost: quarantine stray header bytes, reuse it | reuse only if all zero, else stop | as tolerate-tail |
//! | last segment                        | header unreadable, no batch in it proves it durable | crash while creating: quarantine + remove it | stop | as tolerate-tail |
//! | any                                 | entry leaves a hole in its group's log             | stop (corruption)        | stop     | cut the group at the hole, report |
//! | chain (`CHAIN`): a named segment    | missing (deleted: first, middle or last)           | stop, naming it          | stop     | log it, recover what is there   |
//! | chain: a named segment              | shorter than its header's `segment_bytes` (truncated) | stop, naming it       | stop     | log it, recover what is there   |
//! | chain: a named segment              | header names another segment/shard, or seal/end/first batch differ from the record (replaced) | stop, naming it | stop | log it, recover what is there |
//! | chain: a named segment              | header unreadable (scanned; an indexed segment's header is not read) | stop (never removed as a crash artefact) | stop | as tolerate-tail without a chain |
//! | chain: segments below its first     | left by a purge a crash interrupted                | delete them              | same     | same                            |
//! | chain: segment beyond last + 1      | not written by this shard's writer                 | stop                     | stop     | log it                          |
//! | chain: no `CHAIN` file, segments    | directory from before chain records                | create it, warn          | same     | same                            |
//! | `ENGINE` (engine.rs)                | shard count disagrees with the shard directories or a group's placement | refuse to open | same | same |
//!
//! "A later batch says it was durable": every batch header carries the highest batch sequence
//! the writer knew fsynced when it formed the batch. If a valid batch after the damage claims
//! the damaged batch was durable, the damage hit acknowledged data: it is not a torn tail.
//!
//! Damaged entries (protocol-aware recovery, issue 12): an acknowledged entry may be committed,
//! so recovery never drops it; acknowledged bytes are never rewritten, so it cannot fix it in
//! place either. What it can safely do is keep the entry in its group's log at its damaged
//! place (its reads fail their checksum, never serve it) and start: the node then fetches a
//! correct copy from a peer and writes it as a Repair record. Whether that already happened is
//! one rule shared with `verify-data` and `tern scan`: [`crate::repaired`] (and the scanner
//! passes only batches [`crate::torn_tail::passable`] calls acknowledged). Recovery trusts the
//! damaged header only as far as the log around it confirms it (`repaired::may_apply`,
//! `repaired::judge`); `absolute` refuses an unrepaired damaged entry as it refuses any damage.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::chain::{self, SegmentSeen};
use crate::config::RecoveryMode;
use crate::constants::{
    BLOCK_BYTES, RECORD_HEADER_BYTES, SCAN_READ_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::error::{Error, Location, Result};
use crate::format::chain::ChainRecord;
use crate::format::segment::{
    index_file_name, parse_index_file_name, parse_segment_file_name, segment_file_name,
};
use crate::format::{IndexEntry, RecordKind, SealedIndex, SegmentHeader};
use crate::group::{GroupTable, RecordMeta};
use crate::quarantine::{Quarantine, Remover};
use crate::repaired::{self, DamagedEntry, EntryDamage};
use crate::scan::{
    first_batch_block_is_zero, probe_segment, scan_segment, scan_segment_placed, Damage, ScanStop,
    SegmentScan,
};
use crate::storage::{read_file, write_file_atomic, IoBuf, Storage, StorageFile};
use crate::torn_tail::{self, DamageClass};

/// What recovery did to one segment.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub segment: u64,
    pub bytes: u64,
    pub records: u64,
    pub elapsed: Duration,
    pub via_index: bool,
    pub note: Option<String>,
}

/// A region recovery removed (torn tail) or skipped (tolerate-any), with where its bytes went.
#[derive(Debug, Clone)]
pub struct RemovedRegion {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
    pub reason: String,
    pub torn_tail: bool,
    pub quarantined_to: Option<PathBuf>,
}

/// Entries of a group that cannot stay because they follow a hole in the group's log: cut by
/// tolerate-any recovery, or by `tern repair --skip-corrupt` (the one type for both).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupLoss {
    pub shard: u32,
    pub group: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub why: String,
}

#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub shard: u32,
    pub segments: Vec<SegmentReport>,
    pub removed: Vec<RemovedRegion>,
    pub losses: Vec<GroupLoss>,
    pub rebuilt_indexes: Vec<u64>,
    pub removed_files: Vec<PathBuf>,
    /// Damaged entry records the scans passed over (acknowledged batches with an intact
    /// frame), with the verdict of [`crate::repaired::judge`]. `Unrepaired` ones are in the
    /// group table at their damaged place: the node repairs them from peers.
    pub damaged_entries: Vec<(DamagedEntry, EntryDamage)>,
    pub bytes: u64,
    pub records: u64,
    pub elapsed: Duration,
}

/// Everything the writer needs to resume.
pub struct Recovered {
    pub table: GroupTable,
    /// Ids of all segments present, oldest first.
    pub segment_ids: Vec<u64>,
    /// The open segment to continue writing, with where to resume and its index so far.
    pub open: Option<OpenSegment>,
    /// Id the next new segment gets.
    pub next_segment_id: u64,
    /// An unused segment prepared by the writer before the crash or shutdown (its id is
    /// `next_segment_id`); the writer adopts it as its spare.
    pub spare_id: Option<u64>,
    /// The spare's header never reached the disk: the writer must write it again.
    pub spare_needs_header: bool,
    pub next_batch_seq: u64,
    /// The shard's chain record as recovery left it on disk (`None`: no segment yet).
    pub chain: Option<ChainRecord>,
    pub report: RecoveryReport,
}

pub struct OpenSegment {
    pub id: u64,
    pub resume_at: u64,
    pub index: Vec<IndexEntry>,
    pub first_batch_seq: u64,
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Recovers the WAL in `dir` (a `shard-<k>` directory). `quarantine` is where removed bytes
/// are copied before anything is cleared.
pub async fn recover_shard<S: Storage>(
    storage: &S,
    shard: u32,
    dir: &Path,
    quarantine: &Path,
    mode: RecoveryMode,
    use_index: bool,
) -> Result<Recovered> {
    let started = Instant::now();
    let io = |p: &Path, e| Error::io(p, e);
    let mut report = RecoveryReport {
        shard,
        ..Default::default()
    };
    let mut quarantined = Quarantine::new(quarantine, Remover::Recovery);
    let listing = storage.list_dir(dir).await.map_err(|e| io(dir, e))?;
    let mut segment_ids = Vec::new();
    let mut index_ids = Vec::new();
    for entry in &listing {
        if let Some(id) = parse_segment_file_name(&entry.name) {
            segment_ids.push(id);
        } else if let Some(id) = parse_index_file_name(&entry.name) {
            index_ids.push(id);
        } else if entry.name.ends_with(".tmp") || entry.name.ends_with(".wal.prep") {
            // Left by a crash inside write_file_atomic before its rename, or while a spare
            // segment was being prepared: never live.
            let p = dir.join(&entry.name);
            storage.remove_file(&p).await.map_err(|e| io(&p, e))?;
            report.removed_files.push(p);
        }
    }
    for id in &index_ids {
        if !segment_ids.contains(id) {
            // The segment was purged and the crash came before its index went too.
            let p = dir.join(index_file_name(*id));
            storage.remove_file(&p).await.map_err(|e| io(&p, e))?;
            report.removed_files.push(p);
        }
    }
    let chain_on_disk = match chain::read_chain(storage, dir).await {
        Err(e) if mode == RecoveryMode::TolerateAny => {
            tracing::error!(shard, "{e} (tolerate-any: continuing without it)");
            None
        }
        r => r?,
    };
    if let Some(c) = &chain_on_disk {
        // A purge records the new first segment before deleting files: segments below it
        // are dead leftovers of a purge a crash interrupted. Finish it.
        for id in chain::purge_leftovers(c, &segment_ids) {
            for p in [
                dir.join(segment_file_name(id)),
                dir.join(index_file_name(id)),
            ] {
                if storage.exists(&p).await.map_err(|e| io(&p, e))? {
                    storage.remove_file(&p).await.map_err(|e| io(&p, e))?;
                    report.removed_files.push(p);
                }
            }
            tracing::info!(
                shard,
                segment = id,
                "removed segment left by an interrupted purge"
            );
        }
        segment_ids.retain(|&id| id >= c.first_segment);
    }
    if !report.removed_files.is_empty() {
        storage.sync_dir(dir).await.map_err(|e| io(dir, e))?;
    }

    let mut table = GroupTable::default();
    let mut losses: Vec<GroupLoss> = Vec::new();
    let mut open = None;
    let mut last_seq: Option<u64> = None;
    let mut max_seq_seen = 0u64;
    let mut expected_next: Option<u64> = None;
    // Id of a last segment removed because its header was never written. Its sealed
    // predecessor names it as the next segment, so the writer must create it again under the
    // same id: skipping to id + 1 would leave a gap in the chain that the next recovery
    // reports as a missing segment.
    let mut reuse_id: Option<u64> = None;
    // The writer prepares the next segment ahead of time under its final name, header
    // written. If it was never used it is the last file, holds no batch and nothing but
    // zeros: set it aside (it becomes the writer's spare) rather than treat it as the open
    // segment, which would make its unsealed predecessor look damaged.
    let mut spare_id = None;
    let mut spare_needs_header = false;
    // A segment the chain record names is never a spare (its header and first batch were
    // durable before the record named it).
    let spare_candidate = segment_ids
        .last()
        .copied()
        .filter(|&last| chain_on_disk.as_ref().is_none_or(|c| last > c.last_segment));
    if let Some(last) = spare_candidate {
        let path = dir.join(segment_file_name(last));
        if first_batch_block_is_zero(storage, &path).await? {
            let scan = scan_segment(storage, &path, None, false, |_| {}).await?;
            if scan.is_unused_spare() {
                spare_id = Some(last);
                segment_ids.pop();
                max_seq_seen = max_seq_seen.max(scan.header.map_or(0, |h| h.first_batch_seq));
            } else if matches!(scan.stop, ScanStop::BadHeader(_)) {
                // A spare whose name reached the disk but whose header did not (its header is
                // made durable by the first batch written into it): nothing after the header
                // block, so nothing in it was ever acknowledged. Its predecessor may be
                // unsealed, so it must be set aside before the predecessor is judged. The
                // writer adopts it and writes its header again.
                let garbage_end = unwritten_segment(storage, &path, u64::MAX).await?;
                let adopt = match garbage_end {
                    Some(0) => true,
                    // Stray bytes in the header block: kept in quarantine first, which
                    // `absolute` (change nothing) does not do.
                    Some(end) if end <= SEGMENT_HEADER_BYTES && mode != RecoveryMode::Absolute => {
                        let q = quarantined
                            .copy_region(
                                storage,
                                &path,
                                &region_name(shard, last, 0),
                                0,
                                end,
                                "prepared segment whose header never reached the disk",
                            )
                            .await?;
                        report.removed.push(RemovedRegion {
                            segment: last,
                            offset: 0,
                            len: end,
                            reason: "prepared segment whose header never reached the disk".into(),
                            torn_tail: true,
                            quarantined_to: Some(q),
                        });
                        true
                    }
                    _ => false,
                };
                if adopt {
                    tracing::warn!(
                        shard,
                        segment = last,
                        "prepared segment {} has no header (crash before its first batch); reusing it",
                        path.display()
                    );
                    segment_ids.pop();
                    spare_id = Some(last);
                    spare_needs_header = true;
                }
            }
        }
    }
    if let Some(c) = &chain_on_disk {
        let problems = chain::check_files(c, shard, &segment_ids);
        chain_problems_or_log(mode, dir, problems)?;
    }
    let count = segment_ids.len();
    let mut damaged: Vec<DamagedEntry> = Vec::new();
    // Where Repair records are, for the rule's "superseded by a Repair" (segment, offset).
    let mut repairs: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
    let mut kept_ids = Vec::new();
    let mut seen_kept: Vec<SegmentSeen> = Vec::new();

    for (i, &id) in segment_ids.iter().enumerate() {
        let is_last = i + 1 == count;
        let path = dir.join(segment_file_name(id));
        let seg_started = Instant::now();
        if let Some(expected) = expected_next {
            if expected != id {
                let what = format!("segment {expected} is missing (sealed predecessor names it as next; found {id})");
                let at = Location {
                    file: path.clone(),
                    offset: 0,
                    group: None,
                    index: None,
                };
                if mode != RecoveryMode::TolerateAny {
                    return Err(Error::Corruption { at, what });
                }
                tracing::error!(shard, "{what}; continuing (tolerate-any)");
            }
        }

        // Sealed segments: use the index when it is there and sound.
        if use_index && !is_last && index_ids.contains(&id) {
            let ipath = dir.join(index_file_name(id));
            match load_index(storage, &ipath, id).await {
                Ok(idx) => {
                    let seen = SegmentSeen {
                        id,
                        ..seen_from_file(storage, &path, id).await?
                    };
                    let seen = SegmentSeen {
                        header_required: false,
                        segment_bytes: idx.header.segment_bytes,
                        first_batch_seq: Some(idx.header.first_batch_seq),
                        last_batch_seq: Some(idx.header.last_batch_seq),
                        data_end: idx.header.data_end,
                        sealed: true,
                        ..seen
                    };
                    check_chain_segment(mode, chain_on_disk.as_ref(), shard, &path, &seen)?;
                    let mut records = 0u64;
                    for e in &idx.entries {
                        let meta = index_entry_meta(storage, &path, id, e).await?;
                        if meta.kind == RecordKind::Repair {
                            repairs.insert((meta.segment, meta.offset));
                        }
                        apply_or_loss(
                            shard,
                            &mut table,
                            &meta,
                            mode,
                            &path,
                            &mut losses,
                            &damaged,
                        )?;
                        records += 1;
                    }
                    last_seq = Some(idx.header.last_batch_seq);
                    max_seq_seen = max_seq_seen.max(idx.header.last_batch_seq);
                    expected_next = Some(id + 1);
                    report.bytes += idx.header.data_end;
                    report.records += records;
                    report.segments.push(SegmentReport {
                        segment: id,
                        bytes: idx.header.data_end,
                        records,
                        elapsed: seg_started.elapsed(),
                        via_index: true,
                        note: None,
                    });
                    tracing::info!(
                        shard,
                        segment = id,
                        bytes = idx.header.data_end,
                        records,
                        elapsed_us = seg_started.elapsed().as_micros() as u64,
                        "recovered sealed segment from its index"
                    );
                    kept_ids.push(id);
                    seen_kept.push(seen);
                    continue;
                }
                Err(why) => {
                    tracing::warn!(
                        shard,
                        segment = id,
                        "index {} unusable ({why}): rebuilding it by scanning the segment",
                        ipath.display()
                    );
                }
            }
        } else if use_index && !is_last {
            tracing::warn!(
                shard,
                segment = id,
                "index for sealed segment {id} is missing: rebuilding it by scanning the segment"
            );
        }

        // Scan.
        let mut metas: Vec<RecordMeta> = Vec::new();
        let mut index_entries: Vec<IndexEntry> = Vec::new();
        let scan: SegmentScan = scan_segment_placed(
            storage,
            &path,
            last_seq,
            is_last,
            mode == RecoveryMode::TolerateAny,
            |r| {
                let kind = r.header.kind();
                if kind == RecordKind::BatchHeader {
                    return;
                }
                if r.damaged {
                    // Kept at its place in the log (it was acknowledged, it may be
                    // committed); judged once the whole shard is replayed.
                    damaged.push(DamagedEntry {
                        segment: id,
                        offset: r.offset,
                        group: r.header.group,
                        index: r.header.index,
                        term: r.header.term,
                    });
                }
                index_entries.push(IndexEntry {
                    kind: r.header.kind,
                    reserved: 0,
                    payload_len: r.header.payload_len,
                    offset: r.offset,
                    group: r.header.group,
                    term: r.header.term,
                    index: r.header.index,
                    aux: r.header.aux,
                });
                metas.push(RecordMeta {
                    kind,
                    group: r.header.group,
                    term: r.header.term,
                    index: r.header.index,
                    aux: r.header.aux,
                    segment: id,
                    offset: r.offset,
                    payload_len: r.header.payload_len,
                    snapshot_meta: kind.payload_kept().then(|| r.payload.to_vec()),
                });
            },
        )
        .await?;
        let seen = SegmentSeen::from_scan(id, &scan);
        // Before anything below acts on the segment (a torn tail zeroed, a header-less
        // segment removed): a segment the chain names as durable is never treated as a
        // crash artefact.
        check_chain_segment(mode, chain_on_disk.as_ref(), shard, &path, &seen)?;
        for m in &metas {
            if let Some(d) = damaged
                .iter()
                .find(|d| (d.segment, d.offset) == (m.segment, m.offset))
            {
                if !repaired::may_apply(&table, d) {
                    let what = format!(
                        "damaged entry record claims entry {}/{} term {}, which is not the next entry of a group in the log",
                        d.group, d.index, d.term
                    );
                    if mode != RecoveryMode::TolerateAny {
                        return Err(Error::Corruption {
                            at: d_location(&path, d),
                            what,
                        });
                    }
                    tracing::error!("{}: {what} (tolerate-any: skipped)", path.display());
                    continue;
                }
            }
            if m.kind == RecordKind::Repair {
                repairs.insert((m.segment, m.offset));
            }
            apply_or_loss(shard, &mut table, m, mode, &path, &mut losses, &damaged)?;
        }
        if let Some(s) = scan.last_batch_seq {
            last_seq = Some(s);
            max_seq_seen = max_seq_seen.max(s);
        }
        let mut note = None;

        for d in &scan.skipped {
            // Only tolerate-any resumes after damage.
            max_seq_seen =
                max_seq_seen.max(d.later_batches.iter().map(|b| b.seq).max().unwrap_or(0));
            let end = d
                .later_batches
                .first()
                .map(|b| b.offset)
                .unwrap_or(d.garbage_end);
            let q = quarantined
                .copy_region(
                    storage,
                    &path,
                    &region_name(shard, id, d.offset),
                    d.offset,
                    end,
                    &format!("damaged region skipped by tolerate-any ({})", d.reason),
                )
                .await?;
            tracing::error!(
                shard,
                segment = id,
                offset = d.offset,
                "skipped damaged region ({}), copied to {} (tolerate-any)",
                d.reason,
                q.display()
            );
            report.removed.push(RemovedRegion {
                segment: id,
                offset: d.offset,
                len: end - d.offset,
                reason: d.reason.to_string(),
                torn_tail: false,
                quarantined_to: Some(q),
            });
        }

        match &scan.stop {
            ScanStop::Sealed { next_segment } => {
                expected_next = Some(*next_segment);
                if is_last {
                    // Crash after sealing, before the next segment was created.
                    open = None;
                }
                // Rewrite the index only where recovery wanted it and found it missing or
                // unusable; a scan-only recovery leaves existing indexes alone.
                if use_index && !is_last {
                    let idx = SealedIndex::new(
                        id,
                        scan.header.map(|h| h.segment_bytes).unwrap_or(0),
                        scan.valid_end,
                        scan.first_batch_seq.unwrap_or(0),
                        scan.last_batch_seq.unwrap_or(0),
                        index_entries,
                    );
                    let ipath = dir.join(index_file_name(id));
                    write_file_atomic(storage, &ipath, &idx.encode())
                        .await
                        .map_err(|e| io(&ipath, e))?;
                    report.rebuilt_indexes.push(id);
                    tracing::info!(shard, segment = id, "rebuilt index {}", ipath.display());
                }
            }
            ScanStop::CleanEnd | ScanStop::EndOfFile => {
                if !is_last {
                    let what = format!(
                        "sealed segment {id} ends at {} without a seal record",
                        scan.valid_end
                    );
                    corruption_or_log(mode, &path, scan.valid_end, None, what)?;
                }
                open = Some(OpenSegment {
                    id,
                    resume_at: scan.valid_end,
                    index: index_entries,
                    first_batch_seq: scan.first_batch_seq.unwrap_or(0),
                });
            }
            ScanStop::BadHeader(e) => {
                // The header and the segment's first (checkpoint) batch are made durable by
                // one fdatasync before any batch is written to the segment, and the device may
                // persist them in either order: after a crash inside that window the header can
                // be missing while the checkpoint batch is there. So "never written" is not
                // "all zero after the header" but "no batch in it proves anything in it
                // durable" (a batch claiming a durable sequence past the predecessor's last).
                let unwritten = if is_last {
                    unwritten_segment(storage, &path, last_seq.unwrap_or(0)).await?
                } else {
                    None
                };
                if let (Some(garbage_end), true) = (unwritten, mode != RecoveryMode::Absolute) {
                    // Crash between creating the file and making its header durable.
                    if garbage_end > 0 {
                        // Unacknowledged bytes: keep them, as a torn tail is kept.
                        let q = quarantined
                            .copy_region(
                                storage,
                                &path,
                                &region_name(shard, id, 0),
                                0,
                                garbage_end,
                                &format!("segment header never written ({e})"),
                            )
                            .await?;
                        report.removed.push(RemovedRegion {
                            segment: id,
                            offset: 0,
                            len: garbage_end,
                            reason: format!("segment header never written ({e})"),
                            torn_tail: true,
                            quarantined_to: Some(q),
                        });
                    }
                    storage.remove_file(&path).await.map_err(|e| io(&path, e))?;
                    storage.sync_dir(dir).await.map_err(|e| io(dir, e))?;
                    report.removed_files.push(path.clone());
                    reuse_id = Some(id);
                    tracing::warn!(
                        shard,
                        segment = id,
                        "removed segment {} with an unwritten header (crash while creating it)",
                        path.display()
                    );
                    note = Some("removed: header never written".to_string());
                    // The previous segment must then be sealed; the writer starts a new one.
                    open = None;
                    report.segments.push(SegmentReport {
                        segment: id,
                        bytes: 0,
                        records: 0,
                        elapsed: seg_started.elapsed(),
                        via_index: false,
                        note,
                    });
                    continue;
                }
                corruption_or_log(
                    mode,
                    &path,
                    0,
                    None,
                    format!("segment header unreadable: {e}"),
                )?;
                // tolerate-any: the whole segment is skipped. Keep its bytes and say so; the
                // groups it held report their losses as holes in the segments after it.
                let end = scan.file_len;
                let q = quarantined
                    .copy_region(
                        storage,
                        &path,
                        &region_name(shard, id, 0),
                        0,
                        end,
                        &format!(
                            "segment header unreadable ({e}); segment skipped by tolerate-any"
                        ),
                    )
                    .await?;
                report.removed.push(RemovedRegion {
                    segment: id,
                    offset: 0,
                    len: end,
                    reason: format!("segment header unreadable ({e}); segment skipped"),
                    torn_tail: false,
                    quarantined_to: Some(q),
                });
                report.segments.push(SegmentReport {
                    segment: id,
                    bytes: 0,
                    records: 0,
                    elapsed: seg_started.elapsed(),
                    via_index: false,
                    note: Some(format!("skipped: bad header ({e})")),
                });
                expected_next = Some(id + 1);
                continue;
            }
            ScanStop::Damaged(d) => {
                for b in &d.later_batches {
                    max_seq_seen = max_seq_seen.max(b.seq);
                }
                let torn = torn_tail::classify(d, is_last) == DamageClass::TornTail;
                let at = d.location(&path);
                if mode == RecoveryMode::Absolute || (!torn && mode == RecoveryMode::TolerateTail) {
                    let what = if torn {
                        format!(
                            "torn tail ({}) — absolute mode refuses to truncate",
                            d.reason
                        )
                    } else {
                        describe_corruption(d, is_last)
                    };
                    return Err(Error::Corruption { at, what });
                }
                let q = quarantined
                    .copy_region(
                        storage,
                        &path,
                        &region_name(shard, id, d.offset),
                        d.offset,
                        d.garbage_end.max(d.offset),
                        &format!("torn tail ({})", d.reason),
                    )
                    .await?;
                zero_region(storage, &path, d.offset, d.garbage_end).await?;
                let len = d.garbage_end.saturating_sub(d.offset);
                tracing::warn!(
                    shard,
                    segment = id,
                    offset = d.offset,
                    len,
                    "truncated torn tail ({}) — unacknowledged; bytes kept in {}",
                    d.reason,
                    q.display()
                );
                note = Some(format!(
                    "torn tail truncated at {} ({})",
                    d.offset, d.reason
                ));
                report.removed.push(RemovedRegion {
                    segment: id,
                    offset: d.offset,
                    len,
                    reason: d.reason.to_string(),
                    torn_tail: torn,
                    quarantined_to: Some(q),
                });
                if is_last {
                    open = Some(OpenSegment {
                        id,
                        resume_at: d.offset,
                        index: index_entries,
                        first_batch_seq: scan.first_batch_seq.unwrap_or(0),
                    });
                } else {
                    expected_next = Some(id + 1);
                }
            }
        }
        report.bytes += scan.valid_end;
        report.records += scan.records;
        let elapsed = seg_started.elapsed();
        tracing::info!(
            shard,
            segment = id,
            bytes = scan.valid_end,
            records = scan.records,
            elapsed_us = elapsed.as_micros() as u64,
            "recovered segment by scanning"
        );
        report.segments.push(SegmentReport {
            segment: id,
            bytes: scan.valid_end,
            records: scan.records,
            elapsed,
            via_index: false,
            note,
        });
        kept_ids.push(id);
        seen_kept.push(SegmentSeen {
            data_end: open
                .as_ref()
                .filter(|o| o.id == id)
                .map_or(seen.data_end, |o| o.resume_at),
            ..seen
        });
    }
    report.damaged_entries = judge_damaged_entries(shard, dir, &table, &damaged, &repairs, mode)?;
    let chain = chain::from_seen(shard, &seen_kept);
    if chain != chain_on_disk {
        if let Some(c) = &chain {
            if chain_on_disk.is_none() {
                tracing::warn!(
                    shard,
                    "no chain record in {}: created one naming segments {}..={} (segments lost before now cannot be detected)",
                    dir.display(),
                    c.first_segment,
                    c.last_segment
                );
            }
            chain::write_chain(storage, dir, c).await?;
        }
    }

    report.losses = losses;
    report.elapsed = started.elapsed();
    tracing::info!(
        shard,
        segments = report.segments.len(),
        bytes = report.bytes,
        records = report.records,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "shard recovery done"
    );
    let next_segment_id = spare_id
        .or(reuse_id)
        .unwrap_or_else(|| segment_ids.last().map_or(1, |l| l + 1));
    Ok(Recovered {
        table,
        segment_ids: kept_ids,
        open,
        next_segment_id,
        next_batch_seq: max_seq_seen + 1,
        spare_id,
        spare_needs_header,
        chain: chain.or(chain_on_disk),
        report,
    })
}

/// Applies [`repaired::judge`] to every damaged entry record the scans passed over, once the
/// whole shard is replayed. Repaired and dead ones need nothing. An unrepaired one stays in
/// its group's log at its damaged place: every mode but `absolute` starts, and the node
/// repairs it from peers (its first read fails its checksum and starts the repair; the node
/// also queues every one the report lists). `absolute` refuses it, as it refuses any damage.
/// An implausible one (its header contradicts the log around it) stops start-up, as any
/// corruption does, except in tolerate-any, which logs it.
fn judge_damaged_entries(
    shard: u32,
    dir: &Path,
    table: &GroupTable,
    damaged: &[DamagedEntry],
    repairs: &std::collections::HashSet<(u64, u64)>,
    mode: RecoveryMode,
) -> Result<Vec<(DamagedEntry, EntryDamage)>> {
    let mut out = Vec::with_capacity(damaged.len());
    for e in damaged {
        let verdict = repaired::judge(table, e, |s, o| repairs.contains(&(s, o)));
        let path = dir.join(segment_file_name(e.segment));
        let at = || d_location(&path, e);
        match verdict {
            EntryDamage::Repaired | EntryDamage::Dead => tracing::info!(
                shard,
                segment = e.segment,
                offset = e.offset,
                group = e.group,
                index = e.index,
                "damaged entry record is {} (superseded or no longer in the log)",
                verdict.name()
            ),
            EntryDamage::Unrepaired if mode != RecoveryMode::Absolute => tracing::warn!(
                shard,
                segment = e.segment,
                offset = e.offset,
                group = e.group,
                index = e.index,
                term = e.term,
                "damaged entry record kept in its group's log; it is repaired from peers"
            ),
            EntryDamage::Unrepaired => {
                return Err(Error::Corruption {
                    at: at(),
                    what: "damaged entry record (absolute mode refuses to start with it; other modes start and repair it from peers)".into(),
                })
            }
            EntryDamage::Implausible => {
                let what = format!(
                    "damaged entry record claims index {} term {}, which contradicts its group's log",
                    e.index, e.term
                );
                if mode != RecoveryMode::TolerateAny {
                    return Err(Error::Corruption { at: at(), what });
                }
                tracing::error!("{}: {what} (tolerate-any: continuing)", path.display());
            }
        }
        out.push((*e, verdict));
    }
    Ok(out)
}

fn d_location(path: &Path, d: &DamagedEntry) -> Location {
    Location {
        file: path.with_file_name(segment_file_name(d.segment)),
        offset: d.offset,
        group: Some(d.group),
        index: Some(d.index),
    }
}

/// What a segment recovered from its index has on disk: its header and length (the index
/// gives the rest).
async fn seen_from_file<S: Storage>(storage: &S, path: &Path, id: u64) -> Result<SegmentSeen> {
    let f = storage
        .open(path, false)
        .await
        .map_err(|e| Error::io(path, e))?;
    let file_len = f.len().await.map_err(|e| Error::io(path, e))?;
    let head = f
        .read_at(0, SEGMENT_HEADER_BYTES as usize)
        .await
        .map_err(|e| Error::io(path, e))?;
    let header = SegmentHeader::decode(&head).ok();
    f.close().await.map_err(|e| Error::io(path, e))?;
    Ok(SegmentSeen {
        id,
        header,
        header_required: true,
        segment_bytes: header.map_or(0, |h| h.segment_bytes),
        file_len,
        first_batch_seq: None,
        last_batch_seq: None,
        data_end: 0,
        sealed: false,
        damaged: false,
    })
}

fn check_chain_segment(
    mode: RecoveryMode,
    chain: Option<&ChainRecord>,
    shard: u32,
    path: &Path,
    seen: &SegmentSeen,
) -> Result<()> {
    let Some(c) = chain else { return Ok(()) };
    let problem = chain::check_segment(c, shard, seen);
    chain_problems_or_log(
        mode,
        path.parent().unwrap_or(path),
        problem.into_iter().collect(),
    )
}

/// A segment lost from the chain stops start-up, in every mode but tolerate-any (which says
/// so and recovers what is there).
fn chain_problems_or_log(
    mode: RecoveryMode,
    dir: &Path,
    problems: Vec<chain::ChainProblem>,
) -> Result<()> {
    let Some(first) = problems.first() else {
        return Ok(());
    };
    if mode == RecoveryMode::TolerateAny {
        for p in &problems {
            tracing::error!("{}: {p} (tolerate-any: continuing)", dir.display());
        }
        return Ok(());
    }
    let what = problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Corruption {
        at: Location {
            file: first.segment.map_or_else(
                || chain::chain_path(dir),
                |id| dir.join(segment_file_name(id)),
            ),
            offset: first.offset,
            group: None,
            index: None,
        },
        what,
    })
}

fn describe_corruption(d: &Damage, is_last: bool) -> String {
    if !is_last {
        format!(
            "{} in a sealed segment (valid data follows in later segments)",
            d.reason
        )
    } else {
        let later = d.later_batches.iter().map(|b| b.seq).collect::<Vec<_>>();
        format!(
            "{} followed by valid batches {later:?} that were written after it was durable",
            d.reason
        )
    }
}

fn corruption_or_log(
    mode: RecoveryMode,
    path: &Path,
    offset: u64,
    group: Option<u64>,
    what: String,
) -> Result<()> {
    if mode == RecoveryMode::TolerateAny {
        tracing::error!("{}: {what} (tolerate-any: continuing)", path.display());
        return Ok(());
    }
    Err(Error::Corruption {
        at: Location {
            file: path.to_path_buf(),
            offset,
            group,
            index: None,
        },
        what,
    })
}

/// `damaged`: the damaged entry records applied so far. A record that does not fit after one
/// of them is blamed on the nearest one before it: the checksum covers the header too, so a
/// damaged record may have claimed another group's or index's place.
fn apply_or_loss(
    shard: u32,
    table: &mut GroupTable,
    m: &RecordMeta,
    mode: RecoveryMode,
    path: &Path,
    losses: &mut Vec<GroupLoss>,
    damaged: &[DamagedEntry],
) -> Result<()> {
    if let Err(e) = table.apply(m) {
        let suspect = damaged
            .iter()
            .rev()
            .find(|d| (d.segment, d.offset) <= (m.segment, m.offset));
        if let (Some(d), true) = (suspect, mode != RecoveryMode::TolerateAny) {
            return Err(Error::Corruption {
                at: Location {
                    file: path.with_file_name(segment_file_name(d.segment)),
                    offset: d.offset,
                    group: Some(d.group),
                    index: Some(d.index),
                },
                what: format!(
                    "damaged entry record (its header cannot be trusted): entry {}/{} after it does not fit its group's log: {}",
                    e.group, e.index, e.why
                ),
            });
        }
        if mode != RecoveryMode::TolerateAny {
            return Err(Error::Corruption {
                at: Location {
                    file: path.to_path_buf(),
                    offset: m.offset,
                    group: Some(e.group),
                    index: Some(e.index),
                },
                what: format!("entry does not fit its group's log: {}", e.why),
            });
        }
        match losses.last_mut() {
            Some(l) if l.group == e.group && l.last_index + 1 == e.index => l.last_index = e.index,
            _ => losses.push(GroupLoss {
                shard,
                group: e.group,
                first_index: e.index,
                last_index: e.index,
                why: format!(
                    "does not fit its group's log ({}); cut by tolerate-any",
                    e.why
                ),
            }),
        }
    }
    Ok(())
}

pub(crate) async fn load_index<S: Storage>(
    storage: &S,
    ipath: &Path,
    id: u64,
) -> std::result::Result<SealedIndex, String> {
    let bytes = read_file(storage, ipath).await.map_err(|e| e.to_string())?;
    let idx = SealedIndex::decode(&bytes).map_err(|e| e.to_string())?;
    if idx.header.segment_id != id {
        return Err(format!("index names segment {}", idx.header.segment_id));
    }
    Ok(idx)
}

async fn index_entry_meta<S: Storage>(
    storage: &S,
    seg_path: &Path,
    id: u64,
    e: &IndexEntry,
) -> Result<RecordMeta> {
    let kind = RecordKind::from_u16(e.kind)?;
    let snapshot_meta = if kind.payload_kept() {
        // Rare: read the record back and verify it before trusting its payload.
        let f = storage
            .open(seg_path, false)
            .await
            .map_err(|err| Error::io(seg_path, err))?;
        let bytes = f
            .read_at(e.offset, RECORD_HEADER_BYTES + e.payload_len as usize)
            .await
            .map_err(|err| Error::io(seg_path, err))?;
        let (_, payload) =
            crate::format::record::decode_record(&bytes).map_err(|err| Error::Corruption {
                at: Location {
                    file: seg_path.to_path_buf(),
                    offset: e.offset,
                    group: Some(e.group),
                    index: Some(e.index),
                },
                what: format!("snapshot metadata record: {err}"),
            })?;
        let out = payload.to_vec();
        f.close().await.map_err(|err| Error::io(seg_path, err))?;
        Some(out)
    } else {
        None
    };
    Ok(RecordMeta {
        kind,
        group: e.group,
        term: e.term,
        index: e.index,
        aux: e.aux,
        segment: id,
        offset: e.offset,
        payload_len: e.payload_len,
        snapshot_meta,
    })
}

/// For a last segment whose header is unreadable: `Some(end of its non-zero bytes)` when
/// nothing in it can have been acknowledged, `None` when a valid batch header in it claims a
/// durable batch sequence above `durable_before` (the last batch of the segments before it),
/// which proves the segment's start, header included, was once made durable.
async fn unwritten_segment<S: Storage>(
    storage: &S,
    path: &Path,
    durable_before: u64,
) -> Result<Option<u64>> {
    let (batches, garbage_end) = probe_segment(storage, path).await?;
    let class =
        torn_tail::classify_headerless(batches.iter().map(|b| b.durable_seq), durable_before, true);
    Ok((class == DamageClass::TornTail).then_some(garbage_end))
}

/// The quarantine file name of bytes removed from a segment at `from`.
fn region_name(shard: u32, segment: u64, from: u64) -> String {
    format!("shard-{shard}-segment-{segment}-offset-{from}.bin")
}

/// Overwrites `[from, to)` (block aligned) with zeros and syncs. Used only on bytes that were
/// never acknowledged (a torn tail), after they were copied to quarantine.
pub async fn zero_region<S: Storage>(storage: &S, path: &Path, from: u64, to: u64) -> Result<()> {
    assert!(from.is_multiple_of(BLOCK_BYTES) && to.is_multiple_of(BLOCK_BYTES));
    if to <= from {
        return Ok(());
    }
    let f = storage
        .open(path, true)
        .await
        .map_err(|e| Error::io(path, e))?;
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(SCAN_READ_BYTES_MAX as u64);
        let mut buf = storage.alloc_buf(n as usize);
        buf.trim_to(n as usize);
        f.write_at(buf, pos).await.map_err(|e| Error::io(path, e))?;
        pos += n;
    }
    f.sync_data().await.map_err(|e| Error::io(path, e))?;
    f.close().await.map_err(|e| Error::io(path, e))
}
