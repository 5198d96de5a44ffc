//! A segment lost from a shard's chain — deleted, truncated or replaced, first, middle or
//! last — and an `ENGINE` file with a valid but wrong shard count: `tern verify-data` reports
//! each (exit 1, naming the segment) and the engine refuses to open the directory in its
//! default recovery mode with an error naming it. Before the chain record, every one of
//! these passed as clean (issue 7, section 2).

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The engine's error when it opens `root` in its default mode (it must refuse).
fn engine_refusal(root: &Path) -> String {
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
    match tern_engine::engine::run_shards(root, &cfg, false, |ctx| async move { ctx.shard }) {
        Ok(_) => panic!("the engine opened {} without a word", root.display()),
        Err(e) => e.to_string(),
    }
}

/// Checks verify-data and the engine both name `what` (a file name or message part).
fn reported(root: &Path, codes_wanted: &[&str], what: &str) {
    let v = tern(&["verify-data", "--path", p(root), "--json"]);
    expect(&v, 1, "verify-data");
    let doc = v.json();
    let problems = doc["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|pr| {
            codes_wanted.contains(&pr["code"].as_str().unwrap_or(""))
                && (pr["file"].as_str().unwrap_or("").contains(what)
                    || pr["message"].as_str().unwrap_or("").contains(what))
        }),
        "verify-data does not report {codes_wanted:?} naming {what}: {doc:#}"
    );
    let e = engine_refusal(root);
    assert!(e.contains(what), "engine error does not name {what}: {e}");
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Shard 0's data segments (at least three: first, middle, last) and its trailing spare.
fn shard0(root: &Path) -> (Vec<PathBuf>, Option<PathBuf>) {
    let segs = segments(root, 0);
    assert!(
        segs.len() >= 3,
        "fixture has {} segments in shard 0",
        segs.len()
    );
    let last_id = segs.last().unwrap().clone();
    let mut all: Vec<PathBuf> = std::fs::read_dir(root.join("shard-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    all.sort();
    let spare = all.into_iter().find(|p| *p > last_id);
    (segs, spare)
}

fn pick(segs: &[PathBuf], which: &str) -> PathBuf {
    match which {
        "first" => segs[0].clone(),
        "middle" => segs[segs.len() / 2].clone(),
        _ => segs.last().unwrap().clone(),
    }
}

#[test]
fn deleted_first_middle_or_last_segment_is_reported_and_refused() {
    for which in ["first", "middle", "last"] {
        let (_t, root) = data_dir();
        let (segs, spare) = shard0(&root);
        let victim = pick(&segs, which);
        std::fs::remove_file(&victim).unwrap();
        let _ = std::fs::remove_file(victim.with_extension("idx"));
        if which == "last" {
            // As in the report: `rm …05.wal …06.wal` (the newest segment and the spare).
            if let Some(s) = spare {
                std::fs::remove_file(s).unwrap();
            }
        }
        reported(&root, &["missing-segment"], &file_name(&victim));
    }
}

#[test]
fn truncated_first_middle_or_last_segment_is_reported_and_refused() {
    for which in ["first", "middle", "last"] {
        let (_t, root) = data_dir();
        let (segs, _) = shard0(&root);
        let victim = pick(&segs, which);
        let len = std::fs::metadata(&victim).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&victim)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        reported(
            &root,
            &["segment-truncated", "corruption", "missing-segment"],
            &file_name(&victim),
        );
    }
}

#[test]
fn replaced_first_middle_or_last_segment_is_reported_and_refused() {
    for which in ["first", "middle", "last"] {
        let (_t, root) = data_dir();
        let (segs, _) = shard0(&root);
        let victim = pick(&segs, which);
        let other = if which == "first" { &segs[1] } else { &segs[0] };
        std::fs::copy(other, &victim).unwrap();
        let _ = std::fs::remove_file(victim.with_extension("idx"));
        reported(
            &root,
            &["segment-replaced", "segment-header", "missing-segment"],
            &file_name(&victim),
        );
    }
}

#[test]
fn engine_file_with_a_wrong_shard_count_is_refused() {
    for shards in [1u32, 3] {
        let (_t, root) = data_dir();
        let meta = tern_engine::engine::EngineMeta {
            format_version: tern_engine::format::FORMAT_VERSION,
            shards,
        };
        std::fs::write(root.join("ENGINE"), meta.encode()).unwrap();
        reported(&root, &["shard-count"], "shard");
    }
}

#[test]
fn repair_skip_corrupt_accepts_a_lost_segment_and_says_so() {
    let (_t, root) = data_dir();
    let (segs, spare) = shard0(&root);
    let victim = segs.last().unwrap().clone();
    std::fs::remove_file(&victim).unwrap();
    if let Some(s) = spare {
        std::fs::remove_file(s).unwrap();
    }
    let plain = tern(&["repair", "--path", p(&root), "--json"]);
    expect(&plain, 1, "repair without --skip-corrupt");
    let repair = tern(&["repair", "--path", p(&root), "--skip-corrupt", "--json"]);
    expect(&repair, 0, "repair --skip-corrupt");
    let doc = repair.json();
    assert!(
        doc["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "rewrite-chain" && a["status"] == "done"),
        "{doc:#}"
    );
    expect(
        &tern(&["verify-data", "--path", p(&root)]),
        0,
        "verify-data after repair",
    );
    engine_groups(&root);
}
