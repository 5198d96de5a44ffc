//! `tern create-topic`, `tern list-topics`, `tern delete-topic`.

use clap::Args;
use serde::Serialize;
use tern_net::kafka_client::{ClusterMetadata, TopicInfo};

use super::{Out, ServerArgs};
use crate::error::{CliResult, EXIT_CLEAN};
use crate::Common;

#[derive(Args, Debug)]
pub struct CreateTopicArgs {
    /// Topic name (letters, digits, '.', '_', '-').
    pub topic: String,
    /// Partitions; the server's default when not given.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Replicas of each partition; the server's default (3, or fewer on a smaller cluster)
    /// when not given.
    #[arg(long)]
    pub replication_factor: Option<u8>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct ListTopicsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct DeleteTopicArgs {
    /// Topic to delete; its partitions' data is purged on every node.
    pub topic: String,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Serialize)]
struct PartitionJson {
    partition: i32,
    leader: Option<i32>,
    leader_epoch: i32,
    replicas: Vec<i32>,
    in_sync: Vec<i32>,
}

#[derive(Serialize)]
struct TopicJson {
    name: String,
    partitions: Vec<PartitionJson>,
}

#[derive(Serialize)]
struct BrokerJson {
    node_id: i32,
    address: String,
}

#[derive(Serialize)]
struct ListJson {
    cluster_id: Option<String>,
    controller: Option<i32>,
    brokers: Vec<BrokerJson>,
    topics: Vec<TopicJson>,
}

fn topic_json(t: &TopicInfo) -> TopicJson {
    TopicJson {
        name: t.name.clone(),
        partitions: t
            .partitions
            .iter()
            .map(|p| PartitionJson {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                in_sync: p.isr.clone(),
            })
            .collect(),
    }
}

fn list_json(m: &ClusterMetadata) -> ListJson {
    ListJson {
        cluster_id: m.cluster_id.clone(),
        controller: m.controller_id,
        brokers: m
            .brokers
            .iter()
            .map(|b| BrokerJson {
                node_id: b.node_id,
                address: b.addr(),
            })
            .collect(),
        topics: m
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.internal)
            .map(topic_json)
            .collect(),
    }
}

pub(super) fn print_json<T: Serialize>(value: &T) -> CliResult<u8> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::error::CliError::Usage(format!("JSON encoding failed: {e}")))?;
    let mut out = Out::new();
    out.line(&text)?;
    out.flush()?;
    Ok(EXIT_CLEAN)
}

fn leader_text(leader: Option<i32>) -> String {
    leader.map_or_else(|| "none".to_string(), |l| l.to_string())
}

pub fn create(a: CreateTopicArgs) -> CliResult<u8> {
    let mut client = a.server.connect()?;
    let partitions = a.partitions.map_or(-1, |p| p.min(i32::MAX as u32) as i32);
    let replication_factor = a.replication_factor.map_or(-1, i16::from);
    client.create_topic(&a.topic, partitions, replication_factor)?;
    let metadata = client.cached_metadata();
    let info = metadata
        .topic(&a.topic)
        .map(topic_json)
        .unwrap_or(TopicJson {
            name: a.topic.clone(),
            partitions: Vec::new(),
        });
    if a.common.json {
        return print_json(&info);
    }
    let mut out = Out::new();
    let replicas = info.partitions.first().map_or(0, |p| p.replicas.len());
    out.line(&format!(
        "created topic {}: {} partitions, {} replicas each",
        info.name,
        info.partitions.len(),
        replicas
    ))?;
    out.flush()?;
    Ok(EXIT_CLEAN)
}

pub fn list(a: ListTopicsArgs) -> CliResult<u8> {
    let mut client = a.server.connect()?;
    let metadata = client.refresh_metadata()?.clone();
    let doc = list_json(&metadata);
    if a.common.json {
        return print_json(&doc);
    }
    let mut out = Out::new();
    let brokers: Vec<String> = doc
        .brokers
        .iter()
        .map(|b| format!("{}={}", b.node_id, b.address))
        .collect();
    if !out.line(&format!(
        "cluster {}  controller {}  nodes {}",
        doc.cluster_id.as_deref().unwrap_or("?"),
        leader_text(doc.controller),
        brokers.join(",")
    ))? {
        return Ok(EXIT_CLEAN);
    }
    if doc.topics.is_empty() {
        out.line("no topics (create one with `tern create-topic NAME`)")?;
    }
    for t in &doc.topics {
        let replicas = t.partitions.first().map_or(0, |p| p.replicas.len());
        if !out.line(&format!(
            "{}  partitions {}  replicas {}",
            t.name,
            t.partitions.len(),
            replicas
        ))? {
            return Ok(EXIT_CLEAN);
        }
        for p in &t.partitions {
            let line = format!(
                "  {}-{}  leader {}  epoch {}  replicas {:?}  in-sync {:?}",
                t.name,
                p.partition,
                leader_text(p.leader),
                p.leader_epoch,
                p.replicas,
                p.in_sync
            );
            if !out.line(&line)? {
                return Ok(EXIT_CLEAN);
            }
        }
    }
    out.flush()?;
    Ok(EXIT_CLEAN)
}

pub fn delete(a: DeleteTopicArgs) -> CliResult<u8> {
    let mut client = a.server.connect()?;
    client.delete_topic(&a.topic)?;
    if a.common.json {
        return print_json(&serde_json::json!({ "deleted": a.topic }));
    }
    let mut out = Out::new();
    out.line(&format!("deleted topic {}", a.topic))?;
    out.flush()?;
    Ok(EXIT_CLEAN)
}
