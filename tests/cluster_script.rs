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
