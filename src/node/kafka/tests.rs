//! The request decoder against random and mutated frames: any input is a decoded request or
//! a refusal, never a panic. `PROPTEST_CASES` sets the case count [2000].

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

use super::api_versions::{self, SUPPORTED};
use super::dispatch::{decode, Decoded};
use crate::node::records::build_batch;

fn frame<R: Encodable>(key: ApiKey, version: i16, body: &R) -> Bytes {
    let mut out = BytesMut::new();
    let mut h = RequestHeader::default();
    h.request_api_key = key as i16;
    h.request_api_version = version;
    h.correlation_id = 7;
    h.client_id = Some(StrBytes::from_static_str("proptest"));
    h.encode(&mut out, key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    out.freeze()
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Valid requests of the data-path APIs at every version served.
fn valid_frames() -> Vec<Bytes> {
    let mut frames = Vec::new();
    let range = |key: ApiKey| {
        let &(_, min, max) = SUPPORTED.iter().find(|(k, _, _)| *k == key).unwrap();
        min..=max
    };
    for v in range(ApiKey::Produce) {
        let mut p = PartitionProduceData::default();
        p.index = 0;
        p.records = Some(Bytes::from(build_batch(&[b"a", b"bc"], 1)));
        let mut t = TopicProduceData::default();
        t.name = name("t");
        t.partition_data = vec![p];
        let mut r = ProduceRequest::default();
        r.acks = -1;
        r.topic_data = vec![t];
        frames.push(frame(ApiKey::Produce, v, &r));
    }
    for v in range(ApiKey::Fetch) {
        let mut p = FetchPartition::default();
        p.fetch_offset = 3;
        p.partition_max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        t.topic = name("t");
        t.partitions = vec![p];
        let mut r = FetchRequest::default();
        r.max_wait_ms = 500;
        r.topics = vec![t];
        frames.push(frame(ApiKey::Fetch, v, &r));
    }
    for v in range(ApiKey::Metadata) {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(name("t"));
        let mut r = MetadataRequest::default();
        r.topics = Some(vec![t]);
        frames.push(frame(ApiKey::Metadata, v, &r));
    }
    for v in range(ApiKey::CreateTopics) {
        let mut t = CreatableTopic::default();
        t.name = name("t");
        t.num_partitions = 3;
        t.replication_factor = 1;
        let mut r = CreateTopicsRequest::default();
        r.topics = vec![t];
        frames.push(frame(ApiKey::CreateTopics, v, &r));
    }
    frames
}

#[test]
fn valid_frames_decode() {
    for f in valid_frames() {
        match decode(f.clone()) {
            Ok(Decoded::Request { key, header, .. }) => {
                assert!(api_versions::is_supported(key, header.request_api_version));
            }
            other => panic!("{other:?} for {f:?}"),
        }
    }
}

#[test]
fn api_versions_at_an_unknown_version_falls_back() {
    let mut f = BytesMut::new();
    f.extend_from_slice(&18i16.to_be_bytes());
    f.extend_from_slice(&99i16.to_be_bytes());
    f.extend_from_slice(&5i32.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes());
    assert!(matches!(
        decode(f.freeze()),
        Ok(Decoded::ApiVersionsFallback { correlation_id: 5 })
    ));
}

#[test]
fn served_versions_are_within_the_crate() {
    for &(key, min, max) in SUPPORTED {
        let crate_range = key.valid_versions();
        assert!(
            crate_range.min <= min && max <= crate_range.max,
            "{key:?} {min}..={max} outside {crate_range:?}"
        );
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(Bytes::from(bytes));
    }

    #[test]
    fn mutated_frames_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let frames = valid_frames();
        let mut f = frames[which.index(frames.len())].to_vec();
        for (at, byte, kind) in edits {
            if f.is_empty() {
                break;
            }
            let i = at.index(f.len());
            match kind {
                0 => f[i] = byte,
                1 => f.truncate(i),
                _ => f.insert(i, byte),
            }
        }
        let _ = decode(Bytes::from(f));
    }
}
