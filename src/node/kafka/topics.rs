//! CreateTopics and DeleteTopics: controller commands, proposed on the shard hosting the
//! controller group and answered once applied. When this node's controller replica is not
//! the leader the answer is NOT_CONTROLLER, and the client asks the controller that Metadata
//! names.
//!
//! Decisions (docs/clients.md): manual replica assignments are refused (tern places
//! replicas); topic configs other than `retention.ms`, `retention.bytes` and
//! `cleanup.policy=delete` are refused with INVALID_CONFIG naming the key; a partition count
//! or replication factor of -1 takes the default (1 partition; 3 replicas, or fewer when the
//! cluster has fewer members).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::broker::Broker;
use super::errors;
use crate::node::controller::state::check_topic_name;
use crate::node::controller::{Command, Outcome, Rejection, Retention, TopicSpec};
use crate::node::requests::RequestError;

/// Replication factor of a topic created with -1, capped by the cluster's member count.
pub const DEFAULT_REPLICATION_FACTOR: u8 = 3;
pub const DEFAULT_PARTITIONS: u32 = 1;

pub(super) fn rejection_error(r: &Rejection) -> ResponseError {
    match r {
        Rejection::TopicExists(_) | Rejection::TopicIdInUse(_) => ResponseError::TopicAlreadyExists,
        Rejection::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        Rejection::InvalidPartitionCount(_) => ResponseError::InvalidPartitions,
        Rejection::InvalidReplicationFactor(_) | Rejection::ReplicationFactorTooLarge { .. } => {
            ResponseError::InvalidReplicationFactor
        }
        Rejection::TooManyPartitions { .. } => ResponseError::PolicyViolation,
        Rejection::InvalidRetention(_) => ResponseError::InvalidConfig,
        Rejection::UnknownTopic(_)
        | Rejection::TopicIdMismatch { .. }
        | Rejection::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        Rejection::NotAReplica { .. } => ResponseError::InvalidReplicaAssignment,
        _ => ResponseError::InvalidRequest,
    }
}

pub(super) fn controller_error(e: &RequestError) -> ResponseError {
    match e {
        RequestError::NotLeader { .. } => ResponseError::NotController,
        other => errors::error(other),
    }
}

/// The spec of a topic to create, or why it is refused.
/// `default_retention` is the node's `[retention]` section: what a topic keeps unless its
/// `retention.ms`/`retention.bytes` configs say otherwise (-1 in either keeps everything).
fn spec(
    t: &CreatableTopic,
    members: usize,
    default_retention: Retention,
) -> Result<TopicSpec, (ResponseError, String)> {
    let name = t.name.0.to_string();
    check_topic_name(&name).map_err(|why| (ResponseError::InvalidTopicException, why))?;
    if !t.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "manual replica assignments are not supported; tern places replicas".into(),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => DEFAULT_PARTITIONS,
        n if n >= 1 => n as u32,
        n => {
            return Err((
                ResponseError::InvalidPartitions,
                format!("partition count {n} must be at least 1"),
            ))
        }
    };
    let replication_factor = match t.replication_factor {
        -1 => DEFAULT_REPLICATION_FACTOR.min(members.clamp(1, u8::MAX as usize) as u8),
        n if (1..=i16::from(u8::MAX)).contains(&n) => n as u8,
        n => {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {n} must be at least 1"),
            ))
        }
    };
    let mut retention = default_retention;
    for c in &t.configs {
        let key = c.name.as_str();
        let value = c.value.as_ref().map(|v| v.as_str()).unwrap_or("");
        let bad = || {
            (
                ResponseError::InvalidConfig,
                format!("{key}={value:?} is not valid"),
            )
        };
        match key {
            "retention.ms" => {
                let v: i64 = value.parse().map_err(|_| bad())?;
                retention.age_ms_max = u64::try_from(v).ok();
            }
            "retention.bytes" => {
                let v: i64 = value.parse().map_err(|_| bad())?;
                retention.bytes_max = u64::try_from(v).ok();
            }
            "cleanup.policy" if value == "delete" => {}
            _ => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("topic config {key:?} is not supported (supported: retention.ms, retention.bytes, cleanup.policy=delete)"),
                ))
            }
        }
    }
    Ok(TopicSpec {
        name,
        id: Uuid::new_v4(),
        partitions,
        replication_factor,
        retention,
    })
}

pub async fn create(broker: &Broker, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut out = CreateTopicsResponse::default();
    let members = broker
        .state(true)
        .await
        .map(|s| s.members().len())
        .unwrap_or(1);
    for t in &r.topics {
        let mut res = CreatableTopicResult::default();
        res.name = t.name.clone();
        res.num_partitions = -1;
        res.replication_factor = -1;
        let result = if broker.setup.read_only {
            Err((
                ResponseError::PolicyViolation,
                "the node is read-only".into(),
            ))
        } else {
            match spec(t, members, broker.setup.default_retention) {
                Err(e) => Err(e),
                Ok(s) if r.validate_only => {
                    res.num_partitions = s.partitions as i32;
                    res.replication_factor = i16::from(s.replication_factor);
                    Ok(())
                }
                Ok(s) => {
                    let (partitions, rf) = (s.partitions, s.replication_factor);
                    match broker.controller(Command::CreateTopic(s)).await {
                        Ok(Outcome::TopicCreated { id, .. }) => {
                            res.topic_id = id;
                            res.num_partitions = partitions as i32;
                            res.replication_factor = i16::from(rf);
                            Ok(())
                        }
                        Ok(Outcome::Rejected(rej)) => Err((rejection_error(&rej), rej.to_string())),
                        Ok(other) => Err((
                            ResponseError::UnknownServerError,
                            format!("unexpected controller outcome {other:?}"),
                        )),
                        Err(e) => Err((controller_error(&e), e.to_string())),
                    }
                }
            }
        };
        if let Err((err, msg)) = result {
            res.error_code = err.code();
            res.error_message = Some(StrBytes::from_string(msg));
        }
        out.topics.push(res);
    }
    out
}

pub async fn delete(broker: &Broker, r: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let mut out = DeleteTopicsResponse::default();
    // v6 names topics by name or id; earlier versions by name.
    let asked: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        r.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        r.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    for (name, id) in asked {
        let mut res = DeletableTopicResult::default();
        res.topic_id = id;
        let resolved = match &name {
            Some(n) => Ok(Some(n.0.to_string())),
            None => broker
                .topic_by_id(id)
                .await
                .map(|t| t.map(|t| t.name.clone())),
        };
        res.name = name;
        let result = match resolved {
            _ if broker.setup.read_only => Err((
                ResponseError::PolicyViolation,
                "the node is read-only".to_string(),
            )),
            Err(e) => Err((controller_error(&e), e.to_string())),
            Ok(None) => Err((
                ResponseError::UnknownTopicId,
                format!("unknown topic id {id}"),
            )),
            Ok(Some(topic)) => {
                if res.name.is_none() {
                    res.name = Some(TopicName(StrBytes::from_string(topic.clone())));
                }
                match broker
                    .controller(Command::DeleteTopic { name: topic, id })
                    .await
                {
                    Ok(Outcome::TopicDeleted { id, .. }) => {
                        res.topic_id = id;
                        Ok(())
                    }
                    Ok(Outcome::Rejected(rej)) => Err((rejection_error(&rej), rej.to_string())),
                    Ok(other) => Err((
                        ResponseError::UnknownServerError,
                        format!("unexpected controller outcome {other:?}"),
                    )),
                    Err(e) => Err((controller_error(&e), e.to_string())),
                }
            }
        };
        if let Err((err, msg)) = result {
            res.error_code = err.code();
            res.error_message = Some(StrBytes::from_string(msg));
        }
        out.responses.push(res);
    }
    out
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;

    use super::*;

    fn topic(configs: &[(&str, &str)]) -> CreatableTopic {
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        t.num_partitions = 2;
        t.replication_factor = 1;
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string((*k).to_string());
                c.value = Some(StrBytes::from_string((*v).to_string()));
                c
            })
            .collect();
        t
    }

    #[test]
    fn the_node_default_retention_applies_unless_the_topic_configs_override_it() {
        let default = Retention {
            bytes_max: Some(1 << 30),
            age_ms_max: Some(7 * 24 * 3600 * 1000),
        };
        let plain = spec(&topic(&[]), 1, default).unwrap();
        assert_eq!(plain.retention, default);
        let ms = spec(&topic(&[("retention.ms", "60000")]), 1, default).unwrap();
        assert_eq!(
            ms.retention,
            Retention {
                bytes_max: Some(1 << 30),
                age_ms_max: Some(60_000),
            }
        );
        // -1 is Kafka's "unlimited": it overrides a default with nothing.
        let unlimited = spec(
            &topic(&[("retention.ms", "-1"), ("retention.bytes", "-1")]),
            1,
            default,
        )
        .unwrap();
        assert_eq!(unlimited.retention, Retention::default());
        let bytes = spec(&topic(&[("retention.bytes", "4096")]), 1, default).unwrap();
        assert_eq!(bytes.retention.bytes_max, Some(4096));
        assert_eq!(bytes.retention.age_ms_max, default.age_ms_max);
    }
}
