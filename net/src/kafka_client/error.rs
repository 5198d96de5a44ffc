//! Errors of the Kafka client. Every failure is typed; no byte from a server panics the client.

use std::time::Duration;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};

use crate::records::RecordsError;

/// What went wrong talking to a Kafka-protocol server (tern, or any Kafka broker).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {addr}: {source} (is `tern serve` running there? check --server)")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} does not resolve to an address")]
    Resolve { addr: String },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer {api} within {timeout:?}")]
    Timeout {
        addr: String,
        api: &'static str,
        timeout: Duration,
    },
    #[error("{addr} sent a {bytes}-byte response to {api}; the limit is {limit} bytes")]
    ResponseTooLarge {
        addr: String,
        api: &'static str,
        bytes: u64,
        limit: usize,
    },
    #[error("{addr} answered {api} with correlation id {got}, expected {expected}")]
    CorrelationMismatch {
        addr: String,
        api: &'static str,
        expected: i32,
        got: i32,
    },
    #[error("cannot decode the {api} response from {addr}: {what}")]
    Decode {
        addr: String,
        api: &'static str,
        what: String,
    },
    #[error("cannot encode the {api} request: {what}")]
    Encode { api: &'static str, what: String },
    #[error(
        "{addr} supports no version of {api} that this client speaks ({ours} here, {theirs} there)"
    )]
    UnsupportedApi {
        addr: String,
        api: &'static str,
        ours: String,
        theirs: String,
    },
    #[error("{api} failed{}: {} (Kafka error {code}){}", at(topic, *partition), describe(*code), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Server {
        api: &'static str,
        code: i16,
        topic: Option<String>,
        partition: Option<i32>,
        message: Option<String>,
    },
    #[error("topic {topic:?} does not exist (create it with `tern create-topic {topic}`, or list topics with `tern list-topics`)")]
    UnknownTopic { topic: String },
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: usize,
    },
    #[error("partition {topic}-{partition} has no leader right now (an election may be under way; retry shortly)")]
    NoLeader { topic: String, partition: i32 },
    #[error("broker {node_id}, the leader of {topic}-{partition}, is not in the cluster metadata")]
    UnknownBroker {
        node_id: i32,
        topic: String,
        partition: i32,
    },
    #[error("gave up on {api} after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        api: &'static str,
        attempts: u32,
        #[source]
        last: Box<ClientError>,
    },
    #[error("{addr} answered {api} for a {what} it was not asked about")]
    UnexpectedAnswer {
        addr: String,
        api: &'static str,
        what: &'static str,
    },
    #[error("bad record batch from the server: {0}")]
    Records(#[from] RecordsError),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

fn at(topic: &Option<String>, partition: Option<i32>) -> String {
    match (topic, partition) {
        (Some(t), Some(p)) => format!(" for {t}-{p}"),
        (Some(t), None) => format!(" for topic {t:?}"),
        _ => String::new(),
    }
}

fn describe(code: i16) -> String {
    match code.err() {
        Some(e) => e.to_string(),
        None => "no error".to_string(),
    }
}

impl ClientError {
    /// The Kafka error of a server answer, if this is one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Server { code, .. } => code.err(),
            ClientError::RetriesExhausted { last, .. } => last.kafka_error(),
            _ => None,
        }
    }

    /// The server could not be reached or the connection broke: a caller may reconnect.
    pub fn is_connection(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Resolve { .. }
            | ClientError::Io { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::RetriesExhausted { last, .. } => last.is_connection(),
            _ => false,
        }
    }

    /// Worth retrying after a metadata refresh: leadership moved, an election is under way, or
    /// the connection broke.
    pub fn is_retriable(&self) -> bool {
        if self.is_connection() {
            return true;
        }
        match self {
            ClientError::NoLeader { .. } | ClientError::UnknownBroker { .. } => true,
            ClientError::Server { code, .. } => is_retriable_code(*code),
            _ => false,
        }
    }
}

/// Kafka errors that a refreshed view of the cluster or a short wait can cure (Kafka's own
/// retriable flag), except an unknown topic: retrying cannot create it, and the user should hear
/// about it at once.
pub fn is_retriable_code(code: i16) -> bool {
    match code.err() {
        Some(ResponseError::UnknownTopicOrPartition) | None => false,
        Some(e) => e.is_retriable(),
    }
}

pub type ClientResult<T> = Result<T, ClientError>;
