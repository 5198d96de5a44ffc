//! Unmodified Kafka clients against a real 3-node cluster (scripts/cluster.sh, node i on
//! 127.0.0.i), each knowing one node only: kcat lists the brokers and every partition's
//! leader, produces to a partition led by another node and consumes from the beginning;
//! Debian's python3-kafka 2.0.2 and kafka-python 3.x (idempotent by default) create a topic
//! with replication factor 3, produce, consume with assign + seek, and delete a topic. A
//! client that is not installed is skipped with the reason printed (`.ci/run` installs them
//! all). The cluster is stopped by its guard, also when a test fails.

mod common;
mod serve_support;

use std::process::Command;

use common::kafka_tools::{have_kcat, kafka_python, lines, run_client};
use serve_support::cluster::{Cluster, WAIT_MAX};

/// A Python client that only knows `boot`: topic of 3 partitions and replication factor 3
/// created, `n` records produced with acks=all (round robin over the partitions), each
/// partition read back in order with assign + seek, a second topic created and deleted.
const PYTHON_CLUSTER_CLIENT: &str = r#"
import sys, time
import kafka
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
boot, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = KafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=30000)
admin.create_topics([NewTopic(topic, 3, 3)])
admin.create_topics([NewTopic(topic + "-gone", 1, 3)])
admin.delete_topics([topic + "-gone"])
p = KafkaProducer(bootstrap_servers=boot, acks='all', retries=50, retry_backoff_ms=200)
if kafka.__version__.startswith('3'):
    assert p.config['enable_idempotence'], p.config
futs = [p.send(topic, value=b"v%d" % i, partition=i % 3) for i in range(n)]
p.flush(timeout=60)
meta = [f.get(timeout=60) for f in futs]
for part in range(3):
    offs = [m.offset for m in meta if m.partition == part]
    assert offs == list(range(len(offs))), (part, offs[:5])
c = KafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False, group_id=None,
                  consumer_timeout_ms=10000)
for part in range(3):
    tp = TopicPartition(topic, part)
    c.assign([tp])
    c.seek(tp, 0)
    want = [b"v%d" % i for i in range(part, n, 3)]
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == len(want):
            break
    assert got == want, (part, got[:3], want[:3], len(got))
leaders = sorted({c._client.cluster.leader_for_partition(TopicPartition(topic, q)) for q in range(3)})
names = admin.list_topics()
assert topic in names and topic + "-gone" not in names, names
print("ok", n, "leaders", leaders)
"#;

fn python_on_a_cluster(major: &str, topic: &str) {
    let Some(python) = kafka_python(major) else {
        eprintln!(
            "SKIPPED kafka-python {major}x against 3 nodes: not installed (Debian's python3-kafka for 2.x, the virtualenv of .ci/run or TERN_KAFKA_PYTHON for 3.x)"
        );
        return;
    };
    let c = Cluster::new(3);
    c.start();
    // Knows node 2 only: the topic is created through the controller and each partition is
    // produced to its leader, wherever Metadata says they are.
    let out = run_client(
        Command::new(&python).args(["-c", PYTHON_CLUSTER_CLIENT, &c.kafka_addr(2), topic, "900"]),
        None,
        WAIT_MAX,
    );
    let said = lines(&out);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("ok 900 leaders "), "{said:?}");
    // Replication factor 3: every node serves every record of every partition.
    for partition in 0..3 {
        let served = c.converged(&[1, 2, 3], topic, partition, 300);
        assert_eq!(served.len(), 300, "partition {partition}");
    }
}

#[test]
fn debian_python3_kafka_2_against_three_nodes() {
    python_on_a_cluster("2.", "py2-cluster");
}

#[test]
fn kafka_python_3_against_three_nodes() {
    python_on_a_cluster("3.", "py3-cluster");
}

#[test]
fn kcat_lists_produces_and_consumes_against_three_nodes() {
    if !have_kcat() {
        eprintln!("SKIPPED kcat against 3 nodes: kcat is not installed (apt-get install kcat)");
        return;
    }
    let c = Cluster::new(3);
    c.start();
    c.create_topic("kcat-cluster", 3, 3);
    let leaders: Vec<u32> = (0..3)
        .map(|p| c.leader("kcat-cluster", p, &[1, 2, 3]))
        .collect();

    // -L through node 1: three brokers, each at its own address, and every partition's
    // leader as the nodes say.
    let listing = run_client(
        Command::new("kcat").args(["-b", &c.kafka_addr(1), "-L", "-t", "kcat-cluster"]),
        None,
        WAIT_MAX,
    );
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(listing.contains(" 3 brokers:"), "{listing}");
    for n in 1..=3 {
        let broker = format!("broker {n} at {}", c.kafka_addr(n));
        assert!(listing.contains(&broker), "{broker} missing:\n{listing}");
    }
    for (p, leader) in leaders.iter().enumerate() {
        let line = format!("partition {p}, leader {leader},");
        assert!(listing.contains(&line), "{line} missing:\n{listing}");
    }

    // Produce through node 1 to a partition led by another node, then consume it from the
    // beginning through a third node.
    let partition = (0..3)
        .find(|&p| leaders[p] != 1)
        .expect("leaders are spread: some partition is not led by node 1");
    let other = (1..=3u32)
        .find(|&n| n != 1 && n != leaders[partition])
        .unwrap_or(1);
    let values: Vec<String> = (0..200).map(|i| format!("kc{i}")).collect();
    let input = values.join("\n") + "\n";
    run_client(
        Command::new("kcat").args([
            "-b",
            &c.kafka_addr(1),
            "-P",
            "-t",
            "kcat-cluster",
            "-p",
            &partition.to_string(),
            "-X",
            "acks=all",
        ]),
        Some(input.as_bytes()),
        WAIT_MAX,
    );
    let consumed = run_client(
        Command::new("kcat").args([
            "-b",
            &c.kafka_addr(other),
            "-C",
            "-t",
            "kcat-cluster",
            "-p",
            &partition.to_string(),
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %s\n",
        ]),
        None,
        WAIT_MAX,
    );
    let want: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{i} {v}"))
        .collect();
    assert_eq!(lines(&consumed), want);
    // Every replica holds them.
    let served = c.converged(&[1, 2, 3], "kcat-cluster", partition as i32, 200);
    assert_eq!(served.len(), 200);
}
