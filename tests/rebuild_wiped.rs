//! Real processes on loopback (scripts/cluster.sh, node i on 127.0.0.i): a voter whose data
//! directory is wiped under produce load comes back with `tern serve --rebuild`
//! (`cluster.sh rebuild N`), is rebuilt from its peers, and then serves every acknowledged
//! record; the cluster kept acknowledging throughout (docs/replication.md).
//!
//! Every cluster is stopped by its guard, also when a test fails.

mod serve_support;

use serve_support::cluster::{check_against_acks, Cluster, SeqProducer, WAIT_MAX};

fn node_file(c: &Cluster, n: u32) -> String {
    std::fs::read_to_string(c.data(n).join("NODE")).unwrap_or_default()
}

#[test]
fn rebuild_wiped_follower_under_load_three_nodes_serves_every_acknowledged_record() {
    let topic = "rebuild";
    let c = Cluster::new(3);
    c.start();
    c.create_topic(topic, 1, 3);
    let producer = SeqProducer::start(c.client_config(1), topic, 0);
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "no produce acknowledged"
    );
    // Wipe a follower (not node 1, the producer's bootstrap server), under load.
    let leader = c.leader(topic, 0, &[1, 2, 3]);
    let victim = if leader == 2 { 3 } else { 2 };
    c.kill(victim);
    c.run(&["wipe", &victim.to_string()]);
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "the cluster stopped acknowledging after node {victim} was wiped"
    );
    // Without --rebuild the wiped voter is refused: it must not vote with forgotten promises.
    let (code, out) = c.script(&["start", &victim.to_string()]);
    assert_ne!(code, 0, "a wiped voter started without --rebuild: {out}");
    assert!(
        c.log(victim).contains("Rebuild procedure"),
        "{}",
        c.log(victim)
    );
    c.run(&["rebuild", &victim.to_string()]);
    assert!(
        c.wait_log(victim, "admission: rebuild"),
        "{}",
        c.log(victim)
    );
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "the cluster stopped acknowledging while node {victim} was rebuilt"
    );
    assert!(
        c.wait_log(victim, "NODE says rebuilding=0"),
        "node {victim} never finished rebuilding: {}",
        c.log(victim)
    );
    assert!(
        node_file(&c, victim).contains("rebuilding=0\n"),
        "{}",
        node_file(&c, victim)
    );
    // The rebuilt node counted what it received (docs/operations/metrics.md), and
    // cluster-status reports it among the members' rebuild numbers.
    let (code, out) =
        serve_support::tern(&["cluster-status", "--http", &c.http_addr(victim), "--json"]);
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("")).expect("cluster-status JSON");
    assert!(
        doc["rebuild"]["bytes_received"].as_u64().unwrap_or(0) > 0,
        "node {victim} counted no catch-up bytes: {}",
        doc["rebuild"]
    );
    assert_eq!(
        doc["rebuild"]["partitions_pending"], 0,
        "{}",
        doc["rebuild"]
    );
    let by_node = doc["rebuild_by_node"].as_array().expect("rebuild_by_node");
    assert_eq!(by_node.len(), 3, "{by_node:?}");
    // What the rebuild did, for whoever reads the test output (not asserted on).
    for line in c.log(victim).lines().filter(|l| l.contains("rebuil")) {
        eprintln!("node {victim}: {line}");
    }
    // Load continues after the rebuild; then every node serves every acknowledged record.
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "no produce after the rebuild"
    );
    let produced = producer.finish();
    let hw = produced.high_watermark();
    let served = c.converged(&[1, 2, 3], topic, 0, hw);
    check_against_acks(
        &format!("node {victim} after its rebuild"),
        &served,
        &produced,
    );
    let (_, on_victim) = c
        .served(victim, topic, 0)
        .unwrap_or_else(|e| panic!("node {victim} serves nothing: {e}"));
    check_against_acks(&format!("fetch from node {victim}"), &on_victim, &produced);
}
