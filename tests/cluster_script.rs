//! scripts/cluster.sh against the real binary: 3 nodes on 127.0.0.1-3 start, hold their
//! locks, survive kill/restart/wipe, and stop; afterwards no process of the cluster is left,
//! also when an assertion fails (the guard stops and then SIGKILLs whatever is left).

mod serve_support;

use serve_support::cluster::Cluster;
use serve_support::{p, tern};

#[test]
fn cluster_script_three_nodes_start_kill_restart_wipe_stop() {
    let c = Cluster::new(3);
    let (code, out) = c.script(&["start"]);
    assert_eq!(code, 0, "{out}");
    for n in 1..=3 {
        assert!(out.contains(&format!("node {n}: running")), "{out}");
        let log = std::fs::read_to_string(c.dir().join(format!("node-{n}.log"))).unwrap();
        assert!(
            log.contains(&format!("127.0.0.{n}")),
            "node {n} on its own address: {log}"
        );
        assert!(log.contains("caught_up"), "{log}");
    }
    assert_eq!(c.live_pids().len(), 3);
    let (code, out) = c.script(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches(": running").count(), 3, "{out}");

    // Every node holds its data directory's lock.
    for n in 1..=3 {
        let (code, out) = tern(&["verify-data", "--path", p(&c.data(n))]);
        assert_eq!(code, 2, "node {n}: {out}");
        assert!(out.contains("locked"), "{out}");
    }
    // The nodes share one cluster id and each keeps its own node id.
    let cluster_id = std::fs::read_to_string(c.dir().join("cluster-id")).unwrap();
    for n in 1..=3 {
        let identity = std::fs::read_to_string(c.data(n).join("NODE")).unwrap();
        assert!(
            identity.contains(&format!("cluster={}", cluster_id.trim())),
            "{identity}"
        );
        assert!(identity.contains(&format!("node={n}\n")), "{identity}");
        // `cluster.sh start` of a new cluster bootstraps it: every node is admitted.
        assert!(identity.contains("admitted=1\n"), "{identity}");
    }

    let (code, out) = c.script(&["kill", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SIGKILL"), "{out}");
    assert_eq!(c.live_pids().len(), 2);
    let (code, out) = c.script(&["status"]);
    assert_eq!(code, 1, "a stopped node makes status fail: {out}");
    assert!(out.contains("node 2: stopped"), "{out}");

    // Wiping a running node is refused; a stopped one is wiped.
    let (code, out) = c.script(&["wipe", "3"]);
    assert_eq!(code, 1, "{out}");
    assert!(c.data(3).exists());
    let (code, out) = c.script(&["wipe", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(!c.data(2).exists());

    // A node whose data was wiped must not vote again with its promises forgotten: its
    // peers still count it as a voter, so it refuses to start and names the rebuild.
    let (code, out) = c.script(&["restart", "2"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("exited at start-up"), "{out}");
    let log = std::fs::read_to_string(c.dir().join("node-2.log")).unwrap();
    assert!(log.contains("rebuilt") || log.contains("rebuild"), "{log}");
    assert_eq!(c.live_pids().len(), 2);
    let (code, out) = c.script(&["restart", "1"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("node 1: stopped") && out.contains("node 1: running"),
        "{out}"
    );

    let (code, out) = c.script(&["kill", "9"]);
    assert_eq!(code, 2, "usage error for a node that does not exist: {out}");

    let (code, out) = c.script(&["stop"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches(": stopped").count(), 2, "{out}");
    assert!(
        c.live_pids().is_empty(),
        "processes left: {:?}",
        c.live_pids()
    );
    // A graceful stop closed every WAL: the offline check is clean.
    for n in [1, 3] {
        let (code, out) = tern(&["verify-data", "--path", p(&c.data(n))]);
        assert_eq!(code, 0, "node {n}: {out}");
    }
}

/// `tern cluster-status` against a 3-node cluster shows the three members with their
/// addresses and a leader for every partition; `raft-info` shows each node's replicas; the
/// script's status reads each node's /health.
#[test]
fn cluster_script_three_nodes_cluster_status_shows_members_and_leaders() {
    let c = Cluster::new(3);
    let (code, out) = c.script(&["start"]);
    assert_eq!(code, 0, "{out}");
    let http = |n: u32| format!("127.0.0.{n}:{}", 9090 + c.port_offset());
    let kafka = format!("127.0.0.1:{}", 9092 + c.port_offset());
    let (code, out) = tern(&[
        "create-topic",
        "events",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        "--server",
        &kafka,
    ]);
    assert_eq!(code, 0, "{out}");

    // Bounded: elections of the new partitions take a few ticks on a busy machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let (code, out) = tern(&["cluster-status", "--http", &http(1), "--json"]);
        assert_eq!(code, 0, "{out}");
        let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        let partitions = doc["topics"][0]["partitions"].as_array().cloned();
        let led = partitions
            .as_ref()
            .is_some_and(|ps| ps.len() == 3 && ps.iter().all(|p| p["leader"].is_u64()));
        if led && doc["members"].as_array().is_some_and(|m| m.len() == 3) {
            break doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leader for every partition: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for (i, m) in status["members"].as_array().unwrap().iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(m["node_id"], n, "{status}");
        assert_eq!(m["http_addr"], http(n as u32).as_str(), "{status}");
    }
    assert_eq!(status["members"][0]["health"], "ok", "{status}");
    for part in status["topics"][0]["partitions"].as_array().unwrap() {
        assert_eq!(part["replicas"].as_array().unwrap().len(), 3, "{status}");
    }
    let (code, out) = tern(&["cluster-status", "--http", &http(1)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("events") && out.contains("127.0.0.3"), "{out}");

    // Every node replicates every partition (and the controller).
    for n in 1..=3 {
        let (code, out) = tern(&["raft-info", "--http", &http(n), "--json"]);
        assert_eq!(code, 0, "{out}");
        let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        assert_eq!(
            doc["groups"].as_array().unwrap().len(),
            4,
            "node {n}: {out}"
        );
    }
    let (code, out) = c.script(&["status"]);
    assert_eq!(code, 0, "{out}");
    if out.contains("health:") {
        assert_eq!(out.matches("\"status\":\"ok\"").count(), 3, "{out}");
    }
    let (code, out) = c.script(&["stop"]);
    assert_eq!(code, 0, "{out}");
}
