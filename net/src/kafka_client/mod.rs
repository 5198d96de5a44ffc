//! A Kafka-protocol client: what `tern`'s online commands, the end-to-end tests and
//! `tern-bench produce` use to talk to a node. It speaks the same wire protocol as kcat or
//! kafka-python, through the `kafka-protocol` crate (no compression).
//!
//! Design (docs/clients.md, "The Rust client"): blocking std TCP, one request in flight per
//! connection, bounded connect/request timeouts; concurrency comes from threads, each with its
//! own [`Client`]. Reading order:
//! 1. `connection.rs` — framing, correlation ids, timeouts, ApiVersions negotiation.
//! 2. `versions.rs` — the versions this client speaks and how one is chosen.
//! 3. `client.rs` — metadata cache, leader routing, retries; produce, fetch, list offsets,
//!    create/delete topics, InitProducerId.
//! 4. `producer.rs` — batches with sequence numbers (idempotent producer).
//! 5. `error.rs` — every failure, typed.
//!
//! Record batches are built and read by [`crate::records`], the same code the node uses.

pub mod client;
pub mod connection;
pub mod error;
pub mod metadata;
pub mod producer;
pub mod versions;

pub use client::{Acks, Client, ClientConfig, FetchOptions, Fetched, OffsetSpec, ProduceAck};
pub use connection::{ConnectOptions, Connection};
pub use error::{ClientError, ClientResult};
pub use metadata::{Broker, ClusterMetadata, PartitionInfo, TopicInfo};
pub use producer::Producer;
