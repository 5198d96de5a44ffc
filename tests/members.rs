//! Cluster membership as clients see it, on real processes (scripts/cluster.sh, node i on
//! 127.0.0.i):
//!
//! - each member is advertised at the Kafka address it was configured with, also when the
//!   nodes' Kafka ports differ (a node registers its own addresses through the controller's
//!   leader: src/node/node_reports.rs);
//! - every node answers Metadata with the leader of every partition, also of partitions it
//!   does not host (leaders are reported to every node);
//! - membership changes (`tern cluster add-node` / `remove-node`): a 4th node started empty
//!   joins as a learner once added and becomes a voter, node 1 is removed while records are
//!   produced, and every acknowledged record is then served exactly once, in order, by the
//!   nodes that hold the partitions; `tern cluster-status` shows the new members.
//!
//! The cluster is stopped by its guard, also when a test fails (the 4th node too: the guard
//! stops every node cluster.sh knows, and kills whatever of this cluster's directory runs).

mod serve_support;

use std::time::{Duration, Instant};

use serve_support::cluster::{check_against_acks, Cluster, SeqProducer, WAIT_MAX};
use serve_support::tern;
use tern_net::kafka_client::{Acks, Client, ClusterMetadata};
use tern_net::records::build_batch;

const TOPIC: &str = "spread";
const PARTITIONS: i32 = 6;

/// What node `asked` answers Metadata with, if it answers.
fn metadata(c: &Cluster, asked: u32) -> Result<ClusterMetadata, String> {
    let mut client = Client::connect(c.client_config(asked)).map_err(|e| e.to_string())?;
    client.topic_metadata(&[TOPIC]).map_err(|e| e.to_string())
}

/// Why `m` is not yet what every node should answer: every member at its own Kafka address,
/// and every partition (replication factor 1) led by its only replica.
fn not_yet(c: &Cluster, m: &ClusterMetadata) -> Option<String> {
    for n in 1..=c.nodes {
        let advertised = m.broker(n as i32).map(|b| b.addr());
        if advertised.as_deref() != Some(c.kafka_addr(n).as_str()) {
            return Some(format!("node {n} advertised at {advertised:?}"));
        }
    }
    let Some(topic) = m.topic(TOPIC) else {
        return Some("topic not listed".into());
    };
    if topic.partitions.len() != PARTITIONS as usize {
        return Some(format!("{} partitions listed", topic.partitions.len()));
    }
    for p in &topic.partitions {
        if p.replicas.len() != 1 || p.leader != Some(p.replicas[0]) || p.leader_epoch <= 0 {
            return Some(format!("partition {p:?}"));
        }
    }
    None
}

#[test]
fn every_node_advertises_members_own_kafka_ports_and_every_partitions_leader() {
    let c = Cluster::with_own_kafka_ports(3);
    c.start();
    // Replication factor 1: a node hosts only its own partitions, so it names the leaders of
    // the others from their reports alone.
    c.create_topic(TOPIC, PARTITIONS, 1);

    let deadline = Instant::now() + WAIT_MAX;
    for asked in 1..=c.nodes {
        let m = loop {
            let why = match metadata(&c, asked) {
                Ok(m) => match not_yet(&c, &m) {
                    None => break m,
                    Some(why) => why,
                },
                Err(e) => e,
            };
            assert!(Instant::now() < deadline, "node {asked}: {why}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let topic = m.topic(TOPIC).expect("listed");
        assert!(
            topic
                .partitions
                .iter()
                .any(|p| p.replicas != [asked as i32]),
            "node {asked} hosts every partition; the test needs some it does not: {topic:?}"
        );
    }

    // A client that only knows node 1 reaches every leader at the address Metadata gave.
    let mut client = c.client(1);
    for partition in 0..PARTITIONS {
        let value = format!("record for {partition}");
        let batch = build_batch(&[value.as_bytes()], 0);
        let ack = client
            .produce(TOPIC, partition, batch.into(), Acks::All)
            .unwrap_or_else(|e| panic!("produce to partition {partition}: {e}"));
        assert_eq!(ack.base_offset, Some(0), "partition {partition}");
    }
}

/// Runs `tern ARGS --json` and parses what it printed; panics naming the output otherwise.
fn tern_json(args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let (code, out) = tern(&all);
    assert_eq!(code, 0, "tern {args:?}: {out}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("tern {args:?}: not JSON ({e}): {out}"))
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

/// The voters and learners of `group` as node `n`'s `/v1/raft` shows them, and whether that
/// configuration is committed.
fn conf_of(c: &Cluster, n: u32, group: u64) -> Option<(Vec<u64>, Vec<u64>, bool)> {
    let (code, out) = tern(&["raft-info", "--http", &http_addr(c, n), "--json"]);
    if code != 0 {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    let g = doc["groups"]
        .as_array()?
        .iter()
        .find(|g| g["group"] == group)?;
    let ids = |key: &str| -> Vec<u64> {
        g[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default()
    };
    Some((ids("voters"), ids("learners"), g["conf_committed"] == true))
}

fn http_addr(c: &Cluster, n: u32) -> String {
    format!("127.0.0.{n}:{}", 9090 + c.port_offset())
}

fn peer_addr(c: &Cluster, n: u32) -> String {
    format!("127.0.0.{n}:{}", 9093 + c.port_offset())
}

/// Issue 11 on real processes: 3 nodes, records produced and acknowledged all along; node 4
/// (started empty: it joins as a learner) is added, node 1 removed (its replicas move to node
/// 4); then nodes 2, 3 and 4 serve every acknowledged record exactly once and in order, the
/// controller's voters are 2, 3 and 4, and `tern cluster-status` lists those members.
#[test]
fn add_node_4_then_remove_node_1_under_load_keeps_every_acknowledged_record() {
    const TOPIC: &str = "moves";
    let mut c = Cluster::new(3);
    c.start();
    c.create_topic(TOPIC, 2, 3);
    // Producers through node 2 (node 1 leaves the cluster on the way).
    let producers: Vec<SeqProducer> = (0..2)
        .map(|p| SeqProducer::start(c.client_config(2), TOPIC, p))
        .collect();
    for p in &producers {
        assert!(
            p.wait_progress(20, WAIT_MAX),
            "no progress before the changes"
        );
    }

    // Node 4 starts empty with the cluster id; the cluster does not count it: it joins as a
    // learner and waits. cluster.sh gives it --peers naming nodes 1 to 4.
    c.nodes = 4;
    c.run(&["start", "4"]);
    assert!(
        c.log(4).contains("admission: join"),
        "node 4 did not join: {}",
        c.log(4)
    );
    let added = tern_json(&[
        "cluster",
        "add-node",
        "--id",
        "4",
        "--addr",
        &peer_addr(&c, 4),
        // A Kafka address: the CLI finds node 2's HTTP address over Kafka (DescribeConfigs).
        "--server",
        &c.kafka_addr(2),
    ]);
    assert_eq!(added["outcome"], "added", "{added}");
    // The controller group promotes it once caught up.
    wait_until("node 4 a voter of the controller", || {
        match conf_of(&c, 2, 0) {
            Some((voters, _, true)) if voters == [1, 2, 3, 4] => None,
            other => Some(format!("controller configuration on node 2: {other:?}")),
        }
    });
    for p in &producers {
        assert!(
            p.wait_progress(20, WAIT_MAX),
            "no progress after add-node: {}",
            p.failures()
        );
    }

    // Node 1 leaves: its replicas move to node 4 (learner, promoted, then node 1 removed);
    // the command waits until no group of nodes 2, 3, 4 names node 1.
    let removed = tern_json(&[
        "cluster",
        "remove-node",
        "--id",
        "1",
        "--http",
        &http_addr(&c, 3),
    ]);
    assert_eq!(removed["outcome"], "removed", "{removed}");
    assert_eq!(removed["orphaned"], serde_json::json!([]), "{removed}");
    for n in [2, 3, 4] {
        let (voters, learners, committed) = conf_of(&c, n, 0).expect("controller on node");
        assert_eq!(
            (voters, learners, committed),
            (vec![2, 3, 4], vec![], true),
            "node {n}"
        );
    }
    for p in &producers {
        assert!(
            p.wait_progress(20, WAIT_MAX),
            "no progress after remove-node: {}",
            p.failures()
        );
    }
    let produced: Vec<_> = producers.into_iter().map(SeqProducer::finish).collect();

    // Every acknowledged record, exactly once and in order, on every node that holds the
    // partition now.
    for (partition, produced) in produced.iter().enumerate() {
        let acked: u64 = produced.acks.iter().map(|a| a.count).sum();
        assert!(acked > 0);
        let served = c.converged(&[2, 3, 4], TOPIC, partition as i32, acked as i64);
        check_against_acks(&format!("{TOPIC}-{partition}"), &served, produced);
    }

    // cluster-status names the new membership.
    let status = tern_json(&["cluster-status", "--http", &http_addr(&c, 4)]);
    let members: Vec<u64> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["node_id"].as_u64())
        .collect();
    assert_eq!(members, [2, 3, 4], "{status}");
    for t in status["topics"].as_array().expect("topics") {
        for p in t["partitions"].as_array().expect("partitions") {
            let mut replicas: Vec<u64> = p["replicas"]
                .as_array()
                .expect("replicas")
                .iter()
                .filter_map(|r| r["node_id"].as_u64())
                .collect();
            replicas.sort_unstable();
            assert_eq!(replicas, [2, 3, 4], "{p}");
        }
    }
}
