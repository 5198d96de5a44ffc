//! `/metrics`: a scrape asks every shard for a copy of its status and counters
//! ([`ShardMsg::Metrics`]), merges them and writes them in the Prometheus text format with
//! the `prometheus-client` crate. The shards keep plain counters on their own threads; this
//! is the only place they meet. docs/operations/metrics.md lists every metric.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tern_engine::histogram::{Log2Histogram, LOG2_BUCKETS};

use super::status::{self, group_pending};
use super::HttpSetup;
use crate::node::shard::{GroupStatus, ShardMetrics, ShardMsg, ShardStatus};
use crate::node::stats::ShardCounters;

type Labels = Vec<(String, String)>;
/// A gauge or counter read from one copy: name, help, and how to read it.
type Reading<T> = (&'static str, &'static str, fn(&T) -> u64);

#[derive(Debug, Clone)]
enum Value {
    Gauge(i64),
    Counter(u64),
    /// Sum, and per-bucket (not cumulative) counts by upper bound (f64::MAX: +Inf).
    Histogram(f64, Vec<(f64, u64)>),
}

#[derive(Debug, Clone)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// One scrape's merged values; encoded once by the registry.
#[derive(Debug, Default)]
struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    fn add(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        self.families.push(Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        });
        let last = self.families.len() - 1;
        &mut self.families[last]
    }
}

impl Family {
    fn sample(&mut self, labels: &[(&str, &str)], value: Value) -> &mut Self {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.push((labels, value));
        self
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for f in &self.families {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    encode_value(&mut metric, value)?;
                } else {
                    let mut m = metric.encode_family(labels)?;
                    encode_value(&mut m, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    m: &mut prometheus_client::encoding::MetricEncoder,
    value: &Value,
) -> Result<(), fmt::Error> {
    match value {
        Value::Gauge(v) => m.encode_gauge(v),
        Value::Counter(v) => m.encode_counter::<(), u64, u64>(v, None),
        Value::Histogram(sum, buckets) => {
            let count = buckets.iter().map(|b| b.1).sum();
            m.encode_histogram::<()>(*sum, count, buckets, None)
        }
    }
}

/// A histogram of microseconds (or bytes, with `scale` 1) as Prometheus buckets.
fn histogram<const BASE: u64>(h: &Log2Histogram<BASE>, scale: f64) -> Value {
    let mut buckets: Vec<(f64, u64)> = (0..LOG2_BUCKETS)
        .map(|i| (Log2Histogram::<BASE>::bound(i) as f64 * scale, h.counts[i]))
        .collect();
    buckets.push((f64::MAX, h.counts[LOG2_BUCKETS]));
    Value::Histogram(h.sum as f64 * scale, buckets)
}

const MICROS: f64 = 1e-6;

/// Asks every shard (at once, each bounded by `SHARD_ANSWER_TIMEOUT`) and encodes the merge.
pub async fn scrape(setup: &HttpSetup) -> Result<String, fmt::Error> {
    let answers: Vec<Result<ShardMetrics, String>> = futures_util::future::join_all(
        setup
            .senders
            .iter()
            .map(|s| status::ask(s, |reply| ShardMsg::Metrics { reply })),
    )
    .await;
    let scrape = build(setup, &answers);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

fn group_labels(g: &GroupStatus) -> (String, String) {
    match (&g.topic, g.partition) {
        (Some(t), Some(p)) => (t.clone(), p.to_string()),
        // The controller group (cluster metadata) has no topic.
        _ => ("__controller".to_string(), "0".to_string()),
    }
}

fn build(setup: &HttpSetup, answers: &[Result<ShardMetrics, String>]) -> Scrape {
    let mut s = Scrape::default();
    let statuses: Vec<Result<ShardStatus, String>> = answers
        .iter()
        .map(|a| a.as_ref().map(|m| m.status.clone()).map_err(Clone::clone))
        .collect();
    let groups: Vec<&GroupStatus> = statuses
        .iter()
        .flatten()
        .flat_map(|s| s.groups.iter())
        .collect();

    let raft: [Reading<GroupStatus>; 5] = [
        (
            "tern_raft_commit_index",
            "Highest log index known committed.",
            |g| g.commit,
        ),
        (
            "tern_raft_applied_index",
            "Highest log index applied to the partition.",
            |g| g.applied,
        ),
        (
            "tern_raft_last_index",
            "Last index in this replica's log.",
            |g| g.last_index,
        ),
        (
            "tern_raft_term",
            "Current Raft term (Kafka leader epoch).",
            |g| g.term,
        ),
        (
            "tern_raft_leader_commit_index",
            "The leader's commit index as this replica last heard it; lag = this - applied.",
            |g| g.leader_commit,
        ),
    ];
    for (name, help, get) in raft {
        let f = s.add(name, help, MetricType::Gauge);
        for g in &groups {
            let (topic, partition) = group_labels(g);
            f.sample(
                &[("topic", &topic), ("partition", &partition)],
                Value::Gauge(get(g) as i64),
            );
        }
    }
    let f = s.add(
        "tern_raft_state",
        "1 for this replica's current role (leader, follower, candidate, learner).",
        MetricType::Gauge,
    );
    for g in &groups {
        let (topic, partition) = group_labels(g);
        let role = if g.learners.contains(&setup.node_id) {
            "learner"
        } else if g.role == "pre-candidate" {
            "candidate"
        } else {
            g.role.as_str()
        };
        for state in ["leader", "follower", "candidate", "learner"] {
            f.sample(
                &[
                    ("topic", &topic),
                    ("partition", &partition),
                    ("state", state),
                ],
                Value::Gauge((state == role) as i64),
            );
        }
    }
    // A replica of a group with several voters that knows no leader cannot reach a quorum
    // (or is in the middle of an election); a leader steps down when check-quorum fails.
    let detected = groups
        .iter()
        .any(|g| g.voters.len() > 1 && g.leader == 0 && g.halted.is_none());
    s.add(
        "tern_partition_detected",
        "1 when a local replica of a multi-voter group knows no leader (quorum lost or peers unreachable).",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(detected as i64));
    // Catch-up traffic (docs/replication.md, sections 6 and 7): today entries read back from
    // disk for a follower behind its leader's cache (out) and entries a rebuilding replica
    // received (in), both charged to the `[recovery]` budget.
    let recovery = super::status::recovery_totals(statuses.iter().flatten());
    s.add(
        "tern_snapshot_transfer_bytes",
        "Catch-up bytes received by replicas being rebuilt (in) and read back from disk for followers behind a leader's cache (out).",
        MetricType::Counter,
    )
    .sample(&[("direction", "in")], Value::Counter(recovery.bytes_in_total))
    .sample(&[("direction", "out")], Value::Counter(recovery.bytes_out_total));
    s.add(
        "tern_snapshot_transfer_active",
        "Local groups transferring catch-up data now: rebuilding groups holding a recovery slot, and groups that served a catch-up read in the last second.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(recovery.transfers_active as i64));

    // A wiped node being rebuilt (docs/replication.md): what is left.
    let rebuild = super::status::rebuild_progress(groups.iter().copied());
    s.add(
        "tern_recovery_partitions_pending",
        "Local groups (the controller included) still being rebuilt after a disk loss: they vote for nobody and acknowledge nothing above their leader's commit.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(rebuild.groups_pending as i64));
    s.add(
        "tern_recovery_bytes_remaining",
        "Bytes the groups being rebuilt have yet to receive: entries behind their leader's commit times the mean entry size received so far (0 before the first entries arrive).",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(rebuild.bytes_remaining as i64));
    s.add(
        "tern_rebuild_entries_remaining",
        "Committed entries the groups being rebuilt have yet to apply, as far as each heard its leader's commit.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(rebuild.entries_remaining as i64));
    s.add(
        "tern_node_rebuilding",
        "1 while this node is being rebuilt after a disk loss (any local group still rebuilding), else 0.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge((rebuild.groups_pending > 0) as i64));

    // Per shard: health and WAL counters.
    let shard_label: Vec<String> = (0..answers.len()).map(|i| i.to_string()).collect();
    let f = s.add(
        "tern_shard_failed",
        "1 when the shard stopped on a WAL write or fsync error (fail-stop) or does not answer.",
        MetricType::Gauge,
    );
    for (i, a) in answers.iter().enumerate() {
        let failed = match a {
            Ok(m) => m.status.failed.is_some(),
            Err(_) => true,
        };
        f.sample(&[("shard", &shard_label[i])], Value::Gauge(failed as i64));
    }
    let wal: [Reading<ShardMetrics>; 4] = [
        (
            "tern_wal_bytes_written",
            "WAL bytes written (batches, padding included).",
            |m| m.wal.batch_bytes,
        ),
        ("tern_wal_appends", "WAL records appended.", |m| {
            m.wal.records
        }),
        ("tern_wal_batches", "Group-commit batches written.", |m| {
            m.wal.batches
        }),
        ("tern_wal_fsyncs", "fdatasync calls completed.", |m| {
            m.wal.fsyncs
        }),
    ];
    for (name, help, get) in wal {
        let f = s.add(name, help, MetricType::Counter);
        for (i, a) in answers.iter().enumerate() {
            if let Ok(m) = a {
                f.sample(&[("shard", &shard_label[i])], Value::Counter(get(m)));
            }
        }
    }
    let mut fsync = tern_engine::histogram::LatencyHistogramUs::default();
    let mut batch = tern_engine::histogram::SizeHistogramBytes::default();
    let mut counters = ShardCounters::default();
    for m in answers.iter().flatten() {
        fsync.merge(&m.wal.fsync_latency);
        batch.merge(&m.wal.batch_size);
        counters.merge(&m.counters);
    }
    s.add(
        "tern_wal_fsync_duration_seconds",
        "Latency of each group-commit fdatasync.",
        MetricType::Histogram,
    )
    .sample(&[], histogram(&fsync, MICROS));
    s.add(
        "tern_wal_batch_size_bytes",
        "Bytes of each group-commit batch.",
        MetricType::Histogram,
    )
    .sample(&[], histogram(&batch, 1.0));

    // Recovery.
    let progress = &setup.progress;
    let ready = progress.was_ready();
    let phase = if progress.shards_replayed() < progress.shards {
        "replay"
    } else if ready {
        "ready"
    } else {
        "catch_up"
    };
    let f = s.add(
        "tern_recovery_phase",
        "1 for the node's start-up phase: replay (WAL), catch_up (groups to their leaders), ready.",
        MetricType::Gauge,
    );
    for p in ["replay", "catch_up", "ready"] {
        f.sample(&[("phase", p)], Value::Gauge((p == phase) as i64));
    }
    s.add(
        "tern_recovery_shards_replayed",
        "Shards that finished their WAL replay.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(progress.shards_replayed() as i64));
    s.add(
        "tern_recovery_shards_total",
        "Shards of this node.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(progress.shards as i64));
    let replayed: u64 = answers.iter().flatten().map(|m| m.replayed_bytes).sum();
    let records: u64 = answers.iter().flatten().map(|m| m.replayed_records).sum();
    s.add(
        "tern_recovery_replayed_bytes",
        "WAL bytes replayed at start, summed over the shards that finished.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(replayed as i64));
    s.add(
        "tern_recovery_replayed_records",
        "WAL records replayed at start, summed over the shards that finished.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(records as i64));
    let caught_up = groups.iter().filter(|g| group_pending(g).is_none()).count();
    s.add(
        "tern_recovery_groups_caught_up",
        "Local replicas that applied their leader's commit as last heard.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(caught_up as i64));
    s.add(
        "tern_recovery_groups_total",
        "Local replicas.",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(groups.len() as i64));
    let quiet = groups.iter().filter(|g| g.quiet).count();
    s.add(
        "tern_raft_groups_quiet",
        "Local replicas whose group is quiet: idle, no heartbeats, no election timer (raft.quiesce_idle_groups).",
        MetricType::Gauge,
    )
    .sample(&[], Value::Gauge(quiet as i64));

    // Kafka API.
    let f = s.add(
        "tern_kafka_requests",
        "Kafka requests answered or refused, by API.",
        MetricType::Counter,
    );
    for (api, n) in &counters.kafka_requests {
        f.sample(&[("api", api)], Value::Counter(*n));
    }
    let f = s.add(
        "tern_kafka_errors",
        "Kafka error codes answered (per partition or topic), by API and code; code=closed when the request closed the connection.",
        MetricType::Counter,
    );
    for ((api, code), n) in &counters.kafka_errors {
        f.sample(&[("api", api), ("code", code)], Value::Counter(*n));
    }
    let f = s.add(
        "tern_repair",
        "Damaged log entries: detected, repaired from a peer, write_failed, unrepairable (group halted).",
        MetricType::Counter,
    );
    for (outcome, n) in &counters.repairs {
        f.sample(&[("outcome", outcome)], Value::Counter(*n));
    }
    s.add(
        "tern_scrub_passes",
        "Passes of the background scrubber over every located entry ([recovery] scrub_interval).",
        MetricType::Counter,
    )
    .sample(&[], Value::Counter(counters.scrub_passes));
    s.add(
        "tern_scrub_bytes",
        "Bytes of entries the background scrubber read and checked (counted at the end of each pass).",
        MetricType::Counter,
    )
    .sample(&[], Value::Counter(counters.scrub_bytes));
    s.add(
        "tern_scrub_damaged",
        "Damaged entries the background scrubber found and handed to the repair path.",
        MetricType::Counter,
    )
    .sample(&[], Value::Counter(counters.scrub_damaged));
    s.add(
        "tern_recovery_stream_chunks",
        "Recovery-stream chunks of committed entries appended by groups being rebuilt here (in) and served to rebuilding peers (out).",
        MetricType::Counter,
    )
    .sample(&[("direction", "in")], Value::Counter(counters.stream_chunks_in))
    .sample(&[("direction", "out")], Value::Counter(counters.stream_chunks_out));
    s.add(
        "tern_recovery_stream_fetches_refused",
        "Recovery-stream fetches this node answered with a refusal (not caught up, compacted, busy, or the read failed).",
        MetricType::Counter,
    )
    .sample(&[], Value::Counter(counters.stream_fetches_refused));
    s.add(
        "tern_kafka_produce_duration_seconds",
        "Time from a Produce request's arrival to its answer (acks=all: commit).",
        MetricType::Histogram,
    )
    .sample(&[], histogram(&counters.produce_latency, MICROS));
    s.add(
        "tern_kafka_fetch_duration_seconds",
        "Time from a Fetch request's arrival to its answer (long polls included).",
        MetricType::Histogram,
    )
    .sample(&[], histogram(&counters.fetch_latency, MICROS));
    s
}
