//! Real processes on loopback (scripts/cluster.sh, node i on 127.0.0.i): one partition's
//! replica lost on a node whose data directory is otherwise intact (its group's engine state
//! deleted while the node was down, as a failed `tern import-topic --force` leaves it). The
//! node starts normally; its group ledger says it made promises in that group, so that
//! replica alone is rebuilt from its peers while the node's other partition keeps serving,
//! and then every node serves every acknowledged record (docs/replication.md, "One lost
//! partition on an intact node").
//!
//! Every cluster is stopped by its guard, also when a test fails.

mod serve_support;

use serve_support::cluster::{check_against_acks, Cluster, SeqProducer, WAIT_MAX};

/// Deletes group `group`'s engine state from the stopped node's data directory `root`
/// (cluster.sh's default segment size, one shard per node).
fn delete_group_offline(root: &std::path::Path, group: u64) {
    let cfg = tern_engine::EngineConfig {
        shards: 1,
        pin_cpus: false,
        io_memory_bytes: 1 << 20,
        wal: tern_engine::WalConfig::default(),
    };
    let results = tern_engine::engine::run_shards(root, &cfg, false, move |ctx| async move {
        if tern_engine::shard_for_group(group, ctx.shards) != ctx.shard {
            return Ok(false);
        }
        let had = ctx.wal.group(group).is_some();
        ctx.wal.delete_group(group).await.map(|()| had)
    })
    .expect("the stopped node's data directory opens");
    let had: Vec<bool> = results
        .into_iter()
        .map(|r| r.expect("DeleteGroup written"))
        .collect();
    assert!(had.contains(&true), "group {group} was not on that node");
}

#[test]
fn lost_replica_of_one_partition_on_a_follower_rebuilt_from_peers_three_nodes_no_ack_lost() {
    let topic = "lost";
    let c = Cluster::new(3);
    c.start();
    // Partition 0 is group 1 and partition 1 group 2: the first topic of a new cluster
    // (FIRST_PARTITION_GROUP); the node's log below names the group it found lost.
    c.create_topic(topic, 2, 3);
    let lost_group = tern::node::controller::FIRST_PARTITION_GROUP;
    let producer = SeqProducer::start(c.client_config(1), topic, 0);
    let other = SeqProducer::start(c.client_config(1), topic, 1);
    assert!(
        producer.wait_progress(30, WAIT_MAX) && other.wait_progress(30, WAIT_MAX),
        "no produce acknowledged"
    );
    // A follower of partition 0 (not node 1, the producers' bootstrap server).
    let leader = c.leader(topic, 0, &[1, 2, 3]);
    let victim = if leader == 2 { 3 } else { 2 };
    c.kill(victim);
    delete_group_offline(&c.data(victim), lost_group);
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "the cluster stopped acknowledging with node {victim} down"
    );
    // An ordinary start: no flag, the node finds the loss itself.
    c.restart(victim);
    assert!(
        c.wait_log(victim, "replica lost"),
        "node {victim} did not find its lost replica: {}",
        c.log(victim)
    );
    assert!(
        c.log(victim)
            .lines()
            .any(|l| l.contains("replica lost") && l.contains(&format!("group={lost_group}"))),
        "{}",
        c.log(victim)
    );
    assert!(
        producer.wait_progress(30, WAIT_MAX) && other.wait_progress(30, WAIT_MAX),
        "the cluster stopped acknowledging while node {victim}'s replica was rebuilt"
    );
    assert!(
        c.wait_log(victim, "lost replica rebuilt"),
        "node {victim} never finished rebuilding its replica: {}",
        c.log(victim)
    );
    for line in c
        .log(victim)
        .lines()
        .filter(|l| l.contains("lost") || l.contains("rebuil"))
    {
        eprintln!("node {victim}: {line}");
    }
    // The node never stopped: no whole-node rebuild, and nothing else of it was touched.
    assert!(!c.log(victim).contains("admission: rebuild"));
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "no produce after the rebuild"
    );
    for (partition, p) in [(0, producer), (1, other)] {
        let produced = p.finish();
        let hw = produced.high_watermark();
        let served = c.converged(&[1, 2, 3], topic, partition, hw);
        check_against_acks(
            &format!("partition {partition} after node {victim}'s replica was rebuilt"),
            &served,
            &produced,
        );
        let (_, on_victim) = c
            .served(victim, topic, partition)
            .unwrap_or_else(|e| panic!("node {victim} serves nothing of {partition}: {e}"));
        check_against_acks(
            &format!("fetch of partition {partition} from node {victim}"),
            &on_victim,
            &produced,
        );
    }
}
