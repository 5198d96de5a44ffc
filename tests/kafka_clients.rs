//! Unmodified Kafka clients against a real `tern serve` child process (standalone, loopback):
//! kcat (librdkafka), Debian's python3-kafka 2.0.2 and kafka-python 3.x. Each client test is
//! skipped, with the reason printed, when its client is not installed; `.ci/run` installs
//! them all. The node is always killed at the end, also when a test fails (`Node`'s Drop).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

mod common;

use common::kafka_tools::{have_kcat, kafka_python, lines, run_client};

const TERN: &str = env!("CARGO_BIN_EXE_tern");
/// Bound on every wait for the node or a client.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// A `tern serve` child; killed and reaped on drop.
struct Node {
    child: Child,
    kafka: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

/// A free port on `ip` (bound, read, released: the node binds it next).
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Node {
    fn start(ip: &str) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("node.log");
        let kafka: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let http = format!("{ip}:{}", free_port(ip));
        let peer = format!("{ip}:{}", free_port(ip));
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
            _dir: dir,
            log,
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

    fn boot(&self) -> String {
        self.kafka.to_string()
    }

    /// Creates a topic over the Kafka protocol (CreateTopics v4), waiting until every
    /// partition has a leader (Metadata through kcat is not needed for that: a produce is
    /// retried by the clients anyway; this keeps the first produce from racing the election).
    fn create_topic(&self, name: &str, partitions: i32) {
        let mut topic = CreatableTopic::default();
        topic.name = TopicName(StrBytes::from_string(name.to_string()));
        topic.num_partitions = partitions;
        topic.replication_factor = 1;
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![topic];
        req.timeout_ms = 10_000;
        // NOT_CONTROLLER (41) until the controller group has elected itself, then
        // NOT_ENOUGH_REPLICAS (19, retriable) while its new leader registers the members.
        let start = Instant::now();
        let resp = loop {
            let resp: CreateTopicsResponse = self
                .call(ApiKey::CreateTopics, 4, &req)
                .expect("CreateTopics");
            let retriable = matches!(resp.topics[0].error_code, 41 | 19);
            if !retriable || start.elapsed() > WAIT_MAX {
                break resp;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            resp.topics[0].error_code, 0,
            "create {name}: {:?}",
            resp.topics[0].error_message
        );
        // Leaders of a single-node cluster are elected within a few ticks.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn call<Req: Encodable, Resp: Decodable>(
        &self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        let mut s = TcpStream::connect(self.kafka)?;
        s.set_read_timeout(Some(WAIT_MAX))?;
        let mut body = BytesMut::new();
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = 42;
        header.client_id = Some(StrBytes::from_static_str("tern-test"));
        header
            .encode(&mut body, key.request_header_version(version))
            .map_err(std::io::Error::other)?;
        req.encode(&mut body, version)
            .map_err(std::io::Error::other)?;
        s.write_all(&(body.len() as i32).to_be_bytes())?;
        s.write_all(&body)?;
        let mut size = [0u8; 4];
        s.read_exact(&mut size)?;
        let mut resp = vec![0u8; i32::from_be_bytes(size) as usize];
        s.read_exact(&mut resp)?;
        let mut buf = bytes::Bytes::from(resp);
        let h = ResponseHeader::decode(&mut buf, key.response_header_version(version))
            .map_err(std::io::Error::other)?;
        assert_eq!(h.correlation_id, 42);
        let r = Resp::decode(&mut buf, version).map_err(std::io::Error::other)?;
        assert_eq!(buf.remaining(), 0, "bytes left after the response");
        Ok(r)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- node log ---\n{}", self.log_text());
        }
    }
}

/// Runs a client command with a bounded wait; panics with its output on failure.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    run_client(cmd, stdin, WAIT_MAX)
}

#[test]
fn kcat_lists_produces_and_consumes() {
    if !have_kcat() {
        eprintln!("SKIPPED kcat_lists_produces_and_consumes: kcat is not installed (apt-get install kcat; .ci/run does)");
        return;
    }
    let node = Node::start("127.0.0.21");
    node.create_topic("kcat-t", 3);
    let b = node.boot();
    let list = run(Command::new("kcat").args(["-b", &b, "-L"]), None);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("1 brokers"), "{text}");
    assert!(text.contains(&format!("broker 1 at {b}")), "{text}");
    assert!(
        text.contains("topic \"kcat-t\" with 3 partitions"),
        "{text}"
    );
    assert!(text.contains("partition 2, leader 1"), "{text}");

    let input: String = (0..20).map(|i| format!("rec-{i}\n")).collect();
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    run(
        Command::new("kcat").args(["-b", &b, "-P", "-t", "kcat-t", "-p", "1"]),
        Some(input.as_bytes()),
    );
    let all = run(
        Command::new("kcat").args([
            "-b",
            &b,
            "-C",
            "-t",
            "kcat-t",
            "-p",
            "1",
            "-o",
            "beginning",
            "-e",
        ]),
        None,
    );
    let want: Vec<String> = (0..20).map(|i| format!("rec-{i}")).collect();
    assert_eq!(lines(&all), want, "exactly what was produced, in order");

    let last = run(
        Command::new("kcat").args(["-b", &b, "-C", "-t", "kcat-t", "-p", "1", "-o", "-5", "-e"]),
        None,
    );
    assert_eq!(lines(&last), want[15..].to_vec());

    // By timestamp: a second produce, later than every record of the first.
    std::thread::sleep(Duration::from_millis(20));
    let mid_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(mid_ms > before_ms);
    run(
        Command::new("kcat").args(["-b", &b, "-P", "-t", "kcat-t", "-p", "1"]),
        Some(b"late-0\nlate-1\n"),
    );
    let since = run(
        Command::new("kcat").args([
            "-b",
            &b,
            "-C",
            "-t",
            "kcat-t",
            "-p",
            "1",
            "-o",
            &format!("s@{mid_ms}"),
            "-e",
        ]),
        None,
    );
    assert_eq!(lines(&since), vec!["late-0", "late-1"]);
    // Offsets of the keyed format: dense from 0.
    let offsets = run(
        Command::new("kcat").args([
            "-b",
            &b,
            "-C",
            "-t",
            "kcat-t",
            "-p",
            "1",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o\n",
        ]),
        None,
    );
    let want: Vec<String> = (0..22).map(|i| i.to_string()).collect();
    assert_eq!(lines(&offsets), want);
}

const PYTHON_CLIENT: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
boot, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = KafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=20000)
admin.create_topics([NewTopic(topic, 2, 1)])
admin.create_topics([NewTopic(topic + "-gone", 1, 1)])
admin.delete_topics([topic + "-gone"])
p = KafkaProducer(bootstrap_servers=boot, acks='all', retries=20)
import kafka
if kafka.__version__.startswith('3'):
    # The default producer of 3.x is idempotent: InitProducerId, then sequences.
    assert p.config['enable_idempotence'], p.config
futs = [p.send(topic, value=b"v%d" % i, partition=i % 2) for i in range(n)]
p.flush(timeout=30)
meta = [f.get(timeout=30) for f in futs]
for part in (0, 1):
    offs = [m.offset for m in meta if m.partition == part]
    assert offs == list(range(len(offs))), (part, offs)
c = KafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False, group_id=None,
                  consumer_timeout_ms=5000)
for part in (0, 1):
    tp = TopicPartition(topic, part)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == n // 2:
            break
    want = [b"v%d" % i for i in range(part, n, 2)]
    assert got == want, (part, got[:3], want[:3], len(got))
names = admin.list_topics()
assert topic in names and topic + "-gone" not in names, names
print("ok", n)
"#;

fn python_clients(python: &Path, ip: &str, topic: &str) {
    let node = Node::start(ip);
    let out = run(
        Command::new(python).args(["-c", PYTHON_CLIENT, &node.boot(), topic, "1000"]),
        None,
    );
    assert_eq!(lines(&out), vec!["ok 1000"]);
}

#[test]
fn debian_python3_kafka_2_produces_and_consumes() {
    let Some(python) = kafka_python("2.") else {
        eprintln!("SKIPPED debian_python3_kafka_2_produces_and_consumes: Debian's python3-kafka 2.0.2 is not installed (apt-get install python3-kafka; .ci/run does)");
        return;
    };
    python_clients(&python, "127.0.0.22", "py2-t");
}

/// kafka-python 3.x, whose default producer is idempotent (InitProducerId, sequences).
#[test]
fn kafka_python_3_idempotent_produce_and_consume() {
    let Some(python) = kafka_python("3.") else {
        eprintln!(
            "SKIPPED kafka_python_3_idempotent_produce_and_consume: no kafka-python 3.x (set TERN_KAFKA_PYTHON; .ci/run creates the virtualenv under target/)"
        );
        return;
    };
    python_clients(&python, "127.0.0.23", "py3-t");
}

#[test]
fn oversized_and_malformed_requests_close_the_connection_and_the_node_keeps_serving() {
    let node = Node::start("127.0.0.24");
    // A size over the limit: refused from the size field alone.
    let mut s = TcpStream::connect(node.kafka).unwrap();
    s.set_read_timeout(Some(WAIT_MAX)).unwrap();
    s.write_all(&(1i32 << 30).to_be_bytes()).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "connection closed");
    // Garbage of a plausible size.
    let mut s = TcpStream::connect(node.kafka).unwrap();
    s.set_read_timeout(Some(WAIT_MAX)).unwrap();
    s.write_all(&16i32.to_be_bytes()).unwrap();
    s.write_all(&[0xff; 16]).unwrap();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "connection closed");
    // Still serving.
    node.create_topic("after-garbage", 1);
    assert!(node.log_text().contains("closing the connection"));
}

/// One batch of an idempotent producer: `build_batch` with producer id, epoch and base
/// sequence set (and the CRC recomputed, since they are covered by it).
fn idempotent_batch(values: &[&[u8]], producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
    // Stamped now: the node's default retention (7 days) would expire an old timestamp.
    let mut b =
        tern::node::records::build_batch(values, tern_net::kafka_client::producer::now_ms());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn produce(node: &Node, topic: &str, records: Vec<u8>) -> (i16, i64) {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(bytes::Bytes::from(records));
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    let resp: ProduceResponse = node.call(ApiKey::Produce, 8, &req).expect("Produce");
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn idempotent_produce_answers_retries_with_the_original_offset_and_refuses_gaps() {
    let node = Node::start("127.0.0.25");
    node.create_topic("idem", 1);
    let start = Instant::now();
    let first = loop {
        let r = produce(&node, "idem", idempotent_batch(&[b"a", b"b"], 77, 0, 0));
        // NOT_LEADER_OR_FOLLOWER / NOT_ENOUGH_REPLICAS while the partition elects itself.
        if (r.0 != 6 && r.0 != 19) || start.elapsed() > WAIT_MAX {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first, (0, 0));
    // The same batch again (a retry): the original offset, nothing appended.
    assert_eq!(
        produce(&node, "idem", idempotent_batch(&[b"a", b"b"], 77, 0, 0)),
        (0, 0)
    );
    assert_eq!(
        produce(&node, "idem", idempotent_batch(&[b"c"], 77, 0, 2)),
        (0, 2)
    );
    // A gap: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    assert_eq!(
        produce(&node, "idem", idempotent_batch(&[b"d"], 77, 0, 9)).0,
        45
    );
    // A bad CRC: CORRUPT_MESSAGE (2), nothing stored.
    let mut bad = idempotent_batch(&[b"e"], 78, 0, 0);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(produce(&node, "idem", bad).0, 2);
    // A plain (non-idempotent) batch continues at the next offset: 3 records so far.
    assert_eq!(
        produce(
            &node,
            "idem",
            tern::node::records::build_batch(&[b"f"], tern_net::kafka_client::producer::now_ms())
        ),
        (0, 3)
    );
}

fn fetch(node: &Node, topic: &str, offset: i64, max_wait_ms: i32) -> (i16, usize, i64) {
    fetch_min(node, topic, offset, max_wait_ms, 1)
}

fn fetch_min(
    node: &Node,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> (i16, usize, i64) {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = min_bytes;
    req.max_bytes = 1 << 20;
    req.topics = vec![t];
    let resp: FetchResponse = node.call(ApiKey::Fetch, 11, &req).expect("Fetch");
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.records.as_ref().map_or(0, |r| r.len()),
        p.high_watermark,
    )
}

/// A fetch at the high watermark with a long max_wait is parked on the shard and answered
/// with the records a later produce commits (not with an empty answer at once).
#[test]
fn fetch_long_polls_until_records_are_committed() {
    let node = Node::start("127.0.0.26");
    node.create_topic("poll", 1);
    let start = Instant::now();
    while produce(&node, "poll", tern::node::records::build_batch(&[b"x"], 1)).0 != 0 {
        assert!(start.elapsed() < WAIT_MAX, "first produce never succeeded");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fetch(&node, "poll", 1, 0),
        (0, 0, 1),
        "nothing after offset 1 yet"
    );
    // Past the high watermark: OFFSET_OUT_OF_RANGE (1).
    assert_eq!(fetch(&node, "poll", 5, 0).0, 1);
    std::thread::scope(|s| {
        // The whole test's bound: if the wait were not woken, the fetch would still answer
        // (empty) after WAIT_MAX, and the assertion below would fail rather than hang.
        let parked = s.spawn(|| fetch(&node, "poll", 1, WAIT_MAX.as_millis() as i32));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            produce(&node, "poll", tern::node::records::build_batch(&[b"y"], 2)),
            (0, 1)
        );
        let (code, bytes, hw) = parked.join().expect("fetch thread");
        assert_eq!(code, 0);
        assert!(
            bytes > 0,
            "the parked fetch was answered with the new records"
        );
        assert_eq!(hw, 2);
    });
}

/// `min_bytes` above one batch: a parked fetch is not answered by the first batch committed
/// but keeps gathering until it holds `min_bytes` (here two batches).
#[test]
fn fetch_gathers_min_bytes_across_batches() {
    let node = Node::start("127.0.0.27");
    node.create_topic("gather", 1);
    let batch = || tern::node::records::build_batch(&[[b'g'; 200].as_slice()], 1);
    let batch_bytes = batch().len();
    let start = Instant::now();
    while produce(&node, "gather", batch()).0 != 0 {
        assert!(start.elapsed() < WAIT_MAX, "first produce never succeeded");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::scope(|s| {
        // Bounded by WAIT_MAX: at the deadline the fetch answers with what it has.
        let parked = s.spawn(|| {
            fetch_min(
                &node,
                "gather",
                1,
                WAIT_MAX.as_millis() as i32,
                (2 * batch_bytes) as i32,
            )
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(produce(&node, "gather", batch()), (0, 1));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(produce(&node, "gather", batch()), (0, 2));
        let (code, bytes, _) = parked.join().expect("fetch thread");
        assert_eq!(code, 0);
        assert_eq!(
            bytes,
            2 * batch_bytes,
            "both batches gathered in one answer"
        );
    });
}
