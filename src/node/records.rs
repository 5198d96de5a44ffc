//! The partition payload format (Kafka v2 record batches) lives in `tern_net::records`, so the
//! node and the client library read and build batches with one implementation.

pub use tern_net::records::*;
