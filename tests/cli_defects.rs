//! The defects a new operator found in the offline CLI (issue 8), one test per item, each
//! against a data directory written by the real engine (see `common`). Tests that need a
//! small or read-only file system mount one when running as root (a loop-mounted ext4, a
//! read-only bind mount), always unmount it, also on failure, and otherwise say why they
//! fall back or skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Runs `tern` with a stdout whose reader is already gone (`| head -c 0` without the race).
fn tern_closed_stdout(bin: &str, args: &[&str]) -> Out {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(bin)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn problem_codes(v: &Out) -> Vec<String> {
    v.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Writes an export file of `entries` entries of `bytes` bytes each, with the library's own
/// writer (faster than generating and exporting a directory that large).
fn export_file(path: &Path, group: u64, entries: u64, bytes: usize) {
    use std::io::Write;
    use tern_engine::export::{ExportMeta, ExportWriter};
    let meta = ExportMeta {
        group,
        first_index: 1,
        last_index: entries,
        term_first: 1,
        term_last: 1,
        hard_state: Some((1, 1, entries)),
        snapshot: None,
        created_unix_ms: 1,
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = ExportWriter::new(std::io::BufWriter::new(file), meta).unwrap();
    for i in 1..=entries {
        w.write_entry(1, i, &vec![(i % 251) as u8; bytes]).unwrap();
    }
    w.finish().unwrap().flush().unwrap();
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A mount the test made; unmounted (and its image removed) when dropped, also when the
/// test fails.
struct Mounted {
    dir: PathBuf,
    image: Option<PathBuf>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(img) = &self.image {
            let _ = std::fs::remove_file(img);
        }
    }
}

/// A fresh ext4 file system of `mib` MiB, loop-mounted under `base`; `Err(why)` when this
/// test process cannot make one (not root, no loop devices, no mkfs.ext4).
fn small_ext4(base: &Path, mib: u64) -> Result<Mounted, String> {
    if !is_root() {
        return Err("not running as root (a loop mount needs it)".into());
    }
    let img = base.join("small.ext4");
    let dir = base.join("small");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
    f.set_len(mib << 20).map_err(|e| e.to_string())?;
    drop(f);
    let mounted = Mounted {
        dir: dir.clone(),
        image: Some(img.clone()),
    };
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir),
    )?;
    Ok(mounted)
}

/// A read-only bind mount of `src` at `dst`; `Err(why)` when not possible.
fn read_only_bind(src: &Path, dst: &Path) -> Result<Mounted, String> {
    if !is_root() {
        return Err("not running as root (a bind mount needs it)".into());
    }
    std::fs::create_dir_all(dst).map_err(|e| e.to_string())?;
    let mounted = Mounted {
        dir: dst.to_path_buf(),
        image: None,
    };
    run_ok(Command::new("mount").arg("--bind").arg(src).arg(dst))?;
    run_ok(
        Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(dst),
    )?;
    Ok(mounted)
}

// ---------------------------------------------------------------------------------------
// 1. A closed stdout ends every printing command quietly.

#[test]
fn item1_closed_stdout_ends_every_command_quietly_without_a_panic() {
    let (t, root) = data_dir();
    let seg = segments(&root, 0)[0].clone();
    let idx = seg.with_extension("idx");
    let export = t.path().join("g1.tx");
    expect(
        &tern(&[
            "export-topic",
            "--path",
            p(&root),
            "--group",
            "1",
            "--output",
            p(&export),
        ]),
        0,
        "export-topic",
    );
    let generated = t.path().join("generated");
    let imported = t.path().join("imported");
    let runs: Vec<Vec<&str>> = vec![
        vec!["dump", "--path", p(&root), "--json"],
        vec!["dump", "--path", p(&root)],
        vec!["scan", "--path", p(&seg), "--verbose"],
        vec!["inspect-index", "--path", p(&idx), "--verbose"],
        vec!["verify-data", "--path", p(&root)],
        vec!["verify-data", "--path", p(&root), "--json"],
        vec!["repair", "--path", p(&root), "--dry-run"],
        vec!["rebuild-index", "--path", p(&root), "--dry-run"],
        vec![
            "export-topic",
            "--path",
            p(&root),
            "--group",
            "2",
            "--output",
            "/dev/null",
        ],
        vec![
            "import-topic",
            "--path",
            p(&imported),
            "--group",
            "7",
            "--input",
            p(&export),
            "--shards",
            "1",
            "--segment-bytes",
            "1048576",
        ],
        vec!["generate", "--path", p(&generated), "--entries", "50"],
    ];
    for args in &runs {
        let out = tern_closed_stdout(TERN, args);
        let what = args.join(" ");
        assert_eq!(out.code, 141, "{what}: exit {}: {}", out.code, out.stderr);
        assert!(
            out.stderr.trim().is_empty(),
            "{what}: wrote to stderr: {}",
            out.stderr
        );
    }
    // Nothing half-written: the commands that write finished their work before printing.
    expect(
        &tern(&["verify-data", "--path", p(&imported)]),
        0,
        "verify-data of the imported directory",
    );
    assert!(!imported.join("import-7.incomplete").exists());
    expect(
        &tern(&["verify-data", "--path", p(&generated)]),
        0,
        "verify-data of the generated directory",
    );
}

// ---------------------------------------------------------------------------------------
// 2. An import is all or nothing.

#[test]
fn item2_import_on_a_full_file_system_leaves_no_trace_or_a_reported_incomplete_import() {
    let t = scratch();
    let fs = match small_ext4(t.path(), 40) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED item2 ENOSPC import: {why}");
            return;
        }
    };
    eprintln!(
        "item2: on a 40 MiB loop-mounted ext4 at {}",
        fs.dir.display()
    );
    let input = t.path().join("big.tx");
    export_file(&input, 5, 40_000, 1000);
    let root = fs.dir.join("data");
    expect(
        &tern(&[
            "generate",
            "--path",
            p(&root),
            "--shards",
            "1",
            "--groups",
            "2",
            "--entries",
            "100",
        ]),
        0,
        "generate",
    );
    let out = tern(&[
        "import-topic",
        "--path",
        p(&root),
        "--group",
        "5",
        "--input",
        p(&input),
    ]);
    expect(&out, 2, "import onto a full file system");
    // Item 11: the operator reads what failed and the errno's name, not glommio's debug text.
    assert!(out.stderr.contains("ENOSPC"), "{}", out.stderr);
    assert!(!out.stderr.contains("fd: Some"), "{}", out.stderr);
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    let doc = v.json();
    let group5 = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["group"] == 5);
    let incomplete = problem_codes(&v).iter().any(|c| c == "import-incomplete");
    assert!(
        incomplete || !group5,
        "a partial group 5 looks like a normal group:\n{}",
        v.stdout
    );
    if incomplete {
        assert_eq!(v.code, 1, "{}", v.stdout);
        assert!(out.stderr.contains("incomplete import"), "{}", out.stderr);
    }
    // A re-run where there is room replaces the partial group (no --force needed).
    let copy = t.path().join("copy");
    copy_dir(&root, &copy);
    drop(fs);
    let rerun = tern(&[
        "import-topic",
        "--path",
        p(&copy),
        "--group",
        "5",
        "--input",
        p(&input),
    ]);
    expect(&rerun, 0, "re-run of the import");
    let v = tern(&["verify-data", "--path", p(&copy), "--group", "5", "--json"]);
    assert!(
        !problem_codes(&v).iter().any(|c| c == "import-incomplete"),
        "{}",
        v.stdout
    );
    let g5 = v.json()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == 5)
        .cloned()
        .expect("group 5 after the re-run");
    assert_eq!(g5["entries"], 40_000);
}

#[test]
fn item2_import_killed_mid_way_is_reported_and_a_rerun_replaces_it() {
    let (t, root) = data_dir();
    let input = t.path().join("big.tx");
    export_file(&input, 9, 30_000, 1000);
    let mut child = Command::new(TERN)
        .args([
            "import-topic",
            "--path",
            p(&root),
            "--group",
            "9",
            "--input",
            p(&input),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn import");
    let marker = root.join("import-9.incomplete");
    // Bounded wait for the import to start writing (the marker precedes the first record).
    let mut seen = false;
    for _ in 0..2000 {
        if marker.exists() {
            seen = true;
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    if marker.exists() {
        assert!(seen);
        assert_eq!(v.code, 1, "{}", v.stdout);
        assert!(
            problem_codes(&v).iter().any(|c| c == "import-incomplete"),
            "{}",
            v.stdout
        );
        let export = tern(&[
            "export-topic",
            "--path",
            p(&root),
            "--group",
            "9",
            "--output",
            "/dev/null",
        ]);
        expect(&export, 2, "export of an incomplete import");
    } else {
        eprintln!("item2 kill: the import finished before the kill; checking it is complete");
    }
    let rerun = tern(&[
        "import-topic",
        "--path",
        p(&root),
        "--group",
        "9",
        "--input",
        p(&input),
    ]);
    if marker.exists() || !seen {
        expect(&rerun, 0, "re-run after the kill");
    }
    assert!(!marker.exists());
    let v = tern(&["verify-data", "--path", p(&root), "--group", "9", "--json"]);
    let g = v.json()["groups"][0].clone();
    assert_eq!(g["entries"], 30_000, "{}", v.stdout);
}

// ---------------------------------------------------------------------------------------
// 3. Import uses the directory's segment size.

fn segment_sizes(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(root).unwrap().flatten() {
        if !shard.file_name().to_string_lossy().starts_with("shard-") {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "wal") {
                out.push((f.path(), f.metadata().unwrap().len()));
            }
        }
    }
    out
}

#[test]
fn item3_import_keeps_the_directory_segment_size_and_new_directories_take_segment_bytes() {
    let (t, root) = data_dir();
    let input = t.path().join("g.tx");
    export_file(&input, 3, 5000, 1000);
    expect(
        &tern(&[
            "import-topic",
            "--path",
            p(&root),
            "--group",
            "11",
            "--input",
            p(&input),
        ]),
        0,
        "import into a 1 MiB-segment directory",
    );
    for (path, len) in segment_sizes(&root) {
        assert!(len <= 1 << 20, "{} grew to {len} bytes", path.display());
    }
    expect(
        &tern(&["verify-data", "--path", p(&root)]),
        0,
        "verify-data after import",
    );
    let out = tern(&[
        "import-topic",
        "--path",
        p(&root),
        "--group",
        "12",
        "--input",
        p(&input),
        "--segment-bytes",
        "2097152",
    ]);
    expect(&out, 2, "--segment-bytes that contradicts the directory");
    assert!(
        out.stderr.contains("1048576-byte segments"),
        "{}",
        out.stderr
    );
    let fresh = t.path().join("fresh");
    expect(
        &tern(&[
            "import-topic",
            "--path",
            p(&fresh),
            "--group",
            "1",
            "--input",
            p(&input),
            "--shards",
            "1",
            "--segment-bytes",
            "2097152",
        ]),
        0,
        "import into a new directory",
    );
    let sizes = segment_sizes(&fresh);
    assert!(sizes.len() >= 2, "{sizes:?}");
    assert!(sizes.iter().all(|(_, l)| *l == 2 << 20), "{sizes:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Read-only media and concurrent readers.

#[test]
fn item4_readers_work_on_read_only_media_and_beside_each_other() {
    let (t, root) = data_dir();
    // A read-only copy needs no LOCK file: remove the one generate left.
    let _ = std::fs::remove_file(root.join("LOCK"));
    let ro = t.path().join("ro");
    let mount = match read_only_bind(&root, &ro) {
        Ok(m) => {
            eprintln!("item4: read-only bind mount of the data directory");
            Some(m)
        }
        Err(why) => {
            eprintln!("item4: {why}; using a copy without write permission instead");
            copy_dir(&root, &ro);
            for f in [ro.join("shard-0"), ro.join("shard-1"), ro.clone()] {
                let _ = Command::new("chmod").args(["-R", "a-w"]).arg(&f).status();
            }
            None
        }
    };
    let seg = segments(&ro, 0)[0].clone();
    let idx = seg.with_extension("idx");
    let out_file = t.path().join("g1.tx");
    for args in [
        vec!["verify-data", "--path", p(&ro)],
        vec!["scan", "--path", p(&seg)],
        vec!["dump", "--path", p(&ro), "--group", "1", "--to", "3"],
        vec!["inspect-index", "--path", p(&idx)],
        vec!["repair", "--path", p(&ro), "--dry-run"],
        vec!["rebuild-index", "--path", p(&ro), "--dry-run"],
        vec![
            "export-topic",
            "--path",
            p(&ro),
            "--group",
            "1",
            "--output",
            p(&out_file),
        ],
    ] {
        let out = tern(&args);
        expect(&out, 0, &args.join(" "));
        assert!(out.stderr.contains("no lock taken"), "{}", out.stderr);
    }
    // A writer is refused with the reason (the errno's name), not a crash.
    let out = tern(&["repair", "--path", p(&ro)]);
    expect(&out, 2, "repair on read-only media");
    assert!(
        out.stderr.contains("EROFS") || out.stderr.contains("EACCES"),
        "{}",
        out.stderr
    );
    drop(mount);

    // Readers share the lock; a writer excludes them, and they it.
    let shared = tern_engine::engine::lock_dir_shared(&root).unwrap();
    expect(
        &tern(&["verify-data", "--path", p(&root)]),
        0,
        "verify-data beside another reader",
    );
    let out = tern(&["repair", "--path", p(&root)]);
    expect(&out, 2, "repair while a reader holds the lock");
    assert!(out.stderr.contains("only reads"), "{}", out.stderr);
    drop(shared);
    let _writer = tern_engine::engine::lock_dir(&root).unwrap();
    let out = tern(&["verify-data", "--path", p(&root)]);
    expect(&out, 2, "verify-data while a writer holds the lock");
    let holder = format!("locked by pid {}", std::process::id());
    assert!(out.stderr.contains(&holder), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// 6. Unknown group ids are errors.

#[test]
fn item6_unknown_group_is_an_error_naming_it() {
    let (_t, root) = data_dir();
    for args in [
        vec!["verify-data", "--path", p(&root), "--group", "99"],
        vec!["dump", "--path", p(&root), "--group", "99"],
        vec![
            "dump",
            "--path",
            p(&root),
            "--group",
            "99",
            "--from",
            "1",
            "--to",
            "3",
        ],
    ] {
        let out = tern(&args);
        expect(&out, 2, &args.join(" "));
        assert!(out.stderr.contains("group 99 is unknown"), "{}", out.stderr);
        let mut json = args.clone();
        json.push("--json");
        let out = tern(&json);
        expect(&out, 2, &json.join(" "));
        assert_eq!(out.json()["exit_code"], 2, "one error document");
    }
    // A known group with nothing in the range is an empty result, not an error.
    let out = tern(&[
        "dump",
        "--path",
        p(&root),
        "--group",
        "2",
        "--from",
        "5000",
        "--json",
    ]);
    expect(&out, 0, "dump of an empty range");
    assert_eq!(out.json()["records"].as_array().unwrap().len(), 0);
}

// ---------------------------------------------------------------------------------------
// 9. Consistent output.

#[test]
fn item9_export_and_import_print_the_same_fields_with_the_same_meaning() {
    let (t, root) = data_dir();
    let file = t.path().join("g2.tx");
    let ex = tern(&[
        "export-topic",
        "--path",
        p(&root),
        "--group",
        "2",
        "--output",
        p(&file),
        "--json",
    ]);
    expect(&ex, 0, "export");
    let size = std::fs::metadata(&file).unwrap().len();
    let im = tern(&[
        "import-topic",
        "--path",
        p(&t.path().join("new")),
        "--group",
        "2",
        "--input",
        p(&file),
        "--shards",
        "1",
        "--segment-bytes",
        "1048576",
        "--json",
    ]);
    expect(&im, 0, "import");
    let (e, i) = (ex.json(), im.json());
    for doc in [&e, &i] {
        assert_eq!(doc["file_bytes"], size, "{doc}");
        assert_eq!(doc["payload_bytes"], ENTRIES * 1000, "{doc}");
        assert_eq!(doc["hard_state"]["commit"], ENTRIES, "{doc}");
    }
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    assert!(v.json()["groups"][0]["hard_state"].is_object());
    let text = tern(&[
        "import-topic",
        "--path",
        p(&t.path().join("new2")),
        "--group",
        "2",
        "--input",
        p(&file),
        "--shards",
        "1",
    ]);
    assert!(
        text.stdout
            .contains(&format!("({size} bytes, {} of payload)", ENTRIES * 1000)),
        "{}",
        text.stdout
    );
}

#[test]
fn item9_usage_errors_print_json_with_json_and_counts_are_singular() {
    let out = tern(&["verify-data", "--json"]);
    expect(&out, 2, "missing --path");
    assert_eq!(out.json()["exit_code"], 2);
    assert!(out.json()["error"].as_str().unwrap().contains("--path"));
    let out = tern(&["verify-data", "--path"]);
    expect(&out, 2, "missing value, text");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    expect(&tern(&["--help"]), 0, "--help");

    let (_t, root) = data_dir();
    std::fs::write(root.join("shard-0").join("notes.txt"), b"x").unwrap();
    let out = tern(&["verify-data", "--path", p(&root)]);
    expect(&out, 0, "one stray file");
    assert!(
        out.stdout.contains("result: clean (1 warning)"),
        "{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------------------
// 10. Targeted dump through the sealed indexes.

#[test]
fn item10_targeted_dump_reads_only_segments_whose_index_matches() {
    let (_t, root) = data_dir();
    let full = entries(&root);
    let out = tern(&[
        "dump",
        "--path",
        p(&root),
        "--group",
        "3",
        "--from",
        "10",
        "--to",
        "12",
        "--json",
        "--preview-bytes",
        "4096",
    ]);
    expect(&out, 0, "targeted dump");
    let recs = out.json()["records"].as_array().unwrap().clone();
    assert_eq!(recs.len(), 3);
    for r in &recs {
        let key = (r["group"].as_u64().unwrap(), r["index"].as_u64().unwrap());
        assert_eq!(
            full.get(&key).map(|(_, hex)| hex.as_str()),
            r["preview_hex"].as_str(),
            "{key:?}"
        );
    }
    // Garble the last sealed segment of every shard: a full dump reports it, the targeted
    // dump of early entries never reads it (its index says it holds none of them).
    for shard in 0..2 {
        let segs = segments(&root, shard);
        let last_sealed = segs
            .iter()
            .rev()
            .find(|s| s.with_extension("idx").exists())
            .expect("a sealed segment")
            .clone();
        zero(&last_sealed, 8192, 64 << 10);
    }
    expect(
        &tern(&["dump", "--path", p(&root)]),
        1,
        "full dump of the damaged directory",
    );
    let out = tern(&[
        "dump",
        "--path",
        p(&root),
        "--group",
        "3",
        "--from",
        "10",
        "--to",
        "12",
    ]);
    expect(&out, 0, "targeted dump beside damage it does not need");
}

// ---------------------------------------------------------------------------------------
// 3 (second half). A segment larger than its header says is reported.

#[test]
fn item3_verify_reports_a_segment_larger_than_its_header_says() {
    let (_t, root) = data_dir();
    let seg = segments(&root, 0)[0].clone();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(4 << 20).unwrap();
    drop(f);
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    expect(&v, 1, "verify-data");
    assert_eq!(problem_codes(&v), ["segment-oversize"], "{}", v.stdout);
    assert_eq!(v.json()["problems"][0]["offset"], 1 << 20);
}

// ---------------------------------------------------------------------------------------
// 5. Repair quarantines leftovers and checks its clean claim.

#[test]
fn item5_repair_moves_leftover_temporary_files_to_the_quarantine() {
    let (_t, root) = data_dir();
    let prep = root.join("shard-0").join("00000000000000000042.wal.prep");
    std::fs::write(&prep, vec![7u8; 56 << 10]).unwrap();
    let engine_tmp = root.join("ENGINE.tmp");
    std::fs::write(&engine_tmp, b"format=1\n").unwrap();
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    expect(&v, 0, "verify-data with leftovers");
    let warnings: Vec<String> = v.json()["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings, ["leftover-temp", "leftover-temp"], "{}", v.stdout);
    let dry = tern(&["repair", "--path", p(&root), "--dry-run"]);
    expect(&dry, 1, "repair --dry-run with leftovers");
    assert!(prep.exists() && engine_tmp.exists());
    let out = tern(&["repair", "--path", p(&root), "--json"]);
    expect(&out, 0, "repair");
    let doc = out.json();
    let moved: Vec<&serde_json::Value> = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "quarantine-leftover" && a["status"] == "done")
        .collect();
    assert_eq!(moved.len(), 2, "{}", out.stdout);
    assert!(!prep.exists() && !engine_tmp.exists());
    let q = PathBuf::from(doc["quarantine"].as_str().expect("quarantine"));
    let kept = q.join("shard-0-00000000000000000042.wal.prep");
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), 56 << 10);
    let manifest = std::fs::read_to_string(q.join("MANIFEST")).unwrap();
    assert!(manifest.contains("moved"), "{manifest}");
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    expect(&v, 0, "verify-data after repair");
    assert!(v.json()["warnings"].as_array().unwrap().is_empty());
    // The fix hint names the directory, ready to paste.
    std::fs::write(&prep, b"x").unwrap();
    let v = tern(&["verify-data", "--path", p(&root)]);
    assert!(
        v.stdout
            .contains(&format!("(fix: tern repair --path {})", root.display())),
        "{}",
        v.stdout
    );
}

// ---------------------------------------------------------------------------------------
// 7. A missing index after a crash is a notice, unless --strict.

#[test]
fn item7_missing_index_of_a_clean_sealed_segment_is_a_warning_unless_strict() {
    let (_t, root) = data_dir();
    let idx = segments(&root, 0)[0].with_extension("idx");
    std::fs::remove_file(&idx).unwrap();
    let v = tern(&["verify-data", "--path", p(&root), "--json"]);
    expect(&v, 0, "verify-data");
    assert_eq!(v.json()["warnings"][0]["code"], "index-missing");
    let v = tern(&["verify-data", "--path", p(&root), "--strict", "--json"]);
    expect(&v, 1, "verify-data --strict");
    assert_eq!(problem_codes(&v), ["index-missing"]);
}

// ---------------------------------------------------------------------------------------
// 8. ENGINE file damage: same damage, same answer.

#[test]
fn item8_garbled_engine_file_is_engine_meta_whatever_the_bytes() {
    let (_t, root) = data_dir();
    let engine = root.join("ENGINE");
    let garbage: [&[u8]; 3] = [
        &[
            0xff, 0xfe, 0x00, 0x9c, 0x13, 0x80, 0x7f, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1,
            0xf0, 0x28, 0x8c, 0xbc, 0x01, 0x02,
        ],
        b"this is not an engine file\n",
        b"",
    ];
    for bytes in garbage {
        std::fs::write(&engine, bytes).unwrap();
        let v = tern(&["verify-data", "--path", p(&root), "--json"]);
        expect(&v, 1, &format!("verify-data with ENGINE = {bytes:?}"));
        assert_eq!(problem_codes(&v), ["engine-meta"], "{}", v.stdout);
        let fix = v.json()["problems"][0]["fix"].as_str().unwrap().to_string();
        assert!(fix.contains("recovery.md"), "{fix}");
    }
}

#[test]
fn item9_snapshot_points_are_objects_in_every_command() {
    let (t, root) = data_dir();
    // A group whose log starts after a snapshot: an export file says so, an import makes it.
    let input = t.path().join("snap.tx");
    {
        use std::io::Write;
        use tern_engine::export::{ExportMeta, ExportWriter};
        let meta = ExportMeta {
            group: 21,
            first_index: 11,
            last_index: 12,
            term_first: 2,
            term_last: 2,
            hard_state: Some((2, 1, 12)),
            snapshot: Some((2, 10, b"meta".to_vec())),
            created_unix_ms: 1,
        };
        let f = std::fs::File::create(&input).unwrap();
        let mut w = ExportWriter::new(std::io::BufWriter::new(f), meta).unwrap();
        w.write_entry(2, 11, b"a").unwrap();
        w.write_entry(2, 12, b"b").unwrap();
        w.finish().unwrap().flush().unwrap();
    }
    let im = tern(&[
        "import-topic",
        "--path",
        p(&root),
        "--group",
        "21",
        "--input",
        p(&input),
        "--json",
    ]);
    expect(&im, 0, "import");
    assert_eq!(im.json()["snapshot"]["index"], 10, "{}", im.stdout);
    let v = tern(&["verify-data", "--path", p(&root), "--group", "21", "--json"]);
    expect(&v, 0, "verify-data");
    assert_eq!(
        v.json()["groups"][0]["snapshot"]["index"],
        10,
        "{}",
        v.stdout
    );
    let ex = tern(&[
        "export-topic",
        "--path",
        p(&root),
        "--group",
        "21",
        "--output",
        p(&t.path().join("again.tx")),
        "--json",
    ]);
    expect(&ex, 0, "export");
    assert_eq!(ex.json()["snapshot"]["term"], 2, "{}", ex.stdout);
}

// ---------------------------------------------------------------------------------------
// 11. I/O errors read as what failed, on which file, and the errno's name. (The glommio
// mapping itself is unit-tested in engine/src/storage/dma.rs; the ENOSPC import above shows
// it end to end when running as root.)

#[test]
fn item11_io_errors_name_the_file_and_the_errno() {
    let (t, root) = data_dir();
    let output = t.path().join("no-such-dir").join("g1.tx");
    let out = tern(&[
        "export-topic",
        "--path",
        p(&root),
        "--group",
        "1",
        "--output",
        p(&output),
    ]);
    expect(&out, 2, "export into a missing directory");
    assert!(
        out.stderr
            .contains("no-such-dir/g1.tmp-export: ENOENT (No such file or directory)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("os error"), "{}", out.stderr);
}
