//! tern's request errors as Kafka error codes: one mapping, used by every API.

use kafka_protocol::error::ResponseError;

use crate::node::requests::RequestError;

pub fn code(err: &RequestError) -> i16 {
    error(err).code()
}

pub fn error(err: &RequestError) -> ResponseError {
    match err {
        RequestError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        RequestError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        RequestError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        RequestError::CorruptMessage(_) => ResponseError::CorruptMessage,
        RequestError::TooLarge { .. } => ResponseError::MessageTooLarge,
        RequestError::NotReady(_) => ResponseError::NotEnoughReplicas,
        // A write refused by policy: the node or topic is read-only.
        RequestError::ReadOnly => ResponseError::PolicyViolation,
        RequestError::StorageFailed(_) => ResponseError::KafkaStorageError,
        RequestError::Unknown(_) => ResponseError::RequestTimedOut,
        RequestError::Invalid(_) => ResponseError::InvalidRequest,
        // Retriable: the client retries on another broker or after a metadata refresh.
        RequestError::ShuttingDown => ResponseError::NotLeaderOrFollower,
        RequestError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        RequestError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
    }
}

pub const NONE: i16 = 0;
