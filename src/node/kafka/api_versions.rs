//! ApiVersions: the APIs and versions this node speaks. [`SUPPORTED`] is the one table: the
//! dispatcher refuses what is not in it, and the answer lists it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// (API, lowest version, highest version). Within what the `kafka-protocol` crate supports
/// (checked by a test); minima follow Kafka 4.x (Produce ≥ 3, Fetch ≥ 4). Consumer-group APIs
/// are listed so clients that insist on them get a clear error rather than a closed socket.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 13),
    (ApiKey::ListOffsets, 1, 8),
    // v0 too: kafka-python 2.0.2 probes a broker with ApiVersions v0 followed at once by
    // Metadata v0, and takes a closed connection for an old broker.
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
];

/// Whether `version` of `key` is served.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(k, min, max)| k == key && (min..=max).contains(&version))
}

/// The answer to ApiVersions; `error` is UNSUPPORTED_VERSION when the client asked a version
/// of ApiVersions we do not have (then the answer is encoded at v0, which every client reads).
pub fn response(error: Option<ResponseError>) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error.map_or(0, |e| e.code());
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    r
}
