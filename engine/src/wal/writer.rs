//! The writer task: cuts forming batches, writes and fdatasyncs them (up to
//! `batches_inflight_max` at once), finishes them in sequence order, and stops the shard on
//! the first write or fdatasync error (fail-stop).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use super::done::{Completion, Failure};
use super::segments::{purge_if_wanted, roll_segment};
use super::state::Inner;
use crate::batch::Op;
use crate::config::WalSync;
use crate::constants::BLOCK_BYTES;
use crate::error::Result;
use crate::format::{align_up, IndexEntry, RecordKind};
use crate::group::RecordMeta;
use crate::notify::Notify;
use crate::storage::{Storage, StorageFile};

/// A batch being written and made durable by its own task.
pub(super) struct Inflight {
    /// Writes the batch, then fdatasyncs the file. The error says which step failed.
    task: JoinHandle<Result<(), (bool, std::io::Error)>>,
    ops: Vec<Op>,
    done: Completion,
    units: u64,
    seq: u64,
    segment: u64,
    pos: u64,
    batch_bytes: u64,
    path: Rc<PathBuf>,
}

/// The writer task of one shard (steps 2–5 of the module docs).
pub(super) async fn writer_loop<S: Storage>(
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
        if inner.borrow().stop.is_stopped() {
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
    let (buf, ops, done, units, seq, pos, file, segment, path, batch_bytes) = {
        let mut i = inner.borrow_mut();
        let Some(f) = i.forming.pop_front() else {
            return Ok(None);
        };
        let seq = i.next_seq;
        i.next_seq += 1;
        let durable = i.durable_seq;
        let (buf, ops, batch_bytes) = f.builder.finish(seq, durable);
        let Some(a) = i.active.as_mut() else {
            unreachable!("roll_segment leaves an active segment")
        };
        let pos = a.write_pos;
        assert!(pos.is_multiple_of(BLOCK_BYTES) && pos + batch_bytes <= a.capacity);
        // Invariant kept: nothing is ever written below write_pos again.
        a.write_pos = pos + batch_bytes;
        a.batches += 1;
        a.batch_bytes += batch_bytes;
        let path = a.path.clone();
        (
            buf,
            ops,
            f.done,
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
    let sync = inner.borrow().cfg.sync;
    let task = glommio::spawn_local(async move {
        let started = std::time::Instant::now();
        match sync {
            // fdatasync covers every write to the file completed before it is issued, so
            // running it right after this batch's write makes this batch durable whatever
            // the other tasks do.
            WalSync::Fdatasync => {
                file.write_at(buf, pos).await.map_err(|e| (false, e))?;
                let written = std::time::Instant::now();
                let r = file.sync_data().await.map_err(|e| (true, e));
                let mut i = stats.borrow_mut();
                i.stats.write_us += (written - started).as_micros() as u64;
                let fsync_us = written.elapsed().as_micros() as u64;
                i.stats.fsync_us += fsync_us;
                i.stats.fsync_latency.observe(fsync_us);
                r
            }
            // One I/O: the write completes durable. Its failure is a durability failure
            // (fail-stop, never retried), and its time is the batch's time to durability,
            // which the fsync latency histogram reports in this mode.
            WalSync::Dsync => {
                let r = file.write_durable_at(buf, pos).await.map_err(|e| (true, e));
                let mut i = stats.borrow_mut();
                let us = started.elapsed().as_micros() as u64;
                i.stats.write_us += us;
                i.stats.fsync_latency.observe(us);
                r
            }
        }
    })
    .detach();
    Ok(Some(Inflight {
        task,
        ops,
        done,
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
                // A repair moves an entry out of its segment, which may leave it unused.
                | RecordKind::Repair
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
                i.stats.batch_size.observe(b.batch_bytes);
                i.stats.records += b.ops.len() as u64;
            }
            space.signal(b.units);
            b.done.complete(Ok(()));
            Ok(())
        }
        other => {
            let shard = inner.borrow().shard;
            let (is_sync, reason) = match other {
                Some(Err((is_sync, e))) => (is_sync, e.to_string()),
                _ => (true, "write/fdatasync task cancelled".to_string()),
            };
            let failure = if is_sync {
                Failure::Fsync {
                    shard,
                    path: b.path.to_path_buf(),
                    reason: reason.clone(),
                }
            } else {
                Failure::Write {
                    path: b.path.to_path_buf(),
                    reason: reason.clone(),
                }
            };
            let err = failure.error();
            tracing::error!(
                shard,
                "{} of {} failed: {reason}; stopping the shard (fail-stop, never retried)",
                if is_sync { "fdatasync" } else { "write" },
                b.path.display()
            );
            let msg = err.to_string();
            b.done.complete(Err(failure));
            fail_stop(inner, Vec::new(), msg);
            Err(err)
        }
    }
}

/// Marks the shard stopped and fails every waiting caller (forming batches and the batches
/// in flight handed over, whose outcome no longer matters: nothing after a failure is
/// acknowledged).
pub(super) fn fail_stop<S: Storage>(
    inner: &Rc<RefCell<Inner<S>>>,
    inflight: Vec<Inflight>,
    reason: String,
) {
    let mut i = inner.borrow_mut();
    if i.stop.stop(reason.clone()) {
        tracing::error!(shard = i.shard, "shard stopped: {reason}");
    }
    let shard = i.shard;
    let forming: Vec<_> = i.forming.drain(..).collect();
    drop(i);
    let batches = forming
        .into_iter()
        .map(|f| f.done)
        .chain(inflight.into_iter().map(|b| b.done));
    for done in batches {
        done.complete(Err(Failure::Stopped {
            shard,
            reason: reason.clone(),
        }));
    }
}
