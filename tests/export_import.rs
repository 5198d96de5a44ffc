//! export-topic then import-topic into an empty directory gives identical records and a
//! clean verify; import refuses to overwrite a group unless --force; a damaged export file
//! is refused before anything is written.

mod common;

use std::path::Path;

use common::*;
use tern_engine::export::{ExportEntry, ExportMeta, ExportReader};

fn read_export(path: &Path) -> (ExportMeta, Vec<ExportEntry>) {
    let mut r =
        ExportReader::open(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    let mut v = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        v.push(e);
    }
    (r.meta.clone(), v)
}

#[test]
fn export_then_import_into_an_empty_directory_round_trips() {
    let (t, root) = data_dir();
    let file = t.path().join("g2.tern-export");
    let out = tern(&[
        "export-topic",
        "--path",
        p(&root),
        "--group",
        "2",
        "--output",
        p(&file),
        "--json",
    ]);
    expect(&out, 0, "export-topic");
    assert_eq!(out.json()["entries"], ENTRIES);
    let (meta, entries) = read_export(&file);
    assert_eq!((meta.first_index, meta.last_index), (1, ENTRIES));
    assert!(entries[9].data.starts_with(b"g2-i10-t1:"));
    assert_eq!(meta.hard_state, Some((3, 1, ENTRIES)));

    let fresh = t.path().join("restored");
    let out = tern(&[
        "import-topic",
        "--path",
        p(&fresh),
        "--group",
        "2",
        "--input",
        p(&file),
        "--shards",
        "1",
    ]);
    expect(&out, 0, "import-topic into a missing directory");
    expect(
        &tern(&["verify-data", "--path", p(&fresh)]),
        0,
        "verify-data of the import",
    );
    let again = t.path().join("again.tern-export");
    expect(
        &tern(&[
            "export-topic",
            "--path",
            p(&fresh),
            "--group",
            "2",
            "--output",
            p(&again),
        ]),
        0,
        "re-export",
    );
    let (meta2, entries2) = read_export(&again);
    assert_eq!(entries, entries2);
    assert_eq!(
        (
            meta.first_index,
            meta.last_index,
            meta.hard_state,
            meta.term_first,
            meta.term_last
        ),
        (
            meta2.first_index,
            meta2.last_index,
            meta2.hard_state,
            meta2.term_first,
            meta2.term_last
        )
    );

    // The group now has data: refused without --force, replaced with it.
    let out = tern(&[
        "import-topic",
        "--path",
        p(&fresh),
        "--group",
        "2",
        "--input",
        p(&file),
    ]);
    expect(&out, 2, "import-topic over existing data");
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    expect(
        &tern(&[
            "import-topic",
            "--path",
            p(&fresh),
            "--group",
            "2",
            "--input",
            p(&file),
            "--force",
        ]),
        0,
        "import --force",
    );
    expect(
        &tern(&["verify-data", "--path", p(&fresh)]),
        0,
        "verify-data after --force",
    );

    // Import under another group id into an existing multi-shard directory.
    expect(
        &tern(&[
            "import-topic",
            "--path",
            p(&root),
            "--group",
            "9",
            "--input",
            p(&file),
        ]),
        0,
        "import as group 9",
    );
    let out = tern(&["verify-data", "--path", p(&root), "--group", "9", "--json"]);
    expect(&out, 0, "verify-data --group 9");
    assert_eq!(out.json()["groups"][0]["last_index"], ENTRIES);
}

#[test]
fn a_damaged_export_file_is_refused_before_anything_is_written() {
    let (t, root) = data_dir();
    let file = t.path().join("g1.tern-export");
    expect(
        &tern(&[
            "export-topic",
            "--path",
            p(&root),
            "--group",
            "1",
            "--output",
            p(&file),
        ]),
        0,
        "export",
    );
    flip_bit(&file, 5000);
    let fresh = t.path().join("restored");
    let out = tern(&[
        "import-topic",
        "--path",
        p(&fresh),
        "--group",
        "1",
        "--input",
        p(&file),
    ]);
    expect(&out, 2, "import of a damaged file");
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    assert!(!fresh.exists());
    // Truncated file.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    expect(
        &tern(&[
            "import-topic",
            "--path",
            p(&fresh),
            "--group",
            "1",
            "--input",
            p(&file),
        ]),
        2,
        "truncated",
    );
    // A group that does not exist cannot be exported.
    expect(
        &tern(&[
            "export-topic",
            "--path",
            p(&root),
            "--group",
            "77",
            "--output",
            p(&file),
        ]),
        2,
        "unknown group",
    );
}
