//! Issue 11's modes against the real binary:
//! - read-only: a node restarted with `--read-only` refuses produce and topic changes with
//!   a Kafka error the CLI shows, and still serves fetch and metadata;
//! - leaders follow the preferred replicas on a 3-node cluster (scripts/cluster.sh, node i
//!   on 127.0.0.i), and `tern cluster transfer-leader` moves one partition's leadership;
//! - `--standalone` on the data directory of a cluster node is refused, and the directory
//!   still serves in the cluster afterwards.
//!
//! Every process started here is stopped on drop, also when an assertion fails; every wait
//! is bounded.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{expect, Out, TERN};
use tern_net::kafka_client::{Client, ClientConfig, ClusterMetadata};

/// Bound on every wait for a node or the cluster.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// Runs `tern ARGS` with `stdin` fed in.
fn run_tern(args: &[&str], stdin: &[u8]) -> Out {
    let mut child = Command::new(TERN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin).expect("write stdin");
    drop(pipe);
    let out = child.wait_with_output().expect("tern output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `tern serve --standalone` child on 127.0.0.1; killed and reaped on drop.
struct Node {
    child: Child,
    kafka: SocketAddr,
    log: PathBuf,
}

impl Node {
    fn start(data: &Path, log: PathBuf, extra: &[&str]) -> Node {
        let ip = common::node_ip(11);
        let kafka: SocketAddr = format!("{ip}:9092").parse().unwrap();
        let http = format!("{ip}:9090");
        let peer = format!("{ip}:9093");
        let child = Command::new(TERN)
            .args(["serve", "--standalone", "--shards", "1", "--data-dir"])
            .arg(data)
            .args(["--kafka-addr", &kafka.to_string()])
            .args(["--http-addr", &http, "--peer-addr", &peer])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tern serve");
        let node = Node { child, kafka, log };
        let start = Instant::now();
        while TcpStream::connect_timeout(&kafka, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < WAIT_MAX,
                "node did not listen on {kafka}:\n{}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tern(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut all: Vec<&str> = args.to_vec();
        let server = self.kafka.to_string();
        all.extend(["--server", &server]);
        run_tern(&all, stdin)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("node log:\n{}", self.log_text());
        }
    }
}

#[test]
fn read_only_node_refuses_writes_with_a_kafka_error_and_serves_reads() {
    let dir = common::scratch();
    let data = dir.path().join("data");
    let lines = "one\ntwo\nthree\n";
    {
        let node = Node::start(&data, dir.path().join("first.log"), &[]);
        expect(
            &node.tern(&["create-topic", "events", "--partitions", "1"], b""),
            0,
            "create-topic",
        );
        expect(
            &node.tern(&["produce", "events"], lines.as_bytes()),
            0,
            "produce",
        );
    }
    let node = Node::start(&data, dir.path().join("read-only.log"), &["--read-only"]);
    // The node listens before its controller has re-applied its log: wait for the topic.
    let start = Instant::now();
    loop {
        let out = node.tern(&["list-topics", "--json"], b"");
        if out.code == 0
            && out.json()["topics"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
        {
            break;
        }
        assert!(
            start.elapsed() < WAIT_MAX,
            "the topic never came back: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = node.tern(&["produce", "events"], b"four\n");
    expect(&out, 4, "produce on a read-only node is refused");
    assert!(out.stderr.contains("read-only"), "{}", out.stderr);
    assert!(out.stderr.contains("Kafka error 44"), "{}", out.stderr);

    let out = node.tern(&["create-topic", "more"], b"");
    expect(&out, 4, "create-topic on a read-only node is refused");
    assert!(out.stderr.contains("read-only"), "{}", out.stderr);
    let out = node.tern(&["delete-topic", "events"], b"");
    expect(&out, 4, "delete-topic on a read-only node is refused");
    assert!(out.stderr.contains("read-only"), "{}", out.stderr);

    let out = node.tern(&["consume", "events"], b"");
    expect(&out, 0, "consume on a read-only node");
    assert_eq!(out.stdout, lines, "everything produced before is served");
    let out = node.tern(&["list-topics", "--json"], b"");
    expect(&out, 0, "list-topics on a read-only node");
    let topics = out.json()["topics"].clone();
    assert_eq!(topics.as_array().map(Vec::len), Some(1), "{topics}");
    assert_eq!(topics[0]["name"], "events");
}

/// scripts/cluster.sh's 3 nodes; stopped (then SIGKILLed if need be) on drop.
struct Cluster {
    dir: tempfile::TempDir,
    port_offset: u32,
}

impl Cluster {
    fn new() -> Cluster {
        // Apart from tests/cluster_script.rs's offsets, so both may run at once.
        let port_offset = 5000 + (std::process::id() % 400) * 10;
        Cluster {
            dir: common::scratch(),
            port_offset,
        }
    }

    fn script(&self, args: &[&str]) -> (i32, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .env("TERN_BIN", TERN)
            .env("TERN_CLUSTER_DIR", self.dir.path())
            .env("TERN_CLUSTER_PORT_OFFSET", self.port_offset.to_string())
            .env("TERN_SERVE_ARGS", "--shards 1")
            .output()
            .expect("run cluster.sh");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    fn kafka(&self, n: u32) -> String {
        format!("127.0.0.{n}:{}", 9092 + self.port_offset)
    }

    fn tern(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut all: Vec<&str> = args.to_vec();
        let server = self.kafka(1);
        all.extend(["--server", &server]);
        run_tern(&all, stdin)
    }

    fn metadata(&self) -> ClusterMetadata {
        let mut config = ClientConfig::new(self.kafka(1));
        config.server_timeout = Duration::from_secs(10);
        let mut client = Client::connect(config).expect("connect to node 1");
        client.refresh_metadata().expect("metadata").clone()
    }

    fn log(&self, n: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{n}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
        if std::thread::panicking() {
            for n in 1..=3 {
                eprintln!("node {n} log:\n{}", self.log(n));
            }
        }
    }
}

/// (leader, replicas) of each partition of `topic`, in partition order.
fn layout(m: &ClusterMetadata, topic: &str) -> Vec<(Option<i32>, Vec<i32>)> {
    m.topic(topic)
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.leader, p.replicas.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the metadata until `done` holds; bounded by [`WAIT_MAX`].
fn wait_for(
    c: &Cluster,
    topic: &str,
    what: &str,
    done: impl Fn(&[(Option<i32>, Vec<i32>)]) -> bool,
) {
    let start = Instant::now();
    loop {
        let now = layout(&c.metadata(), topic);
        if !now.is_empty() && done(&now) {
            return;
        }
        assert!(start.elapsed() < WAIT_MAX, "{what}: still {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_nodes_leaders_follow_preferred_replicas_transfer_leader_and_standalone_refusal() {
    let c = Cluster::new();
    let (code, out) = c.script(&["start"]);
    assert_eq!(code, 0, "{out}");

    // Through node 3, wherever the controller leads: a NOT_CONTROLLER answer sends the
    // client to the controller Metadata names.
    let server = c.kafka(3);
    let out = run_tern(
        &[
            "create-topic",
            "moves",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--server",
            &server,
        ],
        b"",
    );
    expect(&out, 0, "create-topic");
    let lines = "a\nb\nc\nd\ne\n";
    expect(
        &c.tern(&["produce", "moves", "--partition", "0"], lines.as_bytes()),
        0,
        "produce",
    );

    // Every partition ends up led by its preferred (first) replica, and placement spread
    // those over the three nodes.
    wait_for(&c, "moves", "leaders on the preferred replicas", |l| {
        l.iter().all(|(leader, r)| *leader == r.first().copied())
    });
    let before = layout(&c.metadata(), "moves");
    let mut leaders: Vec<i32> = before.iter().filter_map(|(l, _)| *l).collect();
    leaders.sort_unstable();
    assert_eq!(leaders, vec![1, 2, 3], "{before:?}");

    // Move partition 0's leadership to its second replica.
    let (old, replicas) = before[0].clone();
    let to = replicas[1];
    let out = c.tern(
        &[
            "cluster",
            "transfer-leader",
            "--topic",
            "moves",
            "--partition",
            "0",
            "--to",
            &to.to_string(),
            "--json",
        ],
        b"",
    );
    expect(&out, 0, "transfer-leader");
    assert_eq!(out.json()["leader"], to);
    wait_for(
        &c,
        "moves",
        "partition 0 led by the new preferred replica",
        |l| l[0].0 == Some(to) && l[0].1.first() == Some(&to),
    );
    assert_ne!(old, Some(to));
    let out = c.tern(&["consume", "moves", "--partition", "0"], b"");
    expect(&out, 0, "consume after the transfer");
    assert_eq!(out.stdout, lines);

    // A node that is not a replica cannot be asked to lead.
    let out = c.tern(
        &[
            "cluster",
            "transfer-leader",
            "--topic",
            "moves",
            "--partition",
            "0",
            "--to",
            "9",
        ],
        b"",
    );
    assert_ne!(out.code, 0, "transfer to a non-replica: {}", out.stderr);
    assert!(out.stderr.contains("no replica"), "{}", out.stderr);

    // Node 1's directory, started standalone, is refused, and is not damaged by it.
    let (code, out) = c.script(&["stop", "1"]);
    assert_eq!(code, 0, "{out}");
    let data = c.dir.path().join("node-1");
    let log = c.dir.path().join("standalone.log");
    let ip = common::node_ip(11);
    let mut child = Command::new(TERN)
        .args(["serve", "--standalone", "--shards", "1", "--node-id", "1"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--kafka-addr", &format!("{ip}:9092")])
        .args(["--http-addr", &format!("{ip}:9090")])
        .args(["--peer-addr", &format!("{ip}:9093")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start tern serve --standalone");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > WAIT_MAX {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("standalone start did not end:\n{text}"));
    // Exit 1: a shard ended at start (docs/operations/node.md, exit codes of `tern serve`).
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("belongs to a multi-node cluster"), "{text}");

    let (code, out) = c.script(&["start", "1"]);
    assert_eq!(code, 0, "{out}");
    wait_for(
        &c,
        "moves",
        "node 1 leads its preferred partition again",
        |l| l.iter().all(|(leader, r)| *leader == r.first().copied()),
    );
    let out = c.tern(&["consume", "moves", "--partition", "0"], b"");
    expect(&out, 0, "consume after node 1 came back");
    assert_eq!(out.stdout, lines);
}
