//! Reading a data directory: its layout, a scan of every segment, and the group table
//! recovery would build from it (replay).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::chain::{self, read_chain, CHAIN_FILE};
use crate::constants::{BLOCK_BYTES, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES};
use crate::engine::{open_meta, EngineMeta, LOCK_FILE, META_FILE, QUARANTINE_DIR};
use crate::error::{Error, Result};
use crate::format::chain::ChainRecord;
use crate::format::record::decode_batch_payload;
use crate::format::segment::{
    index_file_name, parse_index_file_name, parse_segment_file_name, segment_file_name,
};
use crate::format::{align_up, IndexEntry, RecordHeader, RecordKind, SegmentHeader};
use crate::group::{GroupTable, RecordMeta};
use crate::recovery::now_unix_ms;
use crate::scan::{
    first_batch_block_is_zero, probe_segment, scan_segment, scan_segment_placed, Damage, ScanStop,
    SegmentScan,
};
use crate::storage::Storage;
use crate::torn_tail::{self, DamageClass};

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
/// A temporary file tern writes and renames or removes (`<name>.tmp`, a segment being
/// prepared `<id>.wal.prep`): one left behind is from a crash or a failed write. The engine
/// removes those of a shard at start-up; `tern repair` quarantines them.
pub fn is_leftover_temp(name: &str) -> bool {
    name.ends_with(".tmp") || name.ends_with(".wal.prep")
}

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
    /// Payload of `SnapshotMeta` and `GroupMeta` records (the group table keeps it).
    pub snapshot_meta: Option<Vec<u8>>,
    /// An entry that failed its checksum in an acknowledged batch the scan passed over
    /// ([`crate::torn_tail::passable`]); judged by [`crate::repaired::judge`].
    pub damaged: bool,
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

    pub(super) fn index_entry(&self) -> IndexEntry {
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

    /// For the last segment of a shard: the first damage recovery would truncate as a torn
    /// tail (everything from its offset on is dropped, as recovery zeroes it).
    pub fn torn_from(&self, is_last: bool) -> Option<usize> {
        self.damages
            .iter()
            .position(|d| torn_tail::classify(d, is_last) == DamageClass::TornTail)
    }

    /// The verdict on each damaged region, in file order: damage from the first torn tail on
    /// is part of that tail (recovery zeroes from its start to the end of the bytes).
    pub fn damage_classes(&self, is_last: bool) -> Vec<DamageClass> {
        let torn = self.torn_from(is_last);
        (0..self.damages.len())
            .map(|i| {
                if torn.is_some_and(|t| i >= t) {
                    DamageClass::TornTail
                } else {
                    DamageClass::Corruption
                }
            })
            .collect()
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
/// `prev_last_seq`: the last batch sequence of the shard's segments before this one (see
/// [`scan_segment`]; [`segment_place`] finds it for a lone segment).
pub async fn analyze_segment<S: Storage>(
    storage: &S,
    path: &Path,
    id: u64,
    shard: Option<u32>,
    prev_last_seq: Option<u64>,
    salvage: bool,
) -> Result<SegmentAnalysis> {
    analyze_segment_placed(storage, path, id, shard, prev_last_seq, true, salvage).await
}

/// [`analyze_segment`] for a segment whose place in its shard is known (`is_last`: the newest
/// segment holding data), as recovery knows it.
pub async fn analyze_segment_placed<S: Storage>(
    storage: &S,
    path: &Path,
    id: u64,
    shard: Option<u32>,
    prev_last_seq: Option<u64>,
    is_last: bool,
    salvage: bool,
) -> Result<SegmentAnalysis> {
    let (scan, batches, records) = scan_collect(storage, path, prev_last_seq, is_last).await?;
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
        let (scan, batches, records) =
            scan_collect(storage, &scratch, prev_last_seq, is_last).await?;
        a.damages = damages_of(&scan);
        a.scan = scan;
        a.batches = batches;
        a.records = records;
        a.source = scratch;
        a.header_rebuilt = Some(why);
    }
    Ok(a)
}

pub(super) fn damages_of(scan: &SegmentScan) -> Vec<Damage> {
    let mut d = scan.skipped.clone();
    if let ScanStop::Damaged(last) = &scan.stop {
        d.push(last.clone());
    }
    d
}

pub(super) async fn scan_collect<S: Storage>(
    storage: &S,
    path: &Path,
    prev_last_seq: Option<u64>,
    is_last: bool,
) -> Result<(SegmentScan, Vec<BatchInfo>, Vec<RecordInfo>)> {
    let mut batches = Vec::new();
    let mut records = Vec::new();
    let mut batch_offset = 0;
    let scan = scan_segment_placed(storage, path, prev_last_seq, is_last, true, |r| {
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
            snapshot_meta: kind.payload_kept().then(|| r.payload.to_vec()),
            damaged: r.damaged,
        });
    })
    .await?;
    Ok((scan, batches, records))
}

pub(super) fn salvage_path(path: &Path, id: u64) -> PathBuf {
    path.with_file_name(format!("{id:020}.salvage.tmp"))
}

/// Removes the scratch copy made for a segment with a rebuilt header, if any.
pub fn remove_salvage(a: &SegmentAnalysis) -> Result<()> {
    if a.source != a.path {
        std::fs::remove_file(&a.source).map_err(|e| Error::io(&a.source, e))?;
    }
    Ok(())
}

pub(super) fn rebuilt_segment_bytes(len: u64) -> u64 {
    align_up(len, BLOCK_BYTES).clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)
}

pub(super) fn make_salvage_copy(path: &Path, scratch: &Path, id: u64, shard: u32) -> Result<()> {
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
    /// The shard's chain record: `None` if there is none, `Err` if it is unreadable.
    pub chain: Option<std::result::Result<ChainRecord, String>>,
    /// Segments below the chain's first (an interrupted purge), left out of `segments`.
    pub purge_leftovers: Vec<u64>,
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
        self.segments[i].torn_from(self.is_last(i))
    }

    pub fn max_seq(&self) -> u64 {
        self.segments.iter().map(|s| s.max_seq()).max().unwrap_or(0)
    }
}

/// The writer prepares the next segment ahead of time (header written, no batch yet); as the
/// last file of the shard it holds no data and is not part of the log. Its header is made
/// durable only with the first batch written into it, so after a power loss it may have none:
/// with nothing after its header block it is still a spare (as recovery judges it). A segment
/// the chain record names is never a spare.
async fn is_spare<S: Storage>(
    storage: &S,
    path: &Path,
    scan: &SegmentScan,
    id: u64,
    chain_last: Option<u64>,
) -> Result<bool> {
    if chain_last.is_some_and(|l| id <= l) {
        return Ok(false);
    }
    if scan.is_unused_spare() {
        return Ok(true);
    }
    if !matches!(scan.stop, ScanStop::BadHeader(_)) {
        return Ok(false);
    }
    let (_, garbage_end) = probe_segment(storage, path).await?;
    Ok(garbage_end <= SEGMENT_HEADER_BYTES)
}

/// Where one segment stands in its shard, judged as [`analyze_shard`] (and recovery) judge
/// it: the inputs of the torn-tail rule for a segment read on its own (`tern scan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlace {
    /// No segment with data follows it (an unused spare after it does not count).
    pub is_last: bool,
    /// The last batch sequence of the shard's segments before it.
    pub prev_last_seq: Option<u64>,
}

/// Finds [`SegmentPlace`] for segment `id` of shard directory `dir`.
pub async fn segment_place<S: Storage>(storage: &S, dir: &Path, id: u64) -> Result<SegmentPlace> {
    let listing = ShardListing::read(storage, dir).await?;
    Ok(SegmentPlace {
        is_last: listing.is_last(storage, id).await?,
        prev_last_seq: listing.prev_last_seq(storage, id).await?,
    })
}

/// Analyzes segment `id` of shard directory `dir` on its own (`tern scan`), with the
/// torn-tail rule's inputs found as [`analyze_shard`] and recovery find them.
pub async fn analyze_lone_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    id: u64,
    shard: Option<u32>,
) -> Result<(SegmentAnalysis, SegmentPlace)> {
    let place = segment_place(storage, dir, id).await?;
    let path = dir.join(segment_file_name(id));
    let a = analyze_segment_placed(
        storage,
        &path,
        id,
        shard,
        place.prev_last_seq,
        place.is_last,
        false,
    )
    .await?;
    Ok((a, place))
}

/// The last batch sequence of the segments of shard directory `dir` before segment `id`
/// (the `prev_last_seq` of [`scan_segment`] for a segment read on its own).
pub async fn prev_last_seq<S: Storage>(storage: &S, dir: &Path, id: u64) -> Result<Option<u64>> {
    ShardListing::read(storage, dir)
        .await?
        .prev_last_seq(storage, id)
        .await
}

/// The files of a shard directory: its segments from the chain's first on, its indexes, its
/// chain record and anything else.
struct ShardListing {
    dir: PathBuf,
    ids: Vec<u64>,
    index_ids: BTreeSet<u64>,
    strays: Vec<PathBuf>,
    /// `None` if there is none, `Err` if it is unreadable.
    chain: Option<std::result::Result<ChainRecord, String>>,
    /// Segments below the chain's first (an interrupted purge), left out of `ids`.
    purge_leftovers: Vec<u64>,
}

impl ShardListing {
    async fn read<S: Storage>(storage: &S, dir: &Path) -> Result<Self> {
        let mut ids = Vec::new();
        let mut index_ids = BTreeSet::new();
        let mut strays = Vec::new();
        for entry in storage.list_dir(dir).await.map_err(|e| Error::io(dir, e))? {
            if let Some(i) = parse_segment_file_name(&entry.name) {
                ids.push(i);
            } else if let Some(i) = parse_index_file_name(&entry.name) {
                index_ids.insert(i);
            } else if entry.name != CHAIN_FILE {
                strays.push(dir.join(&entry.name));
            }
        }
        ids.sort_unstable();
        let chain = match read_chain(storage, dir).await {
            Ok(c) => c.map(Ok),
            Err(e) => Some(Err(e.to_string())),
        };
        let mut purge_leftovers = Vec::new();
        if let Some(Ok(c)) = &chain {
            purge_leftovers = chain::purge_leftovers(c, &ids);
            ids.retain(|&i| i >= c.first_segment);
        }
        Ok(ShardListing {
            dir: dir.to_path_buf(),
            ids,
            index_ids,
            strays,
            chain,
            purge_leftovers,
        })
    }

    fn chain_last(&self) -> Option<u64> {
        self.chain
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .map(|c| c.last_segment)
    }

    /// No segment with data follows `id`: a later segment is scanned only when it is the only
    /// one and its first batch block is empty (it may be an unused spare).
    async fn is_last<S: Storage>(&self, storage: &S, id: u64) -> Result<bool> {
        let later: Vec<u64> = self.ids.iter().copied().filter(|&i| i > id).collect();
        match later.as_slice() {
            [] => Ok(true),
            [only] => {
                let path = self.dir.join(segment_file_name(*only));
                if !first_batch_block_is_zero(storage, &path).await? {
                    return Ok(false);
                }
                let scan = scan_segment(storage, &path, None, false, |_| {}).await?;
                is_spare(storage, &path, &scan, *only, self.chain_last()).await
            }
            _ => Ok(false),
        }
    }

    /// From the nearest earlier sealed index that decodes and names its segment (what
    /// recovery uses), then by scanning the segments after it, as [`analyze_shard`] does.
    async fn prev_last_seq<S: Storage>(&self, storage: &S, id: u64) -> Result<Option<u64>> {
        let earlier: Vec<u64> = self.ids.iter().copied().filter(|&i| i < id).collect();
        let mut start = 0;
        let mut last = None;
        for (k, &i) in earlier.iter().enumerate().rev() {
            if !self.index_ids.contains(&i) {
                continue;
            }
            let ipath = self.dir.join(index_file_name(i));
            if let Ok(idx) = crate::recovery::load_index(storage, &ipath, i).await {
                last = Some(idx.header.last_batch_seq);
                start = k + 1;
                break;
            }
        }
        for &i in &earlier[start..] {
            let path = self.dir.join(segment_file_name(i));
            let (scan, _, _) = scan_collect(storage, &path, last, true).await?;
            last = scan.last_batch_seq.or(last);
        }
        Ok(last)
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
    let listing = ShardListing::read(storage, dir).await?;
    let chain_last = listing.chain_last();
    let mut segments: Vec<SegmentAnalysis> = Vec::new();
    let mut prev_last_seq = None;
    // The newest segment holding data, as recovery judges it (an unused spare after it does
    // not count): the torn-tail rule needs it before the scan.
    let last_with_data = match listing.ids.last() {
        Some(&id) if listing.ids.len() > 1 => {
            let path = dir.join(segment_file_name(id));
            let scan = scan_segment(storage, &path, None, false, |_| {}).await?;
            if is_spare(storage, &path, &scan, id, chain_last).await? {
                listing.ids.get(listing.ids.len() - 2).copied()
            } else {
                Some(id)
            }
        }
        last => last.copied(),
    };
    for &id in &listing.ids {
        let path = dir.join(segment_file_name(id));
        let is_last = last_with_data.is_none_or(|l| id >= l);
        let a = analyze_segment_placed(
            storage,
            &path,
            id,
            Some(shard),
            prev_last_seq,
            is_last,
            salvage,
        )
        .await?;
        progress(a.scan.file_len);
        prev_last_seq = a.batches.last().map(|b| b.seq).or(prev_last_seq);
        segments.push(a);
    }
    if let Some(a) = segments.last() {
        let spare = if a.header_rebuilt.is_some() {
            // Judge the file as it is, not the salvage copy with its rebuilt header.
            let (scan, _, _) = scan_collect(storage, &a.path, None, true).await?;
            is_spare(storage, &a.path, &scan, a.id, chain_last).await?
        } else {
            is_spare(storage, &a.path, &a.scan, a.id, chain_last).await?
        };
        if spare {
            segments.pop();
        }
    }
    Ok(ShardAnalysis {
        shard,
        dir: dir.to_path_buf(),
        segments,
        index_ids: listing.index_ids,
        strays: listing.strays,
        chain: listing.chain,
        purge_leftovers: listing.purge_leftovers,
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

pub use crate::recovery::GroupLoss;

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
