//! The client's view of the cluster: brokers, topics, partitions and their leaders, read from
//! a Metadata response.

use kafka_protocol::messages::MetadataResponse;

/// One broker (a tern node) as it advertises itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl Broker {
    /// HOST:PORT, bracketing an IPv6 host.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// None while the partition has no leader (Kafka's -1).
    pub leader: Option<i32>,
    /// The Raft term of the leader, on tern.
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub error_code: i16,
    pub internal: bool,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: Option<i32>,
    pub brokers: Vec<Broker>,
    /// Sorted by name.
    pub topics: Vec<TopicInfo>,
}

impl ClusterMetadata {
    pub fn from_response(r: &MetadataResponse) -> ClusterMetadata {
        let mut brokers: Vec<Broker> = r
            .brokers
            .iter()
            .map(|b| Broker {
                node_id: b.node_id.0,
                host: b.host.as_str().to_string(),
                port: b.port,
            })
            .collect();
        brokers.sort_by_key(|b| b.node_id);
        let mut topics: Vec<TopicInfo> = r
            .topics
            .iter()
            .map(|t| {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                        isr: p.isr_nodes.iter().map(|n| n.0).collect(),
                        error_code: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                TopicInfo {
                    name: t
                        .name
                        .as_ref()
                        .map(|n| n.0.as_str().to_string())
                        .unwrap_or_default(),
                    error_code: t.error_code,
                    internal: t.is_internal,
                    partitions,
                }
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterMetadata {
            cluster_id: r.cluster_id.as_ref().map(|c| c.as_str().to_string()),
            controller_id: (r.controller_id.0 >= 0).then_some(r.controller_id.0),
            brokers,
            topics,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.iter().find(|t| t.name == name)
    }

    pub fn broker(&self, node_id: i32) -> Option<&Broker> {
        self.brokers.iter().find(|b| b.node_id == node_id)
    }
}
