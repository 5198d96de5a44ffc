//! Fetch (sessionless): each partition is read by its owning shard, which returns the stored
//! batches verbatim (no re-encoding), starting with the batch holding the fetch offset.
//!
//! Long poll: when the first pass finds fewer than `min_bytes` (at least one byte), the
//! partitions are asked again with `max_wait_ms`: each shard parks the fetch until its high
//! watermark passes the offset or the wait ends. The answer goes out as soon as one partition
//! has data; the others are then read once more without waiting. So `min_bytes` above one
//! batch is not waited for beyond the first batch that arrives (docs/clients.md).

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use super::broker::Broker;
use super::errors;
use super::PARTITIONS_PER_REQUEST_MAX;
use crate::node::requests::{FetchReply, PartitionRequest, RequestError};

/// One partition to read.
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
    let got: usize = results.iter().map(bytes_of).sum();
    let min_bytes = r.min_bytes.max(1) as usize;
    if got < min_bytes && r.max_wait_ms > 0 && !targets.is_empty() {
        // Second pass: park on every partition, answer when the first one has data.
        let wait = r.max_wait_ms as u64;
        let mut parked: FuturesUnordered<_> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| async move { (i, read(broker, t, wait).await) })
            .collect();
        let mut fresh = vec![false; targets.len()];
        while let Some((i, result)) = parked.next().await {
            let has_data = bytes_of(&result) > 0;
            results[i] = result;
            fresh[i] = true;
            if has_data {
                break;
            }
        }
        drop(parked);
        // The partitions still parked are read again without waiting (their parked fetch
        // is dropped by its shard at the next tick).
        let again: Vec<usize> = (0..targets.len()).filter(|&i| !fresh[i]).collect();
        let reread = join_all(again.iter().map(|&i| read(broker, &targets[i], 0))).await;
        for (i, result) in again.into_iter().zip(reread) {
            results[i] = result;
        }
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
