//! One request: decode its header and body with the `kafka-protocol` crate, hand it to the
//! API's handler, encode the answer with the response header the API version calls for.
//!
//! Refusals, as Kafka brokers make them:
//! - ApiVersions at a version we do not have: answered at v0 with UNSUPPORTED_VERSION and
//!   the list of what we have (clients then retry with a version from the list).
//! - Any other API or version outside [`super::api_versions::SUPPORTED`], or a request that
//!   does not decode: the connection is closed (with a log line).

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::api_versions;
use super::broker::Broker;
use super::connection::REQUEST_BYTES_MIN;
use super::{configs, fetch, groups, metadata, offsets, produce, producer_id, reassign, topics};
use crate::node::stats;

/// What the connection does after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write these bytes (size prefix included).
    Respond(BytesMut),
    /// acks=0 produce: the client expects no answer.
    NoResponse,
    /// Close the connection; the reason is logged.
    Close(String),
}

/// A request that decoded.
#[derive(Debug)]
pub enum Decoded {
    Request {
        header: RequestHeader,
        key: ApiKey,
        request: Box<RequestKind>,
    },
    /// ApiVersions at a version we do not speak: answer at v0.
    ApiVersionsFallback { correlation_id: i32 },
}

/// Decodes one request body (the bytes after the size prefix). Never panics on any input.
pub fn decode(mut body: Bytes) -> Result<Decoded, String> {
    if body.len() < REQUEST_BYTES_MIN {
        return Err(format!("request of {} bytes is too short", body.len()));
    }
    let raw_key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| format!("unknown API key {raw_key}"))?;
    if !api_versions::is_supported(key, version) {
        if key == ApiKey::ApiVersions {
            return Ok(Decoded::ApiVersionsFallback { correlation_id });
        }
        return Err(format!("{key:?} v{version} is not supported"));
    }
    let header = RequestHeader::decode(&mut body, key.request_header_version(version))
        .map_err(|e| format!("{key:?} v{version}: header does not decode: {e}"))?;
    let request = RequestKind::decode(key, &mut body, version)
        .map_err(|e| format!("{key:?} v{version}: body does not decode: {e}"))?;
    if body.has_remaining() {
        return Err(format!(
            "{key:?} v{version}: {} bytes after the request",
            body.remaining()
        ));
    }
    Ok(Decoded::Request {
        header,
        key,
        request: Box::new(request),
    })
}

/// Encodes a response with its size prefix.
pub fn encode(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<BytesMut, String> {
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(&[0u8; 4]);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut out, key.response_header_version(version))
        .map_err(|e| format!("{key:?} v{version}: response header: {e}"))?;
    response
        .encode(&mut out, version)
        .map_err(|e| format!("{key:?} v{version}: response: {e}"))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out)
}

/// Answers one request and counts it (and the errors it answers) for `/metrics`.
pub async fn handle(broker: &Broker, body: Bytes) -> Outcome {
    let started = std::time::Instant::now();
    let raw_key = if body.len() >= 2 {
        ApiKey::try_from(i16::from_be_bytes([body[0], body[1]])).ok()
    } else {
        None
    };
    let outcome = answer(broker, body).await;
    let api = raw_key.map_or("unknown", api_name);
    stats::kafka_request(api, started.elapsed());
    match &outcome {
        Outcome::Respond(_) | Outcome::NoResponse => {}
        Outcome::Close(_) => stats::kafka_error(api, "closed"),
    }
    outcome
}

/// The API's name as Kafka's documentation writes it (`Produce`, `Fetch`, ...), a label.
fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        _ => "other",
    }
}

/// Counts the error codes an answer carries (per partition or per topic), by code name.
fn count_errors(api: &'static str, response: &ResponseKind) {
    let mut codes: Vec<i16> = Vec::new();
    match response {
        ResponseKind::Produce(r) => codes.extend(
            r.responses
                .iter()
                .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)),
        ),
        ResponseKind::Fetch(r) => {
            codes.push(r.error_code);
            codes.extend(
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
        }
        ResponseKind::ListOffsets(r) => codes.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::CreateTopics(r) => codes.extend(r.topics.iter().map(|t| t.error_code)),
        ResponseKind::DeleteTopics(r) => codes.extend(r.responses.iter().map(|t| t.error_code)),
        _ => {}
    }
    for code in codes.into_iter().filter(|&c| c != 0) {
        let name = match ResponseError::try_from_code(code) {
            Some(e) => format!("{e:?}"),
            None => code.to_string(),
        };
        stats::kafka_error(api, &name);
    }
}

async fn answer(broker: &Broker, body: Bytes) -> Outcome {
    let (header, key, request) = match decode(body) {
        Ok(Decoded::Request {
            header,
            key,
            request,
        }) => (header, key, request),
        Ok(Decoded::ApiVersionsFallback { correlation_id }) => {
            let r = ResponseKind::ApiVersions(api_versions::response(Some(
                ResponseError::UnsupportedVersion,
            )));
            return match encode(ApiKey::ApiVersions, 0, correlation_id, &r) {
                Ok(b) => Outcome::Respond(b),
                Err(e) => Outcome::Close(e),
            };
        }
        Err(why) => return Outcome::Close(why),
    };
    let version = header.request_api_version;
    let response = match *request {
        RequestKind::ApiVersions(_) => {
            Some(ResponseKind::ApiVersions(api_versions::response(None)))
        }
        RequestKind::Metadata(r) => Some(ResponseKind::Metadata(
            metadata::handle(broker, r, version).await,
        )),
        RequestKind::Produce(r) => produce::handle(broker, r, version)
            .await
            .map(ResponseKind::Produce),
        RequestKind::Fetch(r) => Some(ResponseKind::Fetch(fetch::handle(broker, r, version).await)),
        RequestKind::ListOffsets(r) => Some(ResponseKind::ListOffsets(
            offsets::list_offsets(broker, r).await,
        )),
        RequestKind::OffsetForLeaderEpoch(r) => Some(ResponseKind::OffsetForLeaderEpoch(
            offsets::epoch_end(broker, r).await,
        )),
        RequestKind::CreateTopics(r) => {
            Some(ResponseKind::CreateTopics(topics::create(broker, r).await))
        }
        RequestKind::DeleteTopics(r) => Some(ResponseKind::DeleteTopics(
            topics::delete(broker, r, version).await,
        )),
        RequestKind::AlterPartitionReassignments(r) => Some(
            ResponseKind::AlterPartitionReassignments(reassign::handle(broker, r).await),
        ),
        RequestKind::DescribeConfigs(r) => {
            Some(ResponseKind::DescribeConfigs(configs::describe(broker, r)))
        }
        RequestKind::InitProducerId(r) => {
            Some(ResponseKind::InitProducerId(producer_id::handle(broker, r)))
        }
        other => match groups::unsupported(other, version) {
            Some(r) => Some(r),
            None => return Outcome::Close(format!("{key:?} is not served")),
        },
    };
    if let Some(r) = &response {
        count_errors(api_name(key), r);
    }
    match response {
        None => Outcome::NoResponse,
        Some(r) => match encode(key, version, header.correlation_id, &r) {
            Ok(b) => Outcome::Respond(b),
            Err(e) => Outcome::Close(e),
        },
    }
}
