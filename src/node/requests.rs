//! The node's internal requests: what a client front end (the Kafka listener, tern's own
//! client, the HTTP admin API) asks of the shard that owns a partition. They map one-to-one
//! onto Kafka's requests, so the front end is a translation, never a second set of rules.
//! Every request carries its reply channel; requests and replies are `Send`, because a request
//! can arrive on any shard and travels to the owning shard over a channel.

use futures_channel::oneshot;

/// How durable a produce must be before it is acknowledged (Kafka `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=-1/all: committed, that is durable on a majority of the partition's replicas.
    Committed,
    /// acks=1: durable on the leader (a failover can still lose it).
    Leader,
    /// acks=0: no answer is awaited by the client; the node still proposes the records.
    None,
}

/// Errors a request is answered with; each maps onto one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// NOT_LEADER_OR_FOLLOWER: retry on `leader` (0 = unknown, refresh metadata).
    #[error("not the leader of this partition (leader: node {leader})")]
    NotLeader { leader: u64 },
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// OFFSET_OUT_OF_RANGE, with the partition's current bounds.
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    /// CORRUPT_MESSAGE: the produced batches failed their checks; nothing was stored.
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// MESSAGE_TOO_LARGE.
    #[error("request of {bytes} bytes is over the limit of {max}")]
    TooLarge { bytes: u64, max: u64 },
    /// NOT_ENOUGH_REPLICAS-like: the partition's leader is not ready to accept (a new leader
    /// that has not yet committed an entry of its term, or too much uncommitted data).
    #[error("partition not ready for writes: {0}")]
    NotReady(String),
    /// POLICY_VIOLATION / the node refuses writes (read_only mode).
    #[error("node is read-only")]
    ReadOnly,
    /// KAFKA_STORAGE_ERROR: the shard owning the partition stopped on an I/O error.
    #[error("storage failed: {0}")]
    StorageFailed(String),
    /// REQUEST_TIMED_OUT, or the outcome is unknown (leadership changed while the produce was
    /// in flight: it may still commit).
    #[error("request outcome unknown: {0}")]
    Unknown(String),
    /// INVALID_REQUEST / topic-level errors (exists, bad replication factor, ...).
    #[error("{0}")]
    Invalid(String),
    /// The node is shutting down.
    #[error("node shutting down")]
    ShuttingDown,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER: an idempotent producer skipped or reordered a sequence.
    #[error("producer {producer_id}: sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// INVALID_PRODUCER_EPOCH: a newer epoch of this producer id has written already.
    #[error("producer {producer_id}: epoch {got} is older than {current}")]
    ProducerFenced {
        producer_id: i64,
        current: i16,
        got: i16,
    },
}

/// Where a partition lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceReply {
    /// Offset of the first record produced.
    pub base_offset: u64,
    /// The Raft term of the leader that accepted it (Kafka's leader epoch).
    pub leader_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReply {
    /// Stored record batches, verbatim, starting with the batch holding the requested offset
    /// (a client skips records before the offset it asked for, as Kafka's do).
    pub records: Vec<u8>,
    /// Offset after the last committed record (Kafka's high watermark).
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Which offset ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first batch whose max timestamp is at or after this (ms since the epoch); the
    /// high watermark when there is none.
    Timestamp(i64),
}

/// OffsetForLeaderEpoch's answer: the largest leader epoch (Raft term) at or below the one
/// asked for that wrote to this partition's log, and the offset where that epoch's writes end
/// (the first offset of the next epoch, or the log end for the current one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub leader_epoch: u64,
    pub end_offset: u64,
}

/// A partition as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub group: u64,
    pub partition: u32,
    pub replicas: Vec<u64>,
    /// 0 when unknown to this node.
    pub leader: u64,
    pub leader_epoch: u64,
}

pub type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// A request for one partition, routed to the shard that owns its group.
#[derive(Debug)]
pub enum PartitionRequest {
    Produce {
        records: Vec<u8>,
        acks: Acks,
        reply: Reply<ProduceReply>,
    },
    Fetch {
        offset: u64,
        bytes_max: u64,
        /// Long poll: when nothing at or after `offset` is committed yet, the shard parks the
        /// fetch until something is, or this many milliseconds pass (then it answers empty).
        wait_ms_max: u64,
        reply: Reply<FetchReply>,
    },
    ListOffsets {
        spec: OffsetSpec,
        reply: Reply<u64>,
    },
    /// OffsetForLeaderEpoch (the leader answers).
    EpochEnd {
        leader_epoch: u64,
        reply: Reply<EpochEnd>,
    },
    /// Leader, epoch and replicas of the partition as its shard knows them.
    Describe {
        reply: Reply<PartitionView>,
    },
}
