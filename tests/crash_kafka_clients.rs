//! Issue 10's crash test with real clients, against a 3-node cluster (scripts/cluster.sh):
//! kafka-python 3.x produces records with its default producer (acks='all', idempotent)
//! while `cluster.sh kill` takes down the partition's leader, which is then restarted; every
//! record the client saw acknowledged (future callbacks) is consumed exactly once, in order,
//! with kafka-python and again with kcat.
//!
//! `TERN_KAFKA_KILL_RECORDS` sets the record count (default 100 000, the issue's figure).
//! Skipped, with the reason printed, when kafka-python 3.x is missing (`.ci/run` creates
//! the virtualenv; `TERN_KAFKA_PYTHON` names another interpreter); the kcat half is skipped
//! alone when kcat is missing.

mod common;
mod serve_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka_tools::{have_kcat, kafka_python};
use serve_support::cluster::{Cluster, WAIT_MAX};

/// Bound on the producer and on each consumer.
const CLIENT_WAIT_MAX: Duration = Duration::from_secs(900);

const PRODUCER: &str = r#"
import sys
from kafka import KafkaProducer
boot, topic, n, out = sys.argv[1].split(','), sys.argv[2], int(sys.argv[3]), sys.argv[4]
# The defaults of kafka-python 3.x: acks='all' and enable_idempotence=True.
p = KafkaProducer(bootstrap_servers=boot, acks='all')
assert p.config['enable_idempotence'], p.config
# Line-buffered: the test watches the count grow to choose the moment of the kill.
acked = open(out, 'w', buffering=1)
failed = []
def ok(i):
    return lambda md: acked.write("%d %d\n" % (md.offset, i))
def bad(i):
    return lambda e: failed.append((i, repr(e)))
for i in range(n):
    f = p.send(topic, value=b"k%09d" % i, partition=0)
    f.add_callback(ok(i))
    f.add_errback(bad(i))
p.flush(timeout=600)
p.close(timeout=60)
acked.close()
print("failed", len(failed), failed[:5])
"#;

const CONSUMER: &str = r#"
import sys
from kafka import KafkaConsumer, TopicPartition
boot, topic, out = sys.argv[1].split(','), sys.argv[2], sys.argv[3]
c = KafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False, group_id=None,
                  consumer_timeout_ms=10000)
tp = TopicPartition(topic, 0)
c.assign([tp])
c.seek(tp, 0)
end = c.end_offsets([tp])[tp]
with open(out, 'w') as f:
    for m in c:
        f.write("%d %s\n" % (m.offset, m.value.decode()))
        if m.offset + 1 >= end:
            break
print("end", end)
"#;

fn python() -> Option<PathBuf> {
    kafka_python("3.")
}

/// A client process whose stdout and stderr go to files (a pipe nobody reads while the
/// client runs would fill up and block it); killed on drop if still running.
struct ClientProcess {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ClientProcess {
    fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> ClientProcess {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start client");
        ClientProcess {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits (bounded) for a successful exit; returns the client's stdout.
    fn wait(mut self, what: &str) -> String {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait client") {
                break status;
            }
            assert!(
                start.elapsed() < CLIENT_WAIT_MAX,
                "{what} still running after {CLIENT_WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        assert!(
            status.success(),
            "{what} failed ({status:?}):\nstdout:\n{out}\nstderr:\n{}",
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        out
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// `OFFSET VALUE` lines.
fn pairs(text: &str) -> Vec<(i64, String)> {
    text.lines()
        .filter_map(|l| {
            let (o, v) = l.split_once(' ')?;
            Some((o.parse().ok()?, v.to_string()))
        })
        .collect()
}

/// The number of the value `k000000042`.
fn number(value: &str) -> u64 {
    value
        .strip_prefix('k')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("foreign value {value:?}"))
}

/// Checks a consumed log (offset, value) against the acknowledgements (offset, number):
/// dense offsets from 0; numbers strictly increase (no record twice, none reordered: the
/// idempotent producer's guarantee); each acknowledged record is at the offset its
/// callback named. Records whose send failed may be stored or not (at most once).
fn check(what: &str, consumed: &[(i64, String)], acked: &[(i64, u64)]) {
    for (i, (o, _)) in consumed.iter().enumerate() {
        assert_eq!(*o, i as i64, "{what}: offsets dense from 0");
    }
    let numbers: Vec<u64> = consumed.iter().map(|(_, v)| number(v)).collect();
    for w in numbers.windows(2) {
        assert!(w[0] < w[1], "{what}: {} then {}", w[0], w[1]);
    }
    for &(offset, n) in acked {
        assert_eq!(
            numbers.get(offset as usize),
            Some(&n),
            "{what}: acknowledged record {n} at offset {offset}"
        );
    }
}

#[test]
fn kafka_python_produce_with_the_leader_killed_then_consume_with_kafka_python_and_kcat() {
    let Some(python) = python() else {
        eprintln!("SKIPPED kafka_python_produce_with_the_leader_killed...: no kafka-python 3.x (set TERN_KAFKA_PYTHON; .ci/run creates target/kafka-python-venv)");
        return;
    };
    let records: u64 = std::env::var("TERN_KAFKA_KILL_RECORDS")
        .ok()
        .map(|v| v.parse().expect("TERN_KAFKA_KILL_RECORDS is a number"))
        .unwrap_or(100_000);
    let topic = "pykill";
    let all = [1, 2, 3];
    let c = Cluster::new(3);
    c.start();
    c.create_topic(topic, 1, 3);
    let boot: Vec<String> = all.iter().map(|&n| c.kafka_addr(n)).collect();
    let boot = boot.join(",");
    let work = tempfile::tempdir().expect("temp dir");
    let acked_path = work.path().join("acked");
    let started = Instant::now();
    let producer = ClientProcess::spawn(
        Command::new(&python).args([
            "-c",
            PRODUCER,
            &boot,
            topic,
            &records.to_string(),
            acked_path.to_str().expect("utf-8"),
        ]),
        work.path(),
        "producer",
    );
    // Kill the leader once a quarter of the records is acknowledged (while the producer is
    // busy), restart it a second later.
    let deadline = Instant::now() + WAIT_MAX;
    while (line_count(&acked_path) as u64) < records / 4 {
        assert!(
            Instant::now() < deadline,
            "kafka-python acknowledged {} records in {WAIT_MAX:?}",
            line_count(&acked_path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = c.leader(topic, 0, &all);
    let at_kill = line_count(&acked_path);
    c.kill(victim);
    std::thread::sleep(Duration::from_secs(1));
    c.restart(victim);
    let report = producer.wait("kafka-python producer");
    let produce_time = started.elapsed();
    let acked: Vec<(i64, u64)> = pairs(&std::fs::read_to_string(&acked_path).expect("acked"))
        .into_iter()
        .map(|(o, v)| (o, v.parse().expect("number")))
        .collect();
    eprintln!(
        "kafka-python: {records} records sent, {} acknowledged, node {victim} killed after {at_kill} acks; {report} in {produce_time:?}",
        acked.len()
    );
    assert!(
        acked.len() as u64 > records / 4,
        "acknowledgements stopped at the kill"
    );
    let hw_min = acked.iter().map(|(o, _)| o + 1).max().unwrap_or(0);
    // Every replica serves the same log, at least up to the last acknowledged record.
    let served = c.converged(&all, topic, 0, hw_min);

    let consumed_path = work.path().join("consumed");
    let out = ClientProcess::spawn(
        Command::new(&python).args([
            "-c",
            CONSUMER,
            &boot,
            topic,
            consumed_path.to_str().expect("utf-8"),
        ]),
        work.path(),
        "consumer",
    )
    .wait("kafka-python consumer");
    eprintln!("kafka-python consumer: {}", out.trim());
    let consumed = pairs(&std::fs::read_to_string(&consumed_path).expect("consumed"));
    assert_eq!(
        consumed.len(),
        served.len(),
        "kafka-python consumed what the nodes serve"
    );
    check("kafka-python consumer", &consumed, &acked);

    if !have_kcat() {
        eprintln!("SKIPPED the kcat consumer: kcat is not installed (apt-get install kcat)");
        return;
    }
    let args = [
        "-b",
        &boot,
        "-C",
        "-t",
        topic,
        "-p",
        "0",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%o %s\n",
    ];
    let out = ClientProcess::spawn(Command::new("kcat").args(args), work.path(), "kcat")
        .wait("kcat consumer");
    let by_kcat = pairs(&out);
    assert_eq!(by_kcat, consumed, "kcat and kafka-python read the same log");
    check("kcat consumer", &by_kcat, &acked);
}
