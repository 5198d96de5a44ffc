//! The shard WAL: one append-only sequence of segment files shared by every group of a shard,
//! written by a single writer task with group commit.
//!
//! How an append becomes durable:
//! 1. The caller's records are validated against the group's accepted bounds and placed in
//!    the forming batch (one call never spans two batches, so it is atomic on disk).
//! 2. The writer task cuts the oldest forming batch: assigns its sequence number, fills the
//!    headers and checksums, rolls the segment if the batch does not fit (after every batch
//!    in flight is durable).
//! 3. It starts a task that writes the batch with one O_DIRECT write at the next block
//!    boundary (never over an earlier batch) and then fdatasyncs the file. Up to
//!    `batches_inflight_max` such tasks run at once; meanwhile the next batch forms.
//! 4. Batches finish strictly in sequence order: once a batch's task is done, its records
//!    enter the group table (which therefore holds only durable records: reads and purge see
//!    nothing that a crash could take back) and its callers are acknowledged.
//! 5. An fdatasync or write error stops the shard (fail-stop): every waiting and later caller
//!    gets the error; nothing is retried.

mod done;
mod segments;
mod state;
mod stop;
mod writer;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use crate::batch::{BatchBuilder, BATCH_HEADER_RECORD_BYTES};
use crate::config::WalConfig;
use crate::constants::{BATCH_RECORDS_MAX, BLOCK_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::error::{Error, Location, Result};
use crate::format::record::decode_record;
use crate::format::segment::segment_file_name;
use crate::format::{align_up, EntryKind, RecordKind, SegmentHeader};
use crate::group::{Bounds, GroupInfo, HardState, SnapshotInfo};
use crate::notify::Notify;
use crate::recovery::{now_unix_ms, recover_shard, RecoveryReport};
use crate::storage::{IoBuf, Storage, StorageFile};
use crate::write_batch::{plan, GroupOps, Limits, WriteBatch};

use done::{BatchDone, Completion, Finished};
use segments::{hurry_prep, start_prepare, Spare};
use state::{Active, Forming, Inner};
use stop::StopSignal;
use writer::writer_loop;

/// An entry to append (borrowed data).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: &'a [u8],
}

/// An entry owned: what a [`WriteBatch`] carries and what a read returns (checksum verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl OwnedEntry {
    pub fn as_entry(&self) -> Entry<'_> {
        Entry {
            term: self.term,
            index: self.index,
            kind: self.kind,
            data: &self.data,
        }
    }
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Clone, Default)]
pub struct WalStats {
    pub batches: u64,
    pub batch_bytes: u64,
    pub records: u64,
    pub fsyncs: u64,
    pub segments_created: u64,
    pub segments_purged: u64,
    /// Time spent in batch writes and in fdatasync (each measured from issue to completion).
    pub write_us: u64,
    pub fsync_us: u64,
    /// Each batch's fdatasync, from issue to completion.
    pub fsync_latency: crate::histogram::LatencyHistogramUs,
    /// Each group-commit batch's bytes.
    pub batch_size: crate::histogram::SizeHistogramBytes,
}

/// The WAL of one shard. Not `Send`: it lives on its shard's executor.
pub struct ShardWal<S: Storage> {
    inner: Rc<RefCell<Inner<S>>>,
    stop: Rc<StopSignal>,
    notify: Rc<Notify>,
    space: Rc<Semaphore>,
    writer: RefCell<Option<JoinHandle<()>>>,
    recovery: RecoveryReport,
}

impl<S: Storage> ShardWal<S> {
    /// Recovers the WAL in `dir` and starts its writer task on the current executor.
    pub async fn open(
        storage: S,
        shard: u32,
        dir: &Path,
        quarantine: &Path,
        cfg: WalConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        storage
            .create_dir_all(dir)
            .await
            .map_err(|e| Error::io(dir, e))?;
        let rec = recover_shard(
            &storage,
            shard,
            dir,
            quarantine,
            cfg.recovery_mode,
            cfg.use_sealed_index,
        )
        .await?;
        let mut active = None;
        if let Some(open) = rec.open {
            let path = dir.join(segment_file_name(open.id));
            let file = storage
                .open(&path, true)
                .await
                .map_err(|e| Error::io(&path, e))?;
            let capacity = file.len().await.map_err(|e| Error::io(&path, e))?;
            active = Some(Active {
                id: open.id,
                file: Rc::new(file),
                path: Rc::new(path),
                write_pos: open.resume_at,
                capacity,
                index: open.index,
                first_batch_seq: open.first_batch_seq,
                batches: 0,
                batch_bytes: 0,
            });
        }
        let bounds = rec
            .table
            .groups
            .iter()
            .map(|(g, s)| (*g, Bounds::from(s)))
            .collect();
        let segments = rec.segment_ids.iter().map(|id| (*id, None)).collect();
        let spare = match rec.spare_id {
            Some(id) => {
                let path = dir.join(segment_file_name(id));
                let file = storage
                    .open(&path, true)
                    .await
                    .map_err(|e| Error::io(&path, e))?;
                // Its preallocation may not have survived a crash.
                file.allocate(cfg.segment_bytes)
                    .await
                    .map_err(|e| Error::io(&path, e))?;
                if rec.spare_needs_header {
                    // Made durable by the first batch's fdatasync, as when it was prepared.
                    let header = SegmentHeader::new(
                        id,
                        shard,
                        cfg.segment_bytes,
                        rec.next_batch_seq,
                        now_unix_ms(),
                    );
                    let mut hb = storage.alloc_buf(SEGMENT_HEADER_BYTES as usize);
                    header.encode_block(hb.as_bytes_mut());
                    file.write_at(hb, 0)
                        .await
                        .map_err(|e| Error::io(&path, e))?;
                }
                Some(Spare::Ready { id, file })
            }
            None => None,
        };
        let stop = Rc::new(StopSignal::new(shard));
        let inner = Inner {
            storage,
            shard,
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            table: rec.table,
            bounds,
            bounds_epoch: 0,
            forming: VecDeque::new(),
            next_seq: rec.next_batch_seq,
            durable_seq: rec.next_batch_seq - 1,
            active,
            next_segment_id: rec.next_segment_id,
            segments,
            stop: stop.clone(),
            closing: false,
            writer_busy: false,
            purge_wanted: true,
            spare,
            chain: rec.chain,
            last_avg_batch_bytes: None,
            prep_notify: Rc::new(Notify::default()),
            prep_hurry: false,
            background: Vec::new(),
            stats: WalStats::default(),
        };
        let inner = Rc::new(RefCell::new(inner));
        if inner.borrow().active.is_some() {
            start_prepare(&inner);
        }
        let notify = Rc::new(Notify::default());
        let space = Rc::new(Semaphore::new(cfg.pending_bytes_max));
        let writer =
            glommio::spawn_local(writer_loop(inner.clone(), notify.clone(), space.clone()))
                .detach();
        Ok(ShardWal {
            inner,
            stop,
            notify,
            space,
            writer: RefCell::new(Some(writer)),
            recovery: rec.report,
        })
    }

    pub fn shard(&self) -> u32 {
        self.inner.borrow().shard
    }

    /// What recovery found and did when this WAL was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn stats(&self) -> WalStats {
        self.inner.borrow().stats.clone()
    }

    /// Groups with their first/last written index, hard state and snapshot point.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.inner.borrow().table.all_info()
    }

    pub fn group(&self, group: u64) -> Option<GroupInfo> {
        self.inner.borrow().table.info(group)
    }

    // The query side: synchronous answers from the durable group table (what a crash cannot
    // take back). The Raft layer keeps its own unstable entries on top.

    /// First index of the group's log (1 for a group with no state).
    pub fn first_index(&self, group: u64) -> u64 {
        self.inner
            .borrow()
            .table
            .group(group)
            .map_or(1, |g| g.first_index())
    }

    /// Last index of the group's log (`first_index - 1` when empty, 0 for a group with no
    /// state).
    pub fn last_index(&self, group: u64) -> u64 {
        self.inner
            .borrow()
            .table
            .group(group)
            .map_or(0, |g| g.last_index())
    }

    /// Term of the entry at `index`, or of the snapshot point at `index`; None when neither
    /// is in the log (compacted away, or not written).
    pub fn term(&self, group: u64, index: u64) -> Option<u64> {
        self.inner.borrow().table.group(group)?.term(index)
    }

    pub fn hard_state(&self, group: u64) -> Option<HardState> {
        self.inner.borrow().table.group(group)?.hard_state()
    }

    /// The newest metadata the layer above kept with the group (`WriteBatch::group_meta`).
    pub fn group_meta(&self, group: u64) -> Option<Vec<u8>> {
        Some(
            self.inner
                .borrow()
                .table
                .group(group)?
                .group_meta()?
                .to_vec(),
        )
    }

    /// The group's snapshot point: term, index and the metadata bytes it was written with.
    pub fn snapshot(&self, group: u64) -> Option<SnapshotInfo> {
        self.inner.borrow().table.group(group)?.snapshot().cloned()
    }

    /// (index, term) of the configuration-change entries in the group's log, oldest first.
    /// Kept in memory (recovery rebuilds it from record headers, never from payloads).
    pub fn conf_entries(&self, group: u64) -> Vec<(u64, u64)> {
        self.inner
            .borrow()
            .table
            .group(group)
            .map(|g| g.conf_entries().collect())
            .unwrap_or_default()
    }

    /// The largest payload one record may carry with this shard's configuration: a larger
    /// entry refuses the whole write batch (and the shard stops), so callers that take
    /// payloads from clients or peers check this first.
    pub fn payload_bytes_max(&self) -> u64 {
        self.inner.borrow().cfg.payload_bytes_max()
    }

    /// The largest write batch this shard takes at once (`WalConfig::request_bytes_max`): a
    /// larger one is refused whole, and a caller for whom that is fatal (tern's shard stops)
    /// keeps each batch under it.
    pub fn request_bytes_max(&self) -> u64 {
        self.inner.borrow().cfg.request_bytes_max()
    }

    /// The error that stopped the shard, if it has stopped (fail-stop); checked without
    /// waiting.
    pub fn failure(&self) -> Option<Error> {
        self.stop.error()
    }

    /// Resolves the moment the shard stops on an I/O error, with that error; never resolves
    /// while the shard is healthy (select it against your own shutdown).
    pub async fn failed(&self) -> Error {
        self.stop.wait().await
    }

    // The write side. Every write is a request placed whole in one group-commit batch, so
    // all of it survives a crash or none of it; requests become durable in submission order.

    /// Queues a write batch and returns at once with a [`Durable`] that resolves when all of
    /// it is fsynced. Waits only for queue room (backpressure). Every operation is checked
    /// first: an invalid one, or a batch over a limit, is refused with a typed error and
    /// nothing of the batch is queued.
    pub async fn submit(&self, batch: WriteBatch) -> Result<Durable> {
        let ops = batch.views();
        self.queue(&ops).await
    }

    /// [`submit`](Self::submit), then waits until the batch is durable.
    pub async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.submit(batch).await?.await
    }

    /// Appends entries of one group; resolves once they are durable. Entries must be
    /// consecutive; an index at or below the last one replaces the suffix from there
    /// (a Raft conflict). All entries of one call become durable together.
    pub async fn append(&self, group: u64, entries: &[Entry<'_>]) -> Result<()> {
        self.enqueue_append(group, entries).await?.await
    }

    /// Like [`append`](Self::append) but returns once the entries are queued; the returned
    /// [`Durable`] resolves when they are durable. Borrows the entries (no copy but the one
    /// into the batch buffer), for callers that keep many appends in flight.
    pub async fn enqueue_append(&self, group: u64, entries: &[Entry<'_>]) -> Result<Durable> {
        if entries.is_empty() {
            return Err(Error::InvalidRequest {
                group,
                why: "empty append".into(),
            });
        }
        let mut ops = GroupOps::new(group);
        ops.entries = Cow::Borrowed(entries);
        self.queue(std::slice::from_ref(&ops)).await
    }

    /// Removes entries with index >= `index`.
    pub async fn truncate(&self, group: u64, index: u64) -> Result<()> {
        let mut b = WriteBatch::new();
        b.truncate(group, index);
        self.write(b).await
    }

    /// Removes entries with index < `index` (their segments are purged once unused).
    pub async fn compact(&self, group: u64, index: u64) -> Result<()> {
        let mut b = WriteBatch::new();
        b.compact(group, index);
        self.write(b).await
    }

    pub async fn set_hard_state(&self, group: u64, hs: HardState) -> Result<()> {
        let mut b = WriteBatch::new();
        b.hard_state(group, hs);
        self.write(b).await
    }

    /// Records that the group's log now starts after a snapshot at (`term`, `index`): entries
    /// up to `index` are dropped, later ones kept. A caller whose later entries conflict with
    /// the snapshot (Raft §7) truncates them too (in one [`WriteBatch`]).
    pub async fn install_snapshot(
        &self,
        group: u64,
        term: u64,
        index: u64,
        meta: &[u8],
    ) -> Result<()> {
        let mut b = WriteBatch::new();
        b.snapshot(group, term, index, meta.to_vec());
        self.write(b).await
    }

    /// Writes corrected copies of entries whose records failed their checksum (see
    /// [`WriteBatch::repair`]) and waits until they are durable. The caller checked each copy
    /// (its checksum on the wire, its term against [`ShardWal::term`]).
    pub async fn repair(&self, group: u64, entries: Vec<OwnedEntry>) -> Result<()> {
        let mut b = WriteBatch::new();
        for e in entries {
            b.repair(group, e);
        }
        self.write(b).await
    }

    pub async fn delete_group(&self, group: u64) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete_group(group);
        self.write(b).await
    }

    /// Checks a request, then places all its records in one forming batch after waiting for
    /// queue space. Nothing is queued unless every check passed.
    async fn queue(&self, ops: &[GroupOps<'_>]) -> Result<Durable> {
        let limits = {
            let i = self.inner.borrow();
            Limits {
                request_bytes_max: i.cfg.request_bytes_max(),
                records_max: BATCH_RECORDS_MAX as usize,
                payload_bytes_max: i.cfg.payload_bytes_max(),
            }
        };
        if let Some(e) = self.stop.error() {
            return Err(e);
        }
        // Checked against the accepted bounds before waiting for room (so an invalid request
        // fails at once), and again after only if other requests changed them meanwhile (a
        // plan depends on nothing else that can change).
        let (first, planned_at) = {
            let i = self.inner.borrow();
            (plan(ops, &i.bounds, &limits)?, i.bounds_epoch)
        };
        let need = first.bytes;
        let cap = self.inner.borrow().cfg.pending_bytes_max;
        let units = (need as u64).min(cap);
        self.space
            .acquire(units)
            .await
            .map_err(|_| Error::ShardStopped {
                shard: self.shard(),
                reason: "closed".into(),
            })?;
        let mut inner = self.inner.borrow_mut();
        let refuse = |inner: std::cell::RefMut<'_, Inner<S>>, e: Error| {
            drop(inner);
            self.space.signal(units);
            Err(e)
        };
        if let Some(e) = self.stop.error() {
            return refuse(inner, e);
        }
        if inner.closing {
            let e = Error::ShardStopped {
                shard: inner.shard,
                reason: "closing".into(),
            };
            return refuse(inner, e);
        }
        let plan = if inner.bounds_epoch == planned_at {
            first
        } else {
            match plan(ops, &inner.bounds, &limits) {
                Ok(p) => p,
                Err(e) => return refuse(inner, e),
            }
        };
        inner.bounds_epoch += 1;
        for (group, b) in &plan.bounds {
            match b {
                Some(b) => {
                    inner.bounds.insert(*group, *b);
                }
                None => {
                    inner.bounds.remove(group);
                }
            }
        }

        let need = plan.bytes;
        let count = plan.records.len();
        let batch_max = inner.cfg.batch_bytes_max as usize;
        let fits = inner
            .forming
            .back()
            .is_some_and(|f| f.builder.fits(need, count));
        if !fits {
            // An idle writer cuts this batch at once, so it only needs room for this request;
            // a busy one lets it fill up to batch_bytes_max while the current I/O completes.
            let room = if inner.writer_busy || !inner.forming.is_empty() {
                need.max(batch_max)
            } else {
                need
            };
            let size = align_up((BATCH_HEADER_RECORD_BYTES + room) as u64, BLOCK_BYTES) as usize;
            let buf = inner.storage.alloc_buf_for_overwrite(size);
            inner.forming.push_back(Forming {
                builder: BatchBuilder::new(buf),
                done: Completion::new(),
                units: 0,
            });
        }
        let Some(f) = inner.forming.back_mut() else {
            unreachable!("a forming batch was just pushed");
        };
        for rec in &plan.records {
            f.builder.push(rec);
        }
        let done = f.done.waiter();
        f.units += units;
        drop(inner);
        self.notify.notify();
        Ok(Durable {
            done,
            slot: None,
            stop: self.stop.clone(),
        })
    }

    /// Reads whole entries of a group from `lo` up to `hi` (exclusive), stopping before the
    /// entry that would take the payload bytes over `bytes_max` but always returning at least
    /// one entry when `lo < hi`. Each record's checksum and identity are verified.
    pub async fn read(
        &self,
        group: u64,
        lo: u64,
        hi: u64,
        bytes_max: u64,
    ) -> Result<Vec<OwnedEntry>> {
        let locs = {
            let inner = self.inner.borrow();
            let g = inner.table.group(group).ok_or_else(|| Error::Unavailable {
                group,
                index: lo,
                why: "unknown group".into(),
            })?;
            if lo < g.first_index() || hi > g.last_index() + 1 || lo > hi {
                return Err(Error::Unavailable {
                    group,
                    index: lo,
                    why: format!(
                        "range {lo}..{hi} outside written {}..={}",
                        g.first_index(),
                        g.last_index()
                    ),
                });
            }
            let mut locs = Vec::new();
            let mut bytes = 0u64;
            for i in lo..hi {
                let Some(l) = g.get(i) else { break };
                bytes += l.payload_len as u64;
                if bytes > bytes_max && !locs.is_empty() {
                    break;
                }
                locs.push((i, *l));
            }
            locs
        };
        let mut out = Vec::with_capacity(locs.len());
        // Coalesce neighbouring records of one segment into one read of at most 1 MiB.
        let mut i = 0;
        while i < locs.len() {
            let seg = locs[i].1.segment;
            let start = locs[i].1.offset;
            let mut j = i;
            let mut end = start + RECORD_HEADER_BYTES as u64 + locs[i].1.payload_len as u64;
            while j + 1 < locs.len() {
                let n = &locs[j + 1].1;
                let n_end = n.offset + RECORD_HEADER_BYTES as u64 + n.payload_len as u64;
                if n.segment != seg || n.offset < end || n_end - start > (1 << 20) {
                    break;
                }
                end = n_end;
                j += 1;
            }
            let (file, path) = self.segment_file(group, locs[i].0, seg).await?;
            let bytes = file
                .read_at(start, (end - start) as usize)
                .await
                .map_err(|e| Error::io(&path, e))?;
            for (index, loc) in &locs[i..=j] {
                let from = (loc.offset - start) as usize;
                let at = Location {
                    file: path.clone(),
                    offset: loc.offset,
                    group: Some(group),
                    index: Some(*index),
                };
                let rec = bytes.get(from..).ok_or_else(|| Error::Corruption {
                    at: at.clone(),
                    what: "short read".into(),
                })?;
                let (h, payload) = decode_record(rec).map_err(|e| Error::Corruption {
                    at: at.clone(),
                    what: e.to_string(),
                })?;
                let carries_entry =
                    RecordKind::from_u16(h.kind).is_ok_and(RecordKind::carries_entry);
                if !carries_entry || h.group != group || h.index != *index || h.term != loc.term {
                    return Err(Error::Corruption {
                        at,
                        what: format!("record is kind {} group {} index {} term {}, expected entry {group}/{index} term {}", h.kind, h.group, h.index, h.term, loc.term),
                    });
                }
                // `decode_record` checked the kind field of an entry record.
                let kind = EntryKind::from_aux(h.aux).map_err(|e| Error::Corruption {
                    at,
                    what: e.to_string(),
                })?;
                out.push(OwnedEntry {
                    term: h.term,
                    index: h.index,
                    kind,
                    data: payload.to_vec(),
                });
            }
            i = j + 1;
        }
        Ok(out)
    }

    /// The file of segment `id` holding entry `index` of `group`. A purge may delete the
    /// segment while this waits for the open: the handle is kept only if the segment is
    /// still listed, and the read fails as unavailable otherwise (its entries were dead).
    async fn segment_file(
        &self,
        group: u64,
        index: u64,
        id: u64,
    ) -> Result<(Rc<S::File>, PathBuf)> {
        let gone = || Error::Unavailable {
            group,
            index,
            why: format!("segment {id} was purged during the read"),
        };
        let (existing, storage, path) = {
            let inner = self.inner.borrow();
            let path = inner.dir.join(segment_file_name(id));
            if let Some(a) = inner.active.as_ref().filter(|a| a.id == id) {
                return Ok((a.file.clone(), path));
            }
            let Some(slot) = inner.segments.get(&id) else {
                return Err(gone());
            };
            (slot.clone(), inner.storage.clone(), path)
        };
        if let Some(f) = existing {
            return Ok((f, path));
        }
        let opened = storage.open(&path, false).await;
        let mut inner = self.inner.borrow_mut();
        if !inner.segments.contains_key(&id) {
            return Err(gone());
        }
        let f = Rc::new(opened.map_err(|e| Error::io(&path, e))?);
        match inner.segments.get_mut(&id) {
            // Keep the first handle if another read opened it meanwhile.
            Some(slot) => Ok((slot.get_or_insert(f).clone(), path)),
            None => Err(gone()),
        }
    }

    /// Waits until everything queued is durable, then stops the writer task.
    pub async fn close(&self) -> Result<()> {
        self.inner.borrow_mut().closing = true;
        self.notify.notify();
        let writer = self.writer.borrow_mut().take();
        if let Some(w) = writer {
            w.await;
        }
        hurry_prep(&self.inner);
        let spare = self.inner.borrow_mut().spare.take();
        let spare_file = match spare {
            Some(Spare::Preparing { task, .. }) => task.await.and_then(|r| r.ok()),
            Some(Spare::Ready { file, .. }) => Some(file),
            None => None,
        };
        if let Some(f) = spare_file {
            // A prepared spare stays on disk for the next run (recovery recognises it).
            let _ = f.close().await;
        }
        let background = std::mem::take(&mut self.inner.borrow_mut().background);
        for (_, t) in background {
            t.await;
        }
        let (active, failed) = {
            let mut inner = self.inner.borrow_mut();
            (inner.active.take(), inner.stop.reason())
        };
        if let Some(a) = active {
            if let Ok(file) = Rc::try_unwrap(a.file) {
                let path = self.inner.borrow().dir.join(segment_file_name(a.id));
                file.close().await.map_err(|e| Error::io(&path, e))?;
            }
        }
        match failed {
            Some(reason) => Err(Error::ShardStopped {
                shard: self.shard(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// Resolves when a submitted request is durable (fsynced), or with the error that stopped the
/// shard before it was. Requests resolve in submission order. Dropping it does not cancel the
/// write.
#[must_use = "a write is acknowledged only when its Durable resolves"]
pub struct Durable {
    /// The outcome of the batch the request was placed in (shared by its requests).
    done: Rc<BatchDone>,
    /// This Durable's waker slot in `done` once polled.
    slot: Option<usize>,
    stop: Rc<StopSignal>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("shard", &self.stop.shard())
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// The outcome if it is known, without waiting.
    pub fn try_result(&mut self) -> Option<Result<()>> {
        match self.done.peek()? {
            Finished::Done(r) => Some(r),
            Finished::Abandoned => Some(Err(self.stopped())),
        }
    }

    fn stopped(&self) -> Error {
        self.stop.error().unwrap_or_else(|| Error::ShardStopped {
            shard: self.stop.shard(),
            reason: "writer stopped".into(),
        })
    }
}

impl Future for Durable {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        match this.done.poll(cx, &mut this.slot) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Finished::Done(r)) => Poll::Ready(r),
            Poll::Ready(Finished::Abandoned) => Poll::Ready(Err(this.stopped())),
        }
    }
}
