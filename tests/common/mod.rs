//! Helpers shared by the CLI's integration tests: a data directory written by the real engine
//! (once per test binary, copied per test), the built `tern` binary, and damage helpers that
//! use plain file I/O.
#![allow(dead_code)]

pub mod kafka_tools;
pub mod runbook_doc;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

pub const TERN: &str = env!("CARGO_BIN_EXE_tern");

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

pub fn tern(args: &[&str]) -> Out {
    let out = Command::new(TERN).args(args).output().expect("run tern");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts an exit code, printing the command's output on failure.
pub fn expect(out: &Out, code: i32, what: &str) {
    assert_eq!(
        out.code, code,
        "{what}: exit {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
        out.code, out.stdout, out.stderr
    );
}

pub fn scratch() -> TempDir {
    // Under the target dir: glommio needs O_DIRECT, which tmpfs may not offer.
    TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// Shape of the generated directory: 2 shards, groups 1..=4, 1200 entries of 1000 bytes,
/// 1 MiB segments (3 segments per shard, two of them sealed with indexes).
pub const GROUPS: u64 = 4;
pub const ENTRIES: u64 = 1200;

fn template() -> &'static Path {
    static T: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = T.get_or_init(|| {
        let t = scratch();
        let path = t.path().join("data");
        let out = tern(&[
            "generate",
            "--path",
            p(&path),
            "--shards",
            "2",
            "--groups",
            "4",
            "--entries",
            "1200",
            "--record-bytes",
            "1000",
        ]);
        expect(&out, 0, "generate");
        (t, path)
    });
    path
}

/// A fresh copy of the generated data directory.
pub fn data_dir() -> (TempDir, PathBuf) {
    let t = scratch();
    let dst = t.path().join("data");
    copy_dir(template(), &dst);
    (t, dst)
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Segment files of a shard that hold at least one batch. The writer keeps the next segment
/// prepared ahead of time (a `.wal` file with a header and nothing after it): not part of
/// the log, so fixtures never pick it as "the last segment".
pub fn segments(root: &Path, shard: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(format!("shard-{shard}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.len() > 8192 && bytes[4096..4160].iter().any(|&b| b != 0)
        })
        .collect();
    v.sort();
    v
}

pub fn flip_bit(file: &Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x04;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

pub fn zero(file: &Path, offset: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![0u8; len]).unwrap();
}

/// Every entry record of the directory, (group, index) -> (term, full payload hex), read with
/// `tern dump --json`.
pub fn entries(root: &Path) -> BTreeMap<(u64, u64), (u64, String)> {
    let out = tern(&[
        "dump",
        "--path",
        p(root),
        "--json",
        "--preview-bytes",
        "4096",
    ]);
    let doc = out.json();
    let mut m = BTreeMap::new();
    for r in doc["records"].as_array().unwrap() {
        if r["kind"] == "entry" {
            let g = r["group"].as_u64().unwrap();
            let i = r["index"].as_u64().unwrap();
            m.insert(
                (g, i),
                (
                    r["term"].as_u64().unwrap(),
                    r["preview_hex"].as_str().unwrap().to_string(),
                ),
            );
        }
    }
    m
}

/// Opens the directory with the real engine in its default recovery mode and returns each
/// group's (first, last) index.
pub fn engine_groups(root: &Path) -> BTreeMap<u64, (u64, u64)> {
    use tern_engine::{EngineConfig, WalConfig};
    let cfg = EngineConfig {
        shards: 2,
        pin_cpus: false,
        io_memory_bytes: 256 << 10,
        wal: WalConfig {
            segment_bytes: 1 << 20,
            batch_bytes_max: 64 << 10,
            pending_bytes_max: 256 << 10,
            ..WalConfig::default()
        },
    };
    let per_shard =
        tern_engine::engine::run_shards(root, &cfg, false, |ctx| async move { ctx.wal.groups() })
            .unwrap_or_else(|e| panic!("the engine refuses to open {}: {e}", root.display()));
    per_shard
        .into_iter()
        .flatten()
        .map(|g| (g.group, (g.first_index, g.last_index)))
        .collect()
}

/// A loopback address of its own for each standalone node a test starts, to use with the
/// default ports (Kafka 9092, HTTP 9090, peers 9093); `tag` keeps test binaries apart. Not
/// ports picked by binding :0 and releasing them: any outgoing connection of the tests
/// running beside this one can take such a port before the node binds it.
pub fn node_ip(tag: u8) -> String {
    static NODES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 200;
    format!("127.{}.{}.{tag}", 1 + std::process::id() % 250, 10 + k)
}

/// Offset of a record header in the middle of segment `seg` (`tern scan --verbose`): damage
/// there breaks its batch's frame (corruption), where damage inside a payload leaves an entry
/// the engine keeps for repair from peers (engine/src/repaired.rs).
#[allow(dead_code)]
pub fn middle_record_offset(seg: &Path) -> u64 {
    let scan = tern(&["scan", "--path", p(seg), "--json", "--verbose"]).json();
    let recs = scan["records_detail"].as_array().expect("records_detail");
    recs[recs.len() / 2]["offset"].as_u64().expect("offset")
}
