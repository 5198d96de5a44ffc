//! Real processes on loopback (scripts/cluster.sh, node i on 127.0.0.i): a bit flipped in a
//! committed record of a sealed segment of a stopped follower is repaired from its peers once
//! the node is started and something reads the record (docs/ARCHITECTURE.md, "Repair of
//! damaged entries"): the node logs `entry repaired from peer`, every node serves every
//! acknowledged record exactly once and in order, and `tern verify-data` on the stopped
//! follower is clean (the damaged record is reported as repaired, a warning).
//!
//! Every cluster is stopped by its guard, also when a test fails.

mod serve_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serve_support::cluster::{check_against_acks, Cluster, SeqProducer, WAIT_MAX};
use serve_support::{p, tern};

/// Small segments (the minimum), so the follower seals several while the test produces.
const CONFIG: &str = "[engine]\nsegment_bytes = \"1 MiB\"\nbatch_bytes_max = \"256 KiB\"\npending_bytes_max = \"1 MiB\"\n";

/// Waits (bounded by `WAIT_MAX`) until `done` holds.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT_MAX;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Sealed segments of node data directory `data` (those with an index), oldest first.
fn sealed_segments(data: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(data.join("shard-0"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                .filter(|p| p.with_extension("idx").exists())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// (file, offset of the payload's middle byte) of a partition entry (group != 0, with a
/// payload) in the oldest sealed segment of the stopped node's directory, read with
/// `tern dump`.
fn committed_entry_in_sealed_segment(data: &Path) -> (PathBuf, u64, u64, u64) {
    let sealed = sealed_segments(data);
    let first = sealed.first().expect("a sealed segment");
    let out = std::process::Command::new(serve_support::TERN)
        .args(["dump", "--path", p(first), "--json", "--preview-bytes", "0"])
        .output()
        .expect("run tern dump");
    assert!(out.status.success(), "dump {}", first.display());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dump JSON");
    let records = doc["records"].as_array().expect("records");
    // One from the middle of the segment: data before and after it, all acknowledged.
    let entries: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            r["kind"] == "entry"
                && r["group"].as_u64().is_some_and(|g| g != 0)
                && r["payload_bytes"].as_u64().is_some_and(|b| b > 0)
        })
        .collect();
    let r = entries.get(entries.len() / 2).expect("a partition entry");
    let offset = r["offset"].as_u64().expect("offset");
    let bytes = r["payload_bytes"].as_u64().expect("bytes");
    (
        first.clone(),
        offset + 64 + bytes / 2,
        r["group"].as_u64().expect("group"),
        r["index"].as_u64().expect("index"),
    )
}

fn flip_bit(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read byte");
    b[0] ^= 0x10;
    f.write_all_at(&b, at).expect("write byte");
    f.sync_all().expect("sync");
}

#[test]
fn repair_corrupt_record_in_sealed_segment_of_follower_three_nodes_verify_clean() {
    let topic = "repair";
    let c = Cluster::with_config(3, CONFIG);
    c.start();
    c.create_topic(topic, 1, 3);
    let producer = SeqProducer::start(c.client_config(1), topic, 0);
    let leader = c.leader(topic, 0, &[1, 2, 3]);
    let victim = if leader == 2 { 3 } else { 2 };
    // Until the follower has sealed two segments (so the first holds only committed data).
    assert!(
        wait_until(|| sealed_segments(&c.data(victim)).len() >= 2),
        "node {victim} sealed no segment"
    );
    let produced = producer.finish();
    assert!(!produced.acks.is_empty(), "no produce acknowledged");
    let hw = produced.high_watermark();
    c.converged(&[1, 2, 3], topic, 0, hw);

    c.run(&["stop", &victim.to_string()]);
    let (segment, at, group, index) = committed_entry_in_sealed_segment(&c.data(victim));
    flip_bit(&segment, at);
    let (code, out) = tern(&["verify-data", "--path", p(&c.data(victim))]);
    assert_ne!(code, 0, "verify-data missed the flipped bit: {out}");
    assert!(out.contains("damaged-entry"), "{out}");

    c.run(&["start", &victim.to_string()]);
    // Detection: reading the partition from the follower reads the damaged entry (a fetch
    // answers a retriable error until it is repaired; `converged` retries).
    let served = c.converged(&[1, 2, 3], topic, 0, hw);
    check_against_acks("every node after the repair", &served, &produced);
    let (_, on_victim) = c
        .served(victim, topic, 0)
        .unwrap_or_else(|e| panic!("node {victim} serves nothing: {e}"));
    check_against_acks(&format!("fetch from node {victim}"), &on_victim, &produced);
    assert!(
        wait_until(|| c.log(victim).contains("entry repaired from peer")),
        "node {victim} logged no repair of {group}/{index}: {}",
        c.log(victim)
    );

    c.run(&["stop", &victim.to_string()]);
    let (code, out) = tern(&["verify-data", "--path", p(&c.data(victim))]);
    assert_eq!(code, 0, "verify-data after the repair: {out}");
    assert!(out.contains("repaired-entry"), "{out}");
    // Offline, the directory holds every acknowledged record once (the Repair record's copy
    // in place of the damaged one).
    let offline = c.offline(victim);
    check_against_acks(&format!("node {victim} offline"), &offline, &produced);
}

#[test]
fn scrubber_finds_corrupt_record_in_sealed_segment_of_running_follower_three_nodes() {
    let topic = "scrub";
    // The scrubber runs every second here (default: daily).
    let config = format!("{CONFIG}[recovery]\nscrub_interval = \"1s\"\n");
    let c = Cluster::with_config(3, &config);
    c.start();
    c.create_topic(topic, 1, 3);
    let producer = SeqProducer::start(c.client_config(1), topic, 0);
    let leader = c.leader(topic, 0, &[1, 2, 3]);
    let victim = if leader == 2 { 3 } else { 2 };
    assert!(
        wait_until(|| sealed_segments(&c.data(victim)).len() >= 2),
        "node {victim} sealed no segment"
    );
    let produced = producer.finish();
    let hw = produced.high_watermark();
    c.converged(&[1, 2, 3], topic, 0, hw);
    // Bit rot under a running node, in data nothing reads: only the scrubber finds it.
    let (segment, at, group, index) = committed_entry_in_sealed_segment_running(&c.data(victim));
    flip_bit(&segment, at);
    assert!(
        wait_until(|| {
            let log = c.log(victim);
            log.contains("found by the scrubber") && log.contains("entry repaired from peer")
        }),
        "node {victim}: no scrubber repair of {group}/{index}: {}",
        c.log(victim)
    );
    let served = c.converged(&[1, 2, 3], topic, 0, hw);
    check_against_acks("every node after the scrub", &served, &produced);
    c.run(&["stop", &victim.to_string()]);
    let (code, out) = tern(&["verify-data", "--path", p(&c.data(victim))]);
    assert_eq!(code, 0, "verify-data after the scrubber's repair: {out}");
    assert!(out.contains("repaired-entry"), "{out}");
}

/// As [`committed_entry_in_sealed_segment`], for a running node: its sealed segments are never
/// written again, so reading them (a copy, without the node's lock) is safe.
fn committed_entry_in_sealed_segment_running(data: &Path) -> (PathBuf, u64, u64, u64) {
    let sealed = sealed_segments(data);
    let first = sealed.first().expect("a sealed segment");
    let copy = tempfile::tempdir().expect("temp dir");
    let shard = copy.path().join("shard-0");
    std::fs::create_dir_all(&shard).expect("mkdir");
    let name = first.file_name().expect("file name");
    std::fs::copy(first, shard.join(name)).expect("copy segment");
    let idx = first.with_extension("idx");
    std::fs::copy(&idx, shard.join(name).with_extension("idx")).expect("copy index");
    let (_, at, group, index) = committed_entry_in_sealed_segment(copy.path());
    (first.clone(), at, group, index)
}
