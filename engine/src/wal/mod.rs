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

mod segments;
mod state;
mod writer;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures_channel::oneshot;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use crate::batch::{BatchBuilder, BATCH_HEADER_RECORD_BYTES};
use crate::config::WalConfig;
use crate::constants::{BLOCK_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::error::{Error, Location, Result};
use crate::format::record::decode_record;
use crate::format::segment::segment_file_name;
use crate::format::{align_up, RecordKind, SegmentHeader};
use crate::group::{Bounds, GroupInfo, HardState};
use crate::notify::Notify;
use crate::recovery::{now_unix_ms, recover_shard, RecoveryReport};
use crate::storage::{IoBuf, Storage, StorageFile};

use segments::{hurry_prep, start_prepare, Spare};
use state::{Active, Forming, Inner};
use writer::writer_loop;

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
