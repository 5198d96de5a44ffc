//! A cluster run by scripts/cluster.sh for the crash tests: a guard that stops it (and then
//! SIGKILLs whatever is left) also when a test panics, who leads a partition (Metadata), what
//! each node serves (Fetch sent to that node itself: followers serve committed records too),
//! what each data directory holds offline (`tern dump`), and a producer of sequence-numbered
//! records through the Rust client that records every acknowledgement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tern_net::kafka_client::client::decode_records;
use tern_net::kafka_client::{Acks, Client, ClientConfig, ConnectOptions, Connection, Producer};
use tern_net::records::{batch_records, parse_batches};

use super::{p, tern, TERN};

/// Bound on every wait of these helpers (a node coming up, a leader appearing, replicas
/// converging). Generous: the machine is shared and debug builds are slow.
pub const WAIT_MAX: Duration = Duration::from_secs(90);

/// One record as a node serves it: its offset and value.
pub type Served = Vec<(i64, Vec<u8>)>;

pub struct Cluster {
    dir: tempfile::TempDir,
    pub nodes: u32,
    port_offset: u32,
    /// Each node's own Kafka port (`TERN_CLUSTER_KAFKA_PORTS`), when they differ.
    kafka_ports: Option<Vec<u32>>,
    /// Arguments for every `tern serve` (`TERN_SERVE_ARGS`).
    serve_args: String,
}

impl Cluster {
    /// A cluster of `nodes` (not started). Each cluster of a test process gets its own ports
    /// (an offset from the process id and a counter), all below the ephemeral range, so tests
    /// running at once never collide. A node uses ports 9090, 9092 and 9093 plus the offset,
    /// so offsets step by 10.
    pub fn new(nodes: u32) -> Cluster {
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        let k = CLUSTERS.fetch_add(1, Ordering::Relaxed) % 20;
        let port_offset = 10_000 + (std::process::id() % 60) * 200 + k * 10;
        Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            nodes,
            port_offset,
            kafka_ports: None,
            serve_args: "--shards 1".into(),
        }
    }

    /// A cluster of `nodes` whose every node reads `config` (a tern.toml written into the
    /// cluster's directory), e.g. small segments so that some get sealed quickly.
    pub fn with_config(nodes: u32, config: &str) -> Cluster {
        let mut c = Cluster::new(nodes);
        let path = c.dir.path().join("tern.toml");
        std::fs::write(&path, config).expect("write tern.toml");
        c.serve_args = format!("--shards 1 --config {}", path.display());
        c
    }

    /// A cluster of at most 3 nodes whose Kafka ports differ from node to node (9094,
    /// 9095, 9096 plus the offset: inside this cluster's 10 ports, apart from the default
    /// HTTP, Kafka and peer ports).
    pub fn with_own_kafka_ports(nodes: u32) -> Cluster {
        assert!(nodes <= 3, "at most 3 nodes have a port of their own");
        let mut c = Cluster::new(nodes);
        c.kafka_ports = Some((1..=nodes).map(|n| 9093 + n + c.port_offset).collect());
        c
    }

    /// Runs `cluster.sh ARGS`: (exit code, stdout + stderr).
    pub fn script(&self, args: &[&str]) -> (i32, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .envs(self.script_env())
            .output()
            .expect("run cluster.sh");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// The environment that points cluster.sh at this cluster (binary, directory, node
    /// count, ports, start bound, serve flags).
    pub fn script_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TERN_BIN", serve_bin()),
            ("TERN_CLUSTER_DIR", self.dir.path().display().to_string()),
            ("TERN_CLUSTER_NODES", self.nodes.to_string()),
            ("TERN_CLUSTER_PORT_OFFSET", self.port_offset.to_string()),
            ("TERN_CLUSTER_START_SECS", WAIT_MAX.as_secs().to_string()),
            ("TERN_SERVE_ARGS", self.serve_args.clone()),
            (
                "TERN_CLUSTER_KAFKA_PORTS",
                self.kafka_ports
                    .as_ref()
                    .map(|ports| {
                        ports
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            ),
        ]
    }

    /// `cluster.sh ARGS`, which must succeed.
    pub fn run(&self, args: &[&str]) -> String {
        let (code, out) = self.script(args);
        assert_eq!(code, 0, "cluster.sh {args:?}: {out}");
        out
    }

    pub fn start(&self) {
        self.run(&["start"]);
    }

    pub fn kill(&self, n: u32) {
        self.run(&["kill", &n.to_string()]);
    }

    pub fn restart(&self, n: u32) {
        self.run(&["restart", &n.to_string()]);
    }

    /// Where cluster.sh keeps data, logs, pids and the cluster id (`TERN_CLUSTER_DIR`).
    /// Added to every port of this cluster's nodes (`TERN_CLUSTER_PORT_OFFSET`).
    pub fn port_offset(&self) -> u32 {
        self.port_offset
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("node-{n}"))
    }

    pub fn kafka_addr(&self, n: u32) -> String {
        let port = match &self.kafka_ports {
            Some(ports) => ports[(n - 1) as usize],
            None => 9092 + self.port_offset,
        };
        format!("127.0.0.{n}:{port}")
    }

    /// The pid of node `n` if cluster.sh started it and it has not been stopped since.
    pub fn pid(&self, n: u32) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("node-{n}.pid"))).ok()?;
        text.trim().parse().ok()
    }

    /// Sends `sig` (a name such as STOP or CONT) to node `n`.
    pub fn signal(&self, n: u32, sig: &str) {
        let pid = self.pid(n).unwrap_or_else(|| panic!("node {n} has no pid"));
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid} (node {n})");
    }

    pub fn log(&self, n: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{n}.log"))).unwrap_or_default()
    }

    /// Waits (bounded by `WAIT_MAX`) until node `n`'s log contains `needle`.
    pub fn wait_log(&self, n: u32, needle: &str) -> bool {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            if self.log(n).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A client whose bootstrap server is node `n`.
    pub fn client(&self, n: u32) -> Client {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            match Client::connect(self.client_config(n)) {
                Ok(c) => return c,
                Err(e) => assert!(Instant::now() < deadline, "no client to node {n}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Node `n`'s HTTP address (HOST:PORT).
    pub fn http_addr(&self, n: u32) -> String {
        format!("127.0.0.{n}:{}", 9090 + self.port_offset)
    }

    pub fn client_config(&self, n: u32) -> ClientConfig {
        let mut config = ClientConfig::new(self.kafka_addr(n));
        config.connect.connect_timeout = Duration::from_secs(2);
        config.connect.request_timeout = Duration::from_secs(15);
        config
    }

    /// Creates `topic` through node 1 and waits until its partitions have leaders. Patient:
    /// right after start-up on a loaded machine the controller may take seconds to elect
    /// itself (NOT_CONTROLLER until then), so more attempts than the client's default.
    pub fn create_topic(&self, topic: &str, partitions: i32, replication_factor: i16) {
        let mut config = self.client_config(1);
        config.attempts_max = 100; // ~ WAIT_MAX with the 1 s backoff bound
        config.server_timeout = Duration::from_secs(30);
        let mut client = Client::connect(config).unwrap_or_else(|e| panic!("client: {e}"));
        client
            .create_topic(topic, partitions, replication_factor)
            .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    }

    /// The leader of `topic`-`partition` as node `asked` sees it, if it names one.
    pub fn leader_seen_by(&self, asked: u32, topic: &str, partition: i32) -> Option<u32> {
        let mut client = Client::connect(self.client_config(asked)).ok()?;
        let meta = client.topic_metadata(&[topic]).ok()?;
        let t = meta.topic(topic)?;
        let p = t.partitions.iter().find(|p| p.partition == partition)?;
        p.leader.and_then(|l| u32::try_from(l).ok())
    }

    /// The node leading `topic`-`partition` among those in `up`: one that `up` nodes name
    /// and that itself says it leads. Bounded by [`WAIT_MAX`].
    pub fn leader(&self, topic: &str, partition: i32, up: &[u32]) -> u32 {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            for &asked in up {
                if let Some(l) = self.leader_seen_by(asked, topic, partition) {
                    if up.contains(&l) && self.leader_seen_by(l, topic, partition) == Some(l) {
                        return l;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader of {topic}-{partition} among {up:?} after {WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every record node `n` serves for `topic`-`partition` (offset 0 to its high watermark),
    /// fetched from that node itself, and the high watermark.
    pub fn served(&self, n: u32, topic: &str, partition: i32) -> Result<(i64, Served), String> {
        let mut conn = Connection::open(&self.kafka_addr(n), &ConnectOptions::default())
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut offset = 0i64;
        // Bounded: each round reads at least one record or ends the loop.
        for _ in 0..1_000_000 {
            let mut fp = FetchPartition::default();
            fp.partition = partition;
            fp.fetch_offset = offset;
            fp.partition_max_bytes = 1 << 20;
            fp.current_leader_epoch = -1;
            fp.log_start_offset = -1;
            let mut ft = FetchTopic::default();
            ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
            ft.partitions = vec![fp];
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(-1);
            req.max_wait_ms = 0;
            req.min_bytes = 1;
            req.max_bytes = 1 << 20;
            req.session_epoch = -1;
            req.topics = vec![ft];
            let resp = conn.call(&req).map_err(|e| e.to_string())?;
            let part = resp
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|x| x.partition_index == partition)
                .ok_or("no partition in the answer")?;
            if part.error_code != 0 {
                return Err(format!("node {n}: fetch error {}", part.error_code));
            }
            let records = match &part.records {
                Some(bytes) => decode_records(bytes, offset).map_err(|e| e.to_string())?,
                None => Vec::new(),
            };
            let Some(last) = records.last() else {
                return Ok((part.high_watermark, out));
            };
            offset = last.offset + 1;
            for r in records {
                out.push((r.offset, r.value.unwrap_or_default()));
            }
            if offset >= part.high_watermark {
                return Ok((part.high_watermark, out));
            }
        }
        Err("fetch did not end".into())
    }

    /// Waits (bounded) until every node in `nodes` serves the same records, at least up to
    /// `hw_min`; returns them.
    pub fn converged(&self, nodes: &[u32], topic: &str, partition: i32, hw_min: i64) -> Served {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let all: Vec<_> = nodes
                .iter()
                .map(|&n| self.served(n, topic, partition))
                .collect();
            let first = all[0].as_ref().ok();
            let same = first.is_some_and(|(hw, _)| *hw >= hw_min)
                && all.iter().all(|x| x.as_ref().ok() == first);
            if same {
                return first.map(|(_, s)| s.clone()).unwrap_or_default();
            }
            if Instant::now() >= deadline {
                let summary: Vec<String> = all
                    .iter()
                    .zip(nodes)
                    .map(|(x, n)| match x {
                        Ok((hw, s)) => format!("node {n}: hw {hw}, {} records", s.len()),
                        Err(e) => format!("node {n}: {e}"),
                    })
                    .collect();
                panic!("replicas did not converge on hw >= {hw_min}: {summary:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What node `n`'s data directory holds for the partition group with data, read offline
    /// (the cluster must be stopped): `tern verify-data` must pass, and `tern dump` gives the
    /// entries; the last record of an index wins (a Raft conflict appends the replacement).
    pub fn offline(&self, n: u32) -> Served {
        let data = self.data(n);
        let (code, out) = tern(&["verify-data", "--path", p(&data)]);
        assert_eq!(code, 0, "verify-data of node {n}: {out}");
        let out = Command::new(TERN)
            .args(["dump", "--path", p(&data), "--json", "--preview-bytes"])
            .arg((4u64 << 20).to_string())
            .output()
            .expect("run tern dump");
        assert!(out.status.success(), "dump of node {n}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dump JSON");
        // (group, index) -> payload; group 0 is the controller.
        let mut entries: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
        for r in doc["records"].as_array().expect("records") {
            let (Some(g), Some(i), Some(hex)) = (
                r["group"].as_u64(),
                r["index"].as_u64(),
                r["preview_hex"].as_str(),
            ) else {
                continue;
            };
            // A Repair record is the corrected copy of a damaged entry (docs/format.md, kind
            // 9); the damaged record itself is left out (dump marks it).
            let kind_ok = r["kind"] == "entry" || r["kind"] == "repair";
            if !kind_ok || g == 0 || r["damaged"] == true {
                continue;
            }
            let bytes = r["payload_bytes"].as_u64().unwrap_or(0);
            let payload = unhex(hex);
            assert_eq!(payload.len() as u64, bytes, "whole payload previewed");
            entries.insert((g, i), payload);
        }
        let mut served = Vec::new();
        for payload in entries.values() {
            if payload.is_empty() {
                continue; // a leader's no-op
            }
            let Ok(batches) = parse_batches(payload) else {
                continue; // not a record batch (Raft-internal)
            };
            for info in &batches {
                let batch = &payload[info.position..info.position + info.bytes];
                for r in batch_records(batch, info).expect("records of a stored batch") {
                    served.push((r.offset, r.value.unwrap_or_default()));
                }
            }
        }
        served
    }

    /// Pids of this cluster's `tern serve` processes that are alive (not zombies), found by
    /// their command line (the data directories are unique to this cluster).
    pub fn live_pids(&self) -> Vec<u32> {
        serve_pids(&format!("{}/node-", self.dir.path().display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A node stopped by SIGSTOP would sit out the graceful stop's whole bound.
        for pid in self.live_pids() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
        let _ = self.script(&["stop"]);
        for pid in self.live_pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if std::thread::panicking() {
            for n in 1..=self.nodes {
                let log = self.log(n);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- node {n} log (last lines) ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The binary the cluster runs: `TERN_CRASH_BIN` if set (e.g. target/release/tern, for
/// figures closer to production's), else the one built with the tests.
pub fn serve_bin() -> String {
    std::env::var("TERN_CRASH_BIN").unwrap_or_else(|_| TERN.to_string())
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// The value of record `seq`: fixed width, so values sort as their sequence numbers.
pub fn value_of(seq: u64) -> Vec<u8> {
    format!("seq-{seq:010}").into_bytes()
}

/// The sequence number of a value made by [`value_of`].
pub fn seq_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix("seq-")?
        .parse()
        .ok()
}

/// One acknowledged batch.
#[derive(Debug, Clone)]
pub struct Ack {
    pub first_seq: u64,
    pub count: u64,
    pub base_offset: i64,
    /// When the answer arrived, and the leader the client had sent it to.
    pub at: Instant,
    pub leader: i32,
}

/// What a [`SeqProducer`] did.
#[derive(Debug, Default)]
pub struct Produced {
    pub acks: Vec<Ack>,
    /// A batch sent but never acknowledged when the producer was stopped (its records may be
    /// stored or not, at most once).
    pub unacknowledged: Option<(u64, u64)>,
    /// Send attempts that failed (each retried with the same sequence numbers).
    pub failed_attempts: u64,
    /// The newest failed attempt's error, for a test's failure message.
    pub last_error: Option<String>,
}

impl Produced {
    /// The offset after the last acknowledged record (0 when none was).
    pub fn high_watermark(&self) -> i64 {
        self.acks
            .iter()
            .map(|a| a.base_offset + a.count as i64)
            .max()
            .unwrap_or(0)
    }
}

/// A thread producing records `seq-0`, `seq-1`, ... to one partition through the Rust
/// client's idempotent producer (acks=all), batches of 1 to 4 records, one batch in flight.
/// A batch that fails is sent again, with the same records and sequence number, until it is
/// acknowledged or the producer is stopped, so no later batch overtakes it.
pub struct SeqProducer {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Produced>>,
    thread: Option<JoinHandle<()>>,
}

impl SeqProducer {
    pub fn start(config: ClientConfig, topic: &str, partition: i32) -> SeqProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Produced::default()));
        let (stop2, shared2, topic) = (stop.clone(), shared.clone(), topic.to_string());
        let thread = std::thread::spawn(move || {
            let mut producer = loop {
                match Client::connect(config.clone())
                    .and_then(|c| Producer::new(c, Acks::All, true))
                {
                    Ok(p) => break p,
                    Err(_) if !stop2.load(Ordering::Relaxed) => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    Err(_) => return,
                }
            };
            let mut seq = 0u64;
            // Bounded by the stop flag, which every test sets within its own bound.
            while !stop2.load(Ordering::Relaxed) {
                let count = 1 + seq % 4;
                let values: Vec<Vec<u8>> = (seq..seq + count).map(value_of).collect();
                let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                loop {
                    let sent = producer.send(&topic, partition, &refs);
                    let leader = producer.client().leader_of(&topic, partition).unwrap_or(-1);
                    let mut s = shared2.lock().expect("producer state");
                    match sent {
                        Ok(ack) => {
                            s.unacknowledged = None;
                            s.acks.push(Ack {
                                first_seq: seq,
                                count,
                                base_offset: ack.base_offset.unwrap_or(-1),
                                at: Instant::now(),
                                leader,
                            });
                            break;
                        }
                        Err(e) => {
                            s.failed_attempts += 1;
                            s.last_error = Some(e.to_string());
                            s.unacknowledged = Some((seq, count));
                            if stop2.load(Ordering::Relaxed) {
                                return;
                            }
                        }
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_millis(20));
                }
                seq += count;
            }
        });
        SeqProducer {
            stop,
            shared,
            thread: Some(thread),
        }
    }

    /// Records acknowledged so far.
    pub fn acked_records(&self) -> u64 {
        let s = self.shared.lock().expect("producer state");
        s.acks.iter().map(|a| a.count).sum()
    }

    /// Acknowledgements so far (a copy).
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().expect("producer state").acks.clone()
    }

    /// Waits (bounded) until `more` records beyond those acknowledged now are acknowledged.
    pub fn wait_progress(&self, more: u64, timeout: Duration) -> bool {
        let target = self.acked_records() + more;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.acked_records() >= target {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Failed attempts so far and the newest one's error: what a test prints when progress
    /// stops.
    pub fn failures(&self) -> String {
        let s = self.shared.lock().expect("producer state");
        format!(
            "{} failed attempts, the last: {}",
            s.failed_attempts,
            s.last_error.as_deref().unwrap_or("none")
        )
    }

    /// Stops the producer (its batch in flight finishes or fails first) and returns what it
    /// did.
    pub fn finish(mut self) -> Produced {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("producer thread");
        }
        std::mem::take(&mut *self.shared.lock().expect("producer state"))
    }
}

impl Drop for SeqProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks what a replica serves against what the producer was told, for a single producer
/// with one batch in flight that retries a failed batch with the same sequence number (the
/// idempotent producer's guarantee, Kafka's `enable.idempotence`):
/// - offsets are dense from 0;
/// - every acknowledged batch is stored exactly once, at the offset its acknowledgement
///   named, with its records in order;
/// - no record is stored twice, and records are stored in production order (sequence numbers
///   strictly increase along the log), so nothing acknowledged is reordered or duplicated;
/// - the only records not acknowledged that may be stored are the batch left unacknowledged
///   when the producer stopped (stored once or not at all).
pub fn check_against_acks(what: &str, served: &Served, produced: &Produced) {
    for (i, (offset, _)) in served.iter().enumerate() {
        assert_eq!(*offset, i as i64, "{what}: offsets are dense from 0");
    }
    let seqs: Vec<u64> = served
        .iter()
        .map(|(o, v)| {
            seq_of(v).unwrap_or_else(|| panic!("{what}: offset {o} holds a foreign value {v:?}"))
        })
        .collect();
    for w in seqs.windows(2) {
        assert!(
            w[0] < w[1],
            "{what}: sequence {} then {}: a duplicate or a reordering",
            w[0],
            w[1]
        );
    }
    let mut acked_count = 0u64;
    for a in &produced.acks {
        for k in 0..a.count {
            let offset = a.base_offset + k as i64;
            let got = served.get(offset as usize).map(|(_, v)| v.clone());
            assert_eq!(
                got,
                Some(value_of(a.first_seq + k)),
                "{what}: acknowledged record seq {} at offset {offset}",
                a.first_seq + k
            );
        }
        acked_count += a.count;
    }
    // Records not acknowledged: only the batch left in flight.
    let extra = served.len() as u64 - acked_count;
    match produced.unacknowledged {
        Some((first, count)) => {
            assert!(
                extra == 0 || extra == count,
                "{what}: {extra} records beyond the acknowledged ones"
            );
            if extra == count {
                let tail: Vec<u64> = seqs[acked_count as usize..].to_vec();
                assert_eq!(tail, (first..first + count).collect::<Vec<_>>(), "{what}");
            }
        }
        None => assert_eq!(extra, 0, "{what}: records nobody acknowledged"),
    }
}

/// Pids of the live (not zombie) `tern serve` processes whose command line contains
/// `needle` (a data directory), found in /proc.
pub fn serve_pids(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if cmdline.contains(" serve ") && cmdline.contains(needle) && !zombie {
            pids.push(pid);
        }
    }
    pids
}
