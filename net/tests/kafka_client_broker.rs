//! The client against scripted brokers on loopback (two threads speaking the Kafka protocol
//! through the kafka-protocol crate's broker side): the ApiVersions v0 fallback, a produce
//! refused with NOT_LEADER_OR_FOLLOWER and retried on the new leader after a metadata refresh
//! with the same sequence number, a leader whose view lags answering UNKNOWN_TOPIC_OR_PARTITION
//! for a topic the metadata lists, fetch decoding, and an unknown topic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tern_net::kafka_client::{Acks, Client, ClientConfig, ClientError, FetchOptions, Producer};
use tern_net::records::{build_batch, parse_batches, stamp};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_RECORD: i16 = 87;

/// What the scripted cluster knows and saw.
#[derive(Default)]
struct State {
    addrs: Vec<SocketAddr>,
    /// Node id of the partition's leader.
    leader: i32,
    /// Each produce: (node that got it, producer id, base sequence).
    produces: Vec<(i32, i64, i32)>,
    metadata_requests: u32,
    /// Set once node 1 has refused a produce and handed leadership to node 2.
    moved: bool,
    /// Offset given to the next accepted batch.
    next_offset: i64,
    stored: Vec<u8>,
    /// The next this many accepted produces are stored but answered INVALID_RECORD (a
    /// failed send whose batch was stored nevertheless).
    store_then_fail: u32,
    /// InitProducerId requests answered so far (each gets producer id 77 + this).
    producer_ids: i64,
    /// The leader answers the next this many produces UNKNOWN_TOPIC_OR_PARTITION although
    /// the metadata lists the topic (a broker whose view lags: just restarted, rebuilding).
    unknown_answers: u32,
}

/// Serves connections of node `node_id` on `listener` until the test ends (threads detach).
fn serve(node_id: i32, listener: TcpListener, state: Arc<Mutex<State>>) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let state = state.clone();
            thread::spawn(move || connection(node_id, stream, &state));
        }
    });
}

fn connection(node_id: i32, mut stream: TcpStream, state: &Mutex<State>) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let mut body = Bytes::from(body);
        let key = ApiKey::try_from(body.clone().get_i16()).expect("known api");
        let version = {
            let mut b = body.clone();
            b.advance(2);
            b.get_i16()
        };
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))
            .expect("request header");
        let mut out = BytesMut::new();
        let mut response_header = ResponseHeader::default();
        response_header.correlation_id = header.correlation_id;
        match key {
            ApiKey::ApiVersions => {
                let mut r = ApiVersionsResponse::default();
                let mut v = |k: ApiKey, min, max| {
                    let mut a = ApiVersion::default();
                    a.api_key = k as i16;
                    a.min_version = min;
                    a.max_version = max;
                    r.api_keys.push(a);
                };
                v(ApiKey::ApiVersions, 0, 2);
                v(ApiKey::Metadata, 0, 9);
                v(ApiKey::Produce, 0, 8);
                v(ApiKey::Fetch, 0, 11);
                v(ApiKey::InitProducerId, 0, 4);
                // This broker speaks ApiVersions up to v2 only: a v3 request gets Kafka's
                // fallback, UNSUPPORTED_VERSION in a v0 body.
                let answer_version = if version > 2 {
                    r.error_code = UNSUPPORTED_VERSION;
                    0
                } else {
                    version
                };
                response_header.encode(&mut out, 0).unwrap();
                r.encode(&mut out, answer_version).unwrap();
            }
            ApiKey::Metadata => {
                let _ = MetadataRequest::decode(&mut body, version).expect("metadata request");
                let mut s = state.lock().unwrap();
                s.metadata_requests += 1;
                let mut r = MetadataResponse::default();
                for (i, addr) in s.addrs.iter().enumerate() {
                    let mut b = MetadataResponseBroker::default();
                    b.node_id = BrokerId(i as i32 + 1);
                    b.host = StrBytes::from_string(addr.ip().to_string());
                    b.port = addr.port() as i32;
                    r.brokers.push(b);
                }
                let mut p = MetadataResponsePartition::default();
                p.leader_id = BrokerId(s.leader);
                p.leader_epoch = s.leader;
                p.replica_nodes = vec![BrokerId(1), BrokerId(2)];
                let mut t = MetadataResponseTopic::default();
                t.name = Some(TopicName(StrBytes::from_static_str("t")));
                t.partitions = vec![p];
                r.topics = vec![t];
                response_header
                    .encode(&mut out, MetadataResponse::header_version(version))
                    .unwrap();
                r.encode(&mut out, version).unwrap();
            }
            ApiKey::InitProducerId => {
                let mut r = InitProducerIdResponse::default();
                let mut s = state.lock().unwrap();
                r.producer_id = ProducerId(77 + s.producer_ids);
                s.producer_ids += 1;
                r.producer_epoch = 3;
                response_header
                    .encode(&mut out, InitProducerIdResponse::header_version(version))
                    .unwrap();
                r.encode(&mut out, version).unwrap();
            }
            ApiKey::Produce => {
                let request = ProduceRequest::decode(&mut body, version).expect("produce");
                let records = request.topic_data[0].partition_data[0]
                    .records
                    .clone()
                    .expect("records");
                let mut batch = records.to_vec();
                let mut infos = parse_batches(&batch).expect("a valid batch");
                let mut s = state.lock().unwrap();
                s.produces
                    .push((node_id, infos[0].producer_id, infos[0].base_sequence));
                let mut p = PartitionProduceResponse::default();
                p.index = 0;
                if node_id == 1 && !s.moved {
                    // Node 1 loses leadership to node 2 as the first produce arrives.
                    p.error_code = NOT_LEADER_OR_FOLLOWER;
                    s.leader = 2;
                    s.moved = true;
                } else if s.leader != node_id {
                    p.error_code = NOT_LEADER_OR_FOLLOWER;
                } else if s.unknown_answers > 0 {
                    s.unknown_answers -= 1;
                    p.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                } else {
                    p.base_offset = s.next_offset;
                    stamp(&mut batch, &mut infos, s.next_offset as u64, 1);
                    s.next_offset += infos[0].record_count as i64;
                    s.stored.extend_from_slice(&batch);
                    if s.store_then_fail > 0 {
                        s.store_then_fail -= 1;
                        p.error_code = INVALID_RECORD;
                    }
                }
                let mut t = TopicProduceResponse::default();
                t.name = TopicName(StrBytes::from_static_str("t"));
                t.partition_responses = vec![p];
                let mut r = ProduceResponse::default();
                r.responses = vec![t];
                response_header
                    .encode(&mut out, ProduceResponse::header_version(version))
                    .unwrap();
                r.encode(&mut out, version).unwrap();
            }
            ApiKey::Fetch => {
                let request = FetchRequest::decode(&mut body, version).expect("fetch");
                let topic = request.topics[0].topic.0.as_str().to_string();
                let s = state.lock().unwrap();
                let mut p = PartitionData::default();
                p.partition_index = 0;
                if topic == "t" {
                    p.high_watermark = s.next_offset;
                    // Append half of a second copy: a batch cut at the byte limit.
                    let mut bytes = s.stored.clone();
                    bytes.extend_from_slice(&s.stored[..s.stored.len() / 2]);
                    p.records = Some(Bytes::from(bytes));
                } else {
                    p.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                }
                let mut t = FetchableTopicResponse::default();
                t.topic = TopicName(StrBytes::from_string(topic));
                t.partitions = vec![p];
                let mut r = FetchResponse::default();
                r.responses = vec![t];
                response_header
                    .encode(&mut out, FetchResponse::header_version(version))
                    .unwrap();
                r.encode(&mut out, version).unwrap();
            }
            other => panic!("unexpected request {other:?}"),
        }
        let mut frame = BytesMut::new();
        frame.put_i32(out.len() as i32);
        frame.extend_from_slice(&out);
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

fn cluster() -> (Arc<Mutex<State>>, String) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let state = Arc::new(Mutex::new(State {
        addrs: vec![a.local_addr().unwrap(), b.local_addr().unwrap()],
        leader: 1,
        ..State::default()
    }));
    let bootstrap = a.local_addr().unwrap().to_string();
    serve(1, a, state.clone());
    serve(2, b, state.clone());
    (state, bootstrap)
}

fn config(bootstrap: String) -> ClientConfig {
    let mut c = ClientConfig::new(bootstrap);
    c.retry_backoff = Duration::from_millis(1);
    c.connect.request_timeout = Duration::from_secs(10);
    c
}

#[test]
fn not_leader_is_retried_on_the_new_leader_with_the_same_sequence() {
    let (state, bootstrap) = cluster();
    let client = Client::connect(config(bootstrap)).expect("connect with the v0 fallback");
    let mut producer = Producer::new(client, Acks::All, true).expect("producer");
    let ack = producer.send("t", 0, &[b"a", b"b", b"c"]).expect("send");
    assert_eq!(ack.base_offset, Some(0));
    let ack = producer.send("t", 0, &[b"d"]).expect("send");
    assert_eq!(ack.base_offset, Some(3));
    let s = state.lock().unwrap();
    assert_eq!(
        s.produces,
        vec![(1, 77, 0), (2, 77, 0), (2, 77, 3)],
        "refused by node 1, retried on node 2 with the same sequence, then the next one"
    );
    assert!(
        s.metadata_requests >= 2,
        "the refusal refreshed the metadata"
    );
}

#[test]
fn unknown_topic_from_a_broker_whose_view_lags_is_retried_while_the_metadata_lists_it() {
    let (state, bootstrap) = cluster();
    {
        let mut s = state.lock().unwrap();
        s.leader = 2;
        s.moved = true;
        s.unknown_answers = 3;
    }
    let client = Client::connect(config(bootstrap)).expect("connect");
    let mut producer = Producer::new(client, Acks::All, true).expect("producer");
    let ack = producer.send("t", 0, &[b"a"]).expect("send");
    assert_eq!(ack.base_offset, Some(0));
    let s = state.lock().unwrap();
    assert_eq!(
        s.produces,
        vec![(2, 77, 0), (2, 77, 0), (2, 77, 0), (2, 77, 0)],
        "three answers of a lagging leader, then accepted, all with the same sequence"
    );
}

#[test]
fn after_a_failed_send_different_values_get_a_new_producer_id_and_the_same_values_the_same_sequence(
) {
    let (state, bootstrap) = cluster();
    let client = Client::connect(config(bootstrap)).expect("connect");
    let mut producer = Producer::new(client, Acks::All, true).expect("producer");
    producer.send("t", 0, &[b"a"]).expect("send");
    // Stored, but the answer is an error: the batch is in doubt.
    state.lock().unwrap().store_then_fail = 1;
    assert!(producer.send("t", 0, &[b"b"]).is_err());
    // Different values, as many records: reusing sequence 1 would let a server that stored
    // "b" acknowledge "c" as its duplicate. A new producer id starts at sequence 0.
    producer.send("t", 0, &[b"c"]).expect("send");
    // The same values again after a failure: a retry, same producer id and sequence.
    state.lock().unwrap().store_then_fail = 1;
    assert!(producer.send("t", 0, &[b"d"]).is_err());
    producer.send("t", 0, &[b"d"]).expect("retry");
    let s = state.lock().unwrap();
    assert_eq!(
        s.produces,
        vec![
            (1, 77, 0),
            (2, 77, 0),
            (2, 77, 1),
            (2, 78, 0),
            (2, 78, 1),
            (2, 78, 1)
        ],
    );
    assert_eq!(s.producer_ids, 2);
}

#[test]
fn fetch_keeps_whole_batches_and_records_from_the_offset() {
    let (state, bootstrap) = cluster();
    {
        let mut s = state.lock().unwrap();
        s.leader = 2;
        s.moved = true;
    }
    let mut client = Client::connect(config(bootstrap)).expect("connect");
    let mut batch = build_batch(&[b"x0", b"x1", b"x2"], 5);
    let mut infos = parse_batches(&batch).unwrap();
    stamp(&mut batch, &mut infos, 0, 1);
    {
        let mut s = state.lock().unwrap();
        s.stored = batch;
        s.next_offset = 3;
    }
    let fetched = client
        .fetch("t", 0, 1, FetchOptions::default())
        .expect("fetch");
    assert_eq!(fetched.high_watermark, 3);
    let values: Vec<_> = fetched
        .records
        .iter()
        .map(|r| (r.offset, r.value.clone().unwrap()))
        .collect();
    assert_eq!(values, vec![(1, b"x1".to_vec()), (2, b"x2".to_vec())]);
    assert_eq!(fetched.next_offset(1), 3);

    let err = client
        .fetch("t", 1, 0, FetchOptions::default())
        .expect_err("no partition 1");
    assert!(
        matches!(err, ClientError::UnknownPartition { count: 1, .. }),
        "{err}"
    );
    let err = client
        .fetch("other", 0, 0, FetchOptions::default())
        .expect_err("unknown topic");
    assert!(matches!(err, ClientError::UnknownTopic { .. }), "{err}");
}

#[test]
fn connecting_to_nothing_is_a_typed_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(config(format!("127.0.0.1:{port}"))).expect_err("nothing there");
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(err.is_connection());
}
