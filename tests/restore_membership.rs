//! A partition whose backup starts at a snapshot point, restored into a new standalone node
//! (docs/operations/cluster.md, section 8): `tern import-topic` gives the restored snapshot
//! point the membership of the group it replaces, so the node elects itself, becomes ready
//! and serves every record after the snapshot point. The exported snapshot point names the exporting node (node 3
//! here), which the restoring node (node 1) is not: kept as exported, the group would wait
//! for a voter that does not exist, and the node would never be ready.
//!
//! Every process is killed on drop, also when an assertion fails; every wait is bounded.

mod serve_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serve_support::{p, tern, ServeProcess};
use tern_engine::export::ExportReader;

const WAIT_MAX: Duration = Duration::from_secs(60);
const RECORDS: usize = 25;

struct Addrs {
    kafka: String,
    http: String,
}

fn addrs(n: u32) -> Addrs {
    let ip = format!("127.{}.{}.7", 1 + std::process::id() % 250, 200 + n);
    Addrs {
        kafka: format!("{ip}:9092"),
        http: format!("{ip}:9090"),
    }
}

fn start(data: &Path, node: u32, a: &Addrs, log: &Path) -> ServeProcess {
    let mut s = ServeProcess::start(
        &[
            "--standalone",
            "--shards",
            "1",
            "--node-id",
            &node.to_string(),
            "--data-dir",
            p(data),
            "--kafka-addr",
            &a.kafka,
            "--http-addr",
            &a.http,
        ],
        log,
    );
    s.wait_for("caught_up: every shard recovered", 1, WAIT_MAX);
    s
}

/// `tern ARGS` retried (bounded) until it succeeds; its output.
fn until_ok(args: &[&str]) -> String {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let (code, out) = tern(args);
        if code == 0 {
            return out;
        }
        assert!(Instant::now() < deadline, "tern {args:?}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Produces `record-I` for each I of `range` to partition 0 of `t`, retried (bounded) until
/// acknowledged.
fn produce(kafka: &str, range: std::ops::Range<usize>) {
    let values: String = range.map(|i| format!("record-{i}\n")).collect();
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let mut child = Command::new(serve_support::TERN)
            .args(["produce", "t", "--partition", "0", "--server", kafka])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tern produce");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(values.as_bytes())
            .expect("write records");
        let out = child.wait_with_output().expect("produce output");
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "produce: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The group of partition 0 of `topic` as the node at `http` shows it.
fn group_of(http: &str, topic: &str) -> u64 {
    let out = until_ok(&["cluster-status", "--http", http, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    doc["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == topic))
        .and_then(|t| t["partitions"][0]["group"].as_u64())
        .unwrap_or_else(|| panic!("no group for {topic}: {doc}"))
}

fn stop(mut s: ServeProcess) {
    s.signal("TERM");
    assert!(s.wait_exit(WAIT_MAX).success(), "{}", s.log_text());
}

#[test]
fn a_restored_snapshot_point_takes_the_membership_of_the_group_it_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let new = tmp.path().join("new");
    let backup = tmp.path().join("t-0.tern");
    let log = |n: u32| tmp.path().join(format!("serve-{n}.log"));

    // The backed-up node: node 3, records produced, the log compacted to a snapshot point.
    let a = addrs(1);
    let node = start(&old, 3, &a, &log(1));
    until_ok(&[
        "create-topic",
        "t",
        "--partitions",
        "1",
        "--replication-factor",
        "1",
        "--server",
        &a.kafka,
    ]);
    produce(&a.kafka, 0..RECORDS);
    let out = Command::new("curl")
        .args(["-fsS", "-X", "POST"])
        .arg(format!(
            "http://{}/admin/snapshot?topic=t&partition=0",
            a.http
        ))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "snapshot: {out:?}");
    // Records after the snapshot point: the backup holds them as entries.
    produce(&a.kafka, RECORDS..2 * RECORDS);
    let old_group = group_of(&a.http, "t");
    stop(node);
    let (code, out) = tern(&[
        "export-topic",
        "--path",
        p(&old),
        "--group",
        &old_group.to_string(),
        "--output",
        p(&backup),
    ]);
    assert_eq!(code, 0, "export: {out}");
    let meta = ExportReader::open(std::io::BufReader::new(
        std::fs::File::open(&backup).unwrap(),
    ))
    .unwrap()
    .meta
    .clone();
    assert!(
        meta.snapshot.is_some(),
        "the backup must start at a snapshot point"
    );

    // The new node: node 1, standalone, the topic created, its group replaced by the backup.
    let b = addrs(2);
    let node = start(&new, 1, &b, &log(2));
    until_ok(&[
        "create-topic",
        "t",
        "--partitions",
        "1",
        "--replication-factor",
        "1",
        "--server",
        &b.kafka,
    ]);
    let new_group = group_of(&b.http, "t");
    stop(node);
    let (code, out) = tern(&[
        "import-topic",
        "--path",
        p(&new),
        "--group",
        &new_group.to_string(),
        "--input",
        p(&backup),
        "--force",
    ]);
    assert_eq!(code, 0, "import: {out}");
    let import_said = out;
    let (code, out) = tern(&["verify-data", "--path", p(&new)]);
    assert_eq!(code, 0, "verify-data: {out}");

    let mut node = start(&new, 1, &b, &log(3));
    node.wait_for("caught_up: node ready", 1, WAIT_MAX);
    // What the snapshot point compacted away is gone (as on the old node); every record
    // after it is served.
    let out = until_ok(&["consume", "t", "--partition", "0", "--server", &b.kafka]);
    let got: Vec<&str> = out.lines().collect();
    let want: Vec<String> = (RECORDS..2 * RECORDS)
        .map(|i| format!("record-{i}"))
        .collect();
    assert_eq!(got, want);
    stop(node);
    assert!(
        import_said.contains("takes the membership of the group it replaces"),
        "{import_said}"
    );
}
