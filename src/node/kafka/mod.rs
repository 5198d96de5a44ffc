//! The Kafka wire protocol in front of tern's partitions: what lets unmodified Kafka clients
//! (kcat, kafka-python, the Java client) produce, fetch and manage topics. Peer traffic stays
//! on tern's own transport.
//!
//! Reading order: [`listener`] (one listener per shard, SO_REUSEPORT) → [`connection`]
//! (framing, size limit, one request at a time) → [`dispatch`] (decode with the
//! `kafka-protocol` crate, route by API key, encode) → [`broker`] (this shard's way to the
//! other shards: the owning shard of a partition answers over its inbox) → one file per API
//! family ([`api_versions`], [`metadata`], [`produce`], [`fetch`], [`offsets`], [`topics`],
//! [`producer_id`], [`reassign`], [`groups`]) → [`errors`] (tern's request errors as Kafka
//! error codes).
//!
//! Supported APIs and versions are listed in docs/clients.md; [`api_versions::SUPPORTED`] is
//! the one table both the ApiVersions answer and the dispatcher read.

pub mod api_versions;
pub mod broker;
pub mod configs;
pub mod connection;
pub mod dispatch;
pub mod errors;
pub mod fetch;
pub mod groups;
pub mod listener;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod reassign;
pub mod topics;

#[cfg(test)]
mod tests;

/// Largest request accepted, size prefix excluded; a larger one is refused from its size
/// field alone (nothing more is read) and the connection closed. Covers a produce of many
/// partitions, each up to `shard::PRODUCE_BYTES_MAX`.
pub const REQUEST_BYTES_MAX: usize = 16 << 20;
/// Client connections per shard; past it a new connection is closed at once (with a log
/// line). Each connection holds at most one request's buffers.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 1024;
/// Requests a connection has in flight: one, as Kafka brokers do (a broker mutes a connection
/// while its request is processed; responses must come back in request order). Pipelined
/// requests wait in the socket buffer.
pub const INFLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 1;
/// Partitions in one Produce, Fetch, ListOffsets or OffsetForLeaderEpoch request.
pub const PARTITIONS_PER_REQUEST_MAX: usize = 10_000;
