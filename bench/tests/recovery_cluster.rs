//! `tern-bench recovery --cluster` at a tiny size on a real 3-node loopback cluster
//! (scripts/cluster.sh, node i on 127.0.0.i): the JSON line carries every phase's figures and
//! they are consistent with each other, the repair of a damaged entry (phase 3) included. No timing thresholds: the machine may be slow.
//!
//! Needs the node binary beside tern-bench (`cargo build -p tern`); the guard stops every
//! node of the run's cluster directory, also when an assertion fails or the run hangs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_tern-bench");
/// Bound of the whole run; a tiny one takes seconds.
const RUN_MAX: Duration = Duration::from_secs(300);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// Stops the cluster of the run's directory whatever happened to tern-bench.
struct StopGuard {
    cluster_dir: PathBuf,
    bin: PathBuf,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if self.cluster_dir.exists() {
            let _ = Command::new("bash")
                .arg(workspace().join("scripts/cluster.sh"))
                .arg("stop")
                .env("TERN_CLUSTER_DIR", &self.cluster_dir)
                .env("TERN_BIN", &self.bin)
                .stdin(Stdio::null())
                .output();
        }
    }
}

fn ms(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number of ms, got {v}"))
}

/// The restart figures: present, non-negative, and ordered as the phases happen.
fn check_restart(r: &Value, min_groups: u64) {
    let (process, health, ready) = (
        ms(&r["process_ms"]),
        ms(&r["health_ms"]),
        ms(&r["ready_ms"]),
    );
    assert!(ms(&r["kill_ms"]) >= 0.0, "{r}");
    assert!(
        process >= 0.0 && process <= health && health <= ready,
        "{r}"
    );
    assert!(r["wal_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(r["unindexed_files"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["unindexed_read_ms"].as_f64().unwrap() >= 0.0, "{r}");
    assert_eq!(
        ms(&r["target_ms"]),
        ((1000.0 + ms(&r["unindexed_read_ms"])) * 10.0).round() / 10.0,
        "{r}"
    );
    assert_eq!(
        r["met"].as_bool().unwrap(),
        ready <= ms(&r["target_ms"]),
        "{r}"
    );
    let n = &r["node"];
    let replay = n["replay_ms"]
        .as_u64()
        .expect("replay_ms from the node's log");
    let total = n["total_ms"]
        .as_u64()
        .expect("total_ms from the node's log");
    assert!(replay <= total, "{n}");
    assert_eq!(n["catch_up_ms"].as_u64().unwrap(), total - replay, "{n}");
    assert!(n["shard_replay_ms_max"].as_u64().unwrap() <= replay, "{n}");
    assert!(n["replayed_records"].as_u64().unwrap() > 0, "{n}");
    assert!(n["groups"].as_u64().unwrap() >= min_groups, "{n}");
    // Groups start once their shard replayed, and the node is ready after that.
    let initialised = n["groups_initialised_ms"]
        .as_u64()
        .expect("groups_initialised_ms");
    assert!(initialised <= total + 1000, "{n}");
    let first = n["first_group_caught_up_ms"].as_u64().unwrap();
    assert!(
        first <= n["last_group_caught_up_ms"].as_u64().unwrap(),
        "{n}"
    );
}

#[test]
fn recovery_cluster_reports_every_phase() {
    let bin = PathBuf::from(BENCH).with_file_name("tern");
    assert!(
        bin.is_file(),
        "{} is missing: build the node first (cargo build -p tern)",
        bin.display()
    );
    let base = tempfile::TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let dir = base.path().join("run");
    let _guard = StopGuard {
        cluster_dir: dir.join("cluster"),
        bin: bin.clone(),
    };
    // Apart from the node tests (5000..9000, 10000..22000) and bench-all.sh (20000), so all
    // may run at once; and every port (9090..9093 + offset) stays below Linux's ephemeral
    // range (32768..), where an outgoing connection may hold the port a node wants.
    let offset = 22_000 + (std::process::id() % 100) * 10;
    let mut child = Command::new(BENCH)
        .args([
            "recovery",
            "--cluster",
            "--json",
            "--gib",
            "0.004",
            "--partitions",
            "2",
            "--many-partitions",
            "4",
            "--producers",
            "2",
            "--load-seconds",
            "1",
            "--port-offset",
            &offset.to_string(),
            "--dir",
        ])
        .arg(&dir)
        .arg("--tern-bin")
        .arg(&bin)
        .arg("--cluster-script")
        .arg(workspace().join("scripts/cluster.sh"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern-bench");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > RUN_MAX {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern-bench recovery --cluster still running after {RUN_MAX:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {stdout}"));
    eprintln!("rebuild: {}", doc["rebuild"]);

    assert_eq!(doc["bench"], "recovery-cluster");
    assert_eq!(doc["nodes"], 3);
    assert_eq!(doc["written"]["partitions"], 2);
    assert!(doc["written"]["bytes"].as_u64().unwrap() >= (0.004 * (1u64 << 30) as f64) as u64);
    // Two partitions and the controller, at least.
    check_restart(&doc["restart"], 3);
    let many = &doc["many_partitions"];
    assert_eq!(many["partitions"], 4, "{many}");
    assert!(many.get("error").is_none(), "{many}");
    assert!(ms(&many["create_ms"]) >= 0.0);
    let probe = &many["produce_probe"];
    assert_eq!(probe["batches"], 4, "{probe}");
    assert!(ms(&probe["mean_ms"]) > 0.0 && ms(&probe["mean_ms"]) <= ms(&probe["max_ms"]));
    check_restart(&many["restart"], 3 + 4);
    assert_eq!(
        many["restart"]["node"]["groups"].as_u64().unwrap(),
        doc["restart"]["node"]["groups"].as_u64().unwrap() + 4,
        "the new topic adds one group per partition on node 2"
    );
    // Rebuild either ran (with its figures) or says why it did not.
    let p = &doc["rebuild"];
    assert!(
        p["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("not available"))
            || p["ready_ms"].as_f64().is_some(),
        "rebuild: {p}"
    );
    // Repair ran: one damaged entry on node 2 detected, repaired from a peer, and verify-data
    // of the stopped node clean, the damaged record reported as repaired.
    let r = &doc["repair"];
    assert!(r.get("skipped").is_none(), "repair: {r}");
    assert_eq!(r["verify_clean"], true, "{r}");
    assert!(r["repaired_warnings"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["group"].as_u64().unwrap() > 0, "{r}");
    let detect_to_clean = ms(&r["detect_to_clean_ms"]);
    assert!(
        detect_to_clean >= r["detect_to_repaired_ms"].as_u64().unwrap() as f64,
        "{r}"
    );
    assert!(
        detect_to_clean >= ms(&r["verify_ms"]) && ms(&r["stop_ms"]) >= 0.0,
        "{r}"
    );
    assert!(
        ["recovery", "a read"].contains(&r["detected_by"].as_str().unwrap()),
        "{r}"
    );
    if let Some(r) = doc["rebuild"].get("ratio") {
        assert!(r.as_f64().unwrap() > 0.0);
        // Counted by the rebuilt node (tern_snapshot_transfer_bytes_total{direction="in"}).
        assert!(
            doc["rebuild"]["bytes"].as_u64().unwrap() > 0,
            "{}",
            doc["rebuild"]
        );
        assert!(doc["rebuild"]["load_during"]["p99_us"].as_f64().unwrap() > 0.0);
        assert!(doc["rebuild"]["load_before"]["p99_us"].as_f64().unwrap() > 0.0);
    }
    assert!(!doc["loadavg"].as_str().unwrap().is_empty());
    assert_eq!(doc["kept"], false);
    assert!(!dir.exists(), "the run's directory is removed");
}
