//! Metadata: brokers (the controller's members, each at the Kafka address it registered
//! itself; this node at the address its listener really has), the controller (the leader of
//! the controller group), topics with their partitions, replicas and leaders: as this node's
//! replicas know them, and for partitions it does not host as their leaders report them
//! (`node_reports.rs`).
//! Topics are never created by Metadata (`allow_auto_topic_creation` is ignored): create them
//! with CreateTopics (`tern create-topic`, an admin client). docs/clients.md says so.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::broker::Broker;
use crate::node::controller::{Topic, CONTROLLER_GROUP};
use crate::node::shard::GroupLeader;

fn broker_entry(node_id: u64, addr: std::net::SocketAddr) -> MetadataResponseBroker {
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(node_id as i32);
    b.host = StrBytes::from_string(addr.ip().to_string());
    b.port = addr.port() as i32;
    b
}

fn topic_entry(t: &Topic, leaders: &HashMap<u64, GroupLeader>) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
    out.topic_id = t.id;
    out.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = index as i32;
            mp.replica_nodes = p.replicas.iter().map(|&n| BrokerId(n as i32)).collect();
            mp.isr_nodes = mp.replica_nodes.clone();
            match leaders.get(&p.group) {
                Some(l) if l.leader != 0 => {
                    mp.leader_id = BrokerId(l.leader as i32);
                    mp.leader_epoch = l.term as i32;
                }
                _ => {
                    // Electing, or its leader not reported lately: the client asks again.
                    mp.error_code = ResponseError::LeaderNotAvailable.code();
                    mp.leader_id = BrokerId(-1);
                    mp.leader_epoch = -1;
                }
            }
            mp
        })
        .collect();
    out
}

fn unknown_topic(name: Option<TopicName>, id: uuid::Uuid) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.error_code = ResponseError::UnknownTopicOrPartition.code();
    out.name = name;
    out.topic_id = id;
    out
}

pub async fn handle(broker: &Broker, r: MetadataRequest, version: i16) -> MetadataResponse {
    let setup = &broker.setup;
    let mut out = MetadataResponse::default();
    out.cluster_id = Some(StrBytes::from_string(setup.cluster_id.clone()));
    let (state, leaders) = match (broker.state(true).await, broker.leaders().await) {
        (Ok(s), Ok(l)) => (s, l),
        // Shutting down: this node alone, no topics; the client goes elsewhere.
        _ => {
            out.brokers = vec![broker_entry(setup.node_id, setup.advertised)];
            out.controller_id = BrokerId(-1);
            return out;
        }
    };
    let leaders: HashMap<u64, GroupLeader> = leaders.into_iter().map(|l| (l.group, l)).collect();
    out.brokers = state
        .members()
        .values()
        .map(|m| {
            let addr = if m.node_id == setup.node_id {
                setup.advertised
            } else {
                m.kafka_addr
            };
            broker_entry(m.node_id, addr)
        })
        .collect();
    if !state.members().contains_key(&setup.node_id) {
        out.brokers
            .push(broker_entry(setup.node_id, setup.advertised));
    }
    out.controller_id = match leaders.get(&CONTROLLER_GROUP) {
        Some(l) if l.leader != 0 => BrokerId(l.leader as i32),
        _ => BrokerId(-1),
    };
    // v0 asks for every topic with an empty list; later versions with null.
    let asked = match r.topics {
        Some(list) if list.is_empty() && version == 0 => None,
        other => other,
    };
    out.topics = match asked {
        None => state
            .topics()
            .values()
            .map(|t| topic_entry(t, &leaders))
            .collect(),
        Some(asked) => asked
            .into_iter()
            .map(|a| {
                let found = match &a.name {
                    Some(name) => state.topic(name.0.as_str()),
                    None => state.topics().values().find(|t| t.id == a.topic_id),
                };
                match found {
                    Some(t) => topic_entry(t, &leaders),
                    None => unknown_topic(a.name, a.topic_id),
                }
            })
            .collect(),
    };
    out
}
