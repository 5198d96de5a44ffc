//! `tern serve --force-new-cluster` on real processes (scripts/cluster.sh, node i on
//! 127.0.0.i): 3 nodes acknowledge records (some while node 3 is down), every node stops, node
//! 2 restarts as the only voter of everything it holds, nodes 1 and 3 are wiped, start empty
//! (they join as learners) and are added back with `tern cluster add-node`. Then every
//! acknowledged record is served, exactly once and in order, by all three, each partition has
//! a single leader and three voters, and the membership is the three nodes again. On the way:
//! the forced node is a one-member cluster, a restart of it with the old `--peers` and no flag
//! is refused, a second forced start changes nothing, and a forced start of an empty
//! directory is refused.
//!
//! The cluster is stopped by its guard, also when the test fails.

mod serve_support;

use std::process::Command;
use std::time::{Duration, Instant};

use serve_support::cluster::{check_against_acks, Cluster, SeqProducer, WAIT_MAX};
use serve_support::{p, tern};

const TOPIC: &str = "kept";
const PARTITIONS: i32 = 2;

fn http_addr(c: &Cluster, n: u32) -> String {
    format!("127.0.0.{n}:{}", 9090 + c.port_offset())
}

fn peer_addr(c: &Cluster, n: u32) -> String {
    format!("127.0.0.{n}:{}", 9093 + c.port_offset())
}

/// `cluster.sh ARGS` with `--force-new-cluster` added to the serve arguments.
fn forced(c: &Cluster, args: &[&str]) -> (i32, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
    let env: Vec<(&str, String)> = c
        .script_env()
        .into_iter()
        .map(|(k, v)| match k {
            "TERN_SERVE_ARGS" => (k, format!("{v} --force-new-cluster")),
            _ => (k, v),
        })
        .collect();
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .envs(env)
        .output()
        .expect("run cluster.sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn json_of(args: &[&str]) -> Option<serde_json::Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out) = tern(&all);
    if code != 0 {
        return None;
    }
    serde_json::from_str(out.trim()).ok()
}

/// Waits (bounded) until `check` returns `None`; panics with its last reason.
fn wait_until(what: &str, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let Some(why) = check() else {
            return;
        };
        assert!(Instant::now() < deadline, "{what}: {why}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn members(c: &Cluster, n: u32) -> Option<Vec<u64>> {
    let doc = json_of(&["cluster-status", "--http", &http_addr(c, n)])?;
    Some(
        doc["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m["node_id"].as_u64())
            .collect(),
    )
}

/// One group as `/v1/raft` shows it: (group, role, voters, learners).
type GroupView = (u64, String, Vec<u64>, Vec<u64>);

/// Every group node `n` hosts.
fn groups_of(c: &Cluster, n: u32) -> Option<Vec<GroupView>> {
    let doc = json_of(&["raft-info", "--http", &http_addr(c, n)])?;
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default()
    };
    Some(
        doc["groups"]
            .as_array()?
            .iter()
            .map(|g| {
                (
                    g["group"].as_u64().unwrap_or(u64::MAX),
                    g["role"].as_str().unwrap_or("").to_string(),
                    ids(&g["voters"]),
                    ids(&g["learners"]),
                )
            })
            .collect(),
    )
}

#[test]
fn a_forced_node_keeps_every_acknowledged_record_and_the_wiped_nodes_rejoin() {
    let c = Cluster::new(3);
    c.start();
    c.create_topic(TOPIC, PARTITIONS, 3);
    let producers: Vec<SeqProducer> = (0..PARTITIONS)
        .map(|part| SeqProducer::start(c.client_config(1), TOPIC, part))
        .collect();
    for pr in &producers {
        assert!(pr.wait_progress(30, WAIT_MAX), "no progress with 3 nodes");
    }
    // Node 3 misses the records acknowledged from here on; node 2 holds them.
    c.run(&["stop", "3"]);
    for pr in &producers {
        assert!(pr.wait_progress(30, WAIT_MAX), "no progress with 2 nodes");
    }
    let produced: Vec<_> = producers.into_iter().map(SeqProducer::finish).collect();
    c.run(&["stop"]);

    // Node 2 becomes a cluster of its own.
    let (code, out) = forced(&c, &["start", "2"]);
    assert_eq!(code, 0, "forced start of node 2: {out}");
    let log = c.log(2);
    assert!(
        log.contains("force-new-cluster: controller group rewritten"),
        "{log}"
    );
    assert_eq!(
        members(&c, 2),
        Some(vec![2]),
        "node 2 alone after the force"
    );
    wait_until("node 2 leads every group alone", || {
        let groups = groups_of(&c, 2)?;
        let not: Vec<_> = groups
            .iter()
            .filter(|(_, role, voters, _)| role != "leader" || voters != &[2])
            .collect();
        (groups.is_empty() || !not.is_empty()).then(|| format!("{groups:?}"))
    });

    // A restart with the old --peers and no flag is refused (the controller names node 2
    // alone); a second forced start changes nothing.
    c.run(&["stop", "2"]);
    // cluster.sh sees it up once its shards replayed; the controller's check stops it then.
    let _ = c.script(&["start", "2"]);
    wait_until("the unforced start with --peers refused", || {
        let log = c.log(2);
        let refused =
            log.contains("after --force-new-cluster") && log.contains("stopped: a shard stopped");
        (!refused || !c.live_pids().is_empty()).then(|| "still running or not refused".to_string())
    });
    let (code, out) = forced(&c, &["start", "2"]);
    assert_eq!(code, 0, "second forced start: {out}");
    assert!(
        c.log(2).contains("rewritten=0"),
        "the second run rewrote groups: {}",
        c.log(2)
    );

    // Nodes 1 and 3 are wiped, start empty (they join as learners) and are added back.
    for n in ["1", "3"] {
        c.run(&["wipe", n]);
    }
    for n in [1u32, 3] {
        c.run(&["start", &n.to_string()]);
        assert!(
            c.log(n).contains("admission: join"),
            "node {n} did not join"
        );
        let (code, out) = tern(&[
            "cluster",
            "add-node",
            "--id",
            &n.to_string(),
            "--addr",
            &peer_addr(&c, n),
            "--server",
            &c.kafka_addr(2),
        ]);
        assert_eq!(code, 0, "add-node {n}: {out}");
    }

    // Every acknowledged record, exactly once and in order, on all three.
    for (partition, produced) in produced.iter().enumerate() {
        let acked: u64 = produced.acks.iter().map(|a| a.count).sum();
        assert!(acked > 0);
        let served = c.converged(&[1, 2, 3], TOPIC, partition as i32, acked as i64);
        check_against_acks(&format!("{TOPIC}-{partition}"), &served, produced);
    }
    // Three members; every group has voters 1, 2, 3 on every node and one leader.
    wait_until("membership and configurations restored", || {
        for n in 1..=3 {
            let m = members(&c, n)?;
            if m != [1, 2, 3] {
                return Some(format!("node {n} members {m:?}"));
            }
        }
        let all: Vec<_> = (1..=3).map(|n| groups_of(&c, n)).collect::<Option<_>>()?;
        let first = &all[0];
        if first.len() != 1 + PARTITIONS as usize {
            return Some(format!("node 1 hosts {first:?}"));
        }
        for (group, _, _, _) in first {
            let mut leaders = 0;
            for (n, groups) in all.iter().enumerate() {
                let Some((_, role, voters, learners)) = groups.iter().find(|g| g.0 == *group)
                else {
                    return Some(format!("node {} lacks group {group}", n + 1));
                };
                if voters != &[1, 2, 3] || !learners.is_empty() {
                    return Some(format!(
                        "group {group} on node {}: {voters:?} {learners:?}",
                        n + 1
                    ));
                }
                leaders += (role == "leader") as u32;
            }
            if leaders != 1 {
                return Some(format!("group {group}: {leaders} leaders"));
            }
        }
        None
    });
}

#[test]
fn a_forced_start_of_an_empty_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("empty");
    let (code, out) = tern(&[
        "serve",
        "--force-new-cluster",
        "--node-id",
        "1",
        "--data-dir",
        p(&data),
        "--kafka-addr",
        "127.0.0.1:29992",
        "--http-addr",
        "127.0.0.1:29990",
        "--peer-addr",
        "127.0.0.1:29993",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("holds no node identity"), "{out}");
    assert!(!data.join("NODE").exists(), "nothing was created");
}
