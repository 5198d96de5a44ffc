//! The online CLI and the Rust Kafka client against a real `tern serve` child process
//! (standalone, loopback, free ports, a temp data dir): create-topic, list-topics, produce,
//! consume, delete-topic through `tern`, then the same story through the library (idempotent
//! producer, fetch, list offsets). The node is killed and reaped on drop, also when a test
//! fails; every wait is bounded.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{expect, Out, TERN};
use tern_net::kafka_client::{
    Acks, Client, ClientConfig, ClientError, FetchOptions, OffsetSpec, Producer,
};

/// Bound on every wait for the node.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// A `tern serve` child; killed and reaped on drop.
struct Node {
    child: Child,
    kafka: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = common::scratch();
        let log = dir.path().join("node.log");
        let ip = common::node_ip(12);
        let kafka: SocketAddr = format!("{ip}:9092").parse().unwrap();
        let http = format!("{ip}:9090");
        let peer = format!("{ip}:9093");
        let child = Command::new(TERN)
            .args(["serve", "--standalone", "--shards", "1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--kafka-addr", &kafka.to_string()])
            .args(["--http-addr", &http, "--peer-addr", &peer])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tern serve");
        let node = Node {
            child,
            kafka,
            log,
            _dir: dir,
        };
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

    fn server(&self) -> String {
        self.kafka.to_string()
    }

    /// Runs `tern ARGS --server ADDR` with `stdin` fed in.
    fn tern(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut child = Command::new(TERN)
            .args(args)
            .args(["--server", &self.server()])
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
fn online_cli_create_produce_consume_delete_standalone() {
    let node = Node::start();

    let out = node.tern(
        &["create-topic", "events", "--partitions", "2", "--json"],
        b"",
    );
    expect(&out, 0, "create-topic");
    let created = out.json();
    assert_eq!(created["name"], "events");
    assert_eq!(created["partitions"].as_array().map(Vec::len), Some(2));

    let out = node.tern(&["create-topic", "events"], b"");
    expect(&out, 4, "create-topic of an existing topic is refused");

    let out = node.tern(&["list-topics", "--json"], b"");
    expect(&out, 0, "list-topics");
    let listed = out.json();
    let topics = listed["topics"].as_array().expect("topics");
    assert!(topics.iter().any(|t| t["name"] == "events"), "{listed}");
    assert_eq!(listed["brokers"].as_array().map(Vec::len), Some(1));

    let lines: Vec<String> = (0..250).map(|i| format!("record-{i}")).collect();
    let input = lines.join("\n") + "\n";
    let out = node.tern(
        &[
            "produce",
            "events",
            "--partition",
            "1",
            "--batch-records",
            "100",
            "--json",
        ],
        input.as_bytes(),
    );
    expect(&out, 0, "produce");
    let produced = out.json();
    assert_eq!(produced["records"], 250);
    assert_eq!(produced["batches"], 3);
    assert_eq!(produced["first_offset"], 0);
    assert_eq!(produced["last_offset"], 249);

    let out = node.tern(&["consume", "events", "--partition", "1"], b"");
    expect(&out, 0, "consume");
    assert_eq!(
        out.stdout, input,
        "consume prints what was produced, in order"
    );

    let out = node.tern(
        &[
            "consume",
            "events",
            "--partition",
            "1",
            "--offset",
            "248",
            "--json",
        ],
        b"",
    );
    expect(&out, 0, "consume --json from an offset");
    let records: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["offset"], 248);
    assert_eq!(records[1]["value"], "record-249");

    let out = node.tern(
        &["consume", "events", "--partition", "0", "--count", "1"],
        b"",
    );
    expect(&out, 0, "consume of an empty partition ends at once");
    assert_eq!(out.stdout, "");

    let out = node.tern(&["consume", "nosuch"], b"");
    expect(&out, 4, "consume of an unknown topic");
    assert!(out.stderr.contains("create-topic"), "{}", out.stderr);

    let out = node.tern(&["delete-topic", "events"], b"");
    expect(&out, 0, "delete-topic");
    let out = node.tern(&["list-topics", "--json"], b"");
    expect(&out, 0, "list-topics after delete");
    let listed = out.json();
    let topics = listed["topics"].as_array().expect("topics");
    assert!(!topics.iter().any(|t| t["name"] == "events"), "{listed}");
}

#[test]
fn online_cli_without_a_server_says_so() {
    // An address of this test's own where no node is started.
    let ip = common::node_ip(12);
    let out = common::tern(&[
        "list-topics",
        "--server",
        &format!("{ip}:9092"),
        "--timeout-s",
        "2",
    ]);
    expect(&out, 3, "no server");
    assert!(out.stderr.contains("tern serve"), "{}", out.stderr);
}

#[test]
fn client_library_idempotent_produce_fetch_and_offsets() {
    let node = Node::start();
    let mut client = Client::connect(ClientConfig::new(node.server())).expect("connect");
    client.create_topic("lib", 1, -1).expect("create topic");
    assert_eq!(client.partition_count("lib").expect("partitions"), 1);

    let mut producer = Producer::new(
        Client::connect(ClientConfig::new(node.server())).expect("connect"),
        Acks::All,
        true,
    )
    .expect("producer");
    assert!(producer.is_idempotent());
    let mut expected = Vec::new();
    for b in 0..5 {
        let values: Vec<String> = (0..10).map(|i| format!("v{b}-{i}")).collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let ack = producer.send("lib", 0, &refs).expect("send");
        assert_eq!(ack.base_offset, Some(b * 10));
        expected.extend(values);
    }
    let mut leader_acked = Producer::new(
        Client::connect(ClientConfig::new(node.server())).expect("connect"),
        Acks::Leader,
        false,
    )
    .expect("acks=1 producer");
    let ack = leader_acked
        .send("lib", 0, &[b"leader-durable"])
        .expect("send");
    assert_eq!(ack.base_offset, Some(50));
    expected.push("leader-durable".to_string());
    let mut unacked = Producer::new(
        Client::connect(ClientConfig::new(node.server())).expect("connect"),
        Acks::None,
        false,
    )
    .expect("acks=0 producer");
    let ack = unacked.send("lib", 0, &[b"fire-and-forget"]).expect("send");
    assert_eq!(ack.base_offset, None);
    expected.push("fire-and-forget".to_string());

    assert_eq!(
        client.list_offset("lib", 0, OffsetSpec::Earliest).unwrap(),
        0
    );
    // acks=0 has no answer: wait (bounded) until its record is visible.
    let start = Instant::now();
    while client.list_offset("lib", 0, OffsetSpec::Latest).unwrap() < 52 {
        assert!(start.elapsed() < WAIT_MAX, "acks=0 record never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        client.list_offset("lib", 0, OffsetSpec::Latest).unwrap(),
        52
    );

    let mut got = Vec::new();
    let mut offset = 0;
    for _ in 0..100 {
        if offset >= 52 {
            break;
        }
        let fetched = client
            .fetch("lib", 0, offset, FetchOptions::default())
            .expect("fetch");
        assert_eq!(fetched.high_watermark, 52);
        for r in &fetched.records {
            assert_eq!(r.offset, got.len() as i64, "dense offsets, in order");
            got.push(String::from_utf8(r.value.clone().unwrap_or_default()).unwrap());
        }
        offset = fetched.next_offset(offset);
    }
    assert_eq!(got, expected);

    let err = client
        .fetch("nosuch", 0, 0, FetchOptions::default())
        .expect_err("unknown topic");
    assert!(
        matches!(err, ClientError::UnknownTopic { .. }),
        "wanted UnknownTopic, got {err}"
    );
    client.delete_topic("lib").expect("delete topic");
    assert!(client.cached_metadata().topic("lib").is_none());
}
