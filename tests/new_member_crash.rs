//! Ra PR #589, "a new member registered only after its log is initialised", in tern's terms
//! (docs/recovery-tests.md), on real processes (scripts/cluster.sh, node i on 127.0.0.i).
//!
//! A new cluster's node 3 is listed as a voter by the controller from the configuration
//! (`--peers`) before its data directory exists. Its first start does, in order: `NODE`
//! written (admitted=0, durably), the admission recorded (admitted=1, durably), the engine
//! opened and its WAL recovered, then the shard starts its Raft groups. Each test leaves node
//! 3's directory exactly as a crash after one of these steps leaves it (written with the same
//! code: `identity::open_or_create`, `identity::mark_admitted`, the engine's `run_shards`),
//! lets nodes 1 and 2 create the cluster and acknowledge records without it, then starts
//! node 3 again as after the crash, and checks:
//! - it started no Raft group (so could neither vote nor acknowledge) before its admission was
//!   recorded in `NODE` and its WAL was recovered: the order of its log lines;
//! - it comes back: after "NODE written" (not admitted) the cluster counts it as a voter and it
//!   cannot prove it made no promises, so it is refused with the rebuild procedure without
//!   writing any engine data, and `--rebuild` brings it back; after "admitted" or "engine
//!   opened" (no group state yet: a group writes nothing before its first Ready round, so a
//!   crash at the first group leaves the same directory) it resumes as a voter;
//! - every acknowledged record is then served by all three nodes.
//!
//! Every cluster is stopped by its guard, also when a test fails.

mod serve_support;

use std::path::Path;
use std::process::Command;

use serve_support::cluster::{check_against_acks, Cluster, SeqProducer, WAIT_MAX};
use tern::node::identity::{self, IdentityRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashAfter {
    NodeWritten,
    Admitted,
    EngineOpened,
}

/// `cluster.sh start N` with `--bootstrap`: a node's first start in a new cluster (what
/// `cluster.sh start` passes when no node has data yet).
fn start_bootstrapping(c: &Cluster, n: u32) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
    let env: Vec<(&str, String)> = c
        .script_env()
        .into_iter()
        .map(|(k, v)| {
            if k == "TERN_SERVE_ARGS" {
                (k, format!("{v} --bootstrap"))
            } else {
                (k, v)
            }
        })
        .collect();
    let out = Command::new("bash")
        .arg(script)
        .args(["start", &n.to_string()])
        .envs(env)
        .output()
        .expect("run cluster.sh");
    assert!(
        out.status.success(),
        "node {n} did not start: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node 3's directory as a crash right after `at` leaves it.
fn crashed_first_start(data: &Path, cluster_id: uuid::Uuid, at: CrashAfter) {
    let (id, _) = identity::open_or_create(
        data,
        IdentityRequest {
            node_id: 3,
            cluster_id: Some(cluster_id),
            multi_node: true,
        },
    )
    .expect("NODE written");
    if at == CrashAfter::NodeWritten {
        return;
    }
    identity::mark_admitted(data, id).expect("admission recorded");
    if at == CrashAfter::Admitted {
        return;
    }
    let cfg = tern_engine::EngineConfig {
        shards: 1,
        pin_cpus: false,
        io_memory_bytes: 1 << 20,
        wal: tern_engine::WalConfig::default(),
    };
    tern_engine::engine::run_shards(data, &cfg, true, |ctx| async move { ctx.shard })
        .expect("engine opened");
}

/// Index of the first line of `log` (from `from` on) containing `needle`.
fn line_of(log: &str, from: usize, needle: &str) -> Option<usize> {
    log.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i)
}

fn new_member_crashed_at(at: CrashAfter) {
    let topic = "members";
    let c = Cluster::new(3);
    let cluster_id = uuid::Uuid::new_v4();
    std::fs::write(c.dir().join("cluster-id"), format!("{cluster_id}\n")).expect("cluster-id");
    crashed_first_start(&c.data(3), cluster_id, at);
    // Nodes 1 and 2 create the cluster (a majority of the three voters) without node 3.
    start_bootstrapping(&c, 1);
    start_bootstrapping(&c, 2);
    c.create_topic(topic, 1, 3);
    let producer = SeqProducer::start(c.client_config(1), topic, 0);
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "nodes 1 and 2 acknowledged nothing"
    );
    // Node 3 starts again after its crash, as any restart (no --bootstrap).
    let from = c.log(3).lines().count();
    let (code, out) = c.script(&["start", "3"]);
    let resumed_from = if at == CrashAfter::NodeWritten {
        assert_ne!(code, 0, "a node never admitted resumed as a voter: {out}");
        let log = c.log(3);
        assert!(log.contains("Rebuild procedure"), "{log}");
        assert!(
            line_of(&log, from, "group started").is_none(),
            "a refused node started a group: {log}"
        );
        assert!(
            !c.data(3).join("ENGINE").exists(),
            "a refused node wrote engine data"
        );
        let from = c.log(3).lines().count();
        c.run(&["rebuild", "3"]);
        assert!(
            c.wait_log(3, "NODE says rebuilding=0"),
            "node 3 never finished its rebuild: {}",
            c.log(3)
        );
        from
    } else {
        assert_eq!(code, 0, "node 3 did not come back: {out}");
        from
    };
    // The order of its start: NODE checked, admission recorded, WAL recovered, then groups.
    let log = c.log(3);
    let identity_line = line_of(&log, resumed_from, "identity: existing");
    let admission = line_of(&log, resumed_from, "admission: ");
    let replay = line_of(&log, resumed_from, "replay: shard recovered");
    let group = line_of(&log, resumed_from, "group started");
    assert!(
        identity_line.is_some()
            && identity_line < admission
            && admission < replay
            && replay < group,
        "start order identity {identity_line:?} < admission {admission:?} < replay \
         {replay:?} < first group {group:?}:\n{log}"
    );
    if at != CrashAfter::NodeWritten {
        assert!(
            log.contains("admission: resume (admitted earlier)"),
            "{log}"
        );
    }
    assert!(
        producer.wait_progress(30, WAIT_MAX),
        "no produce acknowledged after node 3 came back"
    );
    let produced = producer.finish();
    let hw = produced.high_watermark();
    let served = c.converged(&[1, 2, 3], topic, 0, hw);
    check_against_acks(&format!("crash after {at:?}"), &served, &produced);
    let (_, on_3) = c
        .served(3, topic, 0)
        .unwrap_or_else(|e| panic!("node 3 serves nothing: {e}"));
    check_against_acks("fetch from node 3", &on_3, &produced);
}

#[test]
fn new_member_crashed_after_node_file_written_is_refused_then_rebuilt_three_nodes() {
    new_member_crashed_at(CrashAfter::NodeWritten);
}

#[test]
fn new_member_crashed_after_admission_recorded_resumes_three_nodes() {
    new_member_crashed_at(CrashAfter::Admitted);
}

#[test]
fn new_member_crashed_after_engine_opened_resumes_three_nodes() {
    new_member_crashed_at(CrashAfter::EngineOpened);
}
