//! A rebuild's install is atomic at every crash point (docs/replication.md, section 3), on the
//! engine's simulated disk.
//!
//! A wiped member (rebuilding) installs a leader's snapshot, then three chunks of committed
//! entries from the recovery stream through `RawNode::append_committed`. Each `Ready` becomes
//! one engine write batch the way the shard's Ready loop builds it (`Shard::process_readies`:
//! snapshot record and a truncation after it, entries, hard state, in one `WriteBatch`), and
//! the next step waits until it is durable. The power is cut after every mutating storage
//! operation of that run in turn (every write and fsync: before and after the snapshot record,
//! inside a chunk's multi-block write, between a chunk's entries and its hard state); the disk
//! then loses what was not synced (or tears it at sector granularity). After recovery the
//! group must be in exactly one of the states a crash-free run passes through (nothing, the
//! snapshot, the snapshot plus the first k chunks, each with the commit index its batch
//! carried), at least the last one made durable before the cut, and the member must restart
//! from it, resuming after its last durable index.

use std::path::Path;
use std::rc::Rc;

use tern_engine::storage::sim::{CrashMode, SimStorage};
use tern_engine::{OwnedEntry, ShardWal, WalConfig, WriteBatch};
use tern_raft::message::{ConfState, Entry, EntryKind, Message, MessageBody, SnapshotMeta};
use tern_raft::{Config as RaftConfig, RawNode};

use super::log_store::{engine_kind, EngineLog};
use super::snapshot_meta::GroupSnapshot;

const GROUP: u64 = 7;
const SNAPSHOT_INDEX: u64 = 20;
const SNAPSHOT_TERM: u64 = 2;
/// The last index of each chunk the member pulls; the server's commit is the last one.
const CHUNK_ENDS: [u64; 3] = [27, 41, 60];
const LEADER_TERM: u64 = 3;

fn wal_config() -> WalConfig {
    WalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 64 << 10,
        pending_bytes_max: 512 << 10,
        ..WalConfig::default()
    }
}

async fn open(sim: &SimStorage) -> Result<Rc<ShardWal<SimStorage>>, String> {
    ShardWal::open(
        sim.clone(),
        0,
        Path::new("/data/shard-0"),
        Path::new("/data/quarantine"),
        wal_config(),
    )
    .await
    .map(Rc::new)
    .map_err(|e| format!("wal open: {e}"))
}

fn voters() -> ConfState {
    ConfState::with_voters(&[1, 2, 3])
}

/// The server's committed entry at `index`: terms 2 then 3, sizes from a few bytes to several
/// disk blocks, so that chunks span blocks and batches.
fn server_entry(index: u64) -> Entry {
    let term = if index <= 33 { 2 } else { 3 };
    let len = (index as usize * 97) % 5000 + 1;
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: (0..len).map(|i| (i as u64 ^ index) as u8).collect(),
    }
}

fn snapshot_message() -> Message {
    let data = b"partition state at 20".to_vec();
    Message {
        from: 1,
        to: 3,
        term: LEADER_TERM,
        body: MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: SNAPSHOT_INDEX,
                term: SNAPSHOT_TERM,
                conf: voters(),
                size_bytes: data.len() as u64,
            },
            offset: 0,
            data,
        },
    }
}

fn member(wal: Rc<ShardWal<SimStorage>>) -> Result<RawNode<EngineLog<SimStorage>>, String> {
    let log = EngineLog::open(wal, GROUP, voters(), 1 << 20).map_err(|e| e.to_string())?;
    let mut cfg = RaftConfig::new(3);
    cfg.seed = 3;
    RawNode::new(cfg, log).map_err(|e| e.to_string())
}

/// Takes the member's `Ready`, writes it as one batch (as the shard's Ready loop does) and
/// waits until it is durable.
async fn persist(
    raw: &mut RawNode<EngineLog<SimStorage>>,
    wal: &ShardWal<SimStorage>,
) -> Result<(), String> {
    let rd = raw.ready();
    let mut batch = WriteBatch::new();
    if let Some(snap) = &rd.snapshot {
        let meta = GroupSnapshot {
            conf: snap.meta.conf.clone(),
            data: snap.data.clone(),
        }
        .encode();
        batch.snapshot(GROUP, snap.meta.term, snap.meta.index, meta);
        batch.truncate(GROUP, snap.meta.index + 1);
        raw.storage_mut().cache.evict_from(snap.meta.index + 1);
    }
    if !rd.entries.is_empty() {
        raw.storage_mut().cache.insert_written(&rd.entries);
        batch.append(
            GROUP,
            rd.entries.iter().map(|e| OwnedEntry {
                term: e.term,
                index: e.index,
                kind: engine_kind(e.kind),
                data: e.data.clone(),
            }),
        );
    }
    if let Some(hs) = rd.hard_state {
        batch.hard_state(
            GROUP,
            tern_engine::HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            },
        );
    }
    if !batch.is_empty() {
        let durable = wal.submit(batch).await.map_err(|e| e.to_string())?;
        durable.await.map_err(|e| e.to_string())?;
    }
    if rd.snapshot.is_some() {
        raw.storage_mut()
            .refresh_snapshot()
            .map_err(|e| e.to_string())?;
    }
    raw.on_persisted(rd.persist_ack);
    Ok(())
}

/// The install: the snapshot, then the chunks. Counts in `durable` the steps whose batch was
/// durable before anything failed.
async fn install(wal: Rc<ShardWal<SimStorage>>, durable: &mut usize) -> Result<(), String> {
    let mut raw = member(wal.clone())?;
    raw.set_rebuilding();
    raw.step(snapshot_message()).map_err(|e| e.to_string())?;
    persist(&mut raw, &wal).await?;
    *durable += 1;
    let server_commit = CHUNK_ENDS[CHUNK_ENDS.len() - 1];
    let mut prev = SNAPSHOT_INDEX;
    for end in CHUNK_ENDS {
        let entries: Vec<Entry> = (prev + 1..=end).map(server_entry).collect();
        let prev_term = if prev == SNAPSHOT_INDEX {
            SNAPSHOT_TERM
        } else {
            server_entry(prev).term
        };
        raw.append_committed(prev, prev_term, &entries, server_commit)
            .map_err(|e| e.to_string())?;
        persist(&mut raw, &wal).await?;
        *durable += 1;
        prev = end;
    }
    Ok(())
}

/// What the engine holds of the group: snapshot point, hard state (term, commit), entries.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupState {
    snapshot: Option<(u64, u64)>,
    hard_state: Option<(u64, u64)>,
    entries: Vec<(u64, u64, Vec<u8>)>,
}

async fn observe(wal: &ShardWal<SimStorage>) -> Result<GroupState, String> {
    let snapshot = wal.snapshot(GROUP).map(|s| (s.index, s.term));
    let hard_state = wal.hard_state(GROUP).map(|hs| (hs.term, hs.commit));
    let (first, last) = (wal.first_index(GROUP), wal.last_index(GROUP));
    let entries = if wal.group(GROUP).is_none() || last < first {
        Vec::new()
    } else {
        wal.read(GROUP, first, last + 1, u64::MAX)
            .await
            .map_err(|e| format!("read {first}..={last}: {e}"))?
            .into_iter()
            .map(|e| (e.index, e.term, e.data))
            .collect()
    };
    Ok(GroupState {
        snapshot,
        hard_state,
        entries,
    })
}

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .make()
        .expect("executor")
        .run(f)
}

/// The states a crash-free install passes through, in order (before it, after each step),
/// and the disk operations it takes.
async fn reference() -> Result<(Vec<GroupState>, u64, u64), String> {
    let sim = SimStorage::new();
    let wal = open(&sim).await?;
    let base_ops = sim.mutating_ops();
    let mut states = vec![observe(&wal).await?];
    let mut raw = member(wal.clone())?;
    raw.set_rebuilding();
    raw.step(snapshot_message()).map_err(|e| e.to_string())?;
    persist(&mut raw, &wal).await?;
    states.push(observe(&wal).await?);
    let mut prev = SNAPSHOT_INDEX;
    for end in CHUNK_ENDS {
        let entries: Vec<Entry> = (prev + 1..=end).map(server_entry).collect();
        let prev_term = if prev == SNAPSHOT_INDEX {
            SNAPSHOT_TERM
        } else {
            server_entry(prev).term
        };
        raw.append_committed(prev, prev_term, &entries, CHUNK_ENDS[2])
            .map_err(|e| e.to_string())?;
        persist(&mut raw, &wal).await?;
        states.push(observe(&wal).await?);
        prev = end;
    }
    let total = sim.mutating_ops();
    drop(raw);
    wal.close().await.map_err(|e| e.to_string())?;
    Ok((states, base_ops, total))
}

/// Cuts the power after `point` operations of the install, crashes, recovers, and returns
/// which reference state the group is in.
async fn crash_at(
    point: u64,
    seed: u64,
    mode: CrashMode,
    states: Vec<GroupState>,
) -> Result<(), String> {
    let sim = SimStorage::new();
    let wal = open(&sim).await?;
    sim.set_power_cut_after(Some(point));
    let mut durable = 0;
    let _ = install(wal.clone(), &mut durable).await;
    sim.set_power_cut_after(Some(0));
    let _ = wal.close().await;
    drop(wal);
    let report = sim.crash(seed, mode);
    let what = format!("cut after {point} ops, {mode:?} seed {seed}: {report:?}");
    let wal = open(&sim).await.map_err(|e| format!("{what}: {e}"))?;
    let observed = observe(&wal).await.map_err(|e| format!("{what}: {e}"))?;
    let Some(at) = states.iter().position(|s| *s == observed) else {
        return Err(format!(
            "{what}: the group is in no state of the install (a mix): {observed:?}"
        ));
    };
    if at < durable {
        return Err(format!(
            "{what}: step {durable} was durable but the group is back at state {at}"
        ));
    }
    if at > durable + 1 {
        return Err(format!(
            "{what}: state {at} is past the one step in flight ({durable} durable)"
        ));
    }
    // The member restarts from it: its log ends at the state's last index, committed, and
    // a resumed stream asks from the next one.
    let raw = member(wal.clone()).map_err(|e| format!("{what}: restart: {e}"))?;
    let last = observed
        .entries
        .last()
        .map(|e| e.0)
        .or(observed.snapshot.map(|s| s.0))
        .unwrap_or(0);
    if raw.last_index() != last || raw.commit() != last {
        return Err(format!(
            "{what}: restarted at last {} commit {}, expected both {last}",
            raw.last_index(),
            raw.commit()
        ));
    }
    drop(raw);
    let _ = wal.close().await;
    Ok(())
}

#[test]
fn a_rebuild_install_is_atomic_at_every_write_and_fsync() {
    let (states, base_ops, total) = run(reference()).expect("crash-free install");
    assert_eq!(states.len(), 2 + CHUNK_ENDS.len());
    assert!(
        states.windows(2).all(|w| w[0] != w[1]),
        "every step changes the group's durable state"
    );
    let ops = total - base_ops;
    assert!(ops >= 10, "install too small to test: {ops} ops");
    let seeds: u64 = std::env::var("TERN_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut points = 0;
    for point in 0..=ops {
        let mut runs = vec![
            (0, CrashMode::LoseAllUnsynced),
            (0, CrashMode::KeepAllUnsynced),
        ];
        runs.extend((0..seeds).map(|s| (s, CrashMode::TornWrites)));
        runs.extend((0..seeds).map(|s| (s, CrashMode::RandomUnsynced)));
        for (seed, mode) in runs {
            let states = states.clone();
            if let Err(e) = run(crash_at(point, seed, mode, states)) {
                panic!("{e}");
            }
            points += 1;
        }
    }
    eprintln!("{points} crash points checked over {ops} install ops");
}
