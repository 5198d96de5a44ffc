//! The shard driver in one process: a single-node cluster on a temporary directory (real
//! O_DIRECT WAL), driven through its inbox the way the front ends drive it.

use std::rc::Rc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;
use glommio::LocalExecutorBuilder;
use tern_engine::storage::dma::DmaStorage;
use tern_engine::{ShardWal, WalConfig};
use uuid::Uuid;

use super::controller::{Command, Member, Outcome, Retention, TopicSpec};
use super::records::{batch_values, build_batch, parse_batches};
use super::requests::{Acks, FetchReply, OffsetSpec, PartitionRequest, ProduceReply, RequestError};
use super::runtime::NodeTransport;
use super::shard::{Shard, ShardMsg, ShardSetup};

const WAIT_MAX: Duration = Duration::from_secs(20);

fn member() -> Member {
    Member {
        node_id: 1,
        peer_addr: "127.0.0.1:19093".parse().unwrap(),
        kafka_addr: "127.0.0.1:19092".parse().unwrap(),
        http_addr: "127.0.0.1:19090".parse().unwrap(),
    }
}

async fn ask<T>(
    tx: &mut mpsc::Sender<ShardMsg>,
    make: impl Fn(oneshot::Sender<Result<T, RequestError>>) -> ShardMsg,
) -> Result<T, RequestError> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.unwrap();
    rx.await.unwrap_or(Err(RequestError::ShuttingDown))
}

/// Retries a request while the node is still electing (NotLeader, NotReady) or still
/// creating the partition (UnknownPartition), up to `WAIT_MAX`.
async fn ask_until_ready<T>(
    tx: &mut mpsc::Sender<ShardMsg>,
    make: impl Fn(oneshot::Sender<Result<T, RequestError>>) -> ShardMsg,
) -> Result<T, RequestError> {
    let start = std::time::Instant::now();
    loop {
        match ask(tx, &make).await {
            Err(RequestError::NotLeader { .. })
            | Err(RequestError::NotReady(_))
            | Err(RequestError::UnknownPartition)
                if start.elapsed() < WAIT_MAX =>
            {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Runs a single-shard, single-node cluster on `dir` and hands its inbox to `body`.
fn with_node<F, Fut>(dir: std::path::PathBuf, body: F)
where
    F: FnOnce(mpsc::Sender<ShardMsg>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    with_node_segments(dir, 16 << 20, body)
}

/// [`with_node`] with WAL segments of `segment_bytes`.
fn with_node_segments<F, Fut>(dir: std::path::PathBuf, segment_bytes: u64, body: F)
where
    F: FnOnce(mpsc::Sender<ShardMsg>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    with_node_limits(dir, segment_bytes, Default::default(), body)
}

/// [`with_node_segments`] with the `[recovery]` limits `recovery`.
fn with_node_limits<F, Fut>(
    dir: std::path::PathBuf,
    segment_bytes: u64,
    recovery: super::recovery_budget::RecoveryLimits,
    body: F,
) where
    F: FnOnce(mpsc::Sender<ShardMsg>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    LocalExecutorBuilder::default()
        .io_memory(4 << 20)
        .spawn(move || async move {
            std::fs::create_dir_all(&dir).unwrap();
            tern_engine::storage::dma::probe_iopoll(&dir, 0)
                .await
                .unwrap();
            let wal = ShardWal::open(
                DmaStorage,
                0,
                &dir.join("shard-0"),
                &dir.join("quarantine"),
                WalConfig {
                    segment_bytes,
                    batch_bytes_max: (segment_bytes / 4).min(WalConfig::default().batch_bytes_max),
                    ..WalConfig::default()
                },
            )
            .await
            .unwrap();
            let wal = Rc::new(wal);
            let (tx, rx) = mpsc::channel(64);
            let setup = ShardSetup {
                node_id: 1,
                shard: 0,
                shards: 1,
                tick: Duration::from_millis(10),
                external_ticks: None,
                controller_voters: vec![1],
                initial_members: vec![member()],
                raft: tern_raft::Config::new(1),
                inbox: rx,
                shard_senders: vec![tx.clone()],
                rebuild: None,
                entry_cache_bytes: crate::node::log_store::CACHE_BYTES_MAX,
                scrub: None,
                recovery,
                joined: false,
                membership: None,
            };
            let shard = glommio::spawn_local(Shard::run(
                setup,
                wal.clone(),
                Rc::new(NodeTransport::Alone),
            ));
            let mut stopper = tx.clone();
            body(tx).await;
            stopper.send(ShardMsg::Stop).await.unwrap();
            assert_eq!(shard.await, None, "the shard stopped on an error");
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

fn create_topic(
    partitions: u32,
) -> impl Fn(oneshot::Sender<Result<Outcome, RequestError>>) -> ShardMsg {
    move |reply| ShardMsg::Controller {
        command: Command::CreateTopic(TopicSpec {
            name: "events".into(),
            id: Uuid::from_u128(7),
            partitions,
            replication_factor: 1,
            retention: Retention::default(),
        }),
        reply,
    }
}

fn produce(
    group: u64,
    values: &'static [&'static [u8]],
) -> impl Fn(oneshot::Sender<Result<ProduceReply, RequestError>>) -> ShardMsg {
    move |reply| ShardMsg::Partition {
        group,
        request: PartitionRequest::Produce {
            records: build_batch(values, 1_700_000_000_000),
            acks: Acks::Committed,
            reply,
        },
    }
}

fn fetch(
    group: u64,
    offset: u64,
) -> impl Fn(oneshot::Sender<Result<FetchReply, RequestError>>) -> ShardMsg {
    move |reply| ShardMsg::Partition {
        group,
        request: PartitionRequest::Fetch {
            offset,
            bytes_max: 1 << 20,
            wait_ms_max: 0,
            reply,
        },
    }
}

fn values_of(reply: &FetchReply) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for b in parse_batches(&reply.records).unwrap() {
        let batch = &reply.records[pos..pos + b.bytes];
        for (i, v) in batch_values(batch, &b).unwrap().into_iter().enumerate() {
            out.push((b.base_offset + i as i64, v));
        }
        pos += b.bytes;
    }
    out
}

#[test]
fn standalone_node_creates_a_topic_produces_and_fetches_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_node(path.clone(), |mut tx| async move {
        let outcome = ask_until_ready(&mut tx, create_topic(2)).await.unwrap();
        let Outcome::TopicCreated { groups, .. } = outcome else {
            panic!("topic not created: {outcome:?}");
        };
        let group = groups[0];
        let first = ask_until_ready(&mut tx, produce(group, &[b"a", b"b", b"c"]))
            .await
            .unwrap();
        assert_eq!(first.base_offset, 0);
        let second = ask(&mut tx, produce(group, &[b"d"])).await.unwrap();
        assert_eq!(second.base_offset, 3);
        let got = ask(&mut tx, fetch(group, 0)).await.unwrap();
        assert_eq!(got.high_watermark, 4);
        assert_eq!(
            values_of(&got),
            vec![
                (0, b"a".to_vec()),
                (1, b"b".to_vec()),
                (2, b"c".to_vec()),
                (3, b"d".to_vec())
            ]
        );
        let bad = ask(&mut tx, fetch(group, 9)).await;
        assert!(matches!(
            bad,
            Err(RequestError::OffsetOutOfRange { end: 4, .. })
        ));
        let mut corrupt = build_batch(&[b"x"], 0);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let refused = ask(&mut tx, |reply| ShardMsg::Partition {
            group,
            request: PartitionRequest::Produce {
                records: corrupt.clone(),
                acks: Acks::Committed,
                reply,
            },
        })
        .await;
        assert!(matches!(refused, Err(RequestError::CorruptMessage(_))));
    });
    // Restart: the controller replays its log, the partition comes back with its offsets
    // (rebuilt from the entries after the snapshot point) and takes the next offset after them.
    with_node(path, |mut tx| async move {
        let group = 1;
        let got = ask_until_ready(&mut tx, fetch(group, 0)).await.unwrap();
        assert_eq!(values_of(&got).len(), 4);
        let next = ask_until_ready(&mut tx, produce(group, &[b"e", b"f"]))
            .await
            .unwrap();
        assert_eq!(next.base_offset, 4);
        let latest = ask(&mut tx, |reply| ShardMsg::Partition {
            group,
            request: PartitionRequest::ListOffsets {
                spec: OffsetSpec::Latest,
                reply,
            },
        })
        .await
        .unwrap();
        assert_eq!(latest, 6);
    });
}

fn create_topic_with(
    name: &'static str,
    id: u128,
    retention: Retention,
) -> impl Fn(oneshot::Sender<Result<Outcome, RequestError>>) -> ShardMsg {
    move |reply| ShardMsg::Controller {
        command: Command::CreateTopic(TopicSpec {
            name: name.into(),
            id: Uuid::from_u128(id),
            partitions: 1,
            replication_factor: 1,
            retention,
        }),
        reply,
    }
}

fn idempotent_produce(
    group: u64,
    sequence: i32,
    timestamp_ms: i64,
) -> impl Fn(oneshot::Sender<Result<ProduceReply, RequestError>>) -> ShardMsg {
    move |reply| ShardMsg::Partition {
        group,
        request: PartitionRequest::Produce {
            records: super::records::build_batch_for(
                &[[b'v'; 100].as_slice()],
                timestamp_ms,
                super::records::ProducerStamp {
                    producer_id: 42,
                    producer_epoch: 0,
                    base_sequence: sequence,
                },
            ),
            acks: Acks::Committed,
            reply,
        },
    }
}

fn list_offsets(
    group: u64,
    spec: OffsetSpec,
) -> impl Fn(oneshot::Sender<Result<u64, RequestError>>) -> ShardMsg {
    move |reply| ShardMsg::Partition {
        group,
        request: PartitionRequest::ListOffsets { spec, reply },
    }
}

/// Polls ListOffsets earliest until it reaches `at_least` (retention runs once a second).
async fn wait_for_start(tx: &mut mpsc::Sender<ShardMsg>, group: u64, at_least: u64) -> u64 {
    let start = std::time::Instant::now();
    loop {
        let earliest = ask(tx, list_offsets(group, OffsetSpec::Earliest))
            .await
            .unwrap();
        if earliest >= at_least || start.elapsed() > WAIT_MAX {
            return earliest;
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn retention_compacts_the_prefix_and_idempotence_survives_it_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    with_node(path.clone(), move |mut tx| async move {
        // Each batch is about 170 bytes: a 1000-byte budget keeps the newest 5 or so.
        let by_size = Retention {
            bytes_max: Some(1000),
            age_ms_max: None,
        };
        let Outcome::TopicCreated { groups, .. } =
            ask_until_ready(&mut tx, create_topic_with("sized", 7, by_size))
                .await
                .unwrap()
        else {
            panic!("topic not created");
        };
        let sized = groups[0];
        for seq in 0..20 {
            let r = ask_until_ready(&mut tx, idempotent_produce(sized, seq, now_ms))
                .await
                .unwrap();
            assert_eq!(r.base_offset, seq as u64);
        }
        let start = wait_for_start(&mut tx, sized, 10).await;
        assert!(
            (10..20).contains(&start),
            "retention by size left the log start at {start}"
        );
        let below = ask(&mut tx, fetch(sized, 0)).await;
        assert!(
            matches!(below, Err(RequestError::OffsetOutOfRange { start: s, end: 20, .. }) if s == start),
            "{below:?}"
        );
        let kept = ask(&mut tx, fetch(sized, start)).await.unwrap();
        assert_eq!(values_of(&kept).first().map(|v| v.0), Some(start as i64));
        assert_eq!(values_of(&kept).len() as u64, 20 - start);

        // By age: records stamped a day ago expire at the next check.
        let by_age = Retention {
            bytes_max: None,
            age_ms_max: Some(3_600_000),
        };
        let Outcome::TopicCreated { groups, .. } =
            ask_until_ready(&mut tx, create_topic_with("aged", 8, by_age))
                .await
                .unwrap()
        else {
            panic!("topic not created");
        };
        let aged = groups[0];
        let old = now_ms - 86_400_000;
        ask_until_ready(&mut tx, produce(aged, &[b"old"]))
            .await
            .unwrap();
        let r = ask(&mut tx, idempotent_produce(aged, 0, old))
            .await
            .unwrap();
        assert_eq!(r.base_offset, 1);
        assert_eq!(wait_for_start(&mut tx, aged, 2).await, 2);

        // Snapshot now: everything applied is compacted; the answer says what moved.
        let (reply, rx) = oneshot::channel();
        tx.send(ShardMsg::Snapshot {
            group: Some(sized),
            reply,
        })
        .await
        .unwrap();
        let outcomes = rx.await.unwrap();
        assert_eq!(outcomes.len(), 1);
        let o = &outcomes[0];
        assert_eq!(o.skipped, None, "{o:?}");
        assert!(o.new_first_index > o.old_first_index, "{o:?}");
        assert_eq!(o.log_start_offset, Some(20));
        assert!(o.bytes_freed.is_some_and(|b| b > 0), "{o:?}");
        // A second request finds nothing more to do.
        let (reply, rx) = oneshot::channel();
        tx.send(ShardMsg::Snapshot { group: None, reply })
            .await
            .unwrap();
        let again = rx.await.unwrap();
        assert!(again
            .iter()
            .any(|o| o.group == sized && o.skipped.is_some()));
        // The producer's state survived the compaction of every entry it wrote: a retry of
        // its last batch is answered with the original offset, a gap is refused.
        let retry = ask(&mut tx, idempotent_produce(sized, 19, now_ms))
            .await
            .unwrap();
        assert_eq!(retry.base_offset, 19);
        let gap = ask(&mut tx, idempotent_produce(sized, 25, now_ms)).await;
        assert!(
            matches!(gap, Err(RequestError::OutOfOrderSequence { .. })),
            "{gap:?}"
        );
    });
    // After a restart the log start, the next offset and the producer table come back from
    // the snapshot point.
    with_node(path, move |mut tx| async move {
        let sized = 1;
        let earliest = ask_until_ready(&mut tx, list_offsets(sized, OffsetSpec::Earliest))
            .await
            .unwrap();
        assert_eq!(earliest, 20);
        let retry = ask_until_ready(&mut tx, idempotent_produce(sized, 19, now_ms))
            .await
            .unwrap();
        assert_eq!(retry.base_offset, 19);
        let next = ask(&mut tx, idempotent_produce(sized, 20, now_ms))
            .await
            .unwrap();
        assert_eq!(next.base_offset, 20);
    });
}

#[test]
fn a_batch_over_the_wal_record_limit_is_refused_and_the_shard_keeps_serving() {
    // 1 MiB segments hold records of about 256 KiB: a 300 KB batch (under the node's 1 MiB
    // produce limit) must be answered MESSAGE_TOO_LARGE, not stop the shard.
    let dir = tempfile::tempdir().unwrap();
    with_node_segments(dir.path().to_path_buf(), 1 << 20, |mut tx| async move {
        let outcome = ask_until_ready(&mut tx, create_topic(1)).await.unwrap();
        let Outcome::TopicCreated { groups, .. } = outcome else {
            panic!("topic not created: {outcome:?}");
        };
        let group = groups[0];
        let big = vec![7u8; 300_000];
        let refused = ask_until_ready(&mut tx, |reply| ShardMsg::Partition {
            group,
            request: PartitionRequest::Produce {
                records: build_batch(&[&big], 0),
                acks: Acks::Committed,
                reply,
            },
        })
        .await;
        match refused {
            Err(RequestError::TooLarge { bytes, max }) => {
                assert!(bytes > 300_000 && max < 300_000, "{bytes} {max}")
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let after = ask(&mut tx, produce(group, &[b"small"])).await.unwrap();
        assert_eq!(after.base_offset, 0);
        let got = ask(&mut tx, fetch(group, 0)).await.unwrap();
        assert_eq!(values_of(&got), vec![(0, b"small".to_vec())]);
    });
}

/// Produces `count` one-record idempotent batches (sequences `first..first + count`) to
/// `group`, `in_flight` at a time so that many share a write round.
async fn produce_many(tx: &mut mpsc::Sender<ShardMsg>, group: u64, first: i32, count: i32) {
    const IN_FLIGHT: i32 = 48;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut sequence = first;
    while sequence < first + count {
        let n = IN_FLIGHT.min(first + count - sequence);
        let mut replies = Vec::new();
        for s in sequence..sequence + n {
            let (reply, rx) = oneshot::channel();
            tx.send(idempotent_produce(group, s, now_ms)(reply))
                .await
                .unwrap();
            replies.push(rx);
        }
        for (s, rx) in (sequence..).zip(replies) {
            let ack = rx.await.unwrap().unwrap();
            assert_eq!(
                ack.base_offset, s as u64,
                "one record per batch: offset = sequence"
            );
        }
        sequence += n;
    }
}

async fn entries_read_at_start(tx: &mut mpsc::Sender<ShardMsg>, group: u64) -> Option<u64> {
    let (reply, rx) = oneshot::channel();
    tx.send(ShardMsg::Status { reply }).await.unwrap();
    let status = rx.await.unwrap();
    status
        .groups
        .iter()
        .find(|g| g.group == group)
        .and_then(|g| g.entries_read_at_start)
}

/// Offsets, fetches inside a checkpoint's span, the epoch end and idempotence after a restart
/// that rebuilt the offset map from an offset checkpoint.
async fn check_restarted_partition(tx: &mut mpsc::Sender<ShardMsg>, group: u64, records: u64) {
    let started = std::time::Instant::now();
    let latest = ask_until_ready(tx, list_offsets(group, OffsetSpec::Latest))
        .await
        .unwrap();
    println!(
        "partition ready {} ms after its shard started receiving requests",
        started.elapsed().as_millis()
    );
    assert_eq!(latest, records);
    for offset in [0, 1, 517, records / 2, records - 1] {
        let got = ask(tx, fetch(group, offset)).await.unwrap();
        let values = values_of(&got);
        assert_eq!(
            values.first().map(|(o, _)| *o),
            Some(offset as i64),
            "a fetch at {offset} starts at {offset}"
        );
        for pair in values.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + 1);
        }
    }
    let epoch_end = ask(tx, |reply| ShardMsg::Partition {
        group,
        request: PartitionRequest::EpochEnd {
            leader_epoch: 0,
            reply,
        },
    })
    .await
    .unwrap();
    assert!(epoch_end.end_offset <= records);
    // The producer table came back: a retry of the last batch is a duplicate.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let retry = ask(tx, idempotent_produce(group, records as i32 - 1, now_ms))
        .await
        .unwrap();
    assert_eq!(retry.base_offset, records - 1);
    let next = ask(tx, idempotent_produce(group, records as i32, now_ms))
        .await
        .unwrap();
    assert_eq!(next.base_offset, records);
}

/// Opens shard 0's WAL of `dir` alone and runs `body` on it (to damage what a node wrote).
fn with_wal<F, Fut>(dir: std::path::PathBuf, body: F)
where
    F: FnOnce(Rc<ShardWal<DmaStorage>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    LocalExecutorBuilder::default()
        .io_memory(4 << 20)
        .spawn(move || async move {
            let wal = ShardWal::open(
                DmaStorage,
                0,
                &dir.join("shard-0"),
                &dir.join("quarantine"),
                WalConfig {
                    segment_bytes: 16 << 20,
                    ..WalConfig::default()
                },
            )
            .await
            .unwrap();
            let wal = Rc::new(wal);
            body(wal.clone()).await;
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_restart_reads_only_the_entries_after_the_offset_checkpoint_and_survives_a_damaged_one() {
    use super::offset_checkpoint::CHECKPOINT_ENTRIES;
    // TERN_CHECKPOINT_RECORDS=200000 measures restart-to-ready of a long log, with and
    // without a usable checkpoint (printed).
    let records = std::env::var("TERN_CHECKPOINT_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3 * CHECKPOINT_ENTRIES + 100);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let group = 1;
    with_node(path.clone(), move |mut tx| async move {
        ask_until_ready(&mut tx, create_topic(1)).await.unwrap();
        let first = ask_until_ready(&mut tx, idempotent_produce(group, 0, 1_700_000_000_000))
            .await
            .unwrap();
        assert_eq!(first.base_offset, 0);
        produce_many(&mut tx, group, 1, records as i32 - 1).await;
    });
    let log_entries = records + 2; // the records' entries, the leader's no-op, one spare
    with_node(path.clone(), move |mut tx| async move {
        check_restarted_partition(&mut tx, group, records).await;
        let read = entries_read_at_start(&mut tx, group).await.unwrap();
        println!("restart with a checkpoint: {read} of ~{log_entries} entries read");
        assert!(
            read <= CHECKPOINT_ENTRIES + 2,
            "{read} entries read at start, the checkpoint bounds it"
        );
    });
    // A damaged checkpoint: the start reads the whole log instead, and serves the same.
    with_wal(path.clone(), move |wal| async move {
        let mut garbage = wal.group_meta(group).expect("a checkpoint was written");
        let middle = garbage.len() / 2;
        garbage[middle] ^= 0x55;
        let mut batch = tern_engine::WriteBatch::new();
        batch.group_meta(group, garbage);
        wal.write(batch).await.unwrap();
    });
    with_node(path, move |mut tx| async move {
        check_restarted_partition(&mut tx, group, records + 1).await;
        let read = entries_read_at_start(&mut tx, group).await.unwrap();
        println!("restart with a damaged checkpoint: {read} entries read");
        assert!(read > records, "{read}: the whole log was read");
    });
}

/// Large entries: the offset checkpoint's bytes trigger (`[recovery] offset_checkpoint_bytes`)
/// bounds what a restart reads long before the 1024-entry one would, and the marks' spans end
/// at the same byte bound, so fetches inside them after the restart still start where asked.
#[test]
fn a_restart_after_large_entries_reads_at_most_the_checkpoint_bytes_past_it() {
    const ENTRIES: u64 = 60;
    const VALUE_BYTES: usize = 64 << 10;
    const EVERY_BYTES: u64 = 1 << 20;
    let limits = super::recovery_budget::RecoveryLimits {
        offset_checkpoint_bytes: EVERY_BYTES,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let group = 1;
    with_node_limits(path.clone(), 16 << 20, limits, move |mut tx| async move {
        ask_until_ready(&mut tx, create_topic(1)).await.unwrap();
        for i in 0..ENTRIES {
            let value = vec![i as u8; VALUE_BYTES];
            let ack = ask_until_ready(&mut tx, |reply| ShardMsg::Partition {
                group,
                request: PartitionRequest::Produce {
                    records: build_batch(&[&value], 1_700_000_000_000),
                    acks: Acks::Committed,
                    reply,
                },
            })
            .await
            .unwrap();
            assert_eq!(ack.base_offset, i);
        }
    });
    with_node_limits(path, 16 << 20, limits, move |mut tx| async move {
        let latest = ask_until_ready(&mut tx, list_offsets(group, OffsetSpec::Latest))
            .await
            .unwrap();
        assert_eq!(latest, ENTRIES);
        let read = entries_read_at_start(&mut tx, group).await.unwrap();
        let bound = EVERY_BYTES / VALUE_BYTES as u64 + 3;
        assert!(
            read <= bound,
            "{read} of ~{ENTRIES} entries read at start; the bytes trigger bounds it at {bound}"
        );
        for offset in [0, 5, 17, 31, ENTRIES - 1] {
            let got = ask(&mut tx, fetch(group, offset)).await.unwrap();
            let values = values_of(&got);
            let (first, value) = values
                .first()
                .expect("a fetch inside the log returns records");
            assert_eq!(
                *first, offset as i64,
                "a fetch at {offset} starts at {offset}"
            );
            assert_eq!(value.as_slice(), vec![offset as u8; VALUE_BYTES].as_slice());
        }
    });
}

/// One partition's replica lost offline on an intact node (its engine state deleted, as a
/// failed `import-topic --force` leaves it): at restart the group ledger says the node made
/// promises in that group, so it starts rebuilding: no campaign, no vote, so (the only
/// replica here) it never leads again and takes no produce, while the other partition
/// serves as before. A second restart finds it still rebuilding: the mark is durable.
#[test]
fn a_replica_lost_offline_on_an_intact_node_starts_rebuilding_and_stays_so_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = created.clone();
    with_node(path.clone(), move |mut tx| async move {
        let outcome = ask_until_ready(&mut tx, create_topic(2)).await.unwrap();
        let Outcome::TopicCreated { groups, .. } = outcome else {
            panic!("topic not created: {outcome:?}");
        };
        for &group in &groups {
            let first = ask_until_ready(&mut tx, produce(group, &[b"before"]))
                .await
                .unwrap();
            assert_eq!(first.base_offset, 0);
        }
        *out.lock().unwrap() = groups;
    });
    let groups = created.lock().unwrap().clone();
    let (lost, kept) = (groups[0], groups[1]);
    with_wal(path.clone(), move |wal| async move {
        wal.delete_group(lost).await.unwrap();
    });
    for restart in 0..2 {
        with_node(path.clone(), move |mut tx| async move {
            let ack = ask_until_ready(&mut tx, produce(kept, &[b"after"]))
                .await
                .unwrap();
            assert_eq!(ack.base_offset, 1 + restart);
            let got = ask(&mut tx, fetch(kept, 0)).await.unwrap();
            assert_eq!(values_of(&got)[0], (0, b"before".to_vec()));
            // Many election timeouts (10 ms ticks): a normal lone voter would have led long ago.
            let until = std::time::Instant::now() + Duration::from_millis(600);
            while std::time::Instant::now() < until {
                let answer = ask(&mut tx, produce(lost, &[b"lost"])).await;
                assert!(
                    answer.is_err(),
                    "restart {restart}: the lost replica took a produce"
                );
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            let (reply, rx) = oneshot::channel();
            tx.send(ShardMsg::Status { reply }).await.unwrap();
            let status = rx.await.unwrap();
            let g = status.groups.iter().find(|g| g.group == lost).unwrap();
            assert!(g.rebuilding, "restart {restart}: {g:?}");
            assert_eq!(g.term, 0, "it never campaigned");
            let k = status.groups.iter().find(|g| g.group == kept).unwrap();
            assert!(!k.rebuilding);
        });
    }
    with_wal(path, move |wal| async move {
        let ledger = super::group_ledger::GroupLedger::decode(
            &wal.group_meta(super::group_ledger::ledger_group(0, 1))
                .expect("the ledger is in the WAL"),
        )
        .unwrap();
        assert!(ledger.is_rebuilding(lost));
        assert!(!ledger.is_rebuilding(kept) && ledger.is_hosted(kept));
    });
}

/// Committed entries of one partition cut offline on an intact node (what `tern repair
/// --skip-corrupt` does at a hole: the log ends before the durable commit index). The group
/// used to refuse to start ("hard state commit is beyond the last persisted index"); it now
/// starts from what it holds, rebuilding (its acknowledgements of the cut entries were
/// promises it no longer keeps): as the only replica it never leads again, the other
/// partition serves, and a restart finds it still rebuilding.
#[test]
fn a_replica_whose_committed_entries_were_cut_offline_starts_rebuilding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = created.clone();
    with_node(path.clone(), move |mut tx| async move {
        let outcome = ask_until_ready(&mut tx, create_topic(2)).await.unwrap();
        let Outcome::TopicCreated { groups, .. } = outcome else {
            panic!("topic not created: {outcome:?}");
        };
        for &group in &groups {
            for i in 0..3 {
                let ack = ask_until_ready(&mut tx, produce(group, &[b"before"]))
                    .await
                    .unwrap();
                assert_eq!(ack.base_offset, i);
            }
        }
        *out.lock().unwrap() = groups;
    });
    let groups = created.lock().unwrap().clone();
    let (cut, kept) = (groups[0], groups[1]);
    with_wal(path.clone(), move |wal| async move {
        let info = wal.group(cut).unwrap();
        let commit = info.hard_state.unwrap().commit;
        assert!(commit >= 3 && info.last_index >= commit, "{info:?}");
        let mut batch = tern_engine::WriteBatch::new();
        batch.truncate(cut, commit - 1);
        wal.write(batch).await.unwrap();
        let info = wal.group(cut).unwrap();
        assert!(
            info.hard_state.unwrap().commit > info.last_index,
            "{info:?}"
        );
    });
    for restart in 0..2 {
        with_node(path.clone(), move |mut tx| async move {
            let ack = ask_until_ready(&mut tx, produce(kept, &[b"after"]))
                .await
                .unwrap();
            assert_eq!(ack.base_offset, 3 + restart);
            let until = std::time::Instant::now() + Duration::from_millis(600);
            while std::time::Instant::now() < until {
                let answer = ask(&mut tx, produce(cut, &[b"cut"])).await;
                assert!(
                    answer.is_err(),
                    "restart {restart}: the cut replica took a produce"
                );
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            let (reply, rx) = oneshot::channel();
            tx.send(ShardMsg::Status { reply }).await.unwrap();
            let status = rx.await.unwrap();
            let g = status
                .groups
                .iter()
                .find(|g| g.group == cut)
                .expect("the cut group started");
            assert!(g.rebuilding, "restart {restart}: {g:?}");
        });
    }
}

/// A fetch whose entries compaction removed after the request was checked against the log
/// start (retention or a snapshot racing the read) answers OFFSET_OUT_OF_RANGE, as Kafka
/// clients expect, not a storage error: the engine says "unavailable" for entries below its
/// first index and for a segment purged during the read.
#[test]
fn a_fetch_racing_compaction_answers_offset_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    with_wal(dir.path().to_path_buf(), |wal| async move {
        let answer =
            super::shard::read_from_offset(&wal, 7, (3, 9), 40, 1 << 20, (35, 60), |_, _, _| {
                panic!("no damage here")
            })
            .await;
        assert!(
            matches!(
                answer,
                Err(RequestError::OffsetOutOfRange {
                    offset: 40,
                    start: 35,
                    end: 60
                })
            ),
            "{answer:?}"
        );
    });
}

/// Many produces landing in one round must not make that round's write batch larger than
/// the engine takes at once (it would refuse it whole and stop the shard): past the round's
/// room a produce is answered with a retriable error, and the shard keeps serving. (A wiped
/// follower being rebuilt met the same limit with its leader's whole window of appends:
/// `step` drops appends past the room the same way.)
#[test]
fn a_round_never_outgrows_the_engines_write_limit() {
    // 1 MiB segments: the engine takes write batches of at most 256 KiB.
    let dir = tempfile::tempdir().unwrap();
    with_node_segments(dir.path().to_path_buf(), 1 << 20, |mut tx| async move {
        let outcome = ask_until_ready(&mut tx, create_topic(4)).await.unwrap();
        let Outcome::TopicCreated { groups, .. } = outcome else {
            panic!("topic not created: {outcome:?}");
        };
        // Every partition led and written once (offset 0) before the burst.
        for &group in &groups {
            let first = ask_until_ready(&mut tx, produce(group, &[b"first"]))
                .await
                .unwrap();
            assert_eq!(first.base_offset, 0);
        }
        let value = vec![9u8; 100_000];
        let mut waiting = Vec::new();
        for i in 0..12 {
            let (reply, rx) = oneshot::channel();
            let msg = ShardMsg::Partition {
                group: groups[i % groups.len()],
                request: PartitionRequest::Produce {
                    records: build_batch(&[&value], 0),
                    acks: Acks::Committed,
                    reply,
                },
            };
            tx.send(msg).await.unwrap();
            waiting.push((groups[i % groups.len()], rx));
        }
        let (mut acked, mut busy) = (Vec::new(), 0);
        for (group, rx) in waiting {
            match rx.await.expect("answered") {
                Ok(r) => acked.push((group, r.base_offset)),
                Err(RequestError::NotReady(_)) => busy += 1,
                Err(e) => panic!("unexpected answer: {e:?}"),
            }
        }
        assert!(!acked.is_empty(), "the first produces of a round fit");
        assert!(busy > 0, "12 x 100 KB cannot share one 256 KiB round");
        for (group, offset) in acked {
            let got = ask(&mut tx, fetch(group, offset)).await.unwrap();
            assert_eq!(values_of(&got).first().map(|v| v.1.len()), Some(100_000));
        }
        let after = ask_until_ready(&mut tx, produce(groups[0], &[b"small"]))
            .await
            .unwrap();
        assert!(after.base_offset >= 1, "{after:?}");
    });
}
