//! Cluster membership as clients see it, on real processes (scripts/cluster.sh, node i on
//! 127.0.0.i):
//!
//! - each member is advertised at the Kafka address it was configured with, also when the
//!   nodes' Kafka ports differ (a node registers its own addresses through the controller's
//!   leader: src/node/node_reports.rs);
//! - every node answers Metadata with the leader of every partition, also of partitions it
//!   does not host (leaders are reported to every node).
//!
//! The cluster is stopped by its guard, also when a test fails.

mod serve_support;

use std::time::{Duration, Instant};

use serve_support::cluster::{Cluster, WAIT_MAX};
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
