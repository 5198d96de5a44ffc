//! The segment lifecycle: spare segments prepared off the append path, the roll (seal batch,
//! sealed index written in the background, checkpoint at the start of the next segment), and
//! the purge of sealed segments with no live entries.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::task::JoinHandle;

use super::state::{Active, Inner};
use super::writer::fail_stop;
use crate::batch::{BatchBuilder, NewRecord, BATCH_HEADER_RECORD_BYTES};
use crate::constants::{BATCH_RECORDS_MAX, BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use crate::error::{Error, Result};
use crate::format::segment::{index_file_name, prep_file_name, segment_file_name};
use crate::format::{align_up, IndexEntry, RecordKind, SealedIndex, SegmentHeader};
use crate::recovery::now_unix_ms;
use crate::storage::{write_file_atomic, IoBuf, Storage, StorageFile};

impl<S: Storage> Inner<S> {
    /// How far (in bytes) the spare's zero-fill may have got: twice the active segment's
    /// fill fraction plus some slack, so it is done by the time the segment is half full and
    /// each fdatasync meanwhile flushes only a little of it. No limit when hurried.
    fn prefill_allowance(&self, bytes: u64) -> u64 {
        if self.prep_hurry || self.closing || self.stop.is_stopped() {
            return u64::MAX;
        }
        match &self.active {
            Some(a) if a.capacity > 0 => {
                let frac = a.write_pos as f64 / a.capacity as f64;
                (2.0 * frac * bytes as f64) as u64 + PREFILL_SLACK_BYTES
            }
            _ => u64::MAX,
        }
    }

    /// Whether the next spare should be zero-filled: while batches are small, where the
    /// extent-conversion commit would dominate each fdatasync (see `WalConfig`).
    fn want_prefill(&self) -> bool {
        self.cfg.prefill_segments
            && self
                .last_avg_batch_bytes
                .is_none_or(|avg| avg < self.cfg.prefill_batch_bytes_max)
    }
}

/// A segment file made ready ahead of the roll that needs it.
pub(super) enum Spare<F> {
    Ready {
        id: u64,
        file: F,
    },
    Preparing {
        id: u64,
        task: JoinHandle<Result<F>>,
    },
}

/// Seals the active segment (seal batch + fdatasync + index written in the background) and
/// starts the spare prepared for the next one (checkpoint of every group's state + fdatasync).
pub(super) async fn roll_segment<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) -> Result<()> {
    let (storage, dir, shard, cfg) = {
        let i = inner.borrow();
        (i.storage.clone(), i.dir.clone(), i.shard, i.cfg.clone())
    };
    let old = inner.borrow_mut().active.take();
    let mut sealed_link = None;
    if let Some(mut a) = old {
        if let Some(avg) = a.batch_bytes.checked_div(a.batches) {
            inner.borrow_mut().last_avg_batch_bytes = Some(avg);
        }
        let next_id = inner.borrow().next_segment_id;
        let path = dir.join(segment_file_name(a.id));
        let mut b = BatchBuilder::new(storage.alloc_buf(BLOCK_BYTES as usize));
        b.push(&NewRecord {
            kind: RecordKind::Seal,
            group: 0,
            term: 0,
            index: 0,
            aux: next_id,
            payload: &[],
        });
        let (seq, durable) = {
            let mut i = inner.borrow_mut();
            let s = i.next_seq;
            i.next_seq += 1;
            (s, i.durable_seq)
        };
        let (buf, ops, bytes) = b.finish(seq, durable);
        a.file
            .write_at(buf, a.write_pos)
            .await
            .map_err(|e| Error::io(&path, e))?;
        let seal_offset = a.write_pos + ops[0].offset_in_batch as u64;
        a.index.push(IndexEntry {
            kind: RecordKind::Seal as u16,
            reserved: 0,
            payload_len: 0,
            offset: seal_offset,
            group: 0,
            term: 0,
            index: 0,
            aux: next_id,
        });
        a.write_pos += bytes;
        sync_or_fail(inner, &a.file, &path).await?;
        inner.borrow_mut().durable_seq = seq;
        sealed_link = Some(crate::format::chain::ChainLink {
            segment_id: a.id,
            first_batch_seq: a.first_batch_seq,
            seal_batch_seq: seq,
            data_end: a.write_pos,
        });
        if cfg.write_sealed_index {
            let idx = SealedIndex::new(
                a.id,
                a.capacity,
                a.write_pos,
                a.first_batch_seq,
                seq,
                std::mem::take(&mut a.index),
            );
            let ipath = dir.join(index_file_name(a.id));
            let st = storage.clone();
            // The index only speeds up recovery (which rebuilds a missing one), so it is
            // written off the append path.
            let done = Rc::new(std::cell::Cell::new(false));
            let done_in_task = done.clone();
            let task = glommio::spawn_local(async move {
                if let Err(e) = write_file_atomic(&st, &ipath, &idx.encode()).await {
                    tracing::warn!(
                        "could not write index {}: {e} (recovery will rebuild it)",
                        ipath.display()
                    );
                }
                done_in_task.set(true);
            })
            .detach();
            let mut i = inner.borrow_mut();
            i.background.retain(|(d, _)| !d.get());
            i.background.push((done, task));
        }
        inner
            .borrow_mut()
            .segments
            .insert(a.id, Some(a.file.clone()));
    }

    let id = {
        let mut i = inner.borrow_mut();
        let id = i.next_segment_id;
        i.next_segment_id += 1;
        id
    };
    let path = dir.join(segment_file_name(id));
    let io = |e| Error::io(&path, e);
    // The spare is already `<id>.wal`, its header written and durable, its directory entry
    // synced: starting it costs nothing on this path but the checkpoint below.
    let file = take_spare(inner, id).await?;
    let first_seq = inner.borrow().next_seq;
    let file = Rc::new(file);
    let mut active = Active {
        id,
        file: file.clone(),
        path: Rc::new(path.clone()),
        write_pos: SEGMENT_HEADER_BYTES,
        capacity: cfg.segment_bytes,
        index: Vec::new(),
        first_batch_seq: first_seq,
        batches: 0,
        batch_bytes: 0,
    };

    // Checkpoint: restate every group's floor (compaction point), snapshot, hard state and
    // group metadata, so older segments can be purged without losing them.
    let checkpoint: Vec<(RecordKind, u64, u64, u64, u64, Vec<u8>)> = {
        let i = inner.borrow();
        let mut ids: Vec<_> = i.table.groups.keys().copied().collect();
        ids.sort_unstable();
        let mut recs = Vec::new();
        for g in ids {
            let st = &i.table.groups[&g];
            if let Some(s) = &st.snapshot {
                recs.push((
                    RecordKind::SnapshotMeta,
                    g,
                    s.term,
                    s.index,
                    0,
                    s.meta.clone(),
                ));
            }
            // The floor, not the first index: replaying this must not raise a group's floor
            // above what it was at run time (a log may start above its floor without any
            // compaction, e.g. a new group's first append at index 5).
            if st.floor_index > 1 {
                recs.push((RecordKind::Compact, g, 0, st.floor_index, 0, Vec::new()));
            }
            if let Some(hs) = st.hard_state {
                recs.push((
                    RecordKind::HardState,
                    g,
                    hs.term,
                    hs.commit,
                    hs.vote,
                    Vec::new(),
                ));
            }
            if let Some(meta) = &st.group_meta {
                recs.push((RecordKind::GroupMeta, g, 0, 0, 0, meta.clone()));
            }
        }
        recs
    };
    if !checkpoint.is_empty() {
        let recs: Vec<NewRecord<'_>> = checkpoint
            .iter()
            .map(|(kind, g, term, index, aux, payload)| NewRecord {
                kind: *kind,
                group: *g,
                term: *term,
                index: *index,
                aux: *aux,
                payload,
            })
            .collect();
        let need = BatchBuilder::<S::Buf>::bytes_for(&recs);
        let size = align_up((BATCH_HEADER_RECORD_BYTES + need) as u64, BLOCK_BYTES);
        // One batch, beside the segment header, one request (at most a quarter of the
        // segment) and the seal block. Past that the shard stops with this error rather than
        // write a batch its segment cannot hold (not reachable with snapshot metadata within
        // SNAPSHOT_META_BYTES_MAX unless a shard holds tens of thousands of groups per MiB
        // of segment).
        let room = cfg.segment_bytes / 2;
        if size > room || recs.len() > BATCH_RECORDS_MAX as usize {
            return Err(Error::Io {
                path: path.clone(),
                source: std::io::Error::other(format!(
                    "the checkpoint of {} records ({size} bytes) does not fit half a segment \
                     ({room} bytes) or one batch ({BATCH_RECORDS_MAX} records): raise \
                     segment_bytes",
                    recs.len()
                )),
            });
        }
        let mut b = BatchBuilder::new(storage.alloc_buf(size as usize));
        for r in &recs {
            b.push(r);
        }
        let (seq, durable) = {
            let mut i = inner.borrow_mut();
            let s = i.next_seq;
            i.next_seq += 1;
            (s, i.durable_seq)
        };
        let (buf, ops, bytes) = b.finish(seq, durable);
        file.write_at(buf, active.write_pos).await.map_err(io)?;
        for op in &ops {
            // Restating state changes nothing in the table; only the index records it.
            active.index.push(IndexEntry {
                kind: op.kind as u16,
                reserved: 0,
                payload_len: op.payload_len,
                offset: active.write_pos + op.offset_in_batch as u64,
                group: op.group,
                term: op.term,
                index: op.index,
                aux: op.aux,
            });
        }
        active.write_pos += bytes;
    }
    // Even with no checkpoint: the chain record written next may name only a segment whose
    // header is durable.
    sync_or_fail(inner, &file, &path).await?;
    let checkpoint_seq = if checkpoint.is_empty() { 0 } else { first_seq };
    let chain = crate::chain::rolled(
        inner.borrow().chain.as_ref(),
        shard,
        sealed_link,
        id,
        checkpoint_seq,
    );
    crate::chain::write_chain(&storage, &dir, &chain).await?;
    inner.borrow_mut().chain = Some(chain);
    {
        let mut i = inner.borrow_mut();
        i.durable_seq = i.next_seq - 1;
        i.stats.segments_created += 1;
        i.segments.insert(id, None);
        i.active = Some(active);
    }
    start_prepare(inner);
    Ok(())
}

/// Starts preparing the next segment in the background.
pub(super) fn start_prepare<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) {
    let (storage, dir, shard, id, bytes, hint, prefill) = {
        let i = inner.borrow();
        if i.spare.is_some() {
            return;
        }
        (
            i.storage.clone(),
            i.dir.clone(),
            i.shard,
            i.next_segment_id,
            i.cfg.segment_bytes,
            i.next_seq,
            i.want_prefill(),
        )
    };
    // Paced on the active segment's progress (see `prefill_allowance`), not on a clock, so
    // runs on the simulated disk stay deterministic.
    inner.borrow_mut().prep_hurry = false;
    let pace = Some(Rc::downgrade(inner));
    let task = glommio::spawn_local(prepare_segment(
        storage, dir, shard, id, bytes, hint, prefill, pace,
    ))
    .detach();
    inner.borrow_mut().spare = Some(Spare::Preparing { id, task });
}

/// Prepares segment `id` off the append path: created as `<id>.wal.prep`, preallocated,
/// zero-filled (with prefill), given its header (`first_batch_seq` is a lower bound: the next
/// batch sequence when preparation began), renamed to `<id>.wal` and its directory fsynced. A `.prep` file left by a crash is deleted by recovery; a prepared but
/// unused `<id>.wal` is recognised by recovery as the spare (no batch, all zero).
#[allow(clippy::too_many_arguments)]
async fn prepare_segment<S: Storage>(
    storage: S,
    dir: PathBuf,
    shard: u32,
    id: u64,
    bytes: u64,
    first_seq_hint: u64,
    prefill: bool,
    pace: Option<std::rc::Weak<RefCell<Inner<S>>>>,
) -> Result<S::File> {
    let prep = dir.join(prep_file_name(id));
    let io = |e| Error::io(&prep, e);
    if storage.exists(&prep).await.map_err(io)? {
        storage.remove_file(&prep).await.map_err(io)?;
    }
    let file = storage.create_new(&prep).await.map_err(io)?;
    file.allocate(bytes).await.map_err(io)?;
    if prefill {
        // One zero buffer for the whole fill: zeroing a fresh one per chunk cost a memset of
        // the whole segment, per segment.
        let zeros = Rc::new(storage.alloc_buf(PREFILL_CHUNK_BYTES as usize));
        let mut pos = SEGMENT_HEADER_BYTES;
        while pos < bytes {
            while let Some(inner) = pace.as_ref().and_then(|w| w.upgrade()) {
                let (allowed, notify) = {
                    let i = inner.borrow();
                    (i.prefill_allowance(bytes), i.prep_notify.clone())
                };
                drop(inner);
                if pos < allowed {
                    break;
                }
                notify.wait().await;
            }
            let n = (bytes - pos).min(PREFILL_CHUNK_BYTES);
            if n == PREFILL_CHUNK_BYTES {
                file.write_shared_at(zeros.clone(), pos).await.map_err(io)?;
            } else {
                // The last, shorter chunk (segment sizes are whole blocks, not whole chunks).
                file.write_at(storage.alloc_buf(n as usize), pos)
                    .await
                    .map_err(io)?;
            }
            pos += n;
        }
    }
    let header = SegmentHeader::new(id, shard, bytes, first_seq_hint, now_unix_ms());
    let mut hb = storage.alloc_buf(SEGMENT_HEADER_BYTES as usize);
    header.encode_block(hb.as_bytes_mut());
    file.write_at(hb, 0).await.map_err(io)?;
    // No fdatasync here: the first batch's fdatasync in this file makes the header durable
    // before anything in it is acknowledged, and zero-filled blocks read as zero whether or
    // not they reached the disk. A crash that keeps the name but not the header leaves a
    // last segment with no header and nothing after it, which recovery removes.
    let path = dir.join(segment_file_name(id));
    storage.rename(&prep, &path).await.map_err(io)?;
    storage
        .sync_dir(&dir)
        .await
        .map_err(|e| Error::FsyncFailed {
            shard,
            path: dir.clone(),
            reason: e.to_string(),
        })?;
    Ok(file)
}

/// Zero-fill write size when preparing a segment: large enough to be cheap per byte, small
/// enough that a paced fill adds little to any one fdatasync of the active segment.
const PREFILL_CHUNK_BYTES: u64 = 256 << 10;

/// How far the paced zero-fill may run ahead of twice the active segment's fill fraction.
const PREFILL_SLACK_BYTES: u64 = 2 << 20;

/// Lets the spare's preparation run at full speed (the roll or close is waiting for it).
pub(super) fn hurry_prep<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) {
    let notify = {
        let mut i = inner.borrow_mut();
        i.prep_hurry = true;
        i.prep_notify.clone()
    };
    notify.notify();
}

/// Returns segment `id`'s prepared file (`<id>.wal.spare`), waiting for or doing the work.
async fn take_spare<S: Storage>(inner: &Rc<RefCell<Inner<S>>>, id: u64) -> Result<S::File> {
    let spare = inner.borrow_mut().spare.take();
    match spare {
        Some(Spare::Ready { id: sid, file }) if sid == id => return Ok(file),
        Some(Spare::Preparing { id: sid, task }) if sid == id => {
            hurry_prep(inner);
            if let Some(r) = task.await {
                return r;
            }
        }
        Some(Spare::Preparing { task, .. }) => {
            hurry_prep(inner);
            let _ = task.await;
        }
        Some(Spare::Ready { .. }) | None => {}
    }
    let (storage, dir, shard, bytes, hint, prefill) = {
        let i = inner.borrow();
        (
            i.storage.clone(),
            i.dir.clone(),
            i.shard,
            i.cfg.segment_bytes,
            i.next_seq,
            i.want_prefill(),
        )
    };
    // The roll is waiting: no pacing.
    prepare_segment::<S>(storage, dir, shard, id, bytes, hint, prefill, None).await
}

async fn sync_or_fail<S: Storage>(
    inner: &Rc<RefCell<Inner<S>>>,
    file: &Rc<S::File>,
    path: &Path,
) -> Result<()> {
    file.sync_data().await.map_err(|e| Error::FsyncFailed {
        shard: inner.borrow().shard,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    inner.borrow_mut().stats.fsyncs += 1;
    Ok(())
}

/// Deletes the oldest sealed segments whose entries are all dead (compacted, truncated,
/// overwritten or of deleted groups). Only a prefix is deleted, so a crash part-way leaves a
/// contiguous run of segments. Called only when every batch applied to the group table is
/// durable, so the records that killed the entries cannot be lost after the files are gone.
pub(super) async fn purge_if_wanted<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) {
    let victims: Vec<u64> = {
        let mut i = inner.borrow_mut();
        if !i.purge_wanted || i.stop.is_stopped() {
            return;
        }
        i.purge_wanted = false;
        let active = i.active.as_ref().map(|a| a.id);
        // Callers guarantee every record applied to the table is durable (no fdatasync in
        // flight for an applied batch), so the records that killed these entries survive a
        // crash.
        let mut out = Vec::new();
        for (&id, _) in i.segments.iter() {
            if Some(id) == active {
                break;
            }
            if i.table.live_per_segment.get(&id).copied().unwrap_or(0) == 0 {
                out.push(id);
            } else {
                break;
            }
        }
        out
    };
    if victims.is_empty() {
        return;
    }
    let (storage, dir, chain) = {
        let i = inner.borrow();
        (i.storage.clone(), i.dir.clone(), i.chain.clone())
    };
    // The chain record drops the victims before any file goes (a crash in between leaves
    // leftovers that recovery deletes, never a hole).
    if let (Some(c), Some(last)) = (chain, victims.last()) {
        let c = crate::chain::purged(&c, last + 1);
        if let Err(e) = crate::chain::write_chain(&storage, &dir, &c).await {
            fail_stop(inner, Vec::new(), format!("chain record before purge: {e}"));
            return;
        }
        inner.borrow_mut().chain = Some(c);
    }
    for id in &victims {
        let wal = dir.join(segment_file_name(*id));
        let idx = dir.join(index_file_name(*id));
        // Unlisted before the file goes, so a read that finds its entries' segment gone
        // (or finishes opening it meanwhile) reports them unavailable instead of failing on
        // the missing file or listing the segment again.
        let handle = inner.borrow_mut().segments.remove(id);
        if let Err(e) = storage.remove_file(&wal).await {
            tracing::warn!("purge: could not remove {}: {e}", wal.display());
            // Listed again so the next purge retries it.
            inner.borrow_mut().segments.insert(*id, handle.flatten());
            return;
        }
        if storage.exists(&idx).await.unwrap_or(false) {
            let _ = storage.remove_file(&idx).await;
        }
        let mut i = inner.borrow_mut();
        i.table.live_per_segment.remove(id);
        i.stats.segments_purged += 1;
    }
    if let Err(e) = storage.sync_dir(&dir).await {
        // An fsync error is fatal, here too: the directory's state is unknown.
        let reason = format!("fsync of {} after purge failed: {e}", dir.display());
        fail_stop(inner, Vec::new(), reason);
        return;
    }
    tracing::info!(segments = ?victims, "purged segments with no live entries");
}
