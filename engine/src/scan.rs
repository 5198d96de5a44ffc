//! The segment scanner: the one reader of segment files. Recovery, `verify-data`, `scan`,
//! `dump` and `repair` all go through it, so they agree on what is valid.
//!
//! It walks the batches of one segment, verifies every record (header checks + CRC32C),
//! hands each record of each *complete, valid* batch to a visitor, and describes where and
//! why it stopped. A batch is all or nothing: a batch with one bad record is damaged as a
//! whole (it was one write and one fdatasync; if it tore, none of it was acknowledged).
//!
//! After damage (or after a zero block) it probes every later block boundary for a valid
//! batch header newer than the last good batch, and finds the end of the non-zero bytes, so
//! recovery can tell a torn tail from corruption followed by valid data.

use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use glommio::task::JoinHandle;

use crate::constants::{
    BLOCK_BYTES, RECORD_HEADER_BYTES, SCAN_READ_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::error::{Error, Location, Result};
use crate::format::record::{decode_batch_payload, decode_header, decode_record};
use crate::format::{align_down, DecodeError, RecordHeader, RecordKind, SegmentHeader};
use crate::storage::{Storage, StorageFile};

/// A valid batch header found after damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaterBatch {
    pub offset: u64,
    pub seq: u64,
    /// Highest batch sequence the writer knew durable when it formed this batch.
    pub durable_seq: u64,
}

/// Where and why a scan stopped before the end of the valid data it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Start of the damaged batch: everything from here on is suspect.
    pub offset: u64,
    /// Offset of the first bad record inside the batch (== `offset` when the batch header
    /// itself is bad).
    pub record_offset: u64,
    pub reason: DecodeError,
    /// Sequence of the damaged batch if its header was readable.
    pub batch_seq: Option<u64>,
    /// Sequence of the last valid batch before the damage: in this segment, or (for damage
    /// at the segment's first batch) the `prev_last_seq` the scan was given. The input of
    /// [`crate::torn_tail`]'s rule when `batch_seq` is unknown.
    pub last_seq_before: Option<u64>,
    /// Group and index of the damaged record, when its header decoded.
    pub group: Option<u64>,
    pub index: Option<u64>,
    /// Valid batch headers after the damage, newer than the last good batch.
    pub later_batches: Vec<LaterBatch>,
    /// End of the last block after `offset` that holds a non-zero byte (== `offset` if all
    /// zero): the extent a truncation must clear.
    pub garbage_end: u64,
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// A seal record closed the segment.
    Sealed { next_segment: u64 },
    /// A zero block after the last valid batch, and nothing but zeros after it.
    CleanEnd,
    /// The file ended right after the last valid batch.
    EndOfFile,
    /// Damage; see [`Damage`].
    Damaged(Damage),
    /// The segment header itself is unreadable.
    BadHeader(DecodeError),
}

#[derive(Debug, Clone)]
pub struct SegmentScan {
    pub header: Option<SegmentHeader>,
    pub file_len: u64,
    /// Offset just past the last valid batch (where a writer would resume).
    pub valid_end: u64,
    pub batches: u64,
    pub records: u64,
    pub first_batch_seq: Option<u64>,
    pub last_batch_seq: Option<u64>,
    /// Highest `durable_seq` among valid batch headers.
    pub durable_seq_max: u64,
    pub stop: ScanStop,
    /// Damaged regions skipped when scanning with `resume_after_damage` (tolerate-any).
    pub skipped: Vec<Damage>,
    /// Batches passed over with damaged entry records ([`crate::torn_tail::passable`]): their
    /// valid records were visited, their damaged entries visited with `damaged` set.
    pub damaged_entries: Vec<Damage>,
}

/// One record of a valid batch, as given to the visitor.
pub struct ScannedRecord<'a> {
    pub offset: u64,
    pub header: RecordHeader,
    pub payload: &'a [u8],
    /// The record failed its checksum inside a batch whose frame is intact and which the
    /// torn-tail rule calls acknowledged ([`crate::torn_tail::passable`]): an entry with
    /// damaged bytes, kept in its group's log so it can be repaired from peers. Its header
    /// fields are as read (the checksum covers them too: [`crate::repaired`] judges them);
    /// `payload` is the damaged bytes and must not be served.
    pub damaged: bool,
}

/// Sequential reader over a segment: fixed chunks of [`SCAN_READ_BYTES_MAX`] bytes, up to
/// [`SCAN_READ_AHEAD_CHUNKS`] of them read ahead in background tasks so the device works while
/// records are verified. Bytes are served from the read buffers without copying; a range that
/// straddles two chunks (rare: one record per chunk boundary at most) is read on its own.
struct Window<F: StorageFile> {
    file: Rc<F>,
    file_len: u64,
    /// The chunk being consumed: (start offset, bytes).
    current: Option<(u64, F::ReadBuf)>,
    /// The chunk before it: a batch is verified in full before its records are visited, so
    /// the visit of a batch that straddles two chunks reaches back into this one.
    prev: Option<(u64, F::ReadBuf)>,
    /// A straddling range read on its own: (start offset, bytes).
    spill: Option<(u64, F::ReadBuf)>,
    ahead: VecDeque<(u64, JoinHandle<std::io::Result<F::ReadBuf>>)>,
}

/// Chunks read ahead of the one being verified: enough to keep the device busy while one chunk
/// is checksummed, few enough to bound memory (3 x 4 MiB).
const SCAN_READ_AHEAD_CHUNKS: usize = 3;

impl<F: StorageFile> Window<F> {
    fn new(file: Rc<F>, file_len: u64) -> Self {
        Window {
            file,
            file_len,
            current: None,
            prev: None,
            spill: None,
            ahead: VecDeque::new(),
        }
    }

    fn chunk_of(pos: u64) -> u64 {
        pos - pos % SCAN_READ_BYTES_MAX as u64
    }

    fn spawn_read(&self, start: u64) -> JoinHandle<std::io::Result<F::ReadBuf>> {
        let file = self.file.clone();
        let len = (SCAN_READ_BYTES_MAX as u64).min(self.file_len - start) as usize;
        glommio::spawn_local(async move { file.read_at(start, len).await }).detach()
    }

    /// Makes chunk `start` current, taking it from the read-ahead queue when it is there, and
    /// tops the queue up.
    async fn load_chunk(&mut self, start: u64) -> std::io::Result<()> {
        while let Some((s, _)) = self.ahead.front() {
            if *s >= start {
                break;
            }
            // Skipped over (a large record): drain it before dropping.
            if let Some((_, h)) = self.ahead.pop_front() {
                let _ = h.await;
            }
        }
        let buf = match self.ahead.front() {
            Some((s, _)) if *s == start => match self.ahead.pop_front() {
                Some((_, h)) => h
                    .await
                    .ok_or_else(|| std::io::Error::other("read-ahead task cancelled"))??,
                None => unreachable!("front was just checked"),
            },
            _ => {
                let len = (SCAN_READ_BYTES_MAX as u64).min(self.file_len - start) as usize;
                self.file.read_at(start, len).await?
            }
        };
        self.prev = self.current.replace((start, buf));
        let mut next = self.ahead.back().map_or(start, |(s, _)| *s) + SCAN_READ_BYTES_MAX as u64;
        while self.ahead.len() < SCAN_READ_AHEAD_CHUNKS && next < self.file_len {
            let h = self.spawn_read(next);
            self.ahead.push_back((next, h));
            next += SCAN_READ_BYTES_MAX as u64;
        }
        Ok(())
    }

    /// Makes `[pos, pos + len)` available (clamped to the file end) and returns it.
    async fn get(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = (pos + len as u64).min(self.file_len);
        if pos >= end {
            return Ok(&[]);
        }
        let holds = |slot: &Option<(u64, F::ReadBuf)>| {
            slot.as_ref()
                .is_some_and(|(s, b)| *s <= pos && end <= s + b.len() as u64)
        };
        if !holds(&self.current) && !holds(&self.prev) && !holds(&self.spill) {
            let chunk = Self::chunk_of(pos);
            let forward = self.current.as_ref().is_none_or(|(s, _)| chunk > *s);
            if forward {
                self.load_chunk(chunk).await?;
            }
            if !holds(&self.current) {
                let start = align_down(pos, BLOCK_BYTES);
                let buf = self.file.read_at(start, (end - start) as usize).await?;
                self.spill = Some((start, buf));
            }
        }
        let slot = if holds(&self.current) {
            &self.current
        } else if holds(&self.prev) {
            &self.prev
        } else {
            &self.spill
        };
        let Some((s, b)) = slot.as_ref() else {
            unreachable!("one slot holds the range")
        };
        let to = ((end - s) as usize).min(b.len());
        Ok(&b[((pos - s) as usize).min(to)..to])
    }

    /// Waits for outstanding read-ahead so no I/O outlives the file handle's user.
    async fn finish(&mut self) {
        while let Some((_, h)) = self.ahead.pop_front() {
            let _ = h.await;
        }
    }
}

/// Scans one segment file. `visit` sees every record of every valid batch (batch headers
/// included) in file order. With `resume_after_damage`, the scan skips a damaged region and
/// continues at the next valid batch (recorded in `skipped`) instead of stopping.
///
/// `prev_last_seq` is the last batch sequence of the shard's segments before this one (`None`
/// for the first): the torn-tail rule needs it when the segment's first batch is damaged.
/// Recovery, verify and `tern scan` all pass it, so they judge that batch alike.
///
/// The segment is taken as possibly the shard's last: a batch with damaged entry records is
/// passed over only if a later batch proves it durable. [`scan_segment_placed`] takes the
/// segment's place from a caller that knows it.
pub async fn scan_segment<S, V>(
    storage: &S,
    path: &Path,
    prev_last_seq: Option<u64>,
    resume_after_damage: bool,
    visit: V,
) -> Result<SegmentScan>
where
    S: Storage,
    V: FnMut(&ScannedRecord<'_>),
{
    scan_segment_placed(
        storage,
        path,
        prev_last_seq,
        true,
        resume_after_damage,
        visit,
    )
    .await
}

/// [`scan_segment`] for a segment whose place is known: `is_last` is whether it is the newest
/// segment of its shard that holds data, the input of the torn-tail rule that decides whether
/// a batch whose only damage is in entry records is acknowledged data to pass over (and
/// repair) or a torn tail to stop at.
pub async fn scan_segment_placed<S, V>(
    storage: &S,
    path: &Path,
    prev_last_seq: Option<u64>,
    is_last: bool,
    resume_after_damage: bool,
    mut visit: V,
) -> Result<SegmentScan>
where
    S: Storage,
    V: FnMut(&ScannedRecord<'_>),
{
    let io = |e| Error::io(path, e);
    let file = Rc::new(storage.open(path, false).await.map_err(io)?);
    let file_len = file.len().await.map_err(io)?;
    let mut w = Window::new(file.clone(), file_len);
    let mut scan = SegmentScan {
        header: None,
        file_len,
        valid_end: SEGMENT_HEADER_BYTES.min(file_len),
        batches: 0,
        records: 0,
        first_batch_seq: None,
        last_batch_seq: None,
        durable_seq_max: 0,
        stop: ScanStop::EndOfFile,
        skipped: Vec::new(),
        damaged_entries: Vec::new(),
    };
    let head = w.get(0, SEGMENT_HEADER_BYTES as usize).await.map_err(io)?;
    match SegmentHeader::decode(head) {
        Ok(h) => scan.header = Some(h),
        Err(e) => {
            scan.stop = ScanStop::BadHeader(e);
            w.finish().await;
            drop(w);
            close_rc(file, path).await?;
            return Ok(scan);
        }
    }

    let mut pos = SEGMENT_HEADER_BYTES;
    loop {
        if pos + RECORD_HEADER_BYTES as u64 > file_len {
            scan.stop = ScanStop::EndOfFile;
            break;
        }
        match read_batch(&mut w, pos, scan.last_batch_seq)
            .await
            .map_err(io)?
        {
            BatchRead::Valid {
                seq,
                durable_seq,
                batch_bytes,
                records,
                sealed,
                damaged,
            } => {
                if let Some(&(record_offset, ref reason)) = damaged.first() {
                    let header = records
                        .iter()
                        .find(|(o, _, _)| *o == record_offset)
                        .map(|(_, h, _)| *h);
                    let (later, garbage_end) =
                        probe(&mut w, pos, scan.last_batch_seq).await.map_err(io)?;
                    let damage = Damage {
                        offset: pos,
                        record_offset,
                        reason: reason.clone(),
                        batch_seq: Some(seq),
                        last_seq_before: scan.last_batch_seq.or(prev_last_seq),
                        group: header.map(|h| h.group),
                        index: header.map(|h| h.index),
                        later_batches: later,
                        garbage_end: garbage_end
                            .max(pos + BLOCK_BYTES)
                            .min(crate::format::align_up(file_len, BLOCK_BYTES)),
                    };
                    if !crate::torn_tail::passable(&damage, is_last) {
                        match skip_or_stop(&mut scan, damage, resume_after_damage) {
                            Some(next) => {
                                pos = next;
                                continue;
                            }
                            None => break,
                        }
                    }
                    scan.damaged_entries.push(damage);
                }
                for (offset, header, bad) in &records {
                    let payload_at = offset + RECORD_HEADER_BYTES as u64;
                    let bytes = w
                        .get(payload_at, header.payload_len as usize)
                        .await
                        .map_err(io)?;
                    visit(&ScannedRecord {
                        offset: *offset,
                        header: *header,
                        payload: bytes,
                        damaged: *bad,
                    });
                }
                scan.batches += 1;
                scan.records += records.len() as u64 - 1;
                scan.first_batch_seq.get_or_insert(seq);
                scan.last_batch_seq = Some(seq);
                scan.durable_seq_max = scan.durable_seq_max.max(durable_seq);
                pos += batch_bytes;
                scan.valid_end = pos;
                if let Some(next) = sealed {
                    scan.stop = ScanStop::Sealed { next_segment: next };
                    break;
                }
            }
            BatchRead::Zero => {
                let (later, garbage_end) =
                    probe(&mut w, pos, scan.last_batch_seq).await.map_err(io)?;
                if later.is_empty() && garbage_end == pos {
                    scan.stop = ScanStop::CleanEnd;
                    break;
                }
                let damage = Damage {
                    offset: pos,
                    record_offset: pos,
                    reason: DecodeError::Zero,
                    batch_seq: None,
                    last_seq_before: scan.last_batch_seq.or(prev_last_seq),
                    group: None,
                    index: None,
                    later_batches: later,
                    garbage_end,
                };
                match skip_or_stop(&mut scan, damage, resume_after_damage) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
            BatchRead::Bad {
                record_offset,
                reason,
                batch_seq,
                group,
                index,
            } => {
                let (later, garbage_end) =
                    probe(&mut w, pos, scan.last_batch_seq).await.map_err(io)?;
                let damage = Damage {
                    offset: pos,
                    record_offset,
                    reason,
                    batch_seq,
                    last_seq_before: scan.last_batch_seq.or(prev_last_seq),
                    group,
                    index,
                    later_batches: later,
                    // Block aligned (a file cut mid-block still clears whole blocks).
                    garbage_end: garbage_end
                        .max(pos + BLOCK_BYTES)
                        .min(crate::format::align_up(file_len, BLOCK_BYTES)),
                };
                match skip_or_stop(&mut scan, damage, resume_after_damage) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    w.finish().await;
    drop(w);
    close_rc(file, path).await?;
    Ok(scan)
}

/// Records damage: as skipped, returning where to resume (tolerate-any, when a later batch
/// allows it), or as where the scan stops.
fn skip_or_stop(scan: &mut SegmentScan, damage: Damage, resume: bool) -> Option<u64> {
    match next_after_damage(resume, &damage) {
        Some(next) => {
            scan.skipped.push(damage);
            Some(next)
        }
        None => {
            scan.stop = ScanStop::Damaged(damage);
            None
        }
    }
}

/// Closes a file shared with read-ahead tasks once they are done with it.
async fn close_rc<F: StorageFile>(file: Rc<F>, path: &Path) -> Result<()> {
    match Rc::try_unwrap(file) {
        Ok(f) => f.close().await.map_err(|e| Error::io(path, e)),
        // Still shared (cannot happen after `finish`); the handle closes when dropped.
        Err(_) => Ok(()),
    }
}

fn next_after_damage(resume: bool, damage: &Damage) -> Option<u64> {
    // Resume only past damage that hit durable data. If no later batch claims the damaged
    // batch durable, this is a torn tail: the later batches were never acknowledged either
    // (one of them formed while the damaged one's fdatasync was in flight), and applying them
    // without the lost batch would keep an unacknowledged write that followed a lost one.
    // Stopping here lets recovery truncate the tail as in the default mode.
    if !resume || !crate::torn_tail::proven_durable(damage) {
        return None;
    }
    damage.later_batches.first().map(|b| b.offset)
}

enum BatchRead {
    Valid {
        seq: u64,
        durable_seq: u64,
        batch_bytes: u64,
        /// (offset, header, damaged) of every record, batch header first.
        records: Vec<(u64, RecordHeader, bool)>,
        sealed: Option<u64>,
        /// (offset, why) of every entry record that failed its checksum in this otherwise
        /// intact batch (see [`entry_damage_only`]).
        damaged: Vec<(u64, DecodeError)>,
    },
    Zero,
    Bad {
        record_offset: u64,
        reason: DecodeError,
        batch_seq: Option<u64>,
        group: Option<u64>,
        index: Option<u64>,
    },
}

async fn read_batch<F: StorageFile>(
    w: &mut Window<F>,
    pos: u64,
    last_seq: Option<u64>,
) -> std::io::Result<BatchRead> {
    let bad = |record_offset, reason, batch_seq, h: Option<&RecordHeader>| BatchRead::Bad {
        record_offset,
        reason,
        batch_seq,
        group: h.map(|h| h.group),
        index: h.map(|h| h.index),
    };
    let first = w.get(pos, BLOCK_BYTES as usize).await?;
    let (bh, payload) = match decode_record(first) {
        Ok(r) => r,
        Err(DecodeError::Zero) => return Ok(BatchRead::Zero),
        Err(e) => return Ok(bad(pos, e, None, None)),
    };
    if bh.kind != RecordKind::BatchHeader as u16 {
        return Ok(bad(pos, DecodeError::BadKind(bh.kind), None, Some(&bh)));
    }
    let bp = match decode_batch_payload(&bh, payload, BLOCK_BYTES) {
        Ok(p) => p,
        Err(e) => return Ok(bad(pos, e, Some(bh.batch_seq), None)),
    };
    let seq = bh.batch_seq;
    if let Some(last) = last_seq {
        if seq <= last {
            let why = format!("batch sequence {seq} does not follow {last} (stale batch)");
            return Ok(bad(
                pos,
                DecodeError::BadField {
                    field: "batch_seq",
                    why,
                },
                Some(seq),
                None,
            ));
        }
    }
    let batch_bytes = bp.batch_bytes as u64;
    let batch_end = pos + batch_bytes;
    if batch_end > w.file_len {
        let e = DecodeError::Truncated {
            need: batch_bytes as usize,
            have: (w.file_len - pos) as usize,
        };
        return Ok(bad(pos, e, Some(seq), None));
    }
    let mut records = Vec::with_capacity(bp.record_count as usize + 1);
    records.push((pos, bh, false));
    let mut damaged = Vec::new();
    let mut at = pos + bh.record_bytes();
    let mut sealed = None;
    for i in 0..bp.record_count {
        if at + RECORD_HEADER_BYTES as u64 > batch_end {
            let e = DecodeError::Truncated {
                need: RECORD_HEADER_BYTES,
                have: (batch_end - at) as usize,
            };
            return Ok(bad(at, e, Some(seq), None));
        }
        let head = w.get(at, RECORD_HEADER_BYTES).await?;
        let h = match decode_header(head) {
            Ok(h) => h,
            Err(e) => return Ok(bad(at, e, Some(seq), None)),
        };
        if at + h.record_bytes() > batch_end {
            let e = DecodeError::BadLength {
                len: h.payload_len as u64,
                max: batch_end - at,
            };
            return Ok(bad(at, e, Some(seq), Some(&h)));
        }
        let whole = w.get(at, h.record_bytes() as usize).await?;
        if let Err(e) = decode_record(whole) {
            if !entry_damage_only(&h, &e, seq) {
                return Ok(bad(at, e, Some(seq), Some(&h)));
            }
            damaged.push((at, e));
            records.push((at, h, true));
            at += h.record_bytes();
            continue;
        }
        if h.batch_seq != seq {
            let why = format!("record of batch {} inside batch {seq}", h.batch_seq);
            return Ok(bad(
                at,
                DecodeError::BadField {
                    field: "batch_seq",
                    why,
                },
                Some(seq),
                Some(&h),
            ));
        }
        if h.kind == RecordKind::BatchHeader as u16 {
            let why = "batch header inside a batch".to_string();
            return Ok(bad(
                at,
                DecodeError::BadField { field: "kind", why },
                Some(seq),
                Some(&h),
            ));
        }
        if h.kind == RecordKind::Seal as u16 {
            if i + 1 != bp.record_count {
                let why = "seal is not the last record of its batch".to_string();
                return Ok(bad(
                    at,
                    DecodeError::BadField { field: "kind", why },
                    Some(seq),
                    Some(&h),
                ));
            }
            sealed = Some(h.aux);
        }
        records.push((at, h, false));
        at += h.record_bytes();
    }
    Ok(BatchRead::Valid {
        seq,
        durable_seq: bh.aux,
        batch_bytes,
        records,
        sealed,
        damaged,
    })
}

/// Whether a record that failed to decode inside a batch leaves the batch's frame intact: its
/// header passed the structural checks (magic, version, kind, a length that fits the batch:
/// so the next record's place is known), only the checksum failed, it is an entry, and it
/// names the batch it is in. The bytes of such a record are damaged but the batch around it
/// can still be read; whether the batch is passed over is the torn-tail rule's decision.
fn entry_damage_only(h: &RecordHeader, e: &DecodeError, seq: u64) -> bool {
    matches!(e, DecodeError::BadChecksum { .. })
        && h.kind == RecordKind::Entry as u16
        && h.batch_seq == seq
}

/// Looks at every block boundary after `from` for a valid batch header newer than
/// `last_seq`, and finds the end of the last non-zero block.
async fn probe<F: StorageFile>(
    w: &mut Window<F>,
    from: u64,
    last_seq: Option<u64>,
) -> std::io::Result<(Vec<LaterBatch>, u64)> {
    let mut later = Vec::new();
    let mut garbage_end = from;
    let mut block = from;
    // A final partial block (a file cut mid-block) is probed too.
    while block < w.file_len {
        let bytes = w.get(block, BLOCK_BYTES as usize).await?;
        if bytes.iter().any(|&b| b != 0) {
            garbage_end = block + BLOCK_BYTES;
            if block > from {
                if let Ok((h, payload)) = decode_record(bytes) {
                    let newer = last_seq.is_none_or(|l| h.batch_seq > l);
                    if h.kind == RecordKind::BatchHeader as u16
                        && newer
                        && decode_batch_payload(&h, payload, BLOCK_BYTES).is_ok()
                    {
                        later.push(LaterBatch {
                            offset: block,
                            seq: h.batch_seq,
                            durable_seq: h.aux,
                        });
                    }
                }
            }
        }
        block += BLOCK_BYTES;
    }
    Ok((later, garbage_end))
}

/// Probes a whole segment file block by block, header block included, without trusting its
/// header: every valid batch header after the header block, and the end of the last block
/// holding a non-zero byte. For a segment whose header is unreadable (recovery decides with it
/// whether the segment was ever made durable).
pub async fn probe_segment<S: Storage>(storage: &S, path: &Path) -> Result<(Vec<LaterBatch>, u64)> {
    let io = |e| Error::io(path, e);
    let file = Rc::new(storage.open(path, false).await.map_err(io)?);
    let file_len = file.len().await.map_err(io)?;
    let mut w = Window::new(file.clone(), file_len);
    let probed = probe(&mut w, 0, None).await;
    w.finish().await;
    drop(w);
    close_rc(file, path).await?;
    probed.map_err(io)
}

/// Whether the block where a segment's first batch starts reads as zero (or is missing): a
/// cheap test before scanning a possibly unused spare in full.
pub async fn first_batch_block_is_zero<S: Storage>(storage: &S, path: &Path) -> Result<bool> {
    let io = |e| Error::io(path, e);
    let f = storage.open(path, false).await.map_err(io)?;
    let block = f
        .read_at(SEGMENT_HEADER_BYTES, BLOCK_BYTES as usize)
        .await
        .map_err(io)?;
    let zero = block.iter().all(|&b| b == 0);
    f.close().await.map_err(io)?;
    Ok(zero)
}

impl SegmentScan {
    /// A segment with a valid header, no batch and nothing but zeros after the header (or
    /// nothing at all: its preallocation may not have survived a crash): a spare the writer
    /// prepared ahead of time and never used. It holds no data; recovery and verify set it
    /// aside as the next segment to use.
    pub fn is_unused_spare(&self) -> bool {
        self.header.is_some()
            && self.batches == 0
            && matches!(self.stop, ScanStop::CleanEnd | ScanStop::EndOfFile)
    }
}

impl Damage {
    /// A location for error messages.
    pub fn location(&self, file: &Path) -> Location {
        Location {
            file: file.to_path_buf(),
            offset: self.record_offset,
            group: self.group,
            index: self.index,
        }
    }
}
