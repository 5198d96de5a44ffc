//! ListOffsets (earliest, latest, by timestamp) and OffsetForLeaderEpoch (the Raft term is the
//! leader epoch), both answered by the partition's leader.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use super::broker::Broker;
use super::errors;
use crate::node::controller::Topic;
use crate::node::requests::{OffsetSpec, PartitionRequest, RequestError};

/// Kafka's special ListOffsets timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

/// The group of `partition` of a topic looked up by name.
fn group_of(
    found: &Result<Option<Rc<Topic>>, RequestError>,
    partition: i32,
) -> Result<u64, ResponseError> {
    match found {
        Err(e) => Err(errors::error(e)),
        Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
        Ok(Some(t)) => usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
            .map(|p| p.group)
            .ok_or(ResponseError::UnknownTopicOrPartition),
    }
}

pub async fn list_offsets(broker: &Broker, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut out = ListOffsetsResponse::default();
    for topic in r.topics {
        let found = broker.topic(topic.name.0.as_str()).await;
        let answers = join_all(topic.partitions.iter().map(|p| {
            let group = group_of(&found, p.partition_index);
            let spec = match p.timestamp {
                LATEST_TIMESTAMP => Ok(OffsetSpec::Latest),
                EARLIEST_TIMESTAMP => Ok(OffsetSpec::Earliest),
                ts if ts >= 0 => Ok(OffsetSpec::Timestamp(ts)),
                // -3 (max timestamp) and later specials.
                _ => Err(ResponseError::InvalidRequest),
            };
            async move {
                let mut a = ListOffsetsPartitionResponse::default();
                a.partition_index = p.partition_index;
                a.timestamp = -1;
                a.offset = -1;
                a.leader_epoch = -1;
                let (group, spec) = match (group, spec) {
                    (Ok(g), Ok(s)) => (g, s),
                    (Err(e), _) | (_, Err(e)) => {
                        a.error_code = e.code();
                        return a;
                    }
                };
                match broker
                    .ask(group, |reply| PartitionRequest::ListOffsets { spec, reply })
                    .await
                {
                    Ok(offset) => a.offset = offset as i64,
                    Err(e) => a.error_code = errors::code(&e),
                }
                a
            }
        }))
        .await;
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name;
        t.partitions = answers;
        out.topics.push(t);
    }
    out
}

pub async fn epoch_end(
    broker: &Broker,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut out = OffsetForLeaderEpochResponse::default();
    for topic in r.topics {
        let found = broker.topic(topic.topic.0.as_str()).await;
        let answers = join_all(topic.partitions.iter().map(|p| {
            let group = group_of(&found, p.partition);
            async move {
                let mut a = EpochEndOffset::default();
                a.partition = p.partition;
                a.leader_epoch = -1;
                a.end_offset = -1;
                let group = match group {
                    Ok(g) => g,
                    Err(e) => {
                        a.error_code = e.code();
                        return a;
                    }
                };
                if p.leader_epoch < 0 {
                    a.error_code = ResponseError::InvalidRequest.code();
                    return a;
                }
                let leader_epoch = p.leader_epoch as u64;
                match broker
                    .ask(group, |reply| PartitionRequest::EpochEnd {
                        leader_epoch,
                        reply,
                    })
                    .await
                {
                    Ok(e) => {
                        a.leader_epoch = e.leader_epoch as i32;
                        a.end_offset = e.end_offset as i64;
                    }
                    Err(e) => a.error_code = errors::code(&e),
                }
                a
            }
        }))
        .await;
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = topic.topic;
        t.partitions = answers;
        out.topics.push(t);
    }
    out
}
