//! AlterPartitionReassignments: choosing a partition's preferred leader. `tern cluster
//! transfer-leader` sends it; so can Kafka's own tools (kafka-reassign-partitions with a
//! reordered replica list).
//!
//! tern places replicas itself (they move with `tern cluster add-node` / `remove-node`), so
//! a reassignment may only reorder a partition's current replicas. Its first replica
//! becomes the preferred leader (the controller command `SetPreferredLeader`), and the
//! partition's leader hands leadership to it once it is a caught-up voter
//! (`node::leader_balance`). Refusals, per partition (docs/clients.md):
//! - a replica list naming another set of nodes: INVALID_REPLICA_ASSIGNMENT;
//! - a null list (Kafka's "cancel the reassignment"): NO_REASSIGNMENT_IN_PROGRESS, as no
//!   reassignment is ever left in progress;
//! - an unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION;
//! - this node's controller replica is not the leader: NOT_CONTROLLER (the client asks the
//!   controller Metadata names).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::broker::Broker;
use super::topics::{controller_error, rejection_error};
use crate::node::controller::{Command, Outcome, Topic};

pub async fn handle(
    broker: &Broker,
    r: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut out = AlterPartitionReassignmentsResponse::default();
    out.allow_replication_factor_change = r.allow_replication_factor_change;
    for t in &r.topics {
        let name = t.name.0.to_string();
        let topic = broker.topic(&name).await;
        let mut tr = ReassignableTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = ReassignablePartitionResponse::default();
            pr.partition_index = p.partition_index;
            let result = match &topic {
                Err(e) => Err((controller_error(e), e.to_string())),
                Ok(None) => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name:?}"),
                )),
                Ok(Some(topic)) => reorder(broker, topic, p).await,
            };
            if let Err((err, msg)) = result {
                pr.error_code = err.code();
                pr.error_message = Some(StrBytes::from_string(msg));
            }
            tr.partitions.push(pr);
        }
        out.responses.push(tr);
    }
    out
}

/// The node a reassignment of `p` names as preferred leader, if it only reorders the
/// partition's current replicas.
pub fn preferred_of(
    topic: &Topic,
    p: &ReassignablePartition,
) -> Result<u64, (ResponseError, String)> {
    let unknown = || {
        (
            ResponseError::UnknownTopicOrPartition,
            format!(
                "topic {:?} has no partition {}",
                topic.name, p.partition_index
            ),
        )
    };
    let index = usize::try_from(p.partition_index).map_err(|_| unknown())?;
    let current = &topic.partitions.get(index).ok_or_else(unknown)?.replicas;
    let Some(asked) = &p.replicas else {
        return Err((
            ResponseError::NoReassignmentInProgress,
            "no reassignment is in progress (tern reorders replicas at once)".into(),
        ));
    };
    let mut asked_ids: Vec<u64> = asked
        .iter()
        .map(|b| u64::try_from(b.0).unwrap_or(0))
        .collect();
    let first = asked_ids.first().copied();
    asked_ids.sort_unstable();
    let mut current_sorted = current.clone();
    current_sorted.sort_unstable();
    match first {
        Some(first) if asked_ids == current_sorted => Ok(first),
        _ => Err((
            ResponseError::InvalidReplicaAssignment,
            format!(
                "replicas {:?} are not a reordering of the current replicas {current:?}: tern \
                 only changes the preferred leader this way (replicas move with `tern cluster \
                 add-node` and `remove-node`)",
                asked.iter().map(|b| b.0).collect::<Vec<_>>()
            ),
        )),
    }
}

async fn reorder(
    broker: &Broker,
    topic: &Topic,
    p: &ReassignablePartition,
) -> Result<(), (ResponseError, String)> {
    let node_id = preferred_of(topic, p)?;
    let command = Command::SetPreferredLeader {
        name: topic.name.clone(),
        partition: p.partition_index as u32,
        node_id,
    };
    match broker.controller(command).await {
        Ok(Outcome::PreferredLeaderSet { .. }) => Ok(()),
        Ok(Outcome::Rejected(rej)) => Err((rejection_error(&rej), rej.to_string())),
        Ok(other) => Err((
            ResponseError::UnknownServerError,
            format!("unexpected controller outcome {other:?}"),
        )),
        Err(e) => Err((controller_error(&e), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::BrokerId;
    use uuid::Uuid;

    use super::*;
    use crate::node::controller::{Partition, Retention};

    fn topic() -> Topic {
        Topic {
            name: "orders".into(),
            id: Uuid::from_u128(1),
            replication_factor: 3,
            retention: Retention::default(),
            read_only: false,
            created_index: 1,
            partitions: vec![Partition {
                group: 1,
                replicas: vec![1, 2, 3],
                initial: vec![1, 2, 3],
            }],
        }
    }

    fn asking(index: i32, replicas: Option<Vec<i32>>) -> ReassignablePartition {
        let mut p = ReassignablePartition::default();
        p.partition_index = index;
        p.replicas = replicas.map(|r| r.into_iter().map(BrokerId).collect());
        p
    }

    #[test]
    fn a_reordering_names_its_first_replica() {
        assert_eq!(
            preferred_of(&topic(), &asking(0, Some(vec![3, 1, 2]))),
            Ok(3)
        );
        assert_eq!(
            preferred_of(&topic(), &asking(0, Some(vec![1, 2, 3]))),
            Ok(1)
        );
    }

    #[test]
    fn anything_else_is_refused_with_kafka_codes() {
        let code = |p| preferred_of(&topic(), &p).unwrap_err().0;
        assert_eq!(
            code(asking(0, Some(vec![4, 1, 2]))),
            ResponseError::InvalidReplicaAssignment
        );
        assert_eq!(
            code(asking(0, Some(vec![1, 2]))),
            ResponseError::InvalidReplicaAssignment
        );
        assert_eq!(
            code(asking(0, Some(vec![1, 1, 2, 3]))),
            ResponseError::InvalidReplicaAssignment
        );
        assert_eq!(
            code(asking(0, Some(vec![-1, 2, 3]))),
            ResponseError::InvalidReplicaAssignment
        );
        assert_eq!(
            code(asking(0, Some(vec![]))),
            ResponseError::InvalidReplicaAssignment
        );
        assert_eq!(
            code(asking(0, None)),
            ResponseError::NoReassignmentInProgress
        );
        assert_eq!(
            code(asking(1, Some(vec![1, 2, 3]))),
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            code(asking(-1, Some(vec![1, 2, 3]))),
            ResponseError::UnknownTopicOrPartition
        );
    }
}
