//! Every offline command against damaged data directories written by the real engine: the
//! exit code and the key lines of output of each command, then (where repair applies) that
//! `verify-data` is clean, the quarantine holds the removed bytes, no acknowledged record
//! before the damage is lost, and the engine opens the directory in its default mode.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Runs the read-only commands and checks their exit codes: (verify-data, scan of `seg`,
/// dump, repair --dry-run).
fn survey(root: &Path, seg: &Path, codes: [i32; 4]) -> Out {
    let v = tern(&["verify-data", "--path", p(root), "--json"]);
    expect(&v, codes[0], "verify-data");
    expect(&tern(&["scan", "--path", p(seg)]), codes[1], "scan");
    expect(&tern(&["dump", "--path", p(root)]), codes[2], "dump");
    let before: Vec<_> = list(root);
    expect(
        &tern(&["repair", "--path", p(root), "--dry-run"]),
        codes[3],
        "repair --dry-run",
    );
    assert_eq!(before, list(root), "a dry run changed the directory");
    v
}

/// Files and their sizes and contents' checksum, LOCK excluded.
fn list(root: &Path) -> Vec<(PathBuf, u64, u32)> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<(PathBuf, u64, u32)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else if e.file_name() != "LOCK" {
                let bytes = std::fs::read(e.path()).unwrap();
                out.push((e.path(), bytes.len() as u64, crc32c_of(&bytes)));
            }
        }
    }
    walk(root, &mut out);
    out.sort();
    out
}

fn crc32c_of(b: &[u8]) -> u32 {
    tern_engine::format::crc32c(b)
}

fn codes(v: &Out) -> Vec<String> {
    v.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_string())
        .collect()
}

/// After a repair: clean verify, quarantine holds files, no entry below each group's first
/// lost index is gone or changed, the engine opens the directory.
fn check_repaired(
    root: &Path,
    before: &std::collections::BTreeMap<(u64, u64), (u64, String)>,
    repair: &Out,
) {
    let v = tern(&["verify-data", "--path", p(root)]);
    expect(&v, 0, "verify-data after repair");
    let doc = repair.json();
    let losses = doc["losses"].as_array().unwrap();
    let first_lost = |g: u64| {
        losses
            .iter()
            .filter(|l| l["group"].as_u64() == Some(g))
            .filter_map(|l| l["first_index"].as_u64())
            .min()
            .unwrap_or(u64::MAX)
    };
    let after = entries(root);
    for ((g, i), rec) in before {
        if *i < first_lost(*g) {
            assert_eq!(
                after.get(&(*g, *i)),
                Some(rec),
                "group {g} index {i} lost or changed by repair"
            );
        }
    }
    let q = doc["quarantine"].as_str().expect("a quarantine directory");
    let manifest = std::fs::read_to_string(Path::new(q).join("MANIFEST")).unwrap();
    assert!(manifest.contains("source="), "{manifest}");
    let groups = engine_groups(root);
    for g in 1..=GROUPS {
        let (_, last) = groups[&g];
        assert!(
            last + 1 >= first_lost(g).min(ENTRIES + 1),
            "group {g} ends at {last}"
        );
    }
}

#[test]
fn clean_directory_every_command_exits_0() {
    let (_t, root) = data_dir();
    let seg = &segments(&root, 0)[0];
    let v = survey(&root, seg, [0, 0, 0, 0]);
    assert_eq!(v.json()["clean"], true);
    assert_eq!(
        v.json()["groups"].as_array().unwrap().len(),
        GROUPS as usize
    );
    let idx = seg.with_extension("idx");
    let out = tern(&["inspect-index", "--path", p(&idx)]);
    expect(&out, 0, "inspect-index");
    assert!(
        out.stdout.contains("segment check: matches its segment"),
        "{}",
        out.stdout
    );
    expect(
        &tern(&["rebuild-index", "--path", p(&root)]),
        0,
        "rebuild-index",
    );
    let out = tern(&["scan", "--path", p(seg), "--verbose", "--json"]);
    expect(&out, 0, "scan --verbose");
    let doc = out.json();
    assert_eq!(doc["end"], "sealed");
    assert!(doc["records_detail"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["checksum"] == "ok"));
    let out = tern(&[
        "dump",
        "--path",
        p(&root),
        "--group",
        "2",
        "--from",
        "10",
        "--to",
        "12",
        "--json",
    ]);
    expect(&out, 0, "dump --group --from --to");
    let recs = out.json()["records"].as_array().unwrap().clone();
    assert_eq!(recs.len(), 3);
    assert!(recs[0]["preview_text"]
        .as_str()
        .unwrap()
        .starts_with("g2-i10-t1:"));
}

#[test]
fn torn_tail_is_truncated_without_losing_acknowledged_records() {
    let (_t, root) = data_dir();
    let seg = segments(&root, 0).last().unwrap().clone();
    let scan = tern(&["scan", "--path", p(&seg), "--json"]).json();
    let last = scan["last_valid_record_offset"].as_u64().unwrap();
    let before = entries(&root);
    // Damage the last record (part of the last batch): a write torn by a crash.
    flip_bit(&seg, last + 20);
    let v = survey(&root, &seg, [1, 1, 1, 1]);
    assert_eq!(codes(&v), ["torn-tail"]);
    let out = tern(&["scan", "--path", p(&seg), "--json"]);
    assert_eq!(out.json()["damage"][0]["class"], "torn-tail");
    let repair = tern(&["repair", "--path", p(&seg), "--json"]);
    expect(&repair, 0, "repair");
    let doc = repair.json();
    assert_eq!(doc["actions"][0]["kind"], "truncate-tail");
    check_repaired(&root, &before, &repair);
    // The removed bytes are in quarantine.
    let q = PathBuf::from(doc["quarantine"].as_str().unwrap());
    assert!(std::fs::read_dir(&q).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".bin")));
}

#[test]
fn bit_flip_in_an_entry_payload_of_a_sealed_segment_is_left_to_the_node() {
    let (_t, root) = data_dir();
    let seg = segments(&root, 0)[0].clone();
    // A payload byte: the entry fails its checksum inside an intact, acknowledged batch, so
    // the engine keeps it at its place and the node repairs it from a peer
    // (engine/src/repaired.rs); offline, every command reports it.
    flip_bit(&seg, 300_000);
    let v = survey(&root, &seg, [1, 1, 1, 1]);
    assert_eq!(codes(&v), ["damaged-entry"]);
    let scan = tern(&["scan", "--path", p(&seg), "--json"]).json();
    assert_eq!(scan["damage"][0]["class"], "unrepaired", "{scan}");
}

#[test]
fn bit_flip_in_a_record_header_of_a_sealed_segment_needs_skip_corrupt_and_lists_losses() {
    let (_t, root) = data_dir();
    let seg = segments(&root, 0)[0].clone();
    let before = entries(&root);
    // The record's magic: the batch's frame is broken, the batch is corruption.
    let at = middle_record_offset(&seg);
    flip_bit(&seg, at);
    let v = survey(&root, &seg, [1, 1, 1, 1]);
    let c = codes(&v);
    assert!(
        c.contains(&"corruption".to_string()) && c.contains(&"log-hole".to_string()),
        "{c:?}"
    );
    let out = tern(&["verify-data", "--path", p(&root), "--fail-fast", "--json"]);
    expect(&out, 1, "verify-data --fail-fast");
    assert_eq!(out.json()["problems"].as_array().unwrap().len(), 1);
    let out = tern(&["repair", "--path", p(&root)]);
    expect(&out, 1, "repair without --skip-corrupt");
    assert!(
        out.stdout.contains("needs --skip-corrupt"),
        "{}",
        out.stdout
    );
    let repair = tern(&["repair", "--path", p(&root), "--skip-corrupt", "--json"]);
    expect(&repair, 0, "repair --skip-corrupt");
    let doc = repair.json();
    assert!(
        !doc["losses"].as_array().unwrap().is_empty(),
        "losses must be listed"
    );
    assert!(!doc["regions"].as_array().unwrap().is_empty());
    check_repaired(&root, &before, &repair);
    // The whole original segment is kept.
    let q = PathBuf::from(doc["quarantine"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(q.join("shard-0-00000000000000000001.wal"))
            .unwrap()
            .len(),
        1 << 20
    );
}

#[test]
fn zeroed_block_in_a_sealed_segment_is_cut_out() {
    let (_t, root) = data_dir();
    let seg = segments(&root, 1)[0].clone();
    let before = entries(&root);
    // The block holding a record header in the middle of the segment (a zeroed header breaks
    // its batch's frame; zeros inside payloads only would leave entries to repair).
    let at = middle_record_offset(&seg) / 4096 * 4096;
    zero(&seg, at, 4096);
    let v = survey(&root, &seg, [1, 1, 1, 1]);
    assert!(codes(&v).contains(&"corruption".to_string()));
    let repair = tern(&["repair", "--path", p(&root), "--skip-corrupt", "--json"]);
    expect(&repair, 0, "repair --skip-corrupt");
    check_repaired(&root, &before, &repair);
}

#[test]
fn deleted_index_is_rebuilt() {
    let (_t, root) = data_dir();
    let seg = segments(&root, 1)[0].clone();
    let idx = seg.with_extension("idx");
    let original = std::fs::read(&idx).unwrap();
    std::fs::remove_file(&idx).unwrap();
    // Recovery rebuilds a missing index by itself: a warning, a problem only with --strict.
    let v = survey(&root, &seg, [0, 0, 0, 1]);
    assert!(codes(&v).is_empty(), "{}", v.stdout);
    assert_eq!(v.json()["warnings"][0]["code"], "index-missing");
    let strict = tern(&["verify-data", "--path", p(&root), "--strict", "--json"]);
    expect(&strict, 1, "verify-data --strict");
    assert_eq!(codes(&strict), ["index-missing"]);
    expect(
        &tern(&["inspect-index", "--path", p(&idx)]),
        2,
        "inspect-index of a missing file",
    );
    expect(
        &tern(&["rebuild-index", "--path", p(&root), "--dry-run"]),
        0,
        "rebuild-index --dry-run",
    );
    assert!(!idx.exists());
    let out = tern(&["rebuild-index", "--path", p(&root)]);
    expect(&out, 0, "rebuild-index");
    assert!(out.stdout.contains("[rebuilt]"), "{}", out.stdout);
    expect(
        &tern(&["inspect-index", "--path", p(&idx)]),
        0,
        "inspect-index",
    );
    expect(
        &tern(&["verify-data", "--path", p(&root)]),
        0,
        "verify-data",
    );
    // The rebuilt index is the one the writer wrote, byte for byte (up to block padding).
    let rebuilt = std::fs::read(&idx).unwrap();
    let n = original.len().min(rebuilt.len());
    assert_eq!(original[..n], rebuilt[..n]);
}

#[test]
fn corrupt_index_is_reported_and_rebuilt() {
    let (_t, root) = data_dir();
    let idx = segments(&root, 0)[0].with_extension("idx");
    flip_bit(&idx, 100);
    let out = tern(&["inspect-index", "--path", p(&idx)]);
    expect(&out, 1, "inspect-index");
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    expect(&v, 1, "verify-data");
    assert_eq!(codes(&v), ["index-corrupt"]);
    expect(
        &tern(&["repair", "--path", p(&root)]),
        0,
        "repair rebuilds indexes",
    );
    expect(
        &tern(&["verify-data", "--path", p(&root)]),
        0,
        "verify-data",
    );
}

#[test]
fn truncated_segment_header_of_the_last_segment_needs_skip_corrupt() {
    // The chain record names the last segment as durable (its header and checkpoint were
    // fsynced before anything was acknowledged in it): a cut header lost acknowledged
    // records, so repair takes --skip-corrupt, and the engine refuses until then.
    let (_t, root) = data_dir();
    let seg = segments(&root, 0).last().unwrap().clone();
    let before = entries(&root);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(40)
        .unwrap();
    let v = survey(&root, &seg, [1, 1, 1, 1]);
    assert_eq!(codes(&v), ["segment-header"]);
    expect(
        &tern(&["repair", "--path", p(&root), "--json"]),
        1,
        "repair without --skip-corrupt",
    );
    let repair = tern(&["repair", "--path", p(&root), "--skip-corrupt", "--json"]);
    expect(&repair, 0, "repair --skip-corrupt");
    assert_eq!(repair.json()["actions"][0]["kind"], "remove-segment");
    assert!(!seg.exists());
    expect(
        &tern(&["verify-data", "--path", p(&root)]),
        0,
        "verify-data",
    );
    // Everything in the earlier segments is intact.
    let after = entries(&root);
    let gone = before.keys().filter(|k| !after.contains_key(k)).count();
    assert!(gone > 0 && after.iter().all(|(k, v)| before.get(k) == Some(v)));
    engine_groups(&root);
}

#[test]
fn stray_files_are_warnings_not_problems() {
    let (_t, root) = data_dir();
    std::fs::write(root.join("notes.txt"), b"operator notes").unwrap();
    std::fs::write(root.join("shard-0").join("junk.bin"), b"junk").unwrap();
    let seg = segments(&root, 0)[0].clone();
    let v = survey(&root, &seg, [0, 0, 0, 0]);
    let w = v.json()["warnings"].as_array().unwrap().clone();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().all(|w| w["code"] == "stray-file"));
    expect(
        &tern(&["rebuild-index", "--path", p(&root)]),
        0,
        "rebuild-index",
    );
    // A stray file given as --path is refused.
    expect(
        &tern(&["scan", "--path", p(&root.join("notes.txt"))]),
        2,
        "scan of a stray file",
    );
}

#[test]
fn empty_and_foreign_directories_are_refused_with_exit_2() {
    let t = scratch();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let foreign = t.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("data.db"), b"not tern").unwrap();
    for dir in [&empty, &foreign] {
        for args in [
            vec!["verify-data", "--path", p(dir)],
            vec!["dump", "--path", p(dir)],
            vec!["repair", "--path", p(dir)],
            vec!["repair", "--path", p(dir), "--skip-corrupt"],
            vec!["rebuild-index", "--path", p(dir)],
            vec!["scan", "--path", p(dir)],
            vec![
                "export-topic",
                "--path",
                p(dir),
                "--group",
                "1",
                "--output",
                "/dev/null",
            ],
        ] {
            let out = tern(&args);
            expect(&out, 2, &args.join(" "));
            assert!(
                out.stderr.contains("not a tern data directory"),
                "{}",
                out.stderr
            );
        }
        let out = tern(&["verify-data", "--path", p(dir), "--json"]);
        assert_eq!(out.json()["exit_code"], 2);
        // Nothing was written into a directory that is not tern's.
        assert!(!dir.join("LOCK").exists());
    }
    expect(
        &tern(&["verify-data", "--path", p(&t.path().join("missing"))]),
        2,
        "missing path",
    );
}

#[test]
fn a_locked_directory_is_refused_with_exit_2() {
    let (_t, root) = data_dir();
    let _lock = tern_engine::engine::lock_dir(&root).unwrap();
    let seg = segments(&root, 0)[0].clone();
    for args in [
        vec!["verify-data", "--path", p(&root)],
        vec!["scan", "--path", p(&seg)],
        vec!["repair", "--path", p(&root)],
        vec!["rebuild-index", "--path", p(&root)],
        vec![
            "export-topic",
            "--path",
            p(&root),
            "--group",
            "1",
            "--output",
            "/dev/null",
        ],
    ] {
        let out = tern(&args);
        expect(&out, 2, &args.join(" "));
        // The lock error names the holder: this test process.
        let holder = format!("is locked by pid {}", std::process::id());
        assert!(out.stderr.contains(&holder), "{}", out.stderr);
    }
}
