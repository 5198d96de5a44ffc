//! The counters a shard keeps for `/metrics` that are not Raft or WAL state: Kafka requests
//! and errors by API and code, produce and fetch latency.
//!
//! Each shard's executor is one thread, so the counters live in a thread-local and are plain
//! integers (no atomics, nothing shared): the Kafka connections of a shard bump them, and the
//! shard copies them out when a scrape asks ([`super::shard::ShardMsg::Metrics`]). A scrape
//! merges the copies of every shard (src/node/http/metrics.rs).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use tern_engine::histogram::LatencyHistogramUs;

/// Distinct (API, error code) pairs counted per shard; past it, new pairs are counted under
/// code `other` so a client cannot grow the map without bound.
const ERROR_KEYS_MAX: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Kafka requests by API name (`Produce`, `Fetch`, ...), counted when answered or refused.
    pub kafka_requests: BTreeMap<&'static str, u64>,
    /// Kafka errors by (API name, error code name); `closed` for a request that closed the
    /// connection (undecodable, unsupported).
    pub kafka_errors: BTreeMap<(&'static str, String), u64>,
    pub produce_latency: LatencyHistogramUs,
    pub fetch_latency: LatencyHistogramUs,
    /// Damaged-entry repairs by outcome (`repair::outcome`).
    pub repairs: BTreeMap<&'static str, u64>,
    /// The background scrubber: passes finished, bytes of entries read, damaged entries found.
    pub scrub_passes: u64,
    pub scrub_bytes: u64,
    pub scrub_damaged: u64,
    /// Recovery stream: chunks appended by groups being rebuilt here, chunks served to
    /// rebuilding peers, fetches refused (`shard/recovery_stream.rs`).
    pub stream_chunks_in: u64,
    pub stream_chunks_out: u64,
    pub stream_fetches_refused: u64,
}

impl ShardCounters {
    /// Adds another shard's counters.
    pub fn merge(&mut self, other: &ShardCounters) {
        for (k, v) in &other.kafka_requests {
            *self.kafka_requests.entry(k).or_default() += v;
        }
        for (k, v) in &other.kafka_errors {
            *self.kafka_errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.repairs {
            *self.repairs.entry(k).or_default() += v;
        }
        self.scrub_passes += other.scrub_passes;
        self.scrub_bytes += other.scrub_bytes;
        self.scrub_damaged += other.scrub_damaged;
        self.stream_chunks_in += other.stream_chunks_in;
        self.stream_chunks_out += other.stream_chunks_out;
        self.stream_fetches_refused += other.stream_fetches_refused;
        self.produce_latency.merge(&other.produce_latency);
        self.fetch_latency.merge(&other.fetch_latency);
    }
}

thread_local! {
    static COUNTERS: RefCell<ShardCounters> = RefCell::new(ShardCounters::default());
}

/// One Kafka request answered (or refused) on this shard, and how long it took.
pub fn kafka_request(api: &'static str, elapsed: Duration) {
    let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
    COUNTERS.with_borrow_mut(|c| {
        *c.kafka_requests.entry(api).or_default() += 1;
        match api {
            "Produce" => c.produce_latency.observe(us),
            "Fetch" => c.fetch_latency.observe(us),
            _ => {}
        }
    });
}

/// A Kafka error answered for `api` (per partition or topic, as the response carries it).
pub fn kafka_error(api: &'static str, code: &str) {
    COUNTERS.with_borrow_mut(|c| {
        let key = (api, code.to_string());
        if c.kafka_errors.contains_key(&key) || c.kafka_errors.len() < ERROR_KEYS_MAX {
            *c.kafka_errors.entry(key).or_default() += 1;
        } else {
            *c.kafka_errors.entry((api, "other".into())).or_default() += 1;
        }
    });
}

/// A step of a damaged-entry repair on this shard (`repair::outcome`).
pub fn repair(outcome: &'static str) {
    COUNTERS.with_borrow_mut(|c| *c.repairs.entry(outcome).or_default() += 1);
}

/// The scrubber finished a pass that read `bytes` of entries.
pub fn scrub_pass(bytes: u64) {
    COUNTERS.with_borrow_mut(|c| {
        c.scrub_passes += 1;
        c.scrub_bytes += bytes;
    });
}

/// The scrubber found a damaged entry (handed to the repair path).
pub fn scrub_damaged() {
    COUNTERS.with_borrow_mut(|c| c.scrub_damaged += 1);
}

/// Recovery stream: a chunk appended here (`in`), served (`out`), or a fetch refused.
pub fn stream_chunk_in() {
    COUNTERS.with_borrow_mut(|c| c.stream_chunks_in += 1);
}

pub fn stream_chunk_out() {
    COUNTERS.with_borrow_mut(|c| c.stream_chunks_out += 1);
}

pub fn stream_fetch_refused() {
    COUNTERS.with_borrow_mut(|c| c.stream_fetches_refused += 1);
}

/// A copy of this thread's (shard's) counters.
pub fn snapshot() -> ShardCounters {
    COUNTERS.with_borrow(|c| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_errors_and_latency_and_merges_shards() {
        kafka_request("Produce", Duration::from_micros(100));
        kafka_request("Metadata", Duration::from_micros(5));
        kafka_error("Produce", "NOT_LEADER_OR_FOLLOWER");
        let a = snapshot();
        assert_eq!(a.kafka_requests.get("Produce"), Some(&1));
        assert_eq!(a.produce_latency.count(), 1);
        assert_eq!(a.fetch_latency.count(), 0);
        let mut m = a.clone();
        m.merge(&a);
        assert_eq!(m.kafka_requests.get("Metadata"), Some(&2));
        assert_eq!(
            m.kafka_errors
                .get(&("Produce", "NOT_LEADER_OR_FOLLOWER".to_string())),
            Some(&2)
        );
    }
}
