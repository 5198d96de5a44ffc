//! The client's decode path never panics on server bytes: random and mutated response bodies
//! for every API the client speaks, at every version it speaks, and random record-batch bytes.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request};
use proptest::prelude::*;
use tern_net::kafka_client::client::decode_records;
use tern_net::kafka_client::connection::decode_response;
use tern_net::kafka_client::versions::client_range;
use tern_net::records::build_batch;

fn decode_all_versions<R: Request>(key: ApiKey, body: &[u8]) {
    let Some(range) = client_range(key) else {
        return;
    };
    for version in range.min..=range.max {
        let _ = decode_response::<R>("test", Bytes::copy_from_slice(body), version);
    }
}

fn decode_every_api(body: &[u8]) {
    decode_all_versions::<ApiVersionsRequest>(ApiKey::ApiVersions, body);
    decode_all_versions::<MetadataRequest>(ApiKey::Metadata, body);
    decode_all_versions::<ProduceRequest>(ApiKey::Produce, body);
    decode_all_versions::<FetchRequest>(ApiKey::Fetch, body);
    decode_all_versions::<ListOffsetsRequest>(ApiKey::ListOffsets, body);
    decode_all_versions::<CreateTopicsRequest>(ApiKey::CreateTopics, body);
    decode_all_versions::<DeleteTopicsRequest>(ApiKey::DeleteTopics, body);
    decode_all_versions::<InitProducerIdRequest>(ApiKey::InitProducerId, body);
    for v in 0..=1 {
        let _ = ResponseHeader::decode(&mut Bytes::copy_from_slice(body), v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_response_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_every_api(&body);
    }

    #[test]
    fn random_record_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), from in any::<i64>()) {
        let _ = decode_records(&Bytes::from(bytes), from);
    }

    #[test]
    fn mutated_record_batches_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut batch = build_batch(&[b"alpha".as_slice(), b"beta", b"gamma"], 1_000);
        for (at, byte) in flips {
            let i = at.index(batch.len());
            batch[i] ^= byte;
        }
        let _ = decode_records(&Bytes::from(batch), 0);
    }
}

/// A well-formed Metadata answer, mutated byte by byte, decodes or fails cleanly.
#[test]
fn mutated_metadata_response_never_panics() {
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, MetadataResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut response = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(1);
    broker.host = StrBytes::from_static_str("127.0.0.1");
    broker.port = 9092;
    response.brokers = vec![broker];
    let mut partition = MetadataResponsePartition::default();
    partition.leader_id = BrokerId(1);
    partition.replica_nodes = vec![BrokerId(1)];
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(TopicName(StrBytes::from_static_str("events")));
    topic.partitions = vec![partition];
    response.topics = vec![topic];
    for version in [4i16, 9, 12] {
        let mut buf = BytesMut::new();
        response.encode(&mut buf, version).unwrap();
        let good = buf.to_vec();
        let decoded =
            decode_response::<MetadataRequest>("test", Bytes::from(good.clone()), version).unwrap();
        assert_eq!(decoded.brokers[0].port, 9092);
        for cut in 0..good.len() {
            let _ = decode_response::<MetadataRequest>(
                "test",
                Bytes::copy_from_slice(&good[..cut]),
                version,
            );
        }
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = decode_response::<MetadataRequest>("test", Bytes::from(bad), version);
            }
        }
    }
}
