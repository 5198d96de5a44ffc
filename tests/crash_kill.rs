//! Real processes on loopback (scripts/cluster.sh, node i on 127.0.0.i), crashed for real:
//!
//! - 3 nodes; a producer of sequence-numbered records (Rust client, idempotent, acks=all);
//!   the partition's leader is SIGKILLed at seeded random moments and restarted, 20 rounds
//!   (`TERN_KILL_ROUNDS=200` for the long run, `TERN_KILL_SEED` to replay one). Afterwards
//!   every acknowledged record is stored exactly once, in order, on every node: what each
//!   node serves (Fetch sent to that node) and what its data directory holds offline
//!   (`tern verify-data`, `tern dump`).
//! - A single-node cluster SIGKILLed 20 times under produce load loses nothing acknowledged.
//! - A leader isolated as the minority (both other nodes SIGSTOPped) steps down by
//!   check-quorum and acknowledges no produce; after SIGCONT the cluster recovers.
//! - The failover figures (issue 9): time from the leader's SIGKILL to the first produce
//!   acknowledged by the new leader, over 20 kills, median and max. Not a timed assertion:
//!   runs only with `TERN_FAILOVER_FIGURES=1` and prints the figures.
//!
//! Every cluster is stopped by its guard, also when a test fails.

mod serve_support;

use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand::{Rng, SeedableRng};
use serve_support::cluster::{check_against_acks, Cluster, SeqProducer, WAIT_MAX};
use tern_net::kafka_client::{ConnectOptions, Connection};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// A cluster of `nodes` with topic `topic` (1 partition, one replica per node), started.
fn cluster_with_topic(nodes: u32, topic: &str) -> Cluster {
    let c = Cluster::new(nodes);
    c.start();
    c.create_topic(topic, 1, nodes as i16);
    c
}

/// Kills the partition leader at random moments, restarting it each time, while a producer
/// runs; then checks every node online and offline.
fn kill_leader_rounds(nodes: u32, rounds: u64, seed: u64) {
    let topic = "crash";
    let all: Vec<u32> = (1..=nodes).collect();
    let c = cluster_with_topic(nodes, topic);
    let producer = SeqProducer::start(c.client_config(1), topic, 0);
    assert!(
        producer.wait_progress(20, WAIT_MAX),
        "no produce acknowledged before the first kill"
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let started = Instant::now();
    for round in 0..rounds {
        // A random moment: somewhere in the stream of produces.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        let victim = if nodes == 1 {
            1
        } else {
            c.leader(topic, 0, &all)
        };
        c.kill(victim);
        // Sometimes restart at once, sometimes after the others took over.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..600)));
        c.restart(victim);
        // Each round must see produces acknowledged again before the next kill, so every
        // kill hits a working cluster (and a stuck cluster fails here, with the round).
        assert!(
            producer.wait_progress(10, WAIT_MAX),
            "seed {seed} round {round}: no produce acknowledged after killing node {victim}"
        );
    }
    let produced = producer.finish();
    let acked: u64 = produced.acks.iter().map(|a| a.count).sum();
    eprintln!(
        "kill_leader_rounds nodes={nodes} rounds={rounds} seed={seed}: {acked} records acknowledged \
         in {} batches, {} failed attempts (retried), {:?} elapsed",
        produced.acks.len(),
        produced.failed_attempts,
        started.elapsed()
    );
    let hw_min = produced
        .acks
        .last()
        .map(|a| a.base_offset + a.count as i64)
        .unwrap_or(0);
    let served = c.converged(&all, topic, 0, hw_min);
    for &n in &all {
        check_against_acks(&format!("seed {seed}: node {n} online"), &served, &produced);
    }
    // Offline: a graceful stop, then every data directory read without a node.
    c.run(&["stop"]);
    for &n in &all {
        let offline = c.offline(n);
        // The log may hold a committed tail the others had not applied yet, and (after a
        // stop) entries whose commit is unknown; what was served is a prefix of it.
        assert!(
            offline.len() >= served.len(),
            "node {n} offline: {} records, {} served",
            offline.len(),
            served.len()
        );
        assert_eq!(
            &offline[..served.len()],
            &served[..],
            "seed {seed}: node {n} offline differs from what was served"
        );
        check_against_acks(
            &format!("seed {seed}: node {n} offline"),
            &offline[..served.len()].to_vec(),
            &produced,
        );
    }
}

/// Issue 9: "SIGKILL the leader of its partition 20 times at random moments (200 behind an
/// env var), restarting each".
#[test]
fn three_nodes_leader_sigkilled_at_random_moments_loses_no_acknowledged_record() {
    let rounds = env_u64("TERN_KILL_ROUNDS", 20);
    let seed = env_u64("TERN_KILL_SEED", 0x7e57_c0de);
    eprintln!("reproduce: TERN_KILL_SEED={seed} TERN_KILL_ROUNDS={rounds} cargo test -p tern --test crash_kill three_nodes");
    kill_leader_rounds(3, rounds, seed);
}

/// Issue 9: "A standalone node restarted by SIGKILL 20 times loses nothing acknowledged."
/// The node is cluster.sh's single-node cluster (one voter, the same `tern serve`).
#[test]
fn single_node_sigkilled_under_load_loses_no_acknowledged_record() {
    let rounds = env_u64("TERN_KILL_ROUNDS", 20);
    let seed = env_u64("TERN_KILL_SEED", 0x51_a9e1);
    eprintln!("reproduce: TERN_KILL_SEED={seed} TERN_KILL_ROUNDS={rounds} cargo test -p tern --test crash_kill single_node");
    kill_leader_rounds(1, rounds, seed);
}

/// A connection to node `n` itself (no client retry, no rerouting).
fn connect(c: &Cluster, n: u32) -> Connection {
    let options = ConnectOptions {
        request_timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    };
    Connection::open(&c.kafka_addr(n), &options).unwrap_or_else(|e| panic!("node {n}: {e}"))
}

/// One produce of `value` on `conn`, acks=all, with a 2 s server timeout: Ok(error code)
/// from the node, or Err if no answer came (the connection failed or the client's request
/// timeout passed).
fn produce_once(conn: &mut Connection, topic: &str, value: &[u8]) -> Result<i16, String> {
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(bytes::Bytes::from(tern::node::records::build_batch(
        &[value],
        // Now, not an old stamp: the node's default retention (7 days) would expire it.
        tern_net::kafka_client::producer::now_ms(),
    )));
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![data];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 2_000;
    req.topic_data = vec![t];
    let resp = conn.call(&req).map_err(|e| e.to_string())?;
    resp.responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .next()
        .map(|p| p.error_code)
        .ok_or_else(|| "no partition in the answer".to_string())
}

/// Issue 9: "Partitioned minority leader: ... show it steps down by check-quorum and accepts
/// no produce". The fault is SIGSTOP of the two other nodes (the majority): the leader's
/// peer connections stay open but nothing answers, as in a network partition; tern has no
/// transport fault hook in a release binary.
#[test]
fn minority_leader_steps_down_by_check_quorum_and_acknowledges_nothing() {
    let topic = "minority";
    let all = [1, 2, 3];
    let c = cluster_with_topic(3, topic);
    let leader = c.leader(topic, 0, &all);
    let mut conn = connect(&c, leader);
    assert_eq!(produce_once(&mut conn, topic, b"before"), Ok(0));
    let others: Vec<u32> = all.iter().copied().filter(|&n| n != leader).collect();
    for &n in &others {
        c.signal(n, "STOP");
    }
    let isolated = Instant::now();
    // At once, on the open connection: the leader cannot know yet that it is alone.
    // Produces to the isolated leader until it no longer calls itself leader: none may be
    // acknowledged (error 0). While it still believes it leads, the produce cannot commit
    // and times out (REQUEST_TIMED_OUT 7, or no answer within the client's bound); after
    // the step-down it answers NOT_LEADER_OR_FOLLOWER (6).
    let mut answers = Vec::new();
    let stepped_down = loop {
        let answer = produce_once(&mut conn, topic, b"isolated");
        if answer.is_err() {
            conn = connect(&c, leader); // a timed-out connection is broken for good
        }
        assert_ne!(
            answer,
            Ok(0),
            "an isolated leader acknowledged a produce after {:?}",
            isolated.elapsed()
        );
        answers.push((answer.clone(), isolated.elapsed()));
        // Stepped down: it refuses (NOT_LEADER_OR_FOLLOWER) and no longer names itself.
        if answer == Ok(6) && c.leader_seen_by(leader, topic, 0) != Some(leader) {
            break isolated.elapsed();
        }
        assert!(
            isolated.elapsed() < WAIT_MAX,
            "node {leader} still leads {WAIT_MAX:?} after losing its quorum: {answers:?}"
        );
    };
    // Once it has stepped down it keeps refusing.
    assert_eq!(
        produce_once(&mut connect(&c, leader), topic, b"after"),
        Ok(6)
    );
    eprintln!(
        "isolated leader (node {leader}) stepped down after {stepped_down:?}; answers: {answers:?}"
    );
    for &n in &others {
        c.signal(n, "CONT");
    }
    // Recovery: a leader again, and a produce acknowledged.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let l = c.leader(topic, 0, &all);
        if produce_once(&mut connect(&c, l), topic, b"recovered") == Ok(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no produce acknowledged after SIGCONT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every node serves the same log: "before" and "recovered" exactly once each; the
    // isolated leader's unacknowledged proposal may have been committed by it afterwards
    // (Raft keeps an entry a new leader holds), at most once.
    let served = c.converged(&all, topic, 0, 2);
    let values: Vec<&[u8]> = served.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(values.first(), Some(&&b"before"[..]), "{values:?}");
    assert_eq!(values.last(), Some(&&b"recovered"[..]), "{values:?}");
    assert_eq!(values.iter().filter(|v| **v == b"before").count(), 1);
    assert!(
        values
            .iter()
            .all(|v| [&b"before"[..], b"isolated", b"recovered"].contains(v)),
        "{values:?}"
    );
}

/// Issue 9's figure: failover time from the leader's SIGKILL to the first produce
/// acknowledged by the new leader, over `TERN_FAILOVER_KILLS` kills (20). Prints median and
/// max. Not a timed assertion: only runs with `TERN_FAILOVER_FIGURES=1`.
#[test]
fn failover_figures() {
    if std::env::var("TERN_FAILOVER_FIGURES").as_deref() != Ok("1") {
        eprintln!("SKIPPED failover_figures: set TERN_FAILOVER_FIGURES=1 to measure");
        return;
    }
    let kills = env_u64("TERN_FAILOVER_KILLS", 20);
    let topic = "failover";
    let all = [1, 2, 3];
    let c = cluster_with_topic(3, topic);
    let mut config = c.client_config(1);
    // Retry quickly: the figure is the cluster's, not the client's backoff.
    config.retry_backoff = Duration::from_millis(10);
    config.retry_backoff_max = Duration::from_millis(20);
    config.attempts_max = 1000;
    let producer = SeqProducer::start(config, topic, 0);
    assert!(producer.wait_progress(20, WAIT_MAX));
    let mut times = Vec::new();
    for k in 0..kills {
        let victim = c.leader(topic, 0, &all);
        // Let the producer's metadata name the victim, so the first ack from another node
        // is the failover's.
        assert!(producer.wait_progress(10, WAIT_MAX));
        let before = producer.acks().len();
        let pid = c.pid(victim).expect("victim pid");
        let killed_at = Instant::now();
        let ok = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -KILL {pid}");
        c.kill(victim); // cluster.sh's bookkeeping (pid file); the process is gone
        let deadline = Instant::now() + WAIT_MAX;
        let first = loop {
            let acks = producer.acks();
            if let Some(a) = acks[before..]
                .iter()
                .find(|a| a.at > killed_at && a.leader != victim as i32)
            {
                break a.at - killed_at;
            }
            assert!(Instant::now() < deadline, "kill {k}: no failover");
            std::thread::sleep(Duration::from_millis(2));
        };
        eprintln!("kill {k}: node {victim}, first ack on the new leader after {first:?}");
        times.push(first);
        c.restart(victim);
    }
    drop(producer);
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    eprintln!(
        "FAILOVER {} kills: median {:?}, max {:?}, min {:?} (election timeout 150-300 ms)",
        times.len(),
        median,
        max,
        times[0]
    );
}
