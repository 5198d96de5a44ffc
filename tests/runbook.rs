//! Runs every `sh` block of docs/operations/recovery.md, in order, against a generated data
//! directory (damaged as each block's `<!-- runbook-test: ... -->` comment says), and checks
//! the exit code of every command against its `# exit N` comment (0 when absent). The
//! document's conventions section describes the contract.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::runbook_doc::parse;
use common::*;

const DOC: &str = include_str!("../docs/operations/recovery.md");

fn prepare(data: &Path, setup: &str) {
    if data.exists() {
        std::fs::remove_dir_all(data).unwrap();
    }
    if setup == "missing" {
        return;
    }
    let (_t, fresh) = data_dir();
    copy_dir(&fresh, data);
    let last0 = segments(data, 0).last().unwrap().clone();
    match setup {
        "fresh" => {}
        // In a record header: the batch's frame breaks (a flip inside a payload is an entry
        // the node repairs from peers, the runbook's section on damaged entries).
        "damage=bit-flip" => {
            let seg = &segments(data, 0)[0];
            flip_bit(seg, middle_record_offset(seg));
        }
        "damage=zero-block" => {
            let seg = &segments(data, 1)[0];
            zero(seg, middle_record_offset(seg) / 4096 * 4096, 4096);
        }
        "damage=delete-index" => {
            std::fs::remove_file(segments(data, 0)[0].with_extension("idx")).unwrap()
        }
        "damage=truncated-header" => std::fs::OpenOptions::new()
            .write(true)
            .open(&last0)
            .unwrap()
            .set_len(40)
            .unwrap(),
        "damage=torn-tail" => {
            let scan = tern(&["scan", "--path", p(&last0), "--json"]).json();
            flip_bit(
                &last0,
                scan["last_valid_record_offset"].as_u64().unwrap() + 20,
            );
        }
        // 20 random-looking bytes, not even UTF-8: the damage of section 8.
        "damage=garble-engine" => std::fs::write(
            data.join("ENGINE"),
            [
                0x9c, 0xff, 0x13, 0x00, 0xfe, 0x80, 0x41, 0xc3, 0x28, 0x07, 0xa0, 0xa1, 0x5a, 0xe2,
                0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc,
            ],
        )
        .unwrap(),
        other => panic!("unknown runbook-test set-up {other:?}"),
    }
}

#[test]
fn every_command_of_the_recovery_runbook_runs_as_documented() {
    let blocks = parse(DOC);
    assert!(
        blocks.len() >= 10,
        "expected the runbook's blocks, found {}",
        blocks.len()
    );
    let all: String = blocks
        .iter()
        .flat_map(|b| b.commands.iter().map(|c| c.1.clone()))
        .collect();
    for cmd in [
        "verify-data",
        "scan",
        "dump",
        "repair",
        "--skip-corrupt",
        "--dry-run",
        "rebuild-index",
        "inspect-index",
        "export-topic",
        "import-topic",
        "generate",
    ] {
        assert!(all.contains(cmd), "the runbook never runs `{cmd}`");
    }
    let t = scratch();
    let data = t.path().join("data");
    let backup = t.path().join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let bin_dir: PathBuf = Path::new(TERN).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for b in &blocks {
        if let Some(s) = &b.setup {
            prepare(&data, s);
        }
        for (line, cmd, want) in &b.commands {
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("PATH", &path)
                .env("DATA", &data)
                .env("BACKUP", &backup)
                .current_dir(t.path())
                .output()
                .unwrap();
            let code = out.status.code().unwrap_or(-1);
            assert_eq!(
                code,
                *want,
                "docs/operations/recovery.md line {line} (block at line {}): `{cmd}` exited {code}, the document says {want}\nstdout:\n{}\nstderr:\n{}",
                b.line,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
