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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures_channel::oneshot;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use crate::batch::{BatchBuilder, Op, BATCH_HEADER_RECORD_BYTES};
use crate::config::WalConfig;
use crate::constants::{BLOCK_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::error::{Error, Location, Result};
use crate::format::record::decode_record;
use crate::format::segment::{index_file_name, prep_file_name, segment_file_name};
use crate::format::{align_up, IndexEntry, RecordKind, SealedIndex, SegmentHeader};
use crate::group::{Bounds, GroupInfo, GroupTable, HardState, RecordMeta};
use crate::notify::Notify;
use crate::recovery::{now_unix_ms, recover_shard, RecoveryReport};
use crate::storage::{write_file_atomic, IoBuf, Storage, StorageFile};

/// An entry to append.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub term: u64,
    pub index: u64,
    pub data: &'a [u8],
}

/// An entry read back (checksum verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    pub term: u64,
    pub index: u64,
    pub data: Vec<u8>,
}

type Waiter = oneshot::Sender<Result<()>>;

struct Forming<B: IoBuf> {
    builder: BatchBuilder<B>,
    waiters: Vec<Waiter>,
    /// Backpressure units held by this batch, returned when it is written.
    units: u64,
}

struct Active<F> {
    id: u64,
    file: Rc<F>,
    /// Invariant: write_pos is block aligned and every byte before it belongs to a batch
    /// written earlier (or the header); the writer never writes below it.
    write_pos: u64,
    capacity: u64,
    index: Vec<IndexEntry>,
    first_batch_seq: u64,
    /// Batches and bytes written here; their ratio decides whether the next spare is
    /// zero-filled (see `WalConfig::prefill_batch_bytes_max`).
    batches: u64,
    batch_bytes: u64,
}

impl<S: Storage> Inner<S> {
    /// How far (in bytes) the spare's zero-fill may have got: twice the active segment's
    /// fill fraction plus some slack, so it is done by the time the segment is half full and
    /// each fdatasync meanwhile flushes only a little of it. No limit when hurried.
    fn prefill_allowance(&self, bytes: u64) -> u64 {
        if self.prep_hurry || self.closing || self.failed.is_some() {
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
enum Spare<F> {
    Ready {
        id: u64,
        file: F,
    },
    Preparing {
        id: u64,
        task: JoinHandle<Result<F>>,
    },
}

struct Inner<S: Storage> {
    storage: S,
    shard: u32,
    dir: PathBuf,
    cfg: WalConfig,
    /// What has been written (reads see it).
    table: GroupTable,
    /// What has been accepted (validation of new requests).
    bounds: HashMap<u64, Bounds>,
    forming: VecDeque<Forming<S::Buf>>,
    /// Invariant: durable_seq < next_seq; every batch with seq <= durable_seq is fsynced.
    next_seq: u64,
    durable_seq: u64,
    active: Option<Active<S::File>>,
    next_segment_id: u64,
    /// Segments on disk, oldest first, with a read handle once one was opened.
    segments: BTreeMap<u64, Option<Rc<S::File>>>,
    failed: Option<String>,
    closing: bool,
    /// True while the writer has a batch write or fdatasync in flight.
    writer_busy: bool,
    purge_wanted: bool,
    /// The next segment, prepared off the append path.
    spare: Option<Spare<S::File>>,
    /// The shard's chain record as last written (`crate::chain`).
    chain: Option<crate::format::chain::ChainRecord>,
    /// Average batch size of the last sealed segment (None before the first roll).
    last_avg_batch_bytes: Option<u64>,
    /// Wakes the spare's preparation after each batch write (it paces itself on the active
    /// segment's progress) and when it must finish now (`prep_hurry`).
    prep_notify: Rc<Notify>,
    prep_hurry: bool,
    /// Off-path work (sealed-index writes) that `close` must finish.
    background: Vec<(Rc<std::cell::Cell<bool>>, JoinHandle<()>)>,
    stats: WalStats,
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
}

/// The WAL of one shard. Not `Send`: it lives on its shard's executor.
pub struct ShardWal<S: Storage> {
    inner: Rc<RefCell<Inner<S>>>,
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
        let inner = Inner {
            storage,
            shard,
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            table: rec.table,
            bounds,
            forming: VecDeque::new(),
            next_seq: rec.next_batch_seq,
            durable_seq: rec.next_batch_seq - 1,
            active,
            next_segment_id: rec.next_segment_id,
            segments,
            failed: None,
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

    /// Appends entries of one group; resolves once they are durable. Entries must be
    /// consecutive; an index at or below the last one replaces the suffix from there
    /// (a Raft conflict). All entries of one call become durable together.
    pub async fn append(&self, group: u64, entries: &[Entry<'_>]) -> Result<()> {
        let rx = self.enqueue_append(group, entries).await?;
        wait(rx, &self.inner).await
    }

    /// Like [`append`](Self::append) but returns once the entries are queued; the returned
    /// receiver resolves when they are durable. Lets one caller keep many appends in flight.
    pub async fn enqueue_append(
        &self,
        group: u64,
        entries: &[Entry<'_>],
    ) -> Result<oneshot::Receiver<Result<()>>> {
        if entries.is_empty() {
            return Err(Error::InvalidRequest {
                group,
                why: "empty append".into(),
            });
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(Error::InvalidRequest {
                    group,
                    why: format!("entries not consecutive at index {}", pair[1].index),
                });
            }
        }
        let max = self.inner.borrow().cfg.payload_bytes_max();
        if let Some(e) = entries.iter().find(|e| e.data.len() as u64 > max) {
            return Err(Error::InvalidRequest {
                group,
                why: format!(
                    "entry {} is {} bytes, over the {max}-byte limit",
                    e.index,
                    e.data.len()
                ),
            });
        }
        let recs: Vec<(RecordKind, u64, u64, u64, &[u8])> = entries
            .iter()
            .map(|e| (RecordKind::Entry, e.term, e.index, 0, e.data))
            .collect();
        let first = entries[0].index;
        let count = entries.len() as u64;
        self.submit(group, &recs, move |b| b.append(first, count))
            .await
    }

    /// Removes entries with index >= `index`.
    pub async fn truncate(&self, group: u64, index: u64) -> Result<()> {
        self.submit_wait(group, &[(RecordKind::Truncate, 0, index, 0, &[])], |b| {
            b.truncate(index);
            Ok(())
        })
        .await
    }

    /// Removes entries with index < `index` (their segments are purged once unused).
    pub async fn compact(&self, group: u64, index: u64) -> Result<()> {
        self.submit_wait(group, &[(RecordKind::Compact, 0, index, 0, &[])], |b| {
            b.compact(index);
            Ok(())
        })
        .await
    }

    pub async fn set_hard_state(&self, group: u64, hs: HardState) -> Result<()> {
        self.submit_wait(
            group,
            &[(RecordKind::HardState, hs.term, hs.commit, hs.vote, &[])],
            |_| Ok(()),
        )
        .await
    }

    /// Records that the group's log now starts after a snapshot at (`term`, `index`): entries
    /// up to `index` are dropped, later ones kept. A caller whose later entries conflict with
    /// the snapshot (Raft §7) truncates them first.
    pub async fn install_snapshot(
        &self,
        group: u64,
        term: u64,
        index: u64,
        meta: &[u8],
    ) -> Result<()> {
        self.submit_wait(
            group,
            &[(RecordKind::SnapshotMeta, term, index, 0, meta)],
            move |b| {
                b.snapshot(index);
                Ok(())
            },
        )
        .await
    }

    pub async fn delete_group(&self, group: u64) -> Result<()> {
        self.submit_wait(group, &[(RecordKind::DeleteGroup, 0, 0, 0, &[])], |b| {
            *b = Bounds::new();
            Ok(())
        })
        .await
    }

    /// [`submit`](Self::submit), then waits until the records are durable.
    async fn submit_wait(
        &self,
        group: u64,
        recs: &[(RecordKind, u64, u64, u64, &[u8])],
        update_bounds: impl FnOnce(&mut Bounds) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let rx = self.submit(group, recs, update_bounds).await?;
        wait(rx, &self.inner).await
    }

    /// Places records of one request in a forming batch, after waiting for queue space.
    async fn submit(
        &self,
        group: u64,
        recs: &[(RecordKind, u64, u64, u64, &[u8])],
        update_bounds: impl FnOnce(&mut Bounds) -> std::result::Result<(), String>,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let need = BatchBuilder::<S::Buf>::bytes_for(recs.iter().map(|r| r.4.len()));
        let cap = self.inner.borrow().cfg.pending_bytes_max;
        let units = (need as u64).min(cap);
        if let Some(reason) = self.inner.borrow().failed.clone() {
            return Err(Error::ShardStopped {
                shard: self.shard(),
                reason,
            });
        }
        self.space
            .acquire(units)
            .await
            .map_err(|_| Error::ShardStopped {
                shard: self.shard(),
                reason: "closed".into(),
            })?;
        let mut inner = self.inner.borrow_mut();
        if let Some(reason) = inner.failed.clone() {
            drop(inner);
            self.space.signal(units);
            return Err(Error::ShardStopped {
                shard: self.shard(),
                reason,
            });
        }
        if inner.closing {
            drop(inner);
            self.space.signal(units);
            return Err(Error::ShardStopped {
                shard: self.shard(),
                reason: "closing".into(),
            });
        }
        // Validate against the accepted bounds before anything is queued.
        let bounds = inner.bounds.entry(group).or_default();
        let mut next = *bounds;
        if let Err(why) = update_bounds(&mut next) {
            drop(inner);
            self.space.signal(units);
            return Err(Error::InvalidRequest { group, why });
        }
        *inner.bounds.entry(group).or_default() = next;
        if recs[0].0 == RecordKind::DeleteGroup {
            inner.bounds.remove(&group);
        }

        let batch_max = inner.cfg.batch_bytes_max as usize;
        let fits = inner.forming.back().is_some_and(|f| f.builder.fits(need));
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
                waiters: Vec::new(),
                units: 0,
            });
        }
        let (tx, rx) = oneshot::channel();
        let Some(f) = inner.forming.back_mut() else {
            unreachable!("a forming batch was just pushed");
        };
        for (kind, term, index, aux, payload) in recs {
            f.builder.push(*kind, group, *term, *index, *aux, payload);
        }
        f.waiters.push(tx);
        f.units += units;
        drop(inner);
        self.notify.notify();
        Ok(rx)
    }

    /// Reads entries `lo..hi` of a group, verifying each record's checksum and identity.
    pub async fn read(&self, group: u64, lo: u64, hi: u64) -> Result<Vec<OwnedEntry>> {
        let locs = {
            let inner = self.inner.borrow();
            let g = inner
                .table
                .groups
                .get(&group)
                .ok_or_else(|| Error::Unavailable {
                    group,
                    index: lo,
                    why: "unknown group".into(),
                })?;
            if lo < g.first_index || hi > g.last_index() + 1 || lo > hi {
                return Err(Error::Unavailable {
                    group,
                    index: lo,
                    why: format!(
                        "range {lo}..{hi} outside written {}..={}",
                        g.first_index,
                        g.last_index()
                    ),
                });
            }
            (lo..hi)
                .filter_map(|i| g.get(i).map(|l| (i, *l)))
                .collect::<Vec<_>>()
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
            let (file, path) = self.segment_file(seg).await?;
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
                if h.kind != RecordKind::Entry as u16
                    || h.group != group
                    || h.index != *index
                    || h.term != loc.term
                {
                    return Err(Error::Corruption {
                        at,
                        what: format!("record is kind {} group {} index {} term {}, expected entry {group}/{index} term {}", h.kind, h.group, h.index, h.term, loc.term),
                    });
                }
                out.push(OwnedEntry {
                    term: h.term,
                    index: h.index,
                    data: payload.to_vec(),
                });
            }
            i = j + 1;
        }
        Ok(out)
    }

    async fn segment_file(&self, id: u64) -> Result<(Rc<S::File>, PathBuf)> {
        let (existing, storage, path) = {
            let inner = self.inner.borrow();
            let path = inner.dir.join(segment_file_name(id));
            if let Some(a) = inner.active.as_ref().filter(|a| a.id == id) {
                return Ok((a.file.clone(), path));
            }
            (
                inner.segments.get(&id).cloned().flatten(),
                inner.storage.clone(),
                path,
            )
        };
        if let Some(f) = existing {
            return Ok((f, path));
        }
        let f = Rc::new(
            storage
                .open(&path, false)
                .await
                .map_err(|e| Error::io(&path, e))?,
        );
        self.inner.borrow_mut().segments.insert(id, Some(f.clone()));
        Ok((f, path))
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
            (inner.active.take(), inner.failed.clone())
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

async fn wait<S: Storage>(
    rx: oneshot::Receiver<Result<()>>,
    inner: &Rc<RefCell<Inner<S>>>,
) -> Result<()> {
    match rx.await {
        Ok(r) => r,
        Err(_) => {
            let i = inner.borrow();
            Err(Error::ShardStopped {
                shard: i.shard,
                reason: i.failed.clone().unwrap_or_else(|| "writer stopped".into()),
            })
        }
    }
}

/// A batch being written and made durable by its own task.
struct Inflight {
    /// Writes the batch, then fdatasyncs the file. The error says which step failed.
    task: JoinHandle<Result<(), (bool, std::io::Error)>>,
    ops: Vec<Op>,
    waiters: Vec<Waiter>,
    units: u64,
    seq: u64,
    segment: u64,
    pos: u64,
    batch_bytes: u64,
    path: PathBuf,
}

/// The writer task of one shard (steps 2–5 of the module docs).
async fn writer_loop<S: Storage>(
    inner: Rc<RefCell<Inner<S>>>,
    notify: Rc<Notify>,
    space: Rc<Semaphore>,
) {
    // Invariant: batches in `inflight` have consecutive sequence numbers, oldest first, and
    // each was cut after the one before it; they are finished strictly in that order.
    let mut inflight: VecDeque<Inflight> = VecDeque::new();
    loop {
        let (has_work, closing, delay, front_small, inflight_max) = {
            let i = inner.borrow();
            let front_small = i
                .forming
                .front()
                .is_some_and(|f| (f.builder.len as u64) < i.cfg.batch_bytes_max)
                && i.forming.len() == 1;
            (
                !i.forming.is_empty(),
                i.closing,
                i.cfg.batch_delay_max,
                front_small,
                i.cfg.batches_inflight_max,
            )
        };
        if inner.borrow().failed.is_some() {
            break;
        }
        inner.borrow_mut().writer_busy = has_work || !inflight.is_empty();
        if !has_work || inflight.len() >= inflight_max {
            if let Some(b) = inflight.pop_front() {
                if finish_batch(&inner, b, &space).await.is_err() {
                    break;
                }
                purge_if_wanted(&inner).await;
                continue;
            }
            if closing {
                break;
            }
            notify.wait().await;
            continue;
        }
        if !delay.is_zero() && front_small && inflight.is_empty() {
            // Let a small batch collect more appends, within the configured bound.
            glommio::timer::sleep(delay).await;
        }
        match start_batch(&inner, &mut inflight, &space).await {
            Ok(Some(b)) => inflight.push_back(b),
            Ok(None) => {}
            Err(e) => {
                fail_stop(&inner, inflight.drain(..).collect(), e.to_string());
                break;
            }
        }
    }
    // Stopped or closing: finish what is in flight (acknowledging or failing its callers).
    while let Some(b) = inflight.pop_front() {
        if finish_batch(&inner, b, &space).await.is_err() {
            fail_stop(
                &inner,
                inflight.drain(..).collect(),
                "writer stopped".into(),
            );
            break;
        }
    }
    space.close();
}

/// Cuts the oldest forming batch (rolling the segment first if it does not fit, which waits
/// for every batch in flight) and starts its write + fdatasync task.
async fn start_batch<S: Storage>(
    inner: &Rc<RefCell<Inner<S>>>,
    inflight: &mut VecDeque<Inflight>,
    space: &Rc<Semaphore>,
) -> Result<Option<Inflight>> {
    let need = {
        let i = inner.borrow();
        let Some(f) = i.forming.front() else {
            return Ok(None);
        };
        align_up(f.builder.len as u64, BLOCK_BYTES)
    };
    let must_roll = {
        let i = inner.borrow();
        match &i.active {
            None => true,
            // Keep one block for the seal batch.
            Some(a) => a.write_pos + need + BLOCK_BYTES > a.capacity,
        }
    };
    if must_roll {
        // A segment is sealed only once everything in it is durable.
        while let Some(b) = inflight.pop_front() {
            finish_batch(inner, b, space).await?;
        }
        purge_if_wanted(inner).await;
        roll_segment(inner).await?;
    }
    let (buf, ops, waiters, units, seq, pos, file, segment, path, batch_bytes) = {
        let mut i = inner.borrow_mut();
        let Some(f) = i.forming.pop_front() else {
            return Ok(None);
        };
        let seq = i.next_seq;
        i.next_seq += 1;
        let durable = i.durable_seq;
        let (buf, ops, batch_bytes) = f.builder.finish(seq, durable);
        let dir = i.dir.clone();
        let Some(a) = i.active.as_mut() else {
            unreachable!("roll_segment leaves an active segment")
        };
        let pos = a.write_pos;
        assert!(pos.is_multiple_of(BLOCK_BYTES) && pos + batch_bytes <= a.capacity);
        // Invariant kept: nothing is ever written below write_pos again.
        a.write_pos = pos + batch_bytes;
        a.batches += 1;
        a.batch_bytes += batch_bytes;
        let path = dir.join(segment_file_name(a.id));
        (
            buf,
            ops,
            f.waiters,
            f.units,
            seq,
            pos,
            a.file.clone(),
            a.id,
            path,
            batch_bytes,
        )
    };
    let prep_notify = inner.borrow().prep_notify.clone();
    prep_notify.notify();
    let stats = inner.clone();
    // fdatasync covers every write to the file completed before it is issued, so running it
    // right after this batch's write makes this batch durable whatever the other tasks do.
    let task = glommio::spawn_local(async move {
        let started = std::time::Instant::now();
        file.write_at(buf, pos).await.map_err(|e| (false, e))?;
        let written = std::time::Instant::now();
        let r = file.sync_data().await.map_err(|e| (true, e));
        let mut i = stats.borrow_mut();
        i.stats.write_us += (written - started).as_micros() as u64;
        i.stats.fsync_us += written.elapsed().as_micros() as u64;
        r
    })
    .detach();
    Ok(Some(Inflight {
        task,
        ops,
        waiters,
        units,
        seq,
        segment,
        pos,
        batch_bytes,
        path,
    }))
}

/// Applies records just made durable to the group table and to the open segment's index.
fn apply_written<S: Storage>(i: &mut Inner<S>, segment: u64, batch_pos: u64, ops: &[Op]) {
    for op in ops {
        let offset = batch_pos + op.offset_in_batch as u64;
        let meta = RecordMeta {
            kind: op.kind,
            group: op.group,
            term: op.term,
            index: op.index,
            aux: op.aux,
            segment,
            offset,
            payload_len: op.payload_len,
            snapshot_meta: op.snapshot_meta.clone(),
        };
        if let Err(e) = i.table.apply(&meta) {
            // Requests were validated against the accepted bounds before being queued.
            panic!(
                "queued record does not apply: group {} index {}: {}",
                e.group, e.index, e.why
            );
        }
        if matches!(
            op.kind,
            RecordKind::Compact
                | RecordKind::SnapshotMeta
                | RecordKind::DeleteGroup
                | RecordKind::Truncate
        ) {
            i.purge_wanted = true;
        }
        if let Some(a) = i.active.as_mut().filter(|a| a.id == segment) {
            a.index.push(IndexEntry {
                kind: op.kind as u16,
                reserved: 0,
                payload_len: op.payload_len,
                offset,
                group: op.group,
                term: op.term,
                index: op.index,
                aux: op.aux,
            });
        }
    }
}

/// Waits for the oldest batch in flight to be durable, then applies it to the group table
/// (so the table only ever holds durable records, which is what makes purging on it safe)
/// and acknowledges its callers. A write or fdatasync error stops the shard.
async fn finish_batch<S: Storage>(
    inner: &Rc<RefCell<Inner<S>>>,
    b: Inflight,
    space: &Rc<Semaphore>,
) -> Result<()> {
    match b.task.await {
        Some(Ok(())) => {
            {
                let mut i = inner.borrow_mut();
                assert!(b.seq > i.durable_seq, "batches finish in sequence order");
                apply_written(&mut i, b.segment, b.pos, &b.ops);
                i.durable_seq = b.seq;
                i.stats.fsyncs += 1;
                i.stats.batches += 1;
                i.stats.batch_bytes += b.batch_bytes;
                i.stats.records += b.ops.len() as u64;
            }
            space.signal(b.units);
            for w in b.waiters {
                let _ = w.send(Ok(()));
            }
            Ok(())
        }
        other => {
            let shard = inner.borrow().shard;
            let (is_sync, reason) = match other {
                Some(Err((is_sync, e))) => (is_sync, e.to_string()),
                _ => (true, "write/fdatasync task cancelled".to_string()),
            };
            let err = if is_sync {
                Error::FsyncFailed {
                    shard,
                    path: b.path.clone(),
                    reason: reason.clone(),
                }
            } else {
                Error::io(&b.path, std::io::Error::other(reason.clone()))
            };
            tracing::error!(
                shard,
                "{} of {} failed: {reason}; stopping the shard (fail-stop, never retried)",
                if is_sync { "fdatasync" } else { "write" },
                b.path.display()
            );
            let msg = err.to_string();
            for w in b.waiters {
                let _ = w.send(Err(if is_sync {
                    Error::FsyncFailed {
                        shard,
                        path: b.path.clone(),
                        reason: reason.clone(),
                    }
                } else {
                    Error::io(&b.path, std::io::Error::other(reason.clone()))
                }));
            }
            fail_stop(inner, Vec::new(), msg);
            Err(err)
        }
    }
}

/// Marks the shard stopped and fails every waiting caller (forming batches and the batches
/// in flight handed over, whose outcome no longer matters: nothing after a failure is
/// acknowledged).
fn fail_stop<S: Storage>(inner: &Rc<RefCell<Inner<S>>>, inflight: Vec<Inflight>, reason: String) {
    let mut i = inner.borrow_mut();
    if i.failed.is_none() {
        tracing::error!(shard = i.shard, "shard stopped: {reason}");
        i.failed = Some(reason.clone());
    }
    let shard = i.shard;
    let forming: Vec<_> = i.forming.drain(..).collect();
    drop(i);
    let mut waiters: Vec<Waiter> = forming.into_iter().flat_map(|f| f.waiters).collect();
    for b in inflight {
        waiters.extend(b.waiters);
    }
    for w in waiters {
        let _ = w.send(Err(Error::ShardStopped {
            shard,
            reason: reason.clone(),
        }));
    }
}

/// Seals the active segment (seal batch + fdatasync + index written in the background) and
/// starts the spare prepared for the next one (checkpoint of every group's state + fdatasync).
async fn roll_segment<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) -> Result<()> {
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
        b.push(RecordKind::Seal, 0, 0, 0, next_id, &[]);
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
        write_pos: SEGMENT_HEADER_BYTES,
        capacity: cfg.segment_bytes,
        index: Vec::new(),
        first_batch_seq: first_seq,
        batches: 0,
        batch_bytes: 0,
    };

    // Checkpoint: restate every group's floor (compaction point), snapshot and hard state, so older
    // segments can be purged without losing them.
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
        }
        recs
    };
    if !checkpoint.is_empty() {
        let need = BatchBuilder::<S::Buf>::bytes_for(checkpoint.iter().map(|r| r.5.len()));
        let size = align_up((BATCH_HEADER_RECORD_BYTES + need) as u64, BLOCK_BYTES);
        let mut b = BatchBuilder::new(storage.alloc_buf(size as usize));
        for (kind, g, term, index, aux, payload) in &checkpoint {
            b.push(*kind, *g, *term, *index, *aux, payload);
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
fn start_prepare<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) {
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
            file.write_at(storage.alloc_buf(n as usize), pos)
                .await
                .map_err(io)?;
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
fn hurry_prep<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) {
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
async fn purge_if_wanted<S: Storage>(inner: &Rc<RefCell<Inner<S>>>) {
    let victims: Vec<u64> = {
        let mut i = inner.borrow_mut();
        if !i.purge_wanted || i.failed.is_some() {
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
        if let Err(e) = storage.remove_file(&wal).await {
            tracing::warn!("purge: could not remove {}: {e}", wal.display());
            return;
        }
        if storage.exists(&idx).await.unwrap_or(false) {
            let _ = storage.remove_file(&idx).await;
        }
        let mut i = inner.borrow_mut();
        i.segments.remove(id);
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
