//! `tern serve` as a real process: it starts, recovers the WAL, holds the data directory's
//! lock, stops cleanly on SIGTERM/SIGINT, and refuses bad configuration and foreign
//! identities with the documented exit codes.

mod serve_support;

use std::time::Duration;

use serve_support::{p, tern, ServeProcess};

const UP: Duration = Duration::from_secs(60);
const DOWN: Duration = Duration::from_secs(20);

#[test]
fn serve_standalone_starts_holds_the_lock_and_stops_on_sigterm_then_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let args = ["--data-dir", p(&data), "--shards", "2"];

    let mut node = ServeProcess::start(&args, &log);
    node.wait_for("caught_up: every shard", 1, UP);
    let text = node.log_text();
    assert!(text.contains("identity: created"), "{text}");
    assert!(text.contains("admission: bootstrapping"), "{text}");
    assert_eq!(text.matches("replay: shard recovered").count(), 2, "{text}");
    let identity = std::fs::read_to_string(data.join("NODE")).unwrap();
    assert!(
        identity.contains("node=1\n") && identity.contains("admitted=1\n"),
        "{identity}"
    );

    // The lock is held: an offline command and a second node are refused.
    let (code, out) = tern(&["verify-data", "--path", p(&data)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("locked"), "{out}");
    let (code, out) = tern(&["serve", "--data-dir", p(&data)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("locked"), "{out}");

    node.signal("TERM");
    let status = node.wait_exit(DOWN);
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    assert!(node.log_text().contains("shutdown: complete"));

    // The lock was released, and the directory is clean for the offline tools.
    let (code, out) = tern(&["verify-data", "--path", p(&data)]);
    assert_eq!(code, 0, "{out}");

    // Second start: the identity is known and the node resumes; SIGINT stops it too.
    let mut node = ServeProcess::start(&args, &log);
    node.wait_for("caught_up: every shard", 2, UP);
    let text = node.log_text();
    assert!(text.contains("identity: existing"), "{text}");
    assert!(text.contains("admission: resume"), "{text}");
    node.signal("INT");
    assert_eq!(node.wait_exit(DOWN).code(), Some(0), "{}", node.log_text());
}

#[test]
fn serve_replays_an_existing_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (code, out) = tern(&[
        "generate",
        "--path",
        p(&data),
        "--shards",
        "1",
        "--groups",
        "2",
        "--entries",
        "50",
    ]);
    assert_eq!(code, 0, "{out}");
    let log = tmp.path().join("serve.log");
    let mut node = ServeProcess::start(&["--data-dir", p(&data), "--log-format", "json"], &log);
    node.wait_for("caught_up: every shard", 1, UP);
    let text = node.log_text();
    // A directory written before identities existed is adopted by a standalone node.
    assert!(text.contains("identity: adopted"), "{text}");
    let replay: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "replay: shard recovered")
        .unwrap_or_else(|| panic!("no JSON replay line:\n{text}"));
    assert!(
        replay["fields"]["records"].as_u64().unwrap() >= 100,
        "{replay}"
    );
    assert_eq!(replay["fields"]["groups"].as_u64(), Some(2), "{replay}");
    node.signal("TERM");
    assert_eq!(node.wait_exit(DOWN).code(), Some(0), "{}", node.log_text());
    let (code, out) = tern(&["verify-data", "--path", p(&data)]);
    assert_eq!(code, 0, "the node closed the WAL cleanly: {out}");
}

#[test]
fn serve_refuses_another_node_id_or_cluster_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut node = ServeProcess::start(&["--data-dir", p(&data), "--shards", "1"], &log);
    node.wait_for("caught_up: every shard", 1, UP);
    node.signal("TERM");
    assert_eq!(node.wait_exit(DOWN).code(), Some(0));
    let identity = std::fs::read_to_string(data.join("NODE")).unwrap();
    let cluster = identity
        .lines()
        .find_map(|l| l.strip_prefix("cluster="))
        .unwrap()
        .to_string();

    let (code, out) = tern(&["serve", "--data-dir", p(&data), "--node-id", "7"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("belongs to node 1, not node 7"), "{out}");

    let other = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let (code, out) = tern(&["serve", "--data-dir", p(&data), "--cluster-id", other]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&cluster) && out.contains(other), "{out}");
}

#[test]
fn serve_refuses_bad_configuration_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("tern.toml");

    std::fs::write(&cfg, "nodeid = 2\n").unwrap();
    let (code, out) = tern(&["serve", "--config", p(&cfg), "--data-dir", p(&data)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("nodeid"), "{out}");

    std::fs::write(&cfg, "[raft]\nelection_timeout_max = \"100ms\"\n").unwrap();
    let (code, out) = tern(&["serve", "--config", p(&cfg), "--data-dir", p(&data)]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("raft.election_timeout_max"), "{out}");

    let (code, out) = tern(&["serve", "--config", p(&tmp.path().join("missing.toml"))]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("missing.toml"), "{out}");

    // A new node of a multi-node cluster needs the cluster id.
    let (code, out) = tern(&[
        "serve",
        "--data-dir",
        p(&data),
        "--peers",
        "1=127.0.0.1:9093,2=127.0.0.2:9093",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--cluster-id"), "{out}");
    assert!(
        !data.join("ENGINE").exists(),
        "refused before the engine created anything"
    );
}

#[test]
fn serve_stops_every_shard_when_one_cannot_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let args = ["--data-dir", p(&data), "--shards", "2"];
    let mut node = ServeProcess::start(&args, &log);
    node.wait_for("caught_up: every shard", 1, UP);
    node.signal("TERM");
    assert_eq!(node.wait_exit(DOWN).code(), Some(0));

    // Shard 1's directory is replaced by a file: its WAL cannot open. The node must not run
    // on with shard 0 alone (nor hang waiting for a signal): it stops it and exits 1.
    std::fs::remove_dir_all(data.join("shard-1")).unwrap();
    std::fs::write(data.join("shard-1"), b"not a directory").unwrap();
    let mut node = ServeProcess::start(&args, &log);
    let status = node.wait_exit(DOWN);
    let text = node.log_text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("stopped:"), "{text}");
    assert!(
        text.contains("shard-1"),
        "the error names the shard's path: {text}"
    );
}
