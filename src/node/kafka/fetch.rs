//! Fetch (sessionless): each partition is read by its owning shard, which returns the stored
//! batches verbatim (no re-encoding), starting with the batch holding the fetch offset.
//!
//! Long poll: while the records gathered are fewer than `min_bytes` (at least one byte) and
//! `max_wait_ms` has not passed, the partitions are asked again from the offset after what
//! each returned so far, with the wait that is left: each shard parks the fetch until its high
//! watermark passes the offset or the wait ends. A round ends when one partition brings new
//! records; what it brings is appended to that partition's answer. So the answer goes out
//! once `min_bytes` are gathered, or at the deadline with what there is (at most
//! `WAIT_ROUNDS_MAX` rounds per request).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use super::broker::Broker;
use super::errors;
use super::PARTITIONS_PER_REQUEST_MAX;
use crate::node::records::parse_batches;
use crate::node::requests::{FetchReply, PartitionRequest, RequestError};

/// Rounds of waiting for more records in one request: each ends when a partition brings new
/// records (or the wait ends), so this bounds the reads one request causes.
const WAIT_ROUNDS_MAX: usize = 64;

/// One partition to read.
#[derive(Clone)]
struct Target {
    topic: usize,
    partition: i32,
    group: u64,
    offset: i64,
    bytes_max: u64,
}

fn partition_data(partition: i32) -> PartitionData {
    let mut p = PartitionData::default();
    p.partition_index = partition;
    p.high_watermark = -1;
    p.last_stable_offset = -1;
    p.log_start_offset = -1;
    p.preferred_read_replica = BrokerId(-1);
    p.aborted_transactions = Some(Vec::new());
    p.records = Some(Bytes::new());
    p
}

fn refused(partition: i32, err: ResponseError) -> PartitionData {
    let mut p = partition_data(partition);
    p.error_code = err.code();
    p
}

async fn read(broker: &Broker, t: &Target, wait_ms_max: u64) -> Result<FetchReply, RequestError> {
    if t.offset < 0 {
        return Err(RequestError::OffsetOutOfRange {
            offset: 0,
            start: 0,
            end: 0,
        });
    }
    broker
        .ask(t.group, |reply| PartitionRequest::Fetch {
            offset: t.offset as u64,
            bytes_max: t.bytes_max,
            wait_ms_max,
            reply,
        })
        .await
}

fn answer(partition: i32, result: Result<FetchReply, RequestError>) -> PartitionData {
    match result {
        Ok(r) => {
            let mut p = partition_data(partition);
            p.high_watermark = r.high_watermark as i64;
            p.last_stable_offset = r.high_watermark as i64;
            p.log_start_offset = r.log_start_offset as i64;
            p.records = Some(Bytes::from(r.records));
            p
        }
        Err(e) => {
            let mut p = refused(partition, errors::error(&e));
            if let RequestError::OffsetOutOfRange { start, end, .. } = e {
                p.high_watermark = end as i64;
                p.log_start_offset = start as i64;
            }
            p
        }
    }
}

fn bytes_of(r: &Result<FetchReply, RequestError>) -> usize {
    r.as_ref().map_or(0, |f| f.records.len())
}

/// The offset after the records of `reply` (or `from` when it has none), and whether they
/// parse (a reply whose batches do not is not read further).
fn next_offset(from: i64, reply: &FetchReply) -> Option<i64> {
    if reply.records.is_empty() {
        return Some(from);
    }
    let batches = parse_batches(&reply.records).ok()?;
    batches
        .last()
        .map(|b| b.base_offset + b.record_count as i64)
}

/// The long poll: asks the partitions again, from after what they returned, until
/// `min_bytes` are gathered, `deadline` passes or `WAIT_ROUNDS_MAX` rounds were made.
async fn wait_for_min_bytes(
    broker: &Broker,
    targets: &[Target],
    results: &mut [Result<FetchReply, RequestError>],
    min_bytes: usize,
    deadline: Instant,
) {
    for _ in 0..WAIT_ROUNDS_MAX {
        if results.iter().map(bytes_of).sum::<usize>() >= min_bytes {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let wait_ms = (left.as_millis() as u64).max(1);
        // Partitions that answered and have room left, from the offset after their records.
        let asks: Vec<(usize, Target)> = targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let reply = results[i].as_ref().ok()?;
                let have = reply.records.len() as u64;
                if have >= t.bytes_max {
                    return None;
                }
                let mut next = t.clone();
                next.offset = next_offset(t.offset, reply)?;
                next.bytes_max = t.bytes_max - have;
                Some((i, next))
            })
            .collect();
        if asks.is_empty() {
            return;
        }
        let mut parked: FuturesUnordered<_> = asks
            .iter()
            .map(|(i, t)| async move { (*i, read(broker, t, wait_ms).await) })
            .collect();
        let mut brought = false;
        // Dropping the rest cancels them (their parked fetch is dropped by its shard at the
        // next tick).
        while let Some((i, result)) = parked.next().await {
            let Ok(more) = result else {
                // A partition that fails now (leadership moved) keeps what it returned.
                continue;
            };
            if let Ok(have) = &mut results[i] {
                have.high_watermark = have.high_watermark.max(more.high_watermark);
                have.log_start_offset = more.log_start_offset;
                if !more.records.is_empty() {
                    have.records.extend_from_slice(&more.records);
                    brought = true;
                    break;
                }
            }
        }
        if !brought {
            // Every partition waited out the deadline.
            return;
        }
    }
}

pub async fn handle(broker: &Broker, r: FetchRequest, version: i16) -> FetchResponse {
    let mut out = FetchResponse::default();
    let request_bytes_max = if r.max_bytes > 0 {
        r.max_bytes as u64
    } else {
        u64::MAX
    };
    let mut targets = Vec::new();
    let partitions: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
    for (ti, topic) in r.topics.iter().enumerate() {
        let found = if version >= 13 {
            broker.topic_by_id(topic.topic_id).await
        } else {
            broker.topic(topic.topic.0.as_str()).await
        };
        let mut resp = FetchableTopicResponse::default();
        resp.topic = topic.topic.clone();
        resp.topic_id = topic.topic_id;
        for p in &topic.partitions {
            let group = match &found {
                _ if partitions > PARTITIONS_PER_REQUEST_MAX => Err(ResponseError::InvalidRequest),
                Err(e) => Err(errors::error(e)),
                Ok(None) if version >= 13 => Err(ResponseError::UnknownTopicId),
                Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
                Ok(Some(t)) => usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
                    .map(|part| part.group)
                    .ok_or(ResponseError::UnknownTopicOrPartition),
            };
            match group {
                Err(err) => resp.partitions.push(refused(p.partition, err)),
                Ok(group) => targets.push(Target {
                    topic: ti,
                    partition: p.partition,
                    group,
                    offset: p.fetch_offset,
                    bytes_max: (p.partition_max_bytes.max(1) as u64).min(request_bytes_max),
                }),
            }
        }
        out.responses.push(resp);
    }
    // First pass: what is there now.
    let mut results: Vec<Result<FetchReply, RequestError>> =
        join_all(targets.iter().map(|t| read(broker, t, 0))).await;
    let min_bytes = r.min_bytes.max(1) as usize;
    if r.max_wait_ms > 0 {
        let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms as u64);
        wait_for_min_bytes(broker, &targets, &mut results, min_bytes, deadline).await;
    }
    for (t, result) in targets.iter().zip(results) {
        out.responses[t.topic]
            .partitions
            .push(answer(t.partition, result));
    }
    for resp in &mut out.responses {
        resp.partitions.sort_by_key(|p| p.partition_index);
    }
    out
}
