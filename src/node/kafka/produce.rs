//! Produce: each partition's record batches go, verbatim, to the shard owning the partition,
//! which checks their CRC32C, stamps offsets and leader epoch, and answers when the batch is
//! as durable as `acks` asks (-1: committed; 1: durable on the leader; 0: no answer at all).
//!
//! Refused here, before a shard sees them: compressed batches (tern has no compression codec:
//! UNSUPPORTED_COMPRESSION_TYPE), transactional and control batches (INVALID_RECORD), writes
//! to a read-only node or topic (POLICY_VIOLATION).

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::broker::Broker;
use super::errors;
use super::PARTITIONS_PER_REQUEST_MAX;
use crate::node::records::{
    parse_batches, ATTRIBUTE_COMPRESSION_MASK, ATTRIBUTE_CONTROL, ATTRIBUTE_TRANSACTIONAL,
};
use crate::node::requests::{Acks, PartitionRequest};
use crate::node::shard::PRODUCE_BYTES_MAX;

fn partition_error(index: i32, err: ResponseError, message: String) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = err.code();
    p.base_offset = -1;
    p.log_append_time_ms = -1;
    p.log_start_offset = -1;
    p.error_message = Some(StrBytes::from_string(message));
    p
}

/// Checks what the front end refuses of one partition's payload.
fn check_payload(records: &[u8]) -> Result<(), (ResponseError, String)> {
    if records.len() as u64 > PRODUCE_BYTES_MAX {
        return Err((
            ResponseError::MessageTooLarge,
            format!(
                "{} bytes for one partition, over the limit of {PRODUCE_BYTES_MAX}",
                records.len()
            ),
        ));
    }
    let batches =
        parse_batches(records).map_err(|e| (ResponseError::CorruptMessage, e.to_string()))?;
    for b in &batches {
        if b.attributes & ATTRIBUTE_COMPRESSION_MASK != 0 {
            return Err((
                ResponseError::UnsupportedCompressionType,
                "tern stores uncompressed batches only (compression.type=none)".into(),
            ));
        }
        if b.attributes & (ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL) != 0 {
            return Err((
                ResponseError::InvalidRecord,
                "transactions are not supported".into(),
            ));
        }
    }
    Ok(())
}

/// Returns None for acks=0 (no response is sent).
pub async fn handle(broker: &Broker, r: ProduceRequest, _version: i16) -> Option<ProduceResponse> {
    let acks = match r.acks {
        -1 => Some(Acks::Committed),
        1 => Some(Acks::Leader),
        0 => Some(Acks::None),
        _ => None,
    };
    let partitions: usize = r.topic_data.iter().map(|t| t.partition_data.len()).sum();
    let mut out = ProduceResponse::default();
    for topic in r.topic_data {
        let found = broker.topic(topic.name.0.as_str()).await;
        let mut asks = Vec::new();
        let mut answered = Vec::new();
        for p in topic.partition_data {
            let refuse = |err, msg: &str| Some(partition_error(p.index, err, msg.to_string()));
            let refused = if partitions > PARTITIONS_PER_REQUEST_MAX {
                refuse(
                    ResponseError::InvalidRequest,
                    "too many partitions in one request",
                )
            } else if acks.is_none() {
                refuse(
                    ResponseError::InvalidRequiredAcks,
                    "acks must be -1, 0 or 1",
                )
            } else if r.transactional_id.is_some() {
                refuse(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "transactions are not supported",
                )
            } else if broker.setup.read_only {
                refuse(ResponseError::PolicyViolation, "the node is read-only")
            } else {
                match &found {
                    Err(e) => refuse(errors::error(e), &e.to_string()),
                    Ok(None) => refuse(ResponseError::UnknownTopicOrPartition, "unknown topic"),
                    Ok(Some(t)) if t.read_only => {
                        refuse(ResponseError::PolicyViolation, "the topic is read-only")
                    }
                    Ok(Some(t)) => match t.partitions.get(p.index.max(0) as usize) {
                        None => refuse(ResponseError::UnknownTopicOrPartition, "unknown partition"),
                        Some(_) if p.index < 0 => {
                            refuse(ResponseError::UnknownTopicOrPartition, "unknown partition")
                        }
                        Some(part) => match &p.records {
                            None => refuse(ResponseError::InvalidRecord, "no records"),
                            Some(records) => match check_payload(records) {
                                Err((err, msg)) => refuse(err, &msg),
                                Ok(()) => {
                                    asks.push((p.index, part.group, records.to_vec()));
                                    None
                                }
                            },
                        },
                    },
                }
            };
            answered.extend(refused);
        }
        let acks = acks.unwrap_or(Acks::Committed);
        let results = join_all(asks.into_iter().map(|(index, group, records)| async move {
            let reply = broker
                .ask(group, |reply| PartitionRequest::Produce {
                    records,
                    acks,
                    reply,
                })
                .await;
            (index, reply)
        }))
        .await;
        for (index, reply) in results {
            answered.push(match reply {
                Ok(ok) => {
                    let mut p = PartitionProduceResponse::default();
                    p.index = index;
                    p.base_offset = ok.base_offset as i64;
                    p.log_append_time_ms = -1;
                    p.log_start_offset = -1;
                    p
                }
                Err(e) => partition_error(index, errors::error(&e), e.to_string()),
            });
        }
        answered.sort_by_key(|p| p.index);
        let mut t = TopicProduceResponse::default();
        t.name = topic.name;
        t.partition_responses = answered;
        out.responses.push(t);
    }
    if r.acks == 0 {
        return None;
    }
    Some(out)
}
