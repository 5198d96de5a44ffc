//! Offline verification and repair of a stopped node's data directory (`tern verify-data`,
//! `tern repair`, `tern rebuild-index`). Everything here reads segments through
//! [`scan_segment`] and decides about damage with the same rules as [`crate::recovery`], so
//! the CLI, recovery and the writer agree on what is valid.
//!
//! Repair never rewrites acknowledged bytes in place:
//!
//! | what                                             | repair does                                        | needs `--skip-corrupt` |
//! |--------------------------------------------------|----------------------------------------------------|------------------------|
//! | torn tail of the last segment (not proven durable) | copy to quarantine, zero it (what recovery does) | no                     |
//! | last segment with an unwritten header, rest zero | copy to quarantine, remove the file (as recovery)  | no                     |
//! | sealed segment without (or with a wrong) index   | rebuild the index from a scan                      | no                     |
//! | damage before valid data, a bad header with data after it, a missing seal or a seal naming a missing segment | quarantine the whole segment, write a new one (temp file + fsync + rename + dir fsync) with every valid record | yes |
//! | entries that follow a hole in their group's log  | cut them (a Raft log has no holes), report the loss | yes                   |
//! | hard state commit beyond the repaired log        | append a hard state with commit = last index       | yes                    |

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::batch::{BatchBuilder, NewRecord};
use crate::constants::{BLOCK_BYTES, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES};
use crate::engine::{open_meta, shard_dir, EngineMeta, LOCK_FILE, META_FILE, QUARANTINE_DIR};
use crate::error::{Error, Location, Result};
use crate::format::record::{decode_batch_payload, decode_record};
use crate::format::segment::{
    index_file_name, parse_index_file_name, parse_segment_file_name, segment_file_name,
};
use crate::format::{align_up, IndexEntry, RecordHeader, RecordKind, SealedIndex, SegmentHeader};
use crate::group::{GroupTable, HardState, RecordMeta};
use crate::recovery::{now_unix_ms, zero_region};
use crate::scan::{scan_segment, Damage, ScanStop, SegmentScan};
use crate::storage::{read_file, write_file_atomic, IoBuf, Storage, StorageFile};

// ---------------------------------------------------------------------------------------
// Problems

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Counts as a problem (exit code 1).
    Error,
    /// Reported, harmless to the engine (stray files); does not change the exit code.
    Warning,
}

/// One finding, naming file, offset, shard, group and index where they are known.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// Stable short name, e.g. `torn-tail`, `corruption`, `index-missing`.
    pub code: &'static str,
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub shard: Option<u32>,
    pub group: Option<u64>,
    pub index: Option<u64>,
    pub message: String,
    /// The command that fixes it, if any.
    pub fix: Option<&'static str>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}[{}] {}", self.code, self.file.display())?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        if let Some(s) = self.shard {
            write!(f, ", shard {s}")?;
        }
        if let Some(g) = self.group {
            write!(f, ", group {g}")?;
        }
        if let Some(i) = self.index {
            write!(f, ", index {i}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(fix) = self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

const FIX_REPAIR: &str = "tern repair --path DIR";
const FIX_SKIP: &str = "tern repair --path DIR --skip-corrupt (loses the damaged records)";
const FIX_INDEX: &str = "tern rebuild-index --path DIR";

fn problem(code: &'static str, file: &Path, message: String) -> Problem {
    Problem {
        severity: Severity::Error,
        code,
        file: file.to_path_buf(),
        offset: None,
        shard: None,
        group: None,
        index: None,
        message,
        fix: None,
    }
}

impl Problem {
    fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }
    fn shard(mut self, shard: u32) -> Self {
        self.shard = Some(shard);
        self
    }
    fn group(mut self, group: Option<u64>, index: Option<u64>) -> Self {
        self.group = group;
        self.index = index;
        self
    }
    fn fix(mut self, fix: &'static str) -> Self {
        self.fix = Some(fix);
        self
    }
    fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }
}

// ---------------------------------------------------------------------------------------
// Reading a data directory

/// A data directory's files, as found on disk.
#[derive(Debug, Clone)]
pub struct DirLayout {
    pub root: PathBuf,
    /// The `ENGINE` file, or why it is unusable.
    pub meta: std::result::Result<EngineMeta, String>,
    /// `shard-<k>` directories, by shard id.
    pub shards: BTreeMap<u32, PathBuf>,
    /// Entries of the root that tern did not write.
    pub strays: Vec<PathBuf>,
}

/// True if `root` looks like a tern data directory (it has an `ENGINE` file).
pub fn is_data_dir(root: &Path) -> bool {
    root.join(META_FILE).is_file()
}

/// Lists a data directory. Fails with [`Error::NotADataDir`] if it has no `ENGINE` file.
pub fn read_layout(root: &Path) -> Result<DirLayout> {
    if !root.is_dir() {
        return Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: "not a directory".into(),
        });
    }
    if !is_data_dir(root) {
        let empty = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .next()
            .is_none();
        return Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: if empty {
                "the directory is empty (no ENGINE file)".into()
            } else {
                "no ENGINE file".into()
            },
        });
    }
    let meta = match open_meta(root, 0, false) {
        Ok(m) => Ok(m),
        Err(Error::NotADataDir { why, .. }) => Err(why),
        Err(e) => return Err(e),
    };
    let mut shards = BTreeMap::new();
    let mut strays = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == LOCK_FILE || name == META_FILE || name == QUARANTINE_DIR {
            continue;
        }
        match name
            .strip_prefix("shard-")
            .and_then(|k| k.parse::<u32>().ok())
        {
            Some(k) if path.is_dir() && name == format!("shard-{k}") => {
                shards.insert(k, path);
            }
            _ => strays.push(path),
        }
    }
    strays.sort();
    Ok(DirLayout {
        root: root.to_path_buf(),
        meta,
        shards,
        strays,
    })
}

/// One valid record (batch headers excluded).
#[derive(Debug, Clone)]
pub struct RecordInfo {
    pub offset: u64,
    pub batch_offset: u64,
    pub header: RecordHeader,
    /// Payload of `SnapshotMeta` records (the group table keeps it).
    pub snapshot_meta: Option<Vec<u8>>,
}

impl RecordInfo {
    pub fn kind(&self) -> RecordKind {
        self.header.kind()
    }

    fn meta(&self, segment: u64) -> RecordMeta {
        RecordMeta {
            kind: self.kind(),
            group: self.header.group,
            term: self.header.term,
            index: self.header.index,
            aux: self.header.aux,
            segment,
            offset: self.offset,
            payload_len: self.header.payload_len,
            snapshot_meta: self.snapshot_meta.clone(),
        }
    }

    fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            kind: self.header.kind,
            reserved: 0,
            payload_len: self.header.payload_len,
            offset: self.offset,
            group: self.header.group,
            term: self.header.term,
            index: self.header.index,
            aux: self.header.aux,
        }
    }
}

/// One valid batch.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    pub offset: u64,
    pub bytes: u64,
    pub seq: u64,
    pub durable_seq: u64,
}

/// Everything the scanner saw in one segment (scanned with `resume_after_damage`, so every
/// damaged region is listed and every valid batch after it is seen).
#[derive(Debug, Clone)]
pub struct SegmentAnalysis {
    pub id: u64,
    pub shard: Option<u32>,
    pub path: PathBuf,
    /// Where batches were read from: `path`, or a scratch copy with a rebuilt header.
    pub source: PathBuf,
    /// The segment header was unreadable and the scan ran on a copy with a rebuilt header.
    pub header_rebuilt: Option<String>,
    pub scan: SegmentScan,
    pub batches: Vec<BatchInfo>,
    pub records: Vec<RecordInfo>,
    /// Every damaged region, in file order (the scan's skipped regions, then where it stopped).
    pub damages: Vec<Damage>,
}

impl SegmentAnalysis {
    pub fn sealed_next(&self) -> Option<u64> {
        match self.scan.stop {
            ScanStop::Sealed { next_segment } => Some(next_segment),
            _ => None,
        }
    }

    pub fn bad_header(&self) -> Option<String> {
        match &self.scan.stop {
            ScanStop::BadHeader(e) => Some(e.to_string()),
            _ => self.header_rebuilt.clone(),
        }
    }

    fn last_seq_before(&self, offset: u64, prev: Option<u64>) -> Option<u64> {
        self.batches
            .iter()
            .filter(|b| b.offset < offset)
            .map(|b| b.seq)
            .max()
            .or(prev)
    }

    /// Whether a later valid batch proves the damaged batch was durable (acknowledged):
    /// the rule recovery uses to tell corruption from a torn tail.
    pub fn proven_durable(&self, d: &Damage, prev_last_seq: Option<u64>) -> bool {
        let damaged_seq = d.batch_seq.unwrap_or(
            self.last_seq_before(d.offset, prev_last_seq)
                .map_or(1, |s| s + 1),
        );
        d.later_batches.iter().any(|b| b.durable_seq >= damaged_seq)
    }

    /// For the last segment of a shard: the first damage recovery would truncate as a torn
    /// tail (everything from its offset on is dropped, as recovery zeroes it).
    pub fn torn_from(&self, is_last: bool, prev_last_seq: Option<u64>) -> Option<usize> {
        if !is_last {
            return None;
        }
        self.damages
            .iter()
            .position(|d| !self.proven_durable(d, prev_last_seq))
    }

    /// Highest batch sequence seen, including valid batches found after damage.
    pub fn max_seq(&self) -> u64 {
        let later = self
            .damages
            .iter()
            .flat_map(|d| d.later_batches.iter().map(|b| b.seq));
        self.batches
            .iter()
            .map(|b| b.seq)
            .chain(later)
            .max()
            .unwrap_or(0)
    }
}

/// Scans one segment file. With `salvage`, a segment whose header is unreadable but which
/// holds data is scanned through a scratch copy (`<id>.salvage.tmp`, removed by
/// [`remove_salvage`] or by recovery) whose header is rebuilt from the file name.
pub async fn analyze_segment<S: Storage>(
    storage: &S,
    path: &Path,
    id: u64,
    shard: Option<u32>,
    salvage: bool,
) -> Result<SegmentAnalysis> {
    let (scan, batches, records) = scan_collect(storage, path).await?;
    let mut a = SegmentAnalysis {
        id,
        shard,
        path: path.to_path_buf(),
        source: path.to_path_buf(),
        header_rebuilt: None,
        damages: damages_of(&scan),
        scan,
        batches,
        records,
    };
    if let (ScanStop::BadHeader(e), true) = (&a.scan.stop, salvage) {
        let why = e.to_string();
        let scratch = salvage_path(path, id);
        make_salvage_copy(path, &scratch, id, shard.unwrap_or(0))?;
        let (scan, batches, records) = scan_collect(storage, &scratch).await?;
        a.damages = damages_of(&scan);
        a.scan = scan;
        a.batches = batches;
        a.records = records;
        a.source = scratch;
        a.header_rebuilt = Some(why);
    }
    Ok(a)
}

fn damages_of(scan: &SegmentScan) -> Vec<Damage> {
    let mut d = scan.skipped.clone();
    if let ScanStop::Damaged(last) = &scan.stop {
        d.push(last.clone());
    }
    d
}

async fn scan_collect<S: Storage>(
    storage: &S,
    path: &Path,
) -> Result<(SegmentScan, Vec<BatchInfo>, Vec<RecordInfo>)> {
    let mut batches = Vec::new();
    let mut records = Vec::new();
    let mut batch_offset = 0;
    let scan = scan_segment(storage, path, true, |r| {
        let kind = r.header.kind();
        if kind == RecordKind::BatchHeader {
            // The scanner only hands out batches whose header payload decoded.
            let bytes = decode_batch_payload(&r.header, r.payload, BLOCK_BYTES)
                .map_or(BLOCK_BYTES, |p| p.batch_bytes as u64);
            batch_offset = r.offset;
            batches.push(BatchInfo {
                offset: r.offset,
                bytes,
                seq: r.header.batch_seq,
                durable_seq: r.header.aux,
            });
            return;
        }
        records.push(RecordInfo {
            offset: r.offset,
            batch_offset,
            header: r.header,
            snapshot_meta: (kind == RecordKind::SnapshotMeta).then(|| r.payload.to_vec()),
        });
    })
    .await?;
    Ok((scan, batches, records))
}

fn salvage_path(path: &Path, id: u64) -> PathBuf {
    path.with_file_name(format!("{id:020}.salvage.tmp"))
}

/// Removes the scratch copy made for a segment with a rebuilt header, if any.
pub fn remove_salvage(a: &SegmentAnalysis) -> Result<()> {
    if a.source != a.path {
        std::fs::remove_file(&a.source).map_err(|e| Error::io(&a.source, e))?;
    }
    Ok(())
}

fn rebuilt_segment_bytes(len: u64) -> u64 {
    align_up(len, BLOCK_BYTES).clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)
}

fn make_salvage_copy(path: &Path, scratch: &Path, id: u64, shard: u32) -> Result<()> {
    std::fs::copy(path, scratch).map_err(|e| Error::io(scratch, e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(scratch)
        .map_err(|e| Error::io(scratch, e))?;
    let len = f.metadata().map_err(|e| Error::io(scratch, e))?.len();
    let header = SegmentHeader::new(id, shard, rebuilt_segment_bytes(len), 0, now_unix_ms());
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES as usize];
    header.encode_block(&mut block);
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.write_all(&block))
        .map_err(|e| Error::io(scratch, e))?;
    // Reads go through O_DIRECT: keep the copy a whole number of blocks long.
    let aligned = align_up(len.max(SEGMENT_HEADER_BYTES), BLOCK_BYTES);
    f.set_len(aligned).map_err(|e| Error::io(scratch, e))
}

/// The files of one shard directory.
#[derive(Debug, Clone)]
pub struct ShardAnalysis {
    pub shard: u32,
    pub dir: PathBuf,
    pub segments: Vec<SegmentAnalysis>,
    pub index_ids: BTreeSet<u64>,
    pub strays: Vec<PathBuf>,
}

impl ShardAnalysis {
    /// Last batch sequence of the segment before `i` (for the torn-tail rule).
    pub fn prev_last_seq(&self, i: usize) -> Option<u64> {
        self.segments[..i]
            .iter()
            .rev()
            .find_map(|s| s.batches.last().map(|b| b.seq))
    }

    pub fn is_last(&self, i: usize) -> bool {
        i + 1 == self.segments.len()
    }

    pub fn torn_from(&self, i: usize) -> Option<usize> {
        self.segments[i].torn_from(self.is_last(i), self.prev_last_seq(i))
    }

    pub fn max_seq(&self) -> u64 {
        self.segments.iter().map(|s| s.max_seq()).max().unwrap_or(0)
    }
}

/// Lists and scans every segment of a shard directory, oldest first. `progress` is called
/// with the bytes of each segment once it is scanned.
pub async fn analyze_shard<S: Storage>(
    storage: &S,
    shard: u32,
    dir: &Path,
    salvage: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<ShardAnalysis> {
    let mut ids = Vec::new();
    let mut index_ids = BTreeSet::new();
    let mut strays = Vec::new();
    for entry in storage.list_dir(dir).await.map_err(|e| Error::io(dir, e))? {
        if let Some(id) = parse_segment_file_name(&entry.name) {
            ids.push(id);
        } else if let Some(id) = parse_index_file_name(&entry.name) {
            index_ids.insert(id);
        } else {
            strays.push(dir.join(&entry.name));
        }
    }
    ids.sort_unstable();
    let mut segments = Vec::new();
    for id in ids {
        let path = dir.join(segment_file_name(id));
        let a = analyze_segment(storage, &path, id, Some(shard), salvage).await?;
        progress(a.scan.file_len);
        segments.push(a);
    }
    // The writer prepares the next segment ahead of time (header written, no batch yet);
    // as the last file of the shard it holds no data and is not part of the log.
    if segments.last().is_some_and(|a| a.scan.is_unused_spare()) {
        segments.pop();
    }
    Ok(ShardAnalysis {
        shard,
        dir: dir.to_path_buf(),
        segments,
        index_ids,
        strays,
    })
}

/// Total bytes of the segment files under a data directory (for progress bars).
pub fn segment_bytes_total(layout: &DirLayout) -> u64 {
    let mut total = 0;
    for dir in layout.shards.values() {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if parse_segment_file_name(&name).is_some() {
                    total += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------------------
// Replay: the group table that recovery would build

/// Entries of a group that cannot stay because they follow a hole in the group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLoss {
    pub shard: u32,
    pub group: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub why: String,
}

pub struct Replay {
    pub table: GroupTable,
    /// (segment position, record position) of every record that did not apply.
    pub orphans: BTreeSet<(usize, usize)>,
    /// Per group: (first index of the hole, highest orphan index).
    pub holes: BTreeMap<u64, (u64, u64)>,
}

/// Applies the records `keep` selects, in file order, to a fresh group table, as recovery
/// does; records that leave a hole in their group's log are collected as orphans.
pub fn replay(shard: &ShardAnalysis, keep: &dyn Fn(usize, &RecordInfo) -> bool) -> Replay {
    let mut table = GroupTable::default();
    let mut orphans = BTreeSet::new();
    let mut holes: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    // The first damaged spot of the shard: a group whose log starts after it, above the
    // first index its records justify, lost its first entries there.
    let first_damage = shard.segments.iter().enumerate().find_map(|(si, s)| {
        if s.bad_header().is_some() && s.header_rebuilt.is_none() {
            return Some((si, 0));
        }
        s.damages.first().map(|d| (si, d.offset))
    });
    for (si, seg) in shard.segments.iter().enumerate() {
        for (ri, rec) in seg.records.iter().enumerate() {
            if !keep(si, rec) {
                continue;
            }
            let after_damage = first_damage.is_some_and(|d| (si, rec.offset) > d);
            if after_damage && rec.kind() == RecordKind::Entry {
                let expected = table
                    .groups
                    .get(&rec.header.group)
                    .map_or(Some(1), |g| g.entries.is_empty().then_some(g.first_index));
                if let Some(first) = expected.filter(|f| rec.header.index > *f) {
                    let h = holes
                        .entry(rec.header.group)
                        .or_insert((first, rec.header.index - 1));
                    h.0 = h.0.min(first);
                }
            }
            let hole_start = table
                .groups
                .get(&rec.header.group)
                .map_or(rec.header.index, |g| g.last_index() + 1);
            if let Err(e) = table.apply(&rec.meta(seg.id)) {
                orphans.insert((si, ri));
                let h = holes.entry(e.group).or_insert((hole_start, e.index));
                h.0 = h.0.min(hole_start);
                h.1 = h.1.max(e.index);
            }
        }
    }
    Replay {
        table,
        orphans,
        holes,
    }
}

// ---------------------------------------------------------------------------------------
// verify-data

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Restrict record-level problems (and the group summary) to this group.
    pub group: Option<u64>,
    /// Stop at the first problem.
    pub fail_fast: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    pub shard: u32,
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: u64,
    pub shard: u32,
    pub first_index: u64,
    pub last_index: u64,
    pub entries: u64,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub clean: bool,
    pub shards: Vec<ShardSummary>,
    pub groups: Vec<GroupSummary>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// True if `--fail-fast` stopped the check early.
    pub stopped_early: bool,
}

impl serde::Serialize for HardState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("HardState", 3)?;
        st.serialize_field("term", &self.term)?;
        st.serialize_field("vote", &self.vote)?;
        st.serialize_field("commit", &self.commit)?;
        st.end()
    }
}

/// Checks a data directory: ENGINE file, every segment header, batch and record checksum,
/// the seal chain, every sealed index against the data it indexes (entry by entry), each
/// group's log (no holes, terms never decrease) and hard state (commit within the log, term
/// at least the last entry's).
pub async fn verify_dir<S: Storage>(
    storage: &S,
    root: &Path,
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport> {
    let layout = read_layout(root)?;
    let mut out = Vec::new();
    if let Err(why) = &layout.meta {
        out.push(
            problem(
                "engine-meta",
                &root.join(META_FILE),
                format!("ENGINE file unusable: {why}"),
            )
            .fix("restore the ENGINE file from a replica of the same format and shard count"),
        );
    }
    for p in &layout.strays {
        out.push(
            problem(
                "stray-file",
                p,
                "not written by tern (ignored by the engine)".into(),
            )
            .warning(),
        );
    }
    let shard_count = layout
        .meta
        .as_ref()
        .map(|m| m.shards)
        .unwrap_or_else(|_| layout.shards.keys().max().map_or(0, |k| k + 1));
    for (&k, dir) in &layout.shards {
        if k >= shard_count {
            out.push(
                problem(
                    "stray-file",
                    dir,
                    format!("shard directory beyond the {shard_count} shards of ENGINE"),
                )
                .warning(),
            );
        }
    }
    let mut shards = Vec::new();
    let mut groups = Vec::new();
    let mut stopped_early = false;
    for (&k, dir) in layout.shards.iter().filter(|(k, _)| **k < shard_count) {
        if opts.fail_fast && out.iter().any(|p| p.severity == Severity::Error) {
            stopped_early = true;
            break;
        }
        let sa = analyze_shard(storage, k, dir, false, progress).await?;
        let (problems, table) = check_shard(storage, &sa, opts).await?;
        out.extend(problems);
        shards.push(ShardSummary {
            shard: k,
            segments: sa.segments.len(),
            batches: sa.segments.iter().map(|s| s.batches.len() as u64).sum(),
            records: sa.segments.iter().map(|s| s.records.len() as u64).sum(),
            bytes: sa.segments.iter().map(|s| s.scan.valid_end).sum(),
        });
        for info in table.all_info() {
            if opts.group.is_some_and(|g| g != info.group) {
                continue;
            }
            groups.push(GroupSummary {
                group: info.group,
                shard: k,
                first_index: info.first_index,
                last_index: info.last_index,
                entries: (info.last_index + 1).saturating_sub(info.first_index),
                hard_state: info.hard_state,
                snapshot: info.snapshot,
            });
        }
    }
    groups.sort_by_key(|g| g.group);
    if let Some(g) = opts.group {
        out.retain(|p| p.group.is_none_or(|pg| pg == g));
    }
    let (mut problems, warnings): (Vec<_>, Vec<_>) =
        out.into_iter().partition(|p| p.severity == Severity::Error);
    if opts.fail_fast && problems.len() > 1 {
        problems.truncate(1);
        stopped_early = true;
    }
    Ok(VerifyReport {
        path: root.to_path_buf(),
        clean: problems.is_empty(),
        shards,
        groups,
        problems,
        warnings,
        stopped_early,
    })
}

/// Problems of one shard, and the group table recovery would build from it.
pub async fn check_shard<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    opts: &VerifyOptions,
) -> Result<(Vec<Problem>, GroupTable)> {
    let k = sa.shard;
    let mut out = Vec::new();
    for p in &sa.strays {
        let name = p.to_string_lossy();
        if name.ends_with(".wal.spare") {
            // A zero-filled segment the writer prepared ahead of time: tern's own.
            continue;
        }
        let msg = if name.ends_with(".tmp") || name.ends_with(".wal.prep") {
            "left-over temporary file (removed by the engine at start-up)"
        } else {
            "not written by tern (ignored by the engine)"
        };
        out.push(problem("stray-file", p, msg.into()).shard(k).warning());
    }
    for id in &sa.index_ids {
        if !sa.segments.iter().any(|s| s.id == *id) {
            out.push(
                problem(
                    "stray-file",
                    &sa.dir.join(index_file_name(*id)),
                    "index of a segment that is gone (removed by the engine at start-up)".into(),
                )
                .shard(k)
                .warning(),
            );
        }
    }
    let n = sa.segments.len();
    for (i, a) in sa.segments.iter().enumerate() {
        let is_last = sa.is_last(i);
        if let Some(why) = a.bad_header() {
            let (msg, fix) = if is_last {
                (format!("segment header unreadable ({why}); if nothing in the segment was acknowledged (a crash while creating it) the engine removes it at start-up, and so does `tern repair`"), FIX_REPAIR)
            } else {
                (format!("segment header unreadable ({why})"), FIX_SKIP)
            };
            out.push(
                problem("segment-header", &a.path, msg)
                    .at(0)
                    .shard(k)
                    .fix(fix),
            );
            continue;
        }
        if let Some(h) = &a.scan.header {
            if h.segment_id != a.id || h.shard != k {
                out.push(
                    problem(
                        "segment-header",
                        &a.path,
                        format!(
                            "header names segment {} of shard {}, file is segment {} of shard {k}",
                            h.segment_id, h.shard, a.id
                        ),
                    )
                    .at(0)
                    .shard(k),
                );
            }
        }
        let torn = sa.torn_from(i);
        let prev = sa.prev_last_seq(i);
        for (di, d) in a.damages.iter().enumerate() {
            if torn == Some(di) {
                let later: Vec<u64> = d.later_batches.iter().map(|b| b.seq).collect();
                let mut msg = format!(
                    "torn tail ({}) over bytes {}..{}: never acknowledged; the engine truncates it at start-up",
                    d.reason, d.offset, d.garbage_end
                );
                if !later.is_empty() {
                    msg.push_str(&format!(
                        " together with the unacknowledged batches {later:?} after it"
                    ));
                }
                out.push(
                    problem("torn-tail", &a.path, msg)
                        .at(d.record_offset)
                        .shard(k)
                        .group(d.group, d.index)
                        .fix(FIX_REPAIR),
                );
                break;
            }
            let why = if !is_last {
                "in a sealed segment".to_string()
            } else if a.proven_durable(d, prev) {
                "a later batch proves it was acknowledged".to_string()
            } else {
                "valid data follows".to_string()
            };
            out.push(
                problem(
                    "corruption",
                    &a.path,
                    format!(
                        "{} ({why}); bytes {}..{}",
                        d.reason, d.offset, d.garbage_end
                    ),
                )
                .at(d.record_offset)
                .shard(k)
                .group(d.group, d.index)
                .fix(FIX_SKIP),
            );
        }
        match a.sealed_next() {
            Some(next) if !is_last && sa.segments[i + 1].id != next => {
                out.push(
                    problem(
                        "missing-segment",
                        &a.path,
                        format!(
                            "seal names segment {next} as next, but the next segment is {}",
                            sa.segments[i + 1].id
                        ),
                    )
                    .at(a.scan.valid_end)
                    .shard(k)
                    .fix(FIX_SKIP),
                );
            }
            None if !is_last && a.damages.is_empty() => {
                out.push(
                    problem(
                        "unsealed-segment",
                        &a.path,
                        format!(
                            "segment {} is followed by segment {} but ends at {} without a seal record",
                            a.id,
                            sa.segments[i + 1].id,
                            a.scan.valid_end
                        ),
                    )
                    .at(a.scan.valid_end)
                    .shard(k)
                    .fix(FIX_SKIP),
                );
            }
            _ => {}
        }
        // Sealed indexes.
        let ipath = sa.dir.join(index_file_name(a.id));
        let has_index = sa.index_ids.contains(&a.id);
        let sealed_clean = a.sealed_next().is_some() && a.damages.is_empty();
        if sealed_clean && !has_index {
            out.push(
                problem(
                    "index-missing",
                    &ipath,
                    format!(
                        "sealed segment {} has no index (recovery rebuilds it by scanning)",
                        a.id
                    ),
                )
                .shard(k)
                .fix(FIX_INDEX),
            );
        } else if has_index && a.damages.is_empty() {
            // (A damaged segment's index is rebuilt by repair; the damage is the problem.)
            if let Some(p) = check_index(storage, &ipath, a).await? {
                out.push(p.shard(k));
            }
        }
        if opts.fail_fast && out.iter().any(|p| p.severity == Severity::Error) {
            let t = GroupTable::default();
            return Ok((out, t));
        }
        let _ = n;
    }

    // The group table recovery would build (records after a torn tail are dropped, as
    // recovery zeroes them).
    let cut: Vec<Option<u64>> = (0..sa.segments.len())
        .map(|i| sa.torn_from(i).map(|d| sa.segments[i].damages[d].offset))
        .collect();
    let r = replay(sa, &|si, rec| cut[si].is_none_or(|c| rec.offset < c));
    for (g, (from, to)) in &r.holes {
        let first = r
            .orphans
            .iter()
            .find(|(si, ri)| sa.segments[*si].records[*ri].header.group == *g)
            .map(|(si, ri)| (&sa.segments[*si], &sa.segments[*si].records[*ri]));
        let (file, off) = first.map_or((sa.dir.clone(), None), |(s, rec)| {
            (s.path.clone(), Some(rec.offset))
        });
        let msg = if first.is_some() {
            format!(
                "entries {from}..={to} cannot be kept: the group's log has a hole at index {from}"
            )
        } else {
            format!("entries {from}..={to} were in the damaged region: the group's log now starts at {}", to + 1)
        };
        let mut p = problem("log-hole", &file, msg)
            .shard(k)
            .group(Some(*g), Some(*from))
            .fix(FIX_SKIP);
        p.offset = off;
        out.push(p);
    }
    let mut ids: Vec<u64> = r.table.groups.keys().copied().collect();
    ids.sort_unstable();
    for g in ids {
        let st = &r.table.groups[&g];
        let mut prev_term = st.snapshot.as_ref().map_or(0, |s| s.term);
        let mut prev_index = st.first_index;
        for (i, e) in st.entries.iter().enumerate() {
            let index = st.first_index + i as u64;
            if e.term < prev_term {
                out.push(
                    problem(
                        "term-order",
                        &sa.dir.join(segment_file_name(e.segment)),
                        format!(
                            "entry term {} is below the term {prev_term} of index {prev_index}",
                            e.term
                        ),
                    )
                    .at(e.offset)
                    .shard(k)
                    .group(Some(g), Some(index)),
                );
                break;
            }
            prev_term = e.term;
            prev_index = index;
        }
        if let Some(hs) = st.hard_state {
            let last = st.last_index();
            let last_term = st.entries.back().map_or(prev_term, |e| e.term);
            if hs.commit > last {
                out.push(
                    problem(
                        "hard-state",
                        &sa.dir,
                        format!("commit {} is beyond the last index {last} of the log: committed entries are missing", hs.commit),
                    )
                    .shard(k)
                    .group(Some(g), Some(hs.commit))
                    .fix(FIX_SKIP),
                );
            }
            if hs.term < last_term {
                out.push(
                    problem(
                        "hard-state",
                        &sa.dir,
                        format!(
                            "hard state term {} is below the term {last_term} of the last entry",
                            hs.term
                        ),
                    )
                    .shard(k)
                    .group(Some(g), Some(last)),
                );
            }
        }
    }
    if let Some(g) = opts.group {
        out.retain(|p| p.group.is_none_or(|pg| pg == g));
    }
    Ok((out, r.table))
}

/// The index a scan of `a` implies (what the writer wrote when it sealed the segment).
pub fn build_index(a: &SegmentAnalysis) -> SealedIndex {
    SealedIndex::new(
        a.id,
        a.scan.header.map_or(0, |h| h.segment_bytes),
        a.scan.valid_end,
        a.scan.first_batch_seq.unwrap_or(0),
        a.scan.last_batch_seq.unwrap_or(0),
        a.records.iter().map(|r| r.index_entry()).collect(),
    )
}

/// Decodes an index and compares it with the segment's records, entry by entry.
pub async fn check_index<S: Storage>(
    storage: &S,
    ipath: &Path,
    a: &SegmentAnalysis,
) -> Result<Option<Problem>> {
    let bytes = read_file(storage, ipath)
        .await
        .map_err(|e| Error::io(ipath, e))?;
    let idx = match SealedIndex::decode(&bytes) {
        Ok(i) => i,
        Err(e) => {
            return Ok(Some(
                problem("index-corrupt", ipath, format!("index unreadable: {e}")).fix(FIX_INDEX),
            ))
        }
    };
    Ok(compare_index(&idx, a).map(|(offset, msg)| {
        let mut p = problem("index-mismatch", ipath, msg).fix(FIX_INDEX);
        p.offset = offset;
        p
    }))
}

/// The first difference between an index and the records of its segment, as
/// (segment offset, description).
pub fn compare_index(idx: &SealedIndex, a: &SegmentAnalysis) -> Option<(Option<u64>, String)> {
    let h = &idx.header;
    if h.segment_id != a.id {
        return Some((
            None,
            format!(
                "index names segment {}, file is segment {}",
                h.segment_id, a.id
            ),
        ));
    }
    if a.sealed_next().is_none() || !a.damages.is_empty() {
        return Some((
            None,
            "index exists but the segment is not a cleanly sealed segment".into(),
        ));
    }
    if h.data_end != a.scan.valid_end {
        return Some((
            Some(a.scan.valid_end),
            format!(
                "index says data ends at {}, the segment's data ends at {}",
                h.data_end, a.scan.valid_end
            ),
        ));
    }
    if Some(h.first_batch_seq) != a.scan.first_batch_seq
        || Some(h.last_batch_seq) != a.scan.last_batch_seq
    {
        return Some((
            None,
            format!(
                "index covers batches {}..={}, the segment holds {:?}..={:?}",
                h.first_batch_seq, h.last_batch_seq, a.scan.first_batch_seq, a.scan.last_batch_seq
            ),
        ));
    }
    for (i, (e, r)) in idx.entries.iter().zip(&a.records).enumerate() {
        let want = r.index_entry();
        if *e != want {
            return Some((
                Some(r.offset),
                format!(
                    "index entry {i} is {e:?}, the record at offset {} is {want:?}",
                    r.offset
                ),
            ));
        }
    }
    if idx.entries.len() != a.records.len() {
        return Some((
            None,
            format!(
                "index has {} entries, the segment {} records",
                idx.entries.len(),
                a.records.len()
            ),
        ));
    }
    None
}

// ---------------------------------------------------------------------------------------
// rebuild-index

#[derive(Debug, Clone, Serialize)]
pub struct IndexAction {
    pub shard: u32,
    pub segment: u64,
    pub file: PathBuf,
    /// `ok`, `rebuilt`, `would-rebuild`, `skipped`
    pub action: &'static str,
    pub reason: String,
}

/// Rebuilds the index of every cleanly sealed segment whose index is missing, unreadable or
/// does not match the segment. Damaged segments are skipped and reported (repair them first).
pub async fn rebuild_indexes<S: Storage>(
    storage: &S,
    root: &Path,
    dry_run: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<IndexAction>> {
    let layout = read_layout(root)?;
    let mut out = Vec::new();
    for (&k, dir) in &layout.shards {
        let sa = analyze_shard(storage, k, dir, false, progress).await?;
        for (i, a) in sa.segments.iter().enumerate() {
            let ipath = dir.join(index_file_name(a.id));
            let sealed = a.sealed_next().is_some();
            let act = |action, reason: String| IndexAction {
                shard: k,
                segment: a.id,
                file: ipath.clone(),
                action,
                reason,
            };
            if !a.damages.is_empty() || a.bad_header().is_some() || (!sealed && !sa.is_last(i)) {
                out.push(act(
                    "skipped",
                    "segment is damaged: run `tern repair` first".into(),
                ));
                continue;
            }
            if !sealed {
                continue;
            }
            let reason = if sa.index_ids.contains(&a.id) {
                match check_index(storage, &ipath, a).await? {
                    None => {
                        out.push(act("ok", "index matches the segment".into()));
                        continue;
                    }
                    Some(p) => p.message,
                }
            } else {
                "index missing".to_string()
            };
            if dry_run {
                out.push(act("would-rebuild", reason));
                continue;
            }
            let idx = build_index(a);
            write_file_atomic(storage, &ipath, &idx.encode())
                .await
                .map_err(|e| Error::io(&ipath, e))?;
            out.push(act("rebuilt", reason));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// repair

#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    pub skip_corrupt: bool,
    pub dry_run: bool,
    /// Only act on this shard (and segment): `tern repair --path SEGMENT`.
    pub only_shard: Option<u32>,
    pub only_segment: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    TruncateTail,
    RemoveSegment,
    RewriteSegment,
    RebuildIndex,
    LowerCommit,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairAction {
    pub kind: ActionKind,
    pub shard: u32,
    pub segment: Option<u64>,
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub bytes: Option<u64>,
    pub reason: String,
    /// `done`, `planned` (dry run), `needs --skip-corrupt`, `outside --path`
    pub status: &'static str,
}

/// A damaged byte range whose records are lost (only the first bad record's identity is
/// known, when its header still decoded).
#[derive(Debug, Clone, Serialize)]
pub struct RegionLoss {
    pub shard: u32,
    pub segment: u64,
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
    pub group: Option<u64>,
    pub index: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub path: PathBuf,
    pub dry_run: bool,
    pub actions: Vec<RepairAction>,
    /// Entries removed (or that would be) from each group's log.
    pub losses: Vec<GroupLoss>,
    /// Damaged regions removed (or that would be).
    pub regions: Vec<RegionLoss>,
    /// Where removed bytes were copied, with a MANIFEST.
    pub quarantine: Option<PathBuf>,
    /// Problems left after the repair (a verify run after it), or found by a dry run.
    pub remaining: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SegPlan {
    Keep,
    TruncateTail { from: u64, to: u64 },
    Remove,
    Rewrite { why: String },
}

/// Plans and (unless a dry run) carries out the repair of a data directory.
pub async fn repair_dir<S: Storage>(
    storage: &S,
    root: &Path,
    opts: &RepairOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<RepairReport> {
    let layout = read_layout(root)?;
    if let Err(why) = &layout.meta {
        return Err(Error::NotADataDir {
            path: root.to_path_buf(),
            why: format!("ENGINE file unusable ({why}); repair will not guess the shard count"),
        });
    }
    let mut report = RepairReport {
        path: root.to_path_buf(),
        dry_run: opts.dry_run,
        actions: Vec::new(),
        losses: Vec::new(),
        regions: Vec::new(),
        quarantine: None,
        remaining: Vec::new(),
    };
    let mut q = Quarantine::new(root);
    for (&k, dir) in &layout.shards {
        if opts.only_shard.is_some_and(|s| s != k) {
            continue;
        }
        let sa = analyze_shard(storage, k, dir, true, progress).await?;
        let result = repair_shard(storage, &sa, opts, &mut q, &mut report).await;
        for a in &sa.segments {
            remove_salvage(a)?;
        }
        result?;
    }
    if !opts.dry_run {
        q.finish(&report)?;
        report.quarantine = q.dir.clone();
    }
    let verify = verify_dir(storage, root, &VerifyOptions::default(), &mut |_| {}).await?;
    report.remaining = verify.problems;
    Ok(report)
}

async fn repair_shard<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    opts: &RepairOptions,
    q: &mut Quarantine,
    report: &mut RepairReport,
) -> Result<()> {
    let k = sa.shard;
    let n = sa.segments.len();
    let mut plans = Vec::with_capacity(n);
    for (i, a) in sa.segments.iter().enumerate() {
        let is_last = sa.is_last(i);
        let plan = if a.header_rebuilt.is_some() {
            // As recovery decides: the header and the first batch are made durable by one
            // fdatasync, so a last segment none of whose batches proves anything in it
            // durable was never acknowledged (a crash while creating it).
            let prev = sa.prev_last_seq(i).unwrap_or(0);
            let later = a
                .damages
                .iter()
                .flat_map(|d| d.later_batches.iter().map(|b| b.durable_seq));
            let proves = a
                .batches
                .iter()
                .map(|b| b.durable_seq)
                .chain(later)
                .any(|s| s > prev);
            if is_last && !proves {
                SegPlan::Remove
            } else {
                SegPlan::Rewrite {
                    why: format!(
                        "segment header unreadable ({})",
                        a.bad_header().unwrap_or_default()
                    ),
                }
            }
        } else if let Some(d) = a.damages.first() {
            if sa.torn_from(i) == Some(0) {
                SegPlan::TruncateTail {
                    from: d.offset,
                    to: d.garbage_end.max(d.offset),
                }
            } else {
                SegPlan::Rewrite {
                    why: format!(
                        "{} at offset {} before valid data",
                        d.reason, d.record_offset
                    ),
                }
            }
        } else {
            match a.sealed_next() {
                Some(next) if !is_last && sa.segments[i + 1].id != next => SegPlan::Rewrite {
                    why: format!("seal names missing segment {next}"),
                },
                None if !is_last => SegPlan::Rewrite {
                    why: "sealed segment has lost its seal".into(),
                },
                _ => SegPlan::Keep,
            }
        };
        plans.push(plan);
    }
    // What each segment keeps, before cutting holes.
    let cut: Vec<Option<u64>> = (0..n)
        .map(|i| match &plans[i] {
            SegPlan::TruncateTail { from, .. } => Some(*from),
            SegPlan::Remove => Some(0),
            _ => sa.torn_from(i).map(|d| sa.segments[i].damages[d].offset),
        })
        .collect();
    let keep = |si: usize, rec: &RecordInfo| cut[si].is_none_or(|c| rec.offset < c);
    let r = replay(sa, &keep);
    for (si, _) in &r.orphans {
        if !matches!(plans[*si], SegPlan::Rewrite { .. } | SegPlan::Remove) {
            plans[*si] = SegPlan::Rewrite {
                why: "holds entries that follow a hole in their group's log".into(),
            };
        }
    }
    let needs_skip = plans.iter().any(|p| matches!(p, SegPlan::Rewrite { .. }));

    // Losses.
    let mut dropped: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (si, a) in sa.segments.iter().enumerate() {
        for (ri, rec) in a.records.iter().enumerate() {
            let lost = !keep(si, rec) || r.orphans.contains(&(si, ri));
            if lost && rec.kind() == RecordKind::Entry {
                let e = dropped.entry(rec.header.group).or_insert((u64::MAX, 0));
                e.0 = e.0.min(rec.header.index);
                e.1 = e.1.max(rec.header.index);
            }
        }
        let torn = sa.torn_from(si);
        for (di, d) in a.damages.iter().enumerate() {
            if torn.is_some_and(|t| di > t) {
                break;
            }
            report.regions.push(RegionLoss {
                shard: k,
                segment: a.id,
                file: a.path.clone(),
                offset: d.offset,
                bytes: d
                    .later_batches
                    .first()
                    .map_or(d.garbage_end, |b| b.offset)
                    .saturating_sub(d.offset),
                reason: d.reason.to_string(),
                group: d.group,
                index: d.index,
            });
        }
    }
    for (g, (lo, hi)) in &r.holes {
        let e = dropped.entry(*g).or_insert((*lo, *hi));
        e.0 = e.0.min(*lo);
        e.1 = e.1.max(*hi);
    }
    for (g, (lo, hi)) in dropped {
        let cut_here = r
            .orphans
            .iter()
            .any(|(si, ri)| sa.segments[*si].records[*ri].header.group == g);
        let why = if cut_here {
            format!(
                "the group's log has a hole at index {}: entries after it are cut",
                r.holes[&g].0
            )
        } else if r.holes.contains_key(&g) {
            "in the damaged region (unreadable)".to_string()
        } else {
            "in the removed tail".to_string()
        };
        report.losses.push(GroupLoss {
            shard: k,
            group: g,
            first_index: lo,
            last_index: hi,
            why,
        });
    }

    let status_for = |seg: Option<u64>, needs: bool| -> &'static str {
        if opts.only_segment.is_some() && seg != opts.only_segment {
            "outside --path"
        } else if needs && !opts.skip_corrupt {
            "needs --skip-corrupt"
        } else if opts.dry_run {
            "planned"
        } else {
            "done"
        }
    };

    // Carry out the segment plans.
    let mut rewrites_done = true;
    for (i, a) in sa.segments.iter().enumerate() {
        let is_last = sa.is_last(i);
        match &plans[i] {
            SegPlan::Keep => {
                let ipath = sa.dir.join(index_file_name(a.id));
                if a.sealed_next().is_none() {
                    if sa.index_ids.contains(&a.id) {
                        let status = status_for(Some(a.id), false);
                        if status == "done" {
                            drop_index(storage, sa, a.id, q).await?;
                        }
                        report.actions.push(RepairAction {
                            kind: ActionKind::RebuildIndex,
                            shard: k,
                            segment: Some(a.id),
                            file: ipath,
                            offset: None,
                            bytes: None,
                            reason: "index of a segment that is not sealed: removed".into(),
                            status,
                        });
                    }
                    continue;
                }
                let reason = if !sa.index_ids.contains(&a.id) {
                    "index missing".to_string()
                } else {
                    match check_index(storage, &ipath, a).await? {
                        None => continue,
                        Some(p) => p.message,
                    }
                };
                let status = status_for(Some(a.id), false);
                if status == "done" {
                    if sa.index_ids.contains(&a.id) {
                        q.copy_file(&ipath, k, "index replaced by rebuild")?;
                    }
                    write_file_atomic(storage, &ipath, &build_index(a).encode())
                        .await
                        .map_err(|e| Error::io(&ipath, e))?;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::RebuildIndex,
                    shard: k,
                    segment: Some(a.id),
                    file: ipath,
                    offset: None,
                    bytes: None,
                    reason,
                    status,
                });
            }
            SegPlan::TruncateTail { from, to } => {
                let status = status_for(Some(a.id), false);
                if status == "done" {
                    q.copy_region(&a.path, k, a.id, *from, *to, "torn tail")?;
                    drop_index(storage, sa, a.id, q).await?;
                    zero_region(storage, &a.path, *from, align_up(*to, BLOCK_BYTES)).await?;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::TruncateTail,
                    shard: k,
                    segment: Some(a.id),
                    file: a.path.clone(),
                    offset: Some(*from),
                    bytes: Some(to - from),
                    reason: format!(
                        "torn tail ({}): truncated to the last valid batch, which ends at {from}",
                        a.damages[0].reason
                    ),
                    status,
                });
            }
            SegPlan::Remove => {
                let status = status_for(Some(a.id), false);
                if status == "done" {
                    q.copy_file(&a.path, k, "segment with an unwritten header")?;
                    drop_index(storage, sa, a.id, q).await?;
                    storage
                        .remove_file(&a.path)
                        .await
                        .map_err(|e| Error::io(&a.path, e))?;
                    storage
                        .sync_dir(&sa.dir)
                        .await
                        .map_err(|e| Error::io(&sa.dir, e))?;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::RemoveSegment,
                    shard: k,
                    segment: Some(a.id),
                    file: a.path.clone(),
                    offset: Some(0),
                    bytes: Some(a.scan.file_len),
                    reason: format!(
                        "segment header unreadable ({}) and nothing in it proven acknowledged: a crash while creating the segment",
                        a.bad_header().unwrap_or_default()
                    ),
                    status,
                });
            }
            SegPlan::Rewrite { why } => {
                let status = status_for(Some(a.id), true);
                let orphans: BTreeSet<usize> = r
                    .orphans
                    .iter()
                    .filter(|(si, _)| *si == i)
                    .map(|(_, ri)| *ri)
                    .collect();
                let kept = a
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(ri, rec)| keep(i, rec) && !orphans.contains(ri))
                    .count();
                if status == "done" {
                    let seal_next = (!is_last).then(|| sa.segments[i + 1].id);
                    q.copy_file(&a.path, k, why)?;
                    drop_index(storage, sa, a.id, q).await?;
                    rewrite_segment(
                        storage,
                        sa,
                        i,
                        &|ri, rec| keep(i, rec) && !orphans.contains(&ri),
                        seal_next,
                    )
                    .await?;
                } else {
                    rewrites_done = false;
                }
                report.actions.push(RepairAction {
                    kind: ActionKind::RewriteSegment,
                    shard: k,
                    segment: Some(a.id),
                    file: a.path.clone(),
                    offset: None,
                    bytes: Some(a.scan.file_len),
                    reason: format!(
                        "{why}: rewritten with its {kept} valid records of {} (original in quarantine)",
                        a.records.len()
                    ),
                    status,
                });
            }
        }
    }

    // Hard states whose commit is now beyond the log.
    let mut lower = Vec::new();
    let mut gids: Vec<u64> = r.table.groups.keys().copied().collect();
    gids.sort_unstable();
    for g in gids {
        let st = &r.table.groups[&g];
        if let Some(hs) = st.hard_state {
            if hs.commit > st.last_index() {
                lower.push((g, hs, st.last_index()));
            }
        }
    }
    if !lower.is_empty() {
        let status = status_for(None, true);
        let status = if status == "done" && !(rewrites_done && opts.only_segment.is_none()) {
            "needs --skip-corrupt"
        } else {
            status
        };
        let path = sa
            .segments
            .last()
            .map_or(sa.dir.clone(), |s| s.path.clone());
        if status == "done" {
            append_hard_states(storage, sa, &lower).await?;
        }
        for (g, hs, last) in lower {
            report.actions.push(RepairAction {
                kind: ActionKind::LowerCommit,
                shard: k,
                segment: None,
                file: path.clone(),
                offset: None,
                bytes: None,
                reason: format!(
                    "group {g}: commit {} is beyond the repaired log's last index {last}: lowered to {last} (term {} and vote {} kept); committed entries were lost here, so rebuild this replica from a healthy one",
                    hs.commit, hs.term, hs.vote
                ),
                status,
            });
        }
    }
    let _ = needs_skip;
    Ok(())
}

async fn drop_index<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    id: u64,
    q: &mut Quarantine,
) -> Result<()> {
    let ipath = sa.dir.join(index_file_name(id));
    if ipath.exists() {
        q.copy_file(&ipath, sa.shard, "index of a repaired segment")?;
        storage
            .remove_file(&ipath)
            .await
            .map_err(|e| Error::io(&ipath, e))?;
        storage
            .sync_dir(&sa.dir)
            .await
            .map_err(|e| Error::io(&sa.dir, e))?;
    }
    Ok(())
}

/// Writes segment `i` anew with the records `keep` selects, each batch re-encoded with its
/// original sequence numbers (checksums recomputed over the kept records), through a temp
/// file + fdatasync + rename + directory fsync; then writes its index if it is sealed.
async fn rewrite_segment<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    i: usize,
    keep: &dyn Fn(usize, &RecordInfo) -> bool,
    seal_next: Option<u64>,
) -> Result<()> {
    let a = &sa.segments[i];
    let io = |p: &Path, e| Error::io(p, e);
    let src = storage
        .open(&a.source, false)
        .await
        .map_err(|e| io(&a.source, e))?;
    let prev_seq = sa.prev_last_seq(i);
    let first_kept_seq = a.batches.first().map(|b| b.seq);
    let header = match (&a.header_rebuilt, a.scan.header) {
        (None, Some(h)) => h,
        (_, h) => SegmentHeader::new(
            a.id,
            sa.shard,
            h.map_or(rebuilt_segment_bytes(a.scan.file_len), |h| h.segment_bytes),
            first_kept_seq.unwrap_or(prev_seq.map_or(1, |s| s + 1)),
            now_unix_ms(),
        ),
    };
    let capacity = header.segment_bytes;
    let tmp = a.path.with_extension("tmp");
    if tmp.exists() {
        storage.remove_file(&tmp).await.map_err(|e| io(&tmp, e))?;
    }
    let f = storage.create_new(&tmp).await.map_err(|e| io(&tmp, e))?;
    f.allocate(capacity).await.map_err(|e| io(&tmp, e))?;
    let mut hb = storage.alloc_buf(SEGMENT_HEADER_BYTES as usize);
    header.encode_block(hb.as_bytes_mut());
    f.write_at(hb, 0).await.map_err(|e| io(&tmp, e))?;
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut entries = Vec::new();
    let mut first_seq = None;
    let mut last_seq = None;
    let mut sealed = false;
    let mut ri = 0;
    for b in &a.batches {
        while ri < a.records.len() && a.records[ri].batch_offset < b.offset {
            ri += 1;
        }
        let mut recs = Vec::new();
        while ri < a.records.len() && a.records[ri].batch_offset == b.offset {
            if keep(ri, &a.records[ri]) {
                recs.push(&a.records[ri]);
            }
            ri += 1;
        }
        if recs.is_empty() {
            continue;
        }
        let bytes = src
            .read_at(b.offset, b.bytes as usize)
            .await
            .map_err(|e| io(&a.source, e))?;
        let mut builder = BatchBuilder::new(storage.alloc_buf(b.bytes as usize));
        for rec in recs {
            let rel = (rec.offset - b.offset) as usize;
            let at = Location {
                file: a.path.clone(),
                offset: rec.offset,
                group: Some(rec.header.group),
                index: Some(rec.header.index),
            };
            let (h, payload) = bytes
                .get(rel..)
                .ok_or_else(|| Error::Corruption {
                    at: at.clone(),
                    what: "short read while rewriting".into(),
                })
                .and_then(|b| {
                    decode_record(b).map_err(|e| Error::Corruption {
                        at: at.clone(),
                        what: format!("record changed since it was scanned: {e}"),
                    })
                })?;
            let kind = h.kind();
            let aux = match (kind, seal_next) {
                (RecordKind::Seal, Some(next)) => next,
                _ => h.aux,
            };
            sealed |= kind == RecordKind::Seal;
            builder.push(&NewRecord {
                kind,
                group: h.group,
                term: h.term,
                index: h.index,
                aux,
                payload,
            });
        }
        let (buf, ops, nbytes) = builder.finish(b.seq, b.durable_seq);
        if pos + nbytes > capacity {
            return Err(Error::Corruption {
                at: Location {
                    file: a.path.clone(),
                    offset: pos,
                    group: None,
                    index: None,
                },
                what: "rewritten segment does not fit its capacity".into(),
            });
        }
        f.write_at(buf, pos).await.map_err(|e| io(&tmp, e))?;
        for op in &ops {
            entries.push(IndexEntry {
                kind: op.kind as u16,
                reserved: 0,
                payload_len: op.payload_len,
                offset: pos + op.offset_in_batch as u64,
                group: op.group,
                term: op.term,
                index: op.index,
                aux: op.aux,
            });
        }
        first_seq.get_or_insert(b.seq);
        last_seq = Some(b.seq);
        pos += nbytes;
    }
    if let (Some(next), false) = (seal_next, sealed) {
        let seq = last_seq.or(prev_seq).map_or(1, |s| s + 1);
        let mut builder = BatchBuilder::new(storage.alloc_buf(BLOCK_BYTES as usize));
        builder.push(&NewRecord {
            kind: RecordKind::Seal,
            group: 0,
            term: 0,
            index: 0,
            aux: next,
            payload: &[],
        });
        let (buf, ops, nbytes) = builder.finish(seq, seq - 1);
        if pos + nbytes > capacity {
            return Err(Error::Corruption {
                at: Location {
                    file: a.path.clone(),
                    offset: pos,
                    group: None,
                    index: None,
                },
                what: "no room left for the seal record".into(),
            });
        }
        f.write_at(buf, pos).await.map_err(|e| io(&tmp, e))?;
        entries.push(IndexEntry {
            kind: RecordKind::Seal as u16,
            reserved: 0,
            payload_len: 0,
            offset: pos + ops[0].offset_in_batch as u64,
            group: 0,
            term: 0,
            index: 0,
            aux: next,
        });
        first_seq.get_or_insert(seq);
        last_seq = Some(seq);
        pos += nbytes;
        sealed = true;
    }
    f.sync_data().await.map_err(|e| io(&tmp, e))?;
    f.close().await.map_err(|e| io(&tmp, e))?;
    src.close().await.map_err(|e| io(&a.source, e))?;
    storage
        .rename(&tmp, &a.path)
        .await
        .map_err(|e| io(&a.path, e))?;
    storage
        .sync_dir(&sa.dir)
        .await
        .map_err(|e| io(&sa.dir, e))?;
    if sealed {
        let idx = SealedIndex::new(
            a.id,
            capacity,
            pos,
            first_seq.unwrap_or(0),
            last_seq.unwrap_or(0),
            entries,
        );
        let ipath = sa.dir.join(index_file_name(a.id));
        write_file_atomic(storage, &ipath, &idx.encode())
            .await
            .map_err(|e| io(&ipath, e))?;
    }
    Ok(())
}

/// Appends one batch of hard state records (commit lowered to the last index) after the last
/// valid batch of the shard's last segment, at a block no acknowledged byte lives in.
async fn append_hard_states<S: Storage>(
    storage: &S,
    sa: &ShardAnalysis,
    lower: &[(u64, HardState, u64)],
) -> Result<()> {
    let Some(last) = sa.segments.last() else {
        return Ok(());
    };
    let path = &last.path;
    let scan = scan_segment(storage, path, false, |_| {}).await?;
    let fail = |what: String| Error::Corruption {
        at: Location {
            file: path.clone(),
            offset: scan.valid_end,
            group: None,
            index: None,
        },
        what,
    };
    if !matches!(scan.stop, ScanStop::CleanEnd | ScanStop::EndOfFile) {
        return Err(fail(format!(
            "cannot append the lowered hard states: the last segment ends with {:?}",
            scan.stop
        )));
    }
    let need = lower.len() * crate::constants::RECORD_HEADER_BYTES
        + crate::batch::BATCH_HEADER_RECORD_BYTES;
    let size = align_up(need as u64, BLOCK_BYTES);
    let mut b = BatchBuilder::new(storage.alloc_buf(size as usize));
    for (g, hs, last_index) in lower {
        b.push(&NewRecord {
            kind: RecordKind::HardState,
            group: *g,
            term: hs.term,
            index: *last_index,
            aux: hs.vote,
            payload: &[],
        });
    }
    let seq = sa.max_seq().max(scan.last_batch_seq.unwrap_or(0)) + 1;
    let (buf, _, nbytes) = b.finish(seq, seq - 1);
    if scan.valid_end + nbytes + BLOCK_BYTES > scan.file_len {
        return Err(fail(
            "no room in the last segment for the lowered hard states".into(),
        ));
    }
    let f = storage
        .open(path, true)
        .await
        .map_err(|e| Error::io(path, e))?;
    f.write_at(buf, scan.valid_end)
        .await
        .map_err(|e| Error::io(path, e))?;
    f.sync_data().await.map_err(|e| Error::io(path, e))?;
    f.close().await.map_err(|e| Error::io(path, e))
}

/// `DIR/quarantine/<unix ms>-repair/`: every byte repair removes is copied here first, with
/// a `MANIFEST` naming its source, offset, length, checksum and why.
struct Quarantine {
    root: PathBuf,
    dir: Option<PathBuf>,
    lines: Vec<String>,
}

impl Quarantine {
    fn new(root: &Path) -> Self {
        Quarantine {
            root: root.to_path_buf(),
            dir: None,
            lines: Vec::new(),
        }
    }

    fn dir(&mut self) -> Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let base = self.root.join(QUARANTINE_DIR);
        let mut d = base.join(format!("{}-repair", now_unix_ms()));
        let mut n = 1;
        while d.exists() {
            d = base.join(format!("{}-repair-{n}", now_unix_ms()));
            n += 1;
        }
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        sync_dir_std(&base)?;
        sync_dir_std(&self.root)?;
        self.dir = Some(d.clone());
        Ok(d)
    }

    fn copy_file(&mut self, src: &Path, shard: u32, why: &str) -> Result<()> {
        let len = std::fs::metadata(src).map_err(|e| Error::io(src, e))?.len();
        let name = format!(
            "shard-{shard}-{}",
            src.file_name()
                .map_or("file".into(), |n| n.to_string_lossy().into_owned())
        );
        self.copy(src, &name, 0, len, why)
    }

    fn copy_region(
        &mut self,
        src: &Path,
        shard: u32,
        segment: u64,
        from: u64,
        to: u64,
        why: &str,
    ) -> Result<()> {
        let name = format!("shard-{shard}-segment-{segment}-offset-{from}.bin");
        self.copy(src, &name, from, to, why)
    }

    fn copy(&mut self, src: &Path, name: &str, from: u64, to: u64, why: &str) -> Result<()> {
        let dir = self.dir()?;
        let dst = dir.join(name);
        let mut input = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
        input
            .seek(SeekFrom::Start(from))
            .map_err(|e| Error::io(src, e))?;
        let mut out = std::fs::File::create(&dst).map_err(|e| Error::io(&dst, e))?;
        let mut left = to.saturating_sub(from);
        let mut copied = 0u64;
        let mut crc = 0u32;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let got = input
                .read(&mut buf[..want])
                .map_err(|e| Error::io(src, e))?;
            if got == 0 {
                break;
            }
            out.write_all(&buf[..got]).map_err(|e| Error::io(&dst, e))?;
            crc = crate::format::crc32c_append(crc, &buf[..got]);
            left -= got as u64;
            copied += got as u64;
        }
        out.sync_all().map_err(|e| Error::io(&dst, e))?;
        sync_dir_std(&dir)?;
        self.lines.push(format!(
            "file={name} source={} offset={from} len={copied} crc32c={crc:08x} reason={}",
            src.display(),
            why.replace('\n', " ")
        ));
        Ok(())
    }

    fn finish(&mut self, report: &RepairReport) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let mut text = format!(
            "# tern repair at unix ms {}\n# data directory {}\n",
            now_unix_ms(),
            self.root.display()
        );
        for l in &self.lines {
            text.push_str(l);
            text.push('\n');
        }
        for l in &report.losses {
            text.push_str(&format!(
                "loss shard={} group={} first_index={} last_index={} why={}\n",
                l.shard, l.group, l.first_index, l.last_index, l.why
            ));
        }
        for r in &report.regions {
            text.push_str(&format!(
                "region shard={} segment={} offset={} len={} reason={}\n",
                r.shard, r.segment, r.offset, r.bytes, r.reason
            ));
        }
        let path = dir.join("MANIFEST");
        let tmp = dir.join("MANIFEST.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir_std(&dir)
    }
}

fn sync_dir_std(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Shard directory of a data directory (re-exported for the CLI).
pub fn shard_path(root: &Path, shard: u32) -> PathBuf {
    shard_dir(root, shard)
}
