//! The controller's state and its deterministic `apply`.
//!
//! Every voter applies the same committed commands in the same order and must end in the
//! same state: `apply` reads nothing but the state and the command (no clock, no randomness,
//! ordered maps only). A command that is not valid against the state (a topic that exists, a
//! replication factor above the member count) is not an error: it is applied as a
//! [`Rejection`] outcome, identically everywhere, and the proposer reports it to the client.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::command::{Command, Member, Retention, TopicSpec};
use super::placement::Load;
use super::{
    ControllerError, FIRST_PARTITION_GROUP, MEMBERS_MAX, PARTITIONS_MAX, PARTITIONS_PER_TOPIC_MAX,
    REPLICATION_FACTOR_MAX, TOPIC_NAME_BYTES_MAX,
};

/// One partition: its Raft group and its replicas (nodes), the first being the preferred
/// leader. Invariant: replicas are distinct members, at most the topic's replication factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub group: u64,
    pub replicas: Vec<u64>,
    /// The replicas the group was created with: they, and only they, start the group with
    /// this configuration. A replica placed later (a member added or removed) joins with an
    /// empty configuration and learns the real one from the leader, which adds it as a
    /// learner (`replica_moves.rs`); bootstrapping it with the current placement could let
    /// it and another empty replica elect each other and commit a second history.
    pub initial: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub replication_factor: u8,
    pub retention: Retention,
    pub read_only: bool,
    /// Controller log index of the CreateTopic command.
    pub created_index: u64,
    /// Indexed by partition number.
    pub partitions: Vec<Partition>,
}

/// A replica given to `node` for partition group `group` (because the partition had fewer
/// replicas than its factor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAdded {
    pub group: u64,
    pub node: u64,
}

/// Why a command was applied as a no-op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("topic id {0} is already in use")]
    TopicIdInUse(Uuid),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {name:?} has id {actual}, not {expected}")]
    TopicIdMismatch {
        name: String,
        expected: Uuid,
        actual: Uuid,
    },
    #[error("invalid topic name {name:?}: {why}")]
    InvalidTopicName { name: String, why: String },
    #[error("invalid topic id: the nil UUID")]
    NilTopicId,
    #[error("partition count {0} must be between 1 and {PARTITIONS_PER_TOPIC_MAX}")]
    InvalidPartitionCount(u32),
    #[error("replication factor {0} must be between 1 and {REPLICATION_FACTOR_MAX}")]
    InvalidReplicationFactor(u8),
    #[error("replication factor {replication_factor} is larger than the {members} members")]
    ReplicationFactorTooLarge {
        replication_factor: u8,
        members: usize,
    },
    #[error("the cluster would have {total} partitions, over the limit of {PARTITIONS_MAX}")]
    TooManyPartitions { total: u64 },
    #[error("retention: {0}")]
    InvalidRetention(&'static str),
    #[error("unknown member {0}")]
    UnknownMember(u64),
    #[error("invalid node id 0")]
    InvalidNodeId,
    #[error("the cluster already has {MEMBERS_MAX} members")]
    TooManyMembers,
    #[error("node {other} already uses address {addr}")]
    AddressInUse { other: u64, addr: String },
    #[error("member {0} is the last one; a cluster cannot remove its last member")]
    LastMember(u64),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error(
        "node {node} holds no replica of {topic:?} partition {partition} (replicas: {replicas:?})"
    )]
    NotAReplica {
        topic: String,
        partition: u32,
        node: u64,
        replicas: Vec<u64>,
    },
}

impl Rejection {
    /// The Kafka error code a client gets for this rejection (CreateTopics, DeleteTopics,
    /// AlterConfigs); `None` for member changes, which are not Kafka requests.
    pub fn kafka_error_code(&self) -> Option<i16> {
        Some(match self {
            Rejection::UnknownTopic(_) => 3, // UNKNOWN_TOPIC_OR_PARTITION
            Rejection::InvalidTopicName { .. } => 17, // INVALID_TOPIC_EXCEPTION
            Rejection::TopicExists(_) => 36, // TOPIC_ALREADY_EXISTS
            Rejection::InvalidPartitionCount(_) => 37, // INVALID_PARTITIONS
            Rejection::InvalidReplicationFactor(_)
            | Rejection::ReplicationFactorTooLarge { .. } => 38, // INVALID_REPLICATION_FACTOR
            Rejection::InvalidRetention(_) => 40, // INVALID_CONFIG
            Rejection::TooManyPartitions { .. } => 44, // POLICY_VIOLATION
            Rejection::TopicIdInUse(_) | Rejection::NilTopicId => 42, // INVALID_REQUEST
            Rejection::TopicIdMismatch { .. } => 103, // INCONSISTENT_TOPIC_ID
            Rejection::UnknownPartition { .. } => 3, // UNKNOWN_TOPIC_OR_PARTITION
            Rejection::NotAReplica { .. } => 39, // INVALID_REPLICA_ASSIGNMENT
            Rejection::UnknownMember(_)
            | Rejection::InvalidNodeId
            | Rejection::TooManyMembers
            | Rejection::AddressInUse { .. }
            | Rejection::LastMember(_) => return None,
        })
    }
}

/// What applying one command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    MemberAdded {
        node_id: u64,
        /// Replicas of under-replicated partitions placed on it.
        added: Vec<ReplicaAdded>,
    },
    MemberUpdated {
        node_id: u64,
    },
    MemberRemoved {
        node_id: u64,
        /// Groups that had a replica on it, in group order.
        dropped: Vec<u64>,
        /// Of those, the groups whose only replica it was: their data is gone with the node
        /// (removal is allowed, because a dead node's copy is lost anyway, but the operator
        /// must be told which partitions restart empty).
        orphaned: Vec<u64>,
        /// Replacement replicas placed on the remaining members (none where every member
        /// already holds one: the partition stays under-replicated until a member is added).
        added: Vec<ReplicaAdded>,
    },
    TopicCreated {
        id: Uuid,
        groups: Vec<u64>,
    },
    TopicDeleted {
        id: Uuid,
        groups: Vec<u64>,
    },
    TopicConfigSet {
        id: Uuid,
    },
    /// The partition's replicas, preferred leader first.
    PreferredLeaderSet {
        group: u64,
        replicas: Vec<u64>,
    },
    /// `ForceNewCluster`: the other members were removed.
    ClusterForced {
        node_id: u64,
        removed: Vec<u64>,
        /// Groups that had no replica on the forced node: their data is gone (they get an
        /// empty replica on it, as an orphaned partition of `MemberRemoved` does).
        orphaned: Vec<u64>,
    },
    Rejected(Rejection),
}

/// The controller's replicated state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerState {
    /// Index of the last applied command (0: none).
    pub(super) applied_index: u64,
    /// The group id the next partition gets. Group ids are never reused, so a deleted
    /// partition's leftover data can never be mistaken for a new one's.
    /// Invariant: above every partition's group.
    pub(super) next_group: u64,
    pub(super) members: BTreeMap<u64, Member>,
    pub(super) topics: BTreeMap<String, Topic>,
    /// Nodes removed by `RemoveMember` and not added again since: a controller leader's
    /// registration of the configured initial voters (`register_members` in shard.rs) skips
    /// them, so a removal is not undone by the next controller election.
    /// Invariant: disjoint from `members`.
    pub(super) removed: BTreeSet<u64>,
}

impl Default for ControllerState {
    fn default() -> Self {
        ControllerState {
            applied_index: 0,
            next_group: FIRST_PARTITION_GROUP,
            members: BTreeMap::new(),
            topics: BTreeMap::new(),
            removed: BTreeSet::new(),
        }
    }
}

/// Kafka's topic-name rule: 1..=249 bytes of ASCII letters, digits, '.', '_' and '-',
/// neither "." nor "..".
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!("must be 1 to {TOPIC_NAME_BYTES_MAX} bytes"));
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are reserved".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character {c:?} is not allowed (ASCII letters, digits, . _ -)"
        ));
    }
    Ok(())
}

fn check_retention(r: Retention) -> Result<(), Rejection> {
    if r.bytes_max == Some(0) {
        return Err(Rejection::InvalidRetention(
            "bytes_max 0 would delete every record",
        ));
    }
    if r.age_ms_max == Some(0) {
        return Err(Rejection::InvalidRetention(
            "age_ms_max 0 would delete every record",
        ));
    }
    Ok(())
}

impl ControllerState {
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Whether `node_id` was removed (and not added again): see the field.
    pub fn was_removed(&self, node_id: u64) -> bool {
        self.removed.contains(&node_id)
    }

    pub fn members(&self) -> &BTreeMap<u64, Member> {
        &self.members
    }

    pub fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// Total partitions of all topics.
    pub fn partition_count(&self) -> u64 {
        self.topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum()
    }

    /// Applies the committed command at `index`. Errors only for an index that does not
    /// follow the last applied one (the caller's bug, or a log replayed twice): the state is
    /// then unchanged.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Outcome, ControllerError> {
        if index <= self.applied_index {
            return Err(ControllerError::IndexNotAfterApplied {
                index,
                applied: self.applied_index,
            });
        }
        self.applied_index = index;
        let outcome = match cmd {
            Command::AddMember(m) => self.add_member(m),
            Command::RemoveMember { node_id } => self.remove_member(*node_id),
            Command::CreateTopic(spec) => self.create_topic(index, spec),
            Command::DeleteTopic { name, id } => self.delete_topic(name, *id),
            Command::SetTopicConfig {
                name,
                retention,
                read_only,
            } => self.set_topic_config(name, *retention, *read_only),
            Command::SetPreferredLeader {
                name,
                partition,
                node_id,
            } => self.set_preferred_leader(name, *partition, *node_id),
            Command::ForceNewCluster { node_id } => self.force_new_cluster(*node_id),
        };
        Ok(outcome.unwrap_or_else(Outcome::Rejected))
    }

    /// Decodes a committed entry's payload and applies it. A payload that does not decode
    /// is an error, never skipped: every replica holds the same bytes, so skipping would be
    /// deterministic only if every replica's copy were damaged the same way.
    pub fn apply_payload(
        &mut self,
        index: u64,
        payload: &[u8],
    ) -> Result<Outcome, ControllerError> {
        let cmd =
            Command::decode(payload).map_err(|source| ControllerError::Decode { index, source })?;
        self.apply(index, &cmd)
    }

    fn load(&self) -> Load {
        let mut load = Load::new(self.members.keys().copied());
        for t in self.topics.values() {
            for p in &t.partitions {
                load.add(&p.replicas);
            }
        }
        load
    }

    fn add_member(&mut self, m: &Member) -> Result<Outcome, Rejection> {
        if m.node_id == 0 {
            return Err(Rejection::InvalidNodeId);
        }
        for other in self.members.values().filter(|o| o.node_id != m.node_id) {
            for addr in [m.peer_addr, m.kafka_addr, m.http_addr] {
                if [other.peer_addr, other.kafka_addr, other.http_addr].contains(&addr) {
                    return Err(Rejection::AddressInUse {
                        other: other.node_id,
                        addr: addr.to_string(),
                    });
                }
            }
        }
        if let Some(existing) = self.members.get_mut(&m.node_id) {
            *existing = m.clone();
            return Ok(Outcome::MemberUpdated { node_id: m.node_id });
        }
        if self.members.len() >= MEMBERS_MAX {
            return Err(Rejection::TooManyMembers);
        }
        self.members.insert(m.node_id, m.clone());
        self.removed.remove(&m.node_id);
        let added = self.fill_under_replicated();
        Ok(Outcome::MemberAdded {
            node_id: m.node_id,
            added,
        })
    }

    fn remove_member(&mut self, node_id: u64) -> Result<Outcome, Rejection> {
        if !self.members.contains_key(&node_id) {
            return Err(Rejection::UnknownMember(node_id));
        }
        if self.members.len() == 1 {
            return Err(Rejection::LastMember(node_id));
        }
        let (dropped, orphaned) = self.drop_member(node_id);
        let added = self.fill_under_replicated();
        Ok(Outcome::MemberRemoved {
            node_id,
            dropped,
            orphaned,
            added,
        })
    }

    /// Every member but `node_id` removed, one after the other as `RemoveMember` would
    /// (without its last-member rule: a forced node that was never registered registers itself
    /// as the controller's leader, and then takes the orphaned partitions).
    fn force_new_cluster(&mut self, node_id: u64) -> Result<Outcome, Rejection> {
        if node_id == 0 {
            return Err(Rejection::InvalidNodeId);
        }
        let removed: Vec<u64> = self
            .members
            .keys()
            .copied()
            .filter(|&m| m != node_id)
            .collect();
        let mut orphaned = Vec::new();
        for &other in &removed {
            orphaned.extend(self.drop_member(other).1);
        }
        orphaned.sort_unstable();
        orphaned.dedup();
        self.fill_under_replicated();
        // An orphaned partition's data was on the removed nodes only: its new replica here
        // starts it empty and alone (as its creation would), or it would wait for ever for a
        // configuration from a leader that no longer exists. Joined nodes never bootstrap, so
        // no second replica can start it as well.
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if orphaned.binary_search(&p.group).is_ok() {
                    p.initial = p.replicas.clone();
                }
            }
        }
        Ok(Outcome::ClusterForced {
            node_id,
            removed,
            orphaned,
        })
    }

    /// Removes `node_id` from the members and from every partition's replicas; answers the
    /// groups that had a replica on it and those left without any.
    fn drop_member(&mut self, node_id: u64) -> (Vec<u64>, Vec<u64>) {
        self.members.remove(&node_id);
        self.removed.insert(node_id);
        let mut dropped = Vec::new();
        let mut orphaned = Vec::new();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if let Some(pos) = p.replicas.iter().position(|&r| r == node_id) {
                    p.replicas.remove(pos);
                    dropped.push(p.group);
                    if p.replicas.is_empty() {
                        orphaned.push(p.group);
                    }
                }
            }
        }
        dropped.sort_unstable();
        orphaned.sort_unstable();
        (dropped, orphaned)
    }

    /// Gives every partition with fewer replicas than its factor new ones on the least
    /// loaded members, in topic-name then partition order (deterministic).
    fn fill_under_replicated(&mut self) -> Vec<ReplicaAdded> {
        let mut load = self.load();
        let mut filled = Vec::new();
        for t in self.topics.values_mut() {
            let rf = t.replication_factor as usize;
            for (p_no, p) in t.partitions.iter_mut().enumerate() {
                if p.replicas.len() >= rf {
                    continue;
                }
                let new = load.pick(
                    t.id,
                    p_no as u32,
                    &p.replicas.clone(),
                    rf - p.replicas.len(),
                );
                if p.replicas.is_empty() {
                    // No replica was left: the first new one is also the preferred leader.
                    p.replicas = new.clone();
                } else {
                    p.replicas.extend_from_slice(&new);
                }
                filled.extend(new.into_iter().map(|node| ReplicaAdded {
                    group: p.group,
                    node,
                }));
            }
        }
        filled
    }

    fn create_topic(&mut self, index: u64, spec: &TopicSpec) -> Result<Outcome, Rejection> {
        check_topic_name(&spec.name).map_err(|why| Rejection::InvalidTopicName {
            name: spec.name.clone(),
            why,
        })?;
        if self.topics.contains_key(&spec.name) {
            return Err(Rejection::TopicExists(spec.name.clone()));
        }
        if spec.id.is_nil() {
            return Err(Rejection::NilTopicId);
        }
        if self.topics.values().any(|t| t.id == spec.id) {
            return Err(Rejection::TopicIdInUse(spec.id));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&spec.partitions) {
            return Err(Rejection::InvalidPartitionCount(spec.partitions));
        }
        if !(1..=REPLICATION_FACTOR_MAX).contains(&spec.replication_factor) {
            return Err(Rejection::InvalidReplicationFactor(spec.replication_factor));
        }
        if spec.replication_factor as usize > self.members.len() {
            return Err(Rejection::ReplicationFactorTooLarge {
                replication_factor: spec.replication_factor,
                members: self.members.len(),
            });
        }
        check_retention(spec.retention)?;
        let total = self.partition_count() + spec.partitions as u64;
        if total > PARTITIONS_MAX {
            return Err(Rejection::TooManyPartitions { total });
        }
        // next_group stays far below u64::MAX: PARTITIONS_MAX bounds the partitions alive,
        // and each create adds at most PARTITIONS_PER_TOPIC_MAX; checked anyway.
        let first = self.next_group;
        let next = first
            .checked_add(spec.partitions as u64)
            .ok_or(Rejection::TooManyPartitions { total: u64::MAX })?;
        let mut load = self.load();
        let rf = spec.replication_factor as usize;
        let partitions: Vec<Partition> = (0..spec.partitions)
            .map(|p| {
                let replicas = load.pick(spec.id, p, &[], rf);
                Partition {
                    group: first + p as u64,
                    initial: replicas.clone(),
                    replicas,
                }
            })
            .collect();
        let groups = partitions.iter().map(|p| p.group).collect();
        self.next_group = next;
        self.topics.insert(
            spec.name.clone(),
            Topic {
                name: spec.name.clone(),
                id: spec.id,
                replication_factor: spec.replication_factor,
                retention: spec.retention,
                read_only: false,
                created_index: index,
                partitions,
            },
        );
        Ok(Outcome::TopicCreated {
            id: spec.id,
            groups,
        })
    }

    fn delete_topic(&mut self, name: &str, id: Uuid) -> Result<Outcome, Rejection> {
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| Rejection::UnknownTopic(name.to_string()))?;
        if !id.is_nil() && topic.id != id {
            return Err(Rejection::TopicIdMismatch {
                name: name.to_string(),
                expected: id,
                actual: topic.id,
            });
        }
        let topic = self.topics.remove(name).expect("looked up above");
        Ok(Outcome::TopicDeleted {
            id: topic.id,
            groups: topic.partitions.iter().map(|p| p.group).collect(),
        })
    }

    fn set_topic_config(
        &mut self,
        name: &str,
        retention: Retention,
        read_only: bool,
    ) -> Result<Outcome, Rejection> {
        check_retention(retention)?;
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| Rejection::UnknownTopic(name.to_string()))?;
        topic.retention = retention;
        topic.read_only = read_only;
        Ok(Outcome::TopicConfigSet { id: topic.id })
    }

    fn set_preferred_leader(
        &mut self,
        name: &str,
        partition: u32,
        node_id: u64,
    ) -> Result<Outcome, Rejection> {
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| Rejection::UnknownTopic(name.to_string()))?;
        let p = topic
            .partitions
            .get_mut(partition as usize)
            .ok_or_else(|| Rejection::UnknownPartition {
                topic: name.to_string(),
                partition,
            })?;
        let pos = p
            .replicas
            .iter()
            .position(|&r| r == node_id)
            .ok_or_else(|| Rejection::NotAReplica {
                topic: name.to_string(),
                partition,
                node: node_id,
                replicas: p.replicas.clone(),
            })?;
        // Rotating only the chosen replica to the front keeps the others' order (the next
        // preferred leaders if it fails).
        let chosen = p.replicas.remove(pos);
        p.replicas.insert(0, chosen);
        Ok(Outcome::PreferredLeaderSet {
            group: p.group,
            replicas: p.replicas.clone(),
        })
    }

    /// Checks every invariant; used on a decoded snapshot (and by the tests after every
    /// step). Returns the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut groups = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (node_id, m) in &self.members {
            if *node_id == 0 || m.node_id != *node_id {
                return Err(format!("member key {node_id} holds node {}", m.node_id));
            }
        }
        if self.members.len() > MEMBERS_MAX {
            return Err(format!("{} members", self.members.len()));
        }
        if let Some(both) = self.removed.iter().find(|n| self.members.contains_key(n)) {
            return Err(format!("node {both} is both a member and removed"));
        }
        for (name, t) in &self.topics {
            if &t.name != name {
                return Err(format!("topic key {name:?} holds topic {:?}", t.name));
            }
            check_topic_name(name).map_err(|why| format!("topic {name:?}: {why}"))?;
            if t.id.is_nil() || !ids.insert(t.id) {
                return Err(format!("topic {name:?}: nil or duplicate id {}", t.id));
            }
            if !(1..=REPLICATION_FACTOR_MAX).contains(&t.replication_factor) {
                return Err(format!(
                    "topic {name:?}: replication factor {}",
                    t.replication_factor
                ));
            }
            if t.partitions.is_empty() || t.partitions.len() > PARTITIONS_PER_TOPIC_MAX as usize {
                return Err(format!("topic {name:?}: {} partitions", t.partitions.len()));
            }
            if t.created_index > self.applied_index {
                return Err(format!("topic {name:?}: created after the applied index"));
            }
            for p in &t.partitions {
                if p.group < FIRST_PARTITION_GROUP
                    || p.group >= self.next_group
                    || !groups.insert(p.group)
                {
                    return Err(format!(
                        "topic {name:?}: group {} out of range or reused",
                        p.group
                    ));
                }
                if p.replicas.len() > t.replication_factor as usize {
                    return Err(format!("group {}: more replicas than the factor", p.group));
                }
                let distinct: BTreeSet<_> = p.replicas.iter().collect();
                if distinct.len() != p.replicas.len() {
                    return Err(format!("group {}: a node holds two replicas", p.group));
                }
                if let Some(r) = p.replicas.iter().find(|r| !self.members.contains_key(r)) {
                    return Err(format!("group {}: replica on non-member {r}", p.group));
                }
            }
        }
        if self.partition_count() > PARTITIONS_MAX {
            return Err(format!("{} partitions", self.partition_count()));
        }
        Ok(())
    }
}
