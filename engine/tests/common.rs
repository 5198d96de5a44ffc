//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};

use tern_engine::storage::sim::SimStorage;
use tern_engine::{RecoveryMode, ShardWal, WalConfig};

/// Runs a future on a fresh single-threaded glommio executor with little locked memory.
pub fn run<T: 'static>(f: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .make()
        .expect("executor")
        .run(f)
}

pub fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 64 << 10,
        pending_bytes_max: 256 << 10,
        ..WalConfig::default()
    }
}

pub fn shard_dir() -> PathBuf {
    PathBuf::from("/data/shard-0")
}

pub fn quarantine() -> PathBuf {
    PathBuf::from("/data/quarantine")
}

pub async fn open(sim: &SimStorage, cfg: &WalConfig) -> tern_engine::Result<ShardWal<SimStorage>> {
    ShardWal::open(sim.clone(), 0, &shard_dir(), &quarantine(), cfg.clone()).await
}

pub async fn open_mode(
    sim: &SimStorage,
    cfg: &WalConfig,
    mode: RecoveryMode,
) -> tern_engine::Result<ShardWal<SimStorage>> {
    let mut c = cfg.clone();
    c.recovery_mode = mode;
    ShardWal::open(sim.clone(), 0, &shard_dir(), &quarantine(), c).await
}

/// Deterministic payload for (group, index, term), so a read-back can be checked exactly.
pub fn payload(group: u64, index: u64, term: u64, len: usize) -> Vec<u8> {
    let mut x = group.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ term;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn segment_files(sim: &SimStorage) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = sim
        .list_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Segment files that hold at least one batch (a prepared spare is a `.wal` file too, with a
/// header and nothing after it).
pub fn used_segment_files(sim: &SimStorage) -> Vec<PathBuf> {
    segment_files(sim)
        .into_iter()
        .filter(|p| {
            sim.read_current(p)
                .is_some_and(|b| b.len() > 8192 && b[4096..4160].iter().any(|&x| x != 0))
        })
        .collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// A model of the durable state, shared by the crash, model and corruption tests.
// ---------------------------------------------------------------------------------------------

use std::collections::{BTreeMap, VecDeque};

use tern_engine::storage::sim::CrashMode;
use tern_engine::{Durable, Entry, HardState, OwnedEntry, WriteBatch};

/// Length of entry (group, index, term): deterministic, so the model stores only the term and
/// a read-back is checked byte for byte. Mostly small, sometimes large enough to fill batches
/// and roll 1 MiB segments quickly.
pub fn entry_len(group: u64, index: u64, term: u64) -> usize {
    let h = payload(group ^ 0x55, index, term, 8);
    let r = u64::from_le_bytes(h.try_into().unwrap());
    if r.is_multiple_of(13) {
        (8 << 10) | ((r >> 8) as usize % (24 << 10))
    } else {
        (r >> 8) as usize % 1500
    }
}

pub fn entry_data(group: u64, index: u64, term: u64) -> Vec<u8> {
    payload(group, index, term, entry_len(group, index, term))
}

/// One logical operation on the WAL, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOp {
    /// Entries `first..first+count`, all with `term`; data is [`entry_data`].
    Append {
        group: u64,
        first: u64,
        count: u64,
        term: u64,
    },
    Truncate {
        group: u64,
        index: u64,
    },
    Compact {
        group: u64,
        index: u64,
    },
    HardState {
        group: u64,
        hs: HardState,
    },
    /// One `WriteBatch`: its ops apply together (all or none), in this order, which is the
    /// batch's own order (per group: truncate, entries, compact, hard state).
    Batch(Vec<ModelOp>),
}

/// State of one group as the model sees it: mirrors `GroupTable::apply` of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupModel {
    pub first: u64,
    /// Term of entry `first + i`.
    pub terms: VecDeque<u64>,
    pub hs: Option<HardState>,
}

impl Default for GroupModel {
    fn default() -> Self {
        GroupModel {
            first: 1,
            terms: VecDeque::new(),
            hs: None,
        }
    }
}

impl GroupModel {
    pub fn last(&self) -> u64 {
        self.first + self.terms.len() as u64 - 1
    }

    /// A group the engine may legitimately forget (nothing in it, nothing restated).
    fn is_trivial(&self) -> bool {
        self.terms.is_empty() && self.first == 1 && self.hs.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub groups: BTreeMap<u64, GroupModel>,
}

impl Model {
    pub fn group(&self, g: u64) -> GroupModel {
        self.groups.get(&g).cloned().unwrap_or_default()
    }

    pub fn apply(&mut self, op: &ModelOp) {
        match *op {
            ModelOp::Batch(ref ops) => {
                for op in ops {
                    self.apply(op);
                }
            }
            ModelOp::Append {
                group,
                first,
                count,
                term,
            } => {
                let g = self.groups.entry(group).or_default();
                assert!(first >= g.first, "model: append below first index: {op:?}");
                if g.terms.is_empty() {
                    g.first = first;
                } else {
                    assert!(first <= g.last() + 1, "model: gap: {op:?}");
                    g.terms.truncate((first - g.first) as usize);
                }
                g.terms.extend(std::iter::repeat_n(term, count as usize));
            }
            ModelOp::Truncate { group, index } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    let keep = index.saturating_sub(g.first) as usize;
                    g.terms.truncate(keep);
                }
            }
            ModelOp::Compact { group, index } => {
                let g = self.groups.entry(group).or_default();
                if index > g.first {
                    let drop = ((index - g.first) as usize).min(g.terms.len());
                    g.terms.drain(..drop);
                    g.first = index;
                }
            }
            ModelOp::HardState { group, hs } => {
                self.groups.entry(group).or_default().hs = Some(hs);
            }
        }
    }

    /// The model without groups the engine may forget.
    pub fn normalized(&self) -> BTreeMap<u64, GroupModel> {
        self.groups
            .iter()
            .filter(|(_, g)| !g.is_trivial())
            .map(|(k, g)| (*k, g.clone()))
            .collect()
    }
}

/// Reads back every group of `wal`, checking each entry's bytes against [`entry_data`].
/// An entry whose bytes are not exactly what was written for its (group, index, term) is an
/// error: a read must never return a corrupt or invented payload.
pub async fn observe(wal: &ShardWal<SimStorage>) -> Result<BTreeMap<u64, GroupModel>, String> {
    let mut out = BTreeMap::new();
    for info in wal.groups() {
        let g = info.group;
        let entries = wal
            .read(g, info.first_index, info.last_index + 1, u64::MAX)
            .await
            .map_err(|e| format!("read of group {g} failed: {e}"))?;
        if entries.len() as u64 != info.last_index + 1 - info.first_index {
            return Err(format!(
                "group {g}: read returned {} entries",
                entries.len()
            ));
        }
        let mut terms = VecDeque::new();
        for (k, e) in entries.iter().enumerate() {
            let want_index = info.first_index + k as u64;
            if e.index != want_index {
                return Err(format!("group {g}: entry {k} has index {}", e.index));
            }
            if e.data != entry_data(g, e.index, e.term) {
                return Err(format!(
                    "group {g} index {} term {}: payload is not what was written",
                    e.index, e.term
                ));
            }
            terms.push_back(e.term);
        }
        let gm = GroupModel {
            first: info.first_index,
            terms,
            hs: info.hard_state,
        };
        if !gm.is_trivial() {
            out.insert(g, gm);
        }
    }
    Ok(out)
}

/// Checks that `observed` equals the acknowledged model with some prefix (in queue order) of
/// the unacknowledged ops applied; returns the model that matched.
pub fn match_prefix(
    observed: &BTreeMap<u64, GroupModel>,
    acked: &Model,
    unacked: &[ModelOp],
) -> Result<(usize, Model), String> {
    let mut m = acked.clone();
    if &m.normalized() == observed {
        return Ok((0, m));
    }
    for (k, op) in unacked.iter().enumerate() {
        m.apply(op);
        if &m.normalized() == observed {
            return Ok((k + 1, m));
        }
    }
    Err(format!(
        "recovered state matches no prefix of the {} unacknowledged ops\n  recovered: {}\n  acked model: {}\n  unacked: {unacked:?}",
        unacked.len(),
        describe(observed),
        describe(&acked.normalized()),
    ))
}

pub fn describe(m: &BTreeMap<u64, GroupModel>) -> String {
    m.iter()
        .map(|(g, s)| {
            format!(
                "g{g}[{}..={} hs={:?} terms={:?}]",
                s.first,
                s.last(),
                s.hs,
                s.terms.iter().collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ops issued to a WAL, in queue order, with what became of each.
#[derive(Default)]
pub struct Tracker {
    pub ops: Vec<(ModelOp, Slot)>,
}

pub enum Slot {
    /// Queued; resolves when durable.
    Pending(Durable),
    Acked,
    /// Failed or never resolved: may or may not have reached the disk.
    Unacked,
}

impl Tracker {
    /// Queues an append without waiting; `Err` means it was not queued (nothing recorded).
    pub async fn enqueue_append(
        &mut self,
        wal: &ShardWal<SimStorage>,
        group: u64,
        first: u64,
        count: u64,
        term: u64,
    ) -> tern_engine::Result<()> {
        let datas: Vec<Vec<u8>> = (first..first + count)
            .map(|i| entry_data(group, i, term))
            .collect();
        let entries: Vec<Entry<'_>> = datas
            .iter()
            .enumerate()
            .map(|(k, d)| Entry {
                kind: tern_engine::EntryKind::Normal,
                term,
                index: first + k as u64,
                data: d,
            })
            .collect();
        let rx = wal.enqueue_append(group, &entries).await?;
        self.ops.push((
            ModelOp::Append {
                group,
                first,
                count,
                term,
            },
            Slot::Pending(rx),
        ));
        Ok(())
    }

    /// Queues `ops` as one `WriteBatch` without waiting; `Err` means nothing was queued
    /// (nothing recorded). `ops` must be in the batch's order within each group (truncate,
    /// append, compact, hard state) with at most one of each per group.
    pub async fn submit(
        &mut self,
        wal: &ShardWal<SimStorage>,
        ops: Vec<ModelOp>,
    ) -> tern_engine::Result<()> {
        let mut b = WriteBatch::new();
        for op in &ops {
            match *op {
                ModelOp::Append {
                    group,
                    first,
                    count,
                    term,
                } => {
                    b.append(
                        group,
                        (first..first + count).map(|index| OwnedEntry {
                            term,
                            index,
                            kind: tern_engine::EntryKind::Normal,
                            data: entry_data(group, index, term),
                        }),
                    );
                }
                ModelOp::Truncate { group, index } => {
                    b.truncate(group, index);
                }
                ModelOp::Compact { group, index } => {
                    b.compact(group, index);
                }
                ModelOp::HardState { group, hs } => {
                    b.hard_state(group, hs);
                }
                ModelOp::Batch(_) => panic!("batches do not nest"),
            }
        }
        let rx = wal.submit(b).await?;
        self.ops.push((ModelOp::Batch(ops), Slot::Pending(rx)));
        Ok(())
    }

    /// Runs a control op to completion. An error leaves it unacknowledged (it may have been
    /// queued before the shard failed).
    pub async fn control(
        &mut self,
        wal: &ShardWal<SimStorage>,
        op: ModelOp,
    ) -> tern_engine::Result<()> {
        let r = match op {
            ModelOp::Truncate { group, index } => wal.truncate(group, index).await,
            ModelOp::Compact { group, index } => wal.compact(group, index).await,
            ModelOp::HardState { group, hs } => wal.set_hard_state(group, hs).await,
            ModelOp::Append { .. } | ModelOp::Batch(_) => {
                panic!("appends and batches are queued, not run as control ops")
            }
        };
        let ok = r.is_ok();
        // The control op waited for itself, so every op queued before it is resolved too.
        self.ops
            .push((op, if ok { Slot::Acked } else { Slot::Unacked }));
        r
    }

    /// Waits for every pending op; returns the first error.
    pub async fn settle(&mut self) -> tern_engine::Result<()> {
        let mut first_err = None;
        for (_, slot) in self.ops.iter_mut() {
            if let Slot::Pending(rx) = slot {
                let r = rx.await;
                *slot = if r.is_ok() {
                    Slot::Acked
                } else {
                    Slot::Unacked
                };
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Resolves pending slots without waiting (after the writer stopped): not resolved yet =
    /// unacknowledged.
    pub fn resolve_now(&mut self) {
        for (_, slot) in self.ops.iter_mut() {
            if let Slot::Pending(rx) = slot {
                *slot = match rx.try_result() {
                    Some(Ok(())) => Slot::Acked,
                    _ => Slot::Unacked,
                };
            }
        }
    }

    /// Splits into (acked ops, unacked ops), asserting that the acknowledged ops are a prefix
    /// of the queue: the WAL acknowledges in queue order.
    pub fn split(&mut self) -> (Vec<ModelOp>, Vec<ModelOp>) {
        self.resolve_now();
        let mut acked = Vec::new();
        let mut unacked = Vec::new();
        for (op, slot) in self.ops.drain(..) {
            match slot {
                Slot::Acked => {
                    assert!(
                        unacked.is_empty(),
                        "op {op:?} acknowledged after an earlier op was not: acks out of queue order"
                    );
                    acked.push(op);
                }
                _ => unacked.push(op),
            }
        }
        (acked, unacked)
    }
}

/// Cuts the power under a running WAL and lets its tasks notice, so that nothing they do
/// later can touch the "rebooted" disk. Every pending op resolves (Ok only if it was
/// durable before the cut).
pub async fn power_off(sim: &SimStorage, wal: ShardWal<SimStorage>) {
    sim.set_power_cut_after(Some(0));
    let _ = wal.close().await;
    drop(wal);
}

/// Cuts the power, crashes the disk and returns a description for failure messages.
pub async fn crash(
    sim: &SimStorage,
    wal: ShardWal<SimStorage>,
    seed: u64,
    mode: CrashMode,
) -> String {
    power_off(sim, wal).await;
    let r = sim.crash(seed, mode);
    format!("{mode:?} seed {seed}: {r:?}")
}

pub const CRASH_MODES: [CrashMode; 4] = [
    CrashMode::LoseAllUnsynced,
    CrashMode::KeepAllUnsynced,
    CrashMode::RandomUnsynced,
    CrashMode::TornWrites,
];

/// Test-size knob: `TERN_TEST_CASES` (default `default`).
pub fn cases(default: u64) -> u64 {
    std::env::var("TERN_TEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Segment layout and hand-made batches, for the recovery table and corruption tests.
// ---------------------------------------------------------------------------------------------

use tern_engine::format::{RecordHeader, RecordKind};

/// One batch of a segment as the scanner saw it.
#[derive(Debug, Clone)]
pub struct BatchLayout {
    pub offset: u64,
    pub seq: u64,
    pub durable_seq: u64,
    /// Records after the batch header: (offset, header).
    pub records: Vec<(u64, RecordHeader)>,
    /// End of the last record (padding runs from here to the next block boundary).
    pub records_end: u64,
}

/// Scans a segment and returns its batches and the scan result.
pub async fn layout(
    sim: &SimStorage,
    path: &Path,
) -> (Vec<BatchLayout>, tern_engine::scan::SegmentScan) {
    let mut batches: Vec<BatchLayout> = Vec::new();
    let scan = tern_engine::scan::scan_segment(sim, path, None, false, |r| {
        let end = r.offset + r.header.record_bytes();
        if r.header.kind == RecordKind::BatchHeader as u16 {
            batches.push(BatchLayout {
                offset: r.offset,
                seq: r.header.batch_seq,
                durable_seq: r.header.aux,
                records: Vec::new(),
                records_end: end,
            });
        } else {
            let b = batches.last_mut().expect("record before its batch header");
            b.records.push((r.offset, r.header));
            b.records_end = end;
        }
    })
    .await
    .expect("scan");
    (batches, scan)
}

/// A record for [`craft_batch`]: (kind, group, term, index, aux, payload).
pub type RawRecord = (RecordKind, u64, u64, u64, u64, Vec<u8>);

/// Encodes a valid batch as the writer would, for poking into a segment.
pub fn craft_batch(sim: &SimStorage, seq: u64, durable_seq: u64, recs: &[RawRecord]) -> Vec<u8> {
    use tern_engine::storage::{IoBuf, Storage};
    let need: usize = recs.iter().map(|r| 64 + r.5.len()).sum::<usize>() + 80;
    let size = need.div_ceil(4096) * 4096;
    let mut b = tern_engine::batch::BatchBuilder::new(sim.alloc_buf(size));
    for (kind, g, term, index, aux, payload) in recs {
        b.push(&tern_engine::batch::NewRecord {
            kind: *kind,
            group: *g,
            term: *term,
            index: *index,
            aux: *aux,
            payload,
        });
    }
    let (buf, _, _) = b.finish(seq, durable_seq);
    buf.as_bytes().to_vec()
}

/// Appends entries `from..=to` of `group` (term 1) one call at a time, each acknowledged
/// before the next is queued, so every batch proves the one before it durable.
pub async fn fill(wal: &ShardWal<SimStorage>, model: &mut Model, group: u64, from: u64, to: u64) {
    for i in from..=to {
        let data = entry_data(group, i, 1);
        wal.append(
            group,
            &[Entry {
                kind: tern_engine::EntryKind::Normal,
                term: 1,
                index: i,
                data: &data,
            }],
        )
        .await
        .unwrap();
        model.apply(&ModelOp::Append {
            group,
            first: i,
            count: 1,
            term: 1,
        });
    }
}

pub fn wal_path(id: u64) -> PathBuf {
    shard_dir().join(format!("{id:020}.wal"))
}

pub fn idx_path(id: u64) -> PathBuf {
    shard_dir().join(format!("{id:020}.idx"))
}
