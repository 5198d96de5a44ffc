//! tern-bench's output contract (issue 8): a closed stdout stops a run quietly, and with
//! `--json` every error is one JSON object on stdout.

use std::process::{Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_tern-bench");

#[test]
fn closed_stdout_stops_the_run_quietly() {
    let base = tempfile::TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let dir = base.path().join("wal");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(BENCH)
        .args(["wal", "--duration", "0.2", "--warmup", "0", "--dir"])
        .arg(&dir)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run tern-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn json_of(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BENCH).args(args).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let doc =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"));
    (out.status.code(), doc)
}

#[test]
fn json_errors_are_json() {
    let (code, doc) = json_of(&["wal", "--json", "--record-bytes", "0"]);
    assert_eq!(code, Some(1));
    assert!(
        doc["error"]
            .as_str()
            .unwrap_or_default()
            .contains("record-bytes"),
        "{doc}"
    );
    let (code, doc) = json_of(&["wal", "--json", "--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert_eq!(doc["exit_code"], 2, "{doc}");
}
