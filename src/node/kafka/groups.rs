//! Consumer groups (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch) are not served yet: each is answered, in its own response
//! shape, with UNSUPPORTED_VERSION, which Kafka clients report at once instead of retrying.
//! Consume by assigning partitions (kcat without `-G`, kafka-python's `assign` + `seek`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
    OffsetCommitResponse, OffsetFetchResponse, RequestKind, ResponseKind, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

const UNSUPPORTED: ResponseError = ResponseError::UnsupportedVersion;

fn message() -> Option<StrBytes> {
    Some(StrBytes::from_static_str(
        "consumer groups are not supported by tern yet; assign partitions instead",
    ))
}

/// The refusal of a consumer-group request; None for any other API (the connection closes).
pub fn unsupported(request: RequestKind, version: i16) -> Option<ResponseKind> {
    let code = UNSUPPORTED.code();
    Some(match request {
        RequestKind::FindCoordinator(r) => {
            let mut out = FindCoordinatorResponse::default();
            out.error_code = code;
            out.error_message = message();
            out.node_id = BrokerId(-1);
            out.port = -1;
            if version >= 4 {
                out.coordinators = r
                    .coordinator_keys
                    .into_iter()
                    .map(|key| {
                        let mut c = Coordinator::default();
                        c.key = key;
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = code;
                        c.error_message = message();
                        c
                    })
                    .collect();
            }
            ResponseKind::FindCoordinator(out)
        }
        RequestKind::JoinGroup(_) => {
            let mut out = JoinGroupResponse::default();
            out.error_code = code;
            out.generation_id = -1;
            ResponseKind::JoinGroup(out)
        }
        RequestKind::SyncGroup(_) => {
            let mut out = SyncGroupResponse::default();
            out.error_code = code;
            ResponseKind::SyncGroup(out)
        }
        RequestKind::Heartbeat(_) => {
            let mut out = HeartbeatResponse::default();
            out.error_code = code;
            ResponseKind::Heartbeat(out)
        }
        RequestKind::LeaveGroup(_) => {
            let mut out = LeaveGroupResponse::default();
            out.error_code = code;
            ResponseKind::LeaveGroup(out)
        }
        RequestKind::OffsetCommit(r) => {
            let mut out = OffsetCommitResponse::default();
            out.topics = r
                .topics
                .into_iter()
                .map(|t| {
                    let mut rt = OffsetCommitResponseTopic::default();
                    rt.name = t.name;
                    rt.partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let mut rp = OffsetCommitResponsePartition::default();
                            rp.partition_index = p.partition_index;
                            rp.error_code = code;
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
            ResponseKind::OffsetCommit(out)
        }
        RequestKind::OffsetFetch(r) => {
            let mut out = OffsetFetchResponse::default();
            out.error_code = code;
            out.topics = r
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = t.name;
                    rt.partitions = t
                        .partition_indexes
                        .into_iter()
                        .map(|i| {
                            let mut rp = OffsetFetchResponsePartition::default();
                            rp.partition_index = i;
                            rp.committed_offset = -1;
                            rp.committed_leader_epoch = -1;
                            rp.error_code = code;
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
            ResponseKind::OffsetFetch(out)
        }
        _ => return None,
    })
}
