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

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
