//! A failed shard seen over real HTTP, on a real `tern serve` process: shard 1's directory is
//! a tiny tmpfs that fills up, so the WAL's pre-allocation of its next segment fails with
//! ENOSPC and the shard fail-stops. `/health` then answers 503 naming shard 1 and the error,
//! `/metrics` shows `tern_shard_failed{shard="1"} 1`, and the partitions of shard 0 keep
//! serving. Why a full file system and not an injected fault: it is the failure operators
//! meet, it goes through the real engine and kernel, and it needs no testing-only code in the
//! node. It needs permission to mount a tmpfs (root, or CAP_SYS_ADMIN); without it the test
//! says so on stderr and passes without checking (src/node/http/fault_tests.rs covers the
//! same rules in-process on the simulated disk everywhere).

mod serve_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serve_support::{p, tern, ServeProcess};

const WAIT: Duration = Duration::from_secs(90);

/// Unmounts (lazily, so a leftover open file cannot keep it) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tern-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// (status code, body) of `curl URL`; 0 when nothing answers.
fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn get_until(url: &str, want: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = get(url);
        if code == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: no {want} within {WAIT:?}; last {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The partition of `events` whose replica lives on `shard`, from `tern raft-info --json`.
fn partition_on(http: &str, shard: u64) -> u64 {
    let (code, out) = tern(&["raft-info", "--http", http, "--json"]);
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("raft-info JSON");
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["topic"] == "events" && g["shard"] == shard)
        .and_then(|g| g["partition"].as_u64())
        .unwrap_or_else(|| panic!("no partition of events on shard {shard}: {out}"))
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read shard dir") {
        let e = e.expect("dir entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy segment");
    }
}

#[test]
fn health_names_a_shard_whose_disk_is_full_and_the_other_shard_keeps_serving() {
    let t = tempfile::tempdir().expect("temp dir");
    let data = t.path().join("data");
    let config = t.path().join("tern.toml");
    // 1 MiB segments: the tmpfs below fills after a few MiB of records.
    std::fs::write(
        &config,
        "[engine]\nsegment_bytes = \"1 MiB\"\nbatch_bytes_max = \"256 KiB\"\npending_bytes_max = \"1 MiB\"\n",
    )
    .expect("write config");
    let ip = format!("127.{}.241.8", 1 + std::process::id() % 250);
    let (http, kafka) = (format!("{ip}:9090"), format!("{ip}:9092"));
    let args = [
        "--standalone",
        "--shards",
        "2",
        "--config",
        p(&config),
        "--data-dir",
        p(&data),
        "--kafka-addr",
        &kafka,
        "--http-addr",
        &http,
    ];
    let log = t.path().join("serve.log");

    // First start: the directory and the topic, with partitions on both shards.
    let mut node = ServeProcess::start(&args, &log);
    get_until(&format!("http://{http}/ready"), 200);
    let (code, out) = tern(&[
        "create-topic",
        "events",
        "--partitions",
        "4",
        "--replication-factor",
        "1",
        "--server",
        &kafka,
    ]);
    assert_eq!(code, 0, "{out}");
    let on_full = partition_on(&http, 1).to_string();
    let on_healthy = partition_on(&http, 0).to_string();
    node.signal("TERM");
    assert!(node.wait_exit(WAIT).success(), "{}", node.log_text());
    drop(node);

    // Shard 1's segments move onto a tmpfs with about 1 MiB to spare (O_DIRECT on tmpfs:
    // Linux 6.6 and later).
    let shard1 = data.join("shard-1");
    let aside = t.path().join("shard-1.orig");
    std::fs::rename(&shard1, &aside).expect("move shard-1 aside");
    std::fs::create_dir(&shard1).expect("mount point");
    let used: u64 = std::fs::read_dir(&aside)
        .expect("read shard-1")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    let size = format!("{}k", used / 1024 + 1024);
    let _mount = match Tmpfs::mount(&shard1, &size) {
        Ok(m) => m,
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "shard_fault_http: SKIPPED, cannot mount a tmpfs ({why}); run as root to check /health on a full disk"
            );
            return;
        }
    };
    copy_dir(&aside, &shard1);

    let node = ServeProcess::start(&args, &log);
    get_until(&format!("http://{http}/ready"), 200);
    let line = "x".repeat(2000);
    let records = t.path().join("records.txt");
    std::fs::write(&records, format!("{line}\n").repeat(500)).expect("write records");
    // Bounded: 1 MB a round, the tmpfs has about 1 MiB free.
    let mut failed = None;
    for _ in 0..10 {
        let _ = tern(&[
            "produce",
            "events",
            "--partition",
            &on_full,
            "--batch-records",
            "50",
            "--file",
            p(&records),
            "--server",
            &kafka,
        ]);
        let (code, body) = get(&format!("http://{http}/health"));
        if code == 503 {
            failed = Some(body);
            break;
        }
        assert_eq!(code, 200, "{body}");
    }
    let body = failed.unwrap_or_else(|| panic!("/health never turned 503:\n{}", node.log_text()));
    let doc: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(doc["status"], "failed", "{body}");
    let reasons = doc["reasons"].to_string();
    assert!(reasons.contains("shard 1"), "{body}");
    assert!(reasons.contains("ENOSPC"), "{body}");

    let (code, metrics) = get(&format!("http://{http}/metrics"));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("tern_shard_failed{shard=\"1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tern_shard_failed{shard=\"0\"} 0"),
        "{metrics}"
    );

    // Shard 0 keeps serving: a produce to its partition is acknowledged and read back.
    let small = t.path().join("small.txt");
    std::fs::write(&small, "after-the-failure\n").expect("write record");
    let (code, out) = tern(&[
        "produce",
        "events",
        "--partition",
        &on_healthy,
        "--file",
        p(&small),
        "--server",
        &kafka,
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = tern(&[
        "consume",
        "events",
        "--partition",
        &on_healthy,
        "--server",
        &kafka,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("after-the-failure"), "{out}");
    // The process still serves HTTP (it did not exit): /health keeps naming the shard.
    let (code, _) = get(&format!("http://{http}/health"));
    assert_eq!(code, 503);
    drop(node);
}
