//! The client: a bootstrap connection, a metadata cache, one connection per leader broker,
//! and the operations tern's CLI, tests and bench use. Requests to a partition go to its
//! leader; NOT_LEADER and connection failures refresh the metadata and retry, a bounded number
//! of times with a bounded backoff.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, InitProducerIdRequest, ListOffsetsRequest,
    MetadataRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::connection::{ConnectOptions, Connection};
use super::error::{ClientError, ClientResult};
use super::metadata::ClusterMetadata;
use crate::records::{batch_records, parse_batches, whole_batches_len, RecordView};

/// How a produce is acknowledged (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no answer; the client learns nothing (not even the offset).
    None,
    /// acks=1: answered once the leader has made the batch durable.
    Leader,
    /// acks=all (-1): answered once the batch is committed on a majority.
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// Parses `0`, `1`, `all` or `-1`.
    pub fn parse(text: &str) -> Option<Acks> {
        match text {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "all" | "-1" => Some(Acks::All),
            _ => None,
        }
    }
}

/// Which offset ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    /// The next offset to be written (the high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// Settings of a [`Client`]. The defaults suit the CLI.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// HOST:PORT of any node; the others are learnt from Metadata.
    pub bootstrap: String,
    pub connect: ConnectOptions,
    /// Attempts of one operation (the first included) before giving up on retriable errors.
    pub attempts_max: u32,
    /// First backoff between attempts; doubles each time up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How long the server may take to commit a produce or create a topic.
    pub server_timeout: Duration,
}

impl ClientConfig {
    pub fn new(bootstrap: impl Into<String>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into(),
            connect: ConnectOptions::default(),
            attempts_max: 10,
            retry_backoff: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(1),
            server_timeout: Duration::from_secs(10),
        }
    }
}

/// The answer to an acknowledged produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the batch's first record; None with acks=0.
    pub base_offset: Option<i64>,
}

/// Options of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// How long the server may hold the request waiting for `min_bytes` (a long poll).
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// Bytes of record batches the server may return for the partition.
    pub max_bytes: i32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 1 << 20,
        }
    }
}

/// Records read from one partition.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<RecordView>,
}

impl Fetched {
    /// The offset to fetch next: after the last record read, or `from` if none.
    pub fn next_offset(&self, from: i64) -> i64 {
        self.records.last().map(|r| r.offset + 1).unwrap_or(from)
    }
}

/// A client of one tern (or Kafka) cluster. Not shared between threads: each thread opens
/// its own (connections are blocking and carry one request at a time).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    /// Connection used for Metadata and admin requests (to the bootstrap server or, once
    /// known, any broker).
    any: Option<Connection>,
    /// Connections to brokers by node id.
    brokers: HashMap<i32, Connection>,
    metadata: ClusterMetadata,
}

impl Client {
    /// Connects to the bootstrap server and reads the cluster metadata.
    pub fn connect(config: ClientConfig) -> ClientResult<Client> {
        let any = Connection::open(&config.bootstrap, &config.connect)?;
        let mut client = Client {
            config,
            any: Some(any),
            brokers: HashMap::new(),
            metadata: ClusterMetadata::default(),
        };
        client.refresh_metadata()?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The metadata as last read.
    pub fn cached_metadata(&self) -> &ClusterMetadata {
        &self.metadata
    }

    /// A connection for cluster-wide requests, reopened to the bootstrap server (or, failing
    /// that, to a known broker) if the last one broke.
    fn any_connection(&mut self) -> ClientResult<&mut Connection> {
        if self.any.as_ref().is_some_and(|c| c.is_broken()) {
            self.any = None;
        }
        if self.any.is_none() {
            let mut last = match Connection::open(&self.config.bootstrap, &self.config.connect) {
                Ok(c) => {
                    self.any = Some(c);
                    None
                }
                Err(e) => Some(e),
            };
            if last.is_some() {
                for b in self.metadata.brokers.clone() {
                    match Connection::open(&b.addr(), &self.config.connect) {
                        Ok(c) => {
                            self.any = Some(c);
                            last = None;
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        self.any
            .as_mut()
            .ok_or_else(|| ClientError::Invalid("no connection".to_string()))
    }

    /// Reads the metadata of every topic and remembers it.
    pub fn refresh_metadata(&mut self) -> ClientResult<&ClusterMetadata> {
        let mut request = MetadataRequest::default();
        request.topics = None;
        request.allow_auto_topic_creation = false;
        let response = self.any_connection()?.call(&request)?;
        self.metadata = ClusterMetadata::from_response(&response);
        // Connections to brokers that left, or whose address changed, are dropped.
        let metadata = &self.metadata;
        self.brokers.retain(|id, c| {
            metadata
                .broker(*id)
                .is_some_and(|b| b.addr() == c.addr() && !c.is_broken())
        });
        Ok(&self.metadata)
    }

    /// Reads the metadata of the named topics only (an unknown topic comes back with
    /// UNKNOWN_TOPIC_OR_PARTITION in its entry).
    pub fn topic_metadata(&mut self, topics: &[&str]) -> ClientResult<ClusterMetadata> {
        let mut request = MetadataRequest::default();
        request.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut m = MetadataRequestTopic::default();
                    m.name = Some(topic_name(t));
                    m
                })
                .collect(),
        );
        request.allow_auto_topic_creation = false;
        let response = self.any_connection()?.call(&request)?;
        Ok(ClusterMetadata::from_response(&response))
    }

    /// The connection to the current leader of `topic`-`partition`, from the cached metadata.
    fn leader_connection(&mut self, topic: &str, partition: i32) -> ClientResult<&mut Connection> {
        let leader = self.leader_of(topic, partition)?;
        if self.brokers.get(&leader).is_some_and(|c| c.is_broken()) {
            self.brokers.remove(&leader);
        }
        if !self.brokers.contains_key(&leader) {
            let broker =
                self.metadata
                    .broker(leader)
                    .ok_or_else(|| ClientError::UnknownBroker {
                        node_id: leader,
                        topic: topic.to_string(),
                        partition,
                    })?;
            let conn = Connection::open(&broker.addr(), &self.config.connect)?;
            self.brokers.insert(leader, conn);
        }
        self.brokers
            .get_mut(&leader)
            .ok_or_else(|| ClientError::Invalid("no connection".to_string()))
    }

    /// The leader's node id, from the cached metadata.
    pub fn leader_of(&self, topic: &str, partition: i32) -> ClientResult<i32> {
        let t = self
            .metadata
            .topic(topic)
            .filter(|t| t.error_code == 0)
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: topic.to_string(),
            })?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                count: t.partitions.len(),
            })?;
        p.leader.ok_or_else(|| ClientError::NoLeader {
            topic: topic.to_string(),
            partition,
        })
    }

    /// Partition count of `topic`, refreshing the metadata once if the topic is not known.
    pub fn partition_count(&mut self, topic: &str) -> ClientResult<usize> {
        if self.metadata.topic(topic).is_none() {
            self.refresh_metadata()?;
        }
        match self.metadata.topic(topic) {
            Some(t) if t.error_code == 0 => Ok(t.partitions.len()),
            _ => Err(ClientError::UnknownTopic {
                topic: topic.to_string(),
            }),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or `attempts_max` attempts have failed
    /// with retriable errors; between attempts the metadata is refreshed after a backoff.
    /// An unknown topic is looked up once more before it is believed (a topic just created
    /// may not be in the cache yet); after that, a broker that still answers "unknown" for a
    /// topic the refreshed metadata lists is a broker whose view lags (just restarted, a
    /// wiped node rebuilding, the creation not applied there yet): retried like any
    /// retriable error, as Kafka's own clients retry UNKNOWN_TOPIC_OR_PARTITION.
    fn with_retries<T>(
        &mut self,
        api: &'static str,
        mut op: impl FnMut(&mut Client) -> ClientResult<T>,
    ) -> ClientResult<T> {
        let mut backoff = self.config.retry_backoff;
        let mut unknown_topic_rechecked = false;
        let attempts_max = self.config.attempts_max.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match op(self) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let unknown_topic = match &error {
                ClientError::UnknownTopic { topic } => Some(topic.clone()),
                _ => None,
            };
            let recheck = unknown_topic.is_some() && !unknown_topic_rechecked;
            let broker_lags = unknown_topic_rechecked
                && unknown_topic.is_some_and(|topic| {
                    self.metadata
                        .topic(&topic)
                        .is_some_and(|t| t.error_code == 0)
                });
            if !(error.is_retriable() || recheck || broker_lags) {
                return Err(error);
            }
            if recheck {
                unknown_topic_rechecked = true;
            }
            if attempt >= attempts_max {
                return Err(ClientError::RetriesExhausted {
                    api,
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            tracing::debug!(api, attempt, %error, "retrying after a metadata refresh");
            if !recheck {
                thread::sleep(backoff);
                backoff = (backoff * 2).min(self.config.retry_backoff_max);
            }
            if let Err(e) = self.refresh_metadata() {
                if !e.is_retriable() {
                    return Err(e);
                }
            }
        }
    }

    /// Appends `batch` (one or more v2 record batches, see [`crate::records`]) to
    /// `topic`-`partition` on its leader, retrying on leadership changes. The same bytes are
    /// sent on every attempt, so an idempotent producer's retry is recognised as a duplicate.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: Acks,
    ) -> ClientResult<ProduceAck> {
        let timeout_ms = duration_ms_i32(self.config.server_timeout);
        let mut request = ProduceRequest::default();
        request.acks = acks.wire();
        request.timeout_ms = timeout_ms;
        let mut data = PartitionProduceData::default();
        data.index = partition;
        data.records = Some(batch);
        let mut topic_data = TopicProduceData::default();
        topic_data.name = topic_name(topic);
        topic_data.partition_data = vec![data];
        request.topic_data = vec![topic_data];
        let server_timeout = self.config.server_timeout;
        self.with_retries("Produce", |client| {
            let conn = client.leader_connection(topic, partition)?;
            if acks == Acks::None {
                conn.send_only(&request)?;
                return Ok(ProduceAck { base_offset: None });
            }
            let response = conn.call_waiting(&request, server_timeout)?;
            let p = response
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == partition)
                .ok_or_else(|| unexpected(conn_addr(client, topic, partition), "Produce"))?;
            server_result("Produce", p.error_code, topic, partition, &p.error_message)?;
            Ok(ProduceAck {
                base_offset: Some(p.base_offset),
            })
        })
    }

    /// Reads records of `topic`-`partition` from `offset` on (sessionless fetch from the
    /// leader). A batch the server cut at the byte limit is left for the next fetch.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        options: FetchOptions,
    ) -> ClientResult<Fetched> {
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = duration_ms_i32(options.max_wait);
        request.min_bytes = options.min_bytes;
        request.max_bytes = options.max_bytes;
        request.isolation_level = 0;
        request.session_id = 0;
        request.session_epoch = -1;
        let mut fp = FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = options.max_bytes;
        fp.current_leader_epoch = -1;
        fp.log_start_offset = -1;
        let mut ft = FetchTopic::default();
        ft.topic = topic_name(topic);
        ft.partitions = vec![fp];
        request.topics = vec![ft];
        self.with_retries("Fetch", |client| {
            let conn = client.leader_connection(topic, partition)?;
            let response = conn.call_waiting(&request, options.max_wait)?;
            if response.error_code != 0 {
                server_result("Fetch", response.error_code, topic, partition, &None)?;
            }
            let p = response
                .responses
                .iter()
                .filter(|t| t.topic.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| unexpected(conn_addr(client, topic, partition), "Fetch"))?;
            server_result("Fetch", p.error_code, topic, partition, &None)?;
            let mut fetched = Fetched {
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                records: Vec::new(),
            };
            if let Some(bytes) = &p.records {
                fetched.records = decode_records(bytes, offset)?;
            }
            Ok(fetched)
        })
    }

    /// The offset of `spec` in `topic`-`partition` (ListOffsets on the leader).
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> ClientResult<i64> {
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(-1);
        let mut lp = ListOffsetsPartition::default();
        lp.partition_index = partition;
        lp.timestamp = spec.wire();
        lp.current_leader_epoch = -1;
        let mut lt = ListOffsetsTopic::default();
        lt.name = topic_name(topic);
        lt.partitions = vec![lp];
        request.topics = vec![lt];
        self.with_retries("ListOffsets", |client| {
            let conn = client.leader_connection(topic, partition)?;
            let response = conn.call(&request)?;
            let p = response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| unexpected(conn_addr(client, topic, partition), "ListOffsets"))?;
            server_result("ListOffsets", p.error_code, topic, partition, &None)?;
            Ok(p.offset)
        })
    }

    /// Creates `topic` with `partitions` partitions of `replication_factor` replicas (-1: the
    /// server's default), and waits until its metadata shows a leader for every partition
    /// (bounded by the server timeout).
    pub fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> ClientResult<()> {
        let mut request = CreateTopicsRequest::default();
        let mut t = CreatableTopic::default();
        t.name = topic_name(topic);
        t.num_partitions = partitions;
        t.replication_factor = replication_factor;
        request.topics = vec![t];
        request.timeout_ms = duration_ms_i32(self.config.server_timeout);
        request.validate_only = false;
        let server_timeout = self.config.server_timeout;
        self.with_retries("CreateTopics", |client| {
            let conn = client.controller_connection()?;
            let response = conn.call_waiting(&request, server_timeout)?;
            let r = response
                .topics
                .iter()
                .find(|r| r.name.0.as_str() == topic)
                .ok_or_else(|| unexpected(conn.addr().to_string(), "CreateTopics"))?;
            topic_result("CreateTopics", r.error_code, topic, &r.error_message)
        })?;
        self.wait_for_leaders(topic)
    }

    /// Polls the metadata until every partition of `topic` has a leader; bounded by the
    /// server timeout.
    fn wait_for_leaders(&mut self, topic: &str) -> ClientResult<()> {
        let deadline = std::time::Instant::now() + self.config.server_timeout;
        let mut pause = self.config.retry_backoff;
        loop {
            self.refresh_metadata()?;
            let ready = self.metadata.topic(topic).is_some_and(|t| {
                t.error_code == 0
                    && !t.partitions.is_empty()
                    && t.partitions.iter().all(|p| p.leader.is_some())
            });
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClientError::NoLeader {
                    topic: topic.to_string(),
                    partition: self
                        .metadata
                        .topic(topic)
                        .and_then(|t| t.partitions.iter().find(|p| p.leader.is_none()))
                        .map(|p| p.partition)
                        .unwrap_or(0),
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(self.config.retry_backoff_max);
        }
    }

    /// Deletes `topic` (its partitions' data is purged by the nodes).
    pub fn delete_topic(&mut self, topic: &str) -> ClientResult<()> {
        let mut request = DeleteTopicsRequest::default();
        request.topic_names = vec![topic_name(topic)];
        request.timeout_ms = duration_ms_i32(self.config.server_timeout);
        let server_timeout = self.config.server_timeout;
        self.with_retries("DeleteTopics", |client| {
            let conn = client.controller_connection()?;
            let response = conn.call_waiting(&request, server_timeout)?;
            let r = response
                .responses
                .iter()
                .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
                .ok_or_else(|| unexpected(conn.addr().to_string(), "DeleteTopics"))?;
            topic_result("DeleteTopics", r.error_code, topic, &r.error_message)
        })?;
        self.refresh_metadata()?;
        Ok(())
    }

    /// Makes node `to` the preferred leader of `topic`-`partition` and waits (bounded by the
    /// server timeout) until the metadata shows it leading. Sent as AlterPartitionReassignments
    /// with the partition's current replicas reordered, `to` first: a tern node takes that as
    /// "change the preferred leader", and the leader hands over once `to` is caught up
    /// (docs/clients.md).
    /// The admin HTTP address of the node at the bootstrap address (DescribeConfigs of its
    /// BROKER resource, read-only config `tern.http.addr`): where tern's requests that Kafka
    /// has no equivalent for go (`tern cluster add-node` / `remove-node`).
    pub fn http_addr(&mut self) -> ClientResult<String> {
        const KEY: &str = "tern.http.addr";
        let api = "DescribeConfigs";
        let mut resource = DescribeConfigsResource::default();
        resource.resource_type = 4; // BROKER
        resource.resource_name = StrBytes::from_static_str("");
        resource.configuration_keys = Some(vec![StrBytes::from_static_str(KEY)]);
        let mut request = DescribeConfigsRequest::default();
        request.resources = vec![resource];
        let mut conn = Connection::open(&self.config.bootstrap, &self.config.connect)?;
        let response = conn.call(&request)?;
        let result = response
            .results
            .first()
            .ok_or_else(|| unexpected(conn.addr().to_string(), api))?;
        if result.error_code != 0 {
            return Err(ClientError::Invalid(format!(
                "{}: DescribeConfigs refused ({}): {}",
                conn.addr(),
                result.error_code,
                result
                    .error_message
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("no message")
            )));
        }
        result
            .configs
            .iter()
            .find(|c| c.name.as_str() == KEY)
            .and_then(|c| c.value.as_ref())
            .map(|v| v.as_str().to_string())
            .ok_or_else(|| {
                ClientError::Invalid(format!(
                    "{} does not name its HTTP address ({KEY}): is it a tern node?",
                    conn.addr()
                ))
            })
    }

    pub fn transfer_leader(&mut self, topic: &str, partition: i32, to: i32) -> ClientResult<()> {
        self.refresh_metadata()?;
        let t = self
            .metadata
            .topic(topic)
            .filter(|t| t.error_code == 0)
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: topic.to_string(),
            })?;
        let replicas = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.replicas.clone())
            .ok_or_else(|| ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                count: t.partitions.len(),
            })?;
        if !replicas.contains(&to) {
            return Err(ClientError::Invalid(format!(
                "node {to} holds no replica of {topic} partition {partition} (replicas: {replicas:?})"
            )));
        }
        let mut order = vec![to];
        order.extend(replicas.iter().copied().filter(|&r| r != to));
        let mut p = ReassignablePartition::default();
        p.partition_index = partition;
        p.replicas = Some(order.into_iter().map(BrokerId).collect());
        let mut rt = ReassignableTopic::default();
        rt.name = topic_name(topic);
        rt.partitions = vec![p];
        let mut request = AlterPartitionReassignmentsRequest::default();
        request.timeout_ms = duration_ms_i32(self.config.server_timeout);
        request.topics = vec![rt];
        let api = "AlterPartitionReassignments";
        self.with_retries(api, |client| {
            let conn = client.controller_connection()?;
            let response = conn.call(&request)?;
            if response.error_code != 0 {
                return topic_result(api, response.error_code, topic, &response.error_message);
            }
            let r = response
                .responses
                .iter()
                .find(|r| r.name.0.as_str() == topic)
                .and_then(|r| r.partitions.iter().find(|p| p.partition_index == partition))
                .ok_or_else(|| unexpected(conn.addr().to_string(), api))?;
            server_result(api, r.error_code, topic, partition, &r.error_message)
        })?;
        let deadline = std::time::Instant::now() + self.config.server_timeout;
        let mut pause = self.config.retry_backoff;
        loop {
            self.refresh_metadata()?;
            let leader = self.leader_of(topic, partition).ok();
            if leader == Some(to) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClientError::Invalid(format!(
                    "node {to} is now the preferred leader of {topic} partition {partition}, but                      did not lead within {:?} (leader: {leader:?}); it takes over once it is a                      caught-up voter",
                    self.config.server_timeout
                )));
            }
            thread::sleep(pause);
            pause = (pause * 2).min(self.config.retry_backoff_max);
        }
    }

    /// A connection to the controller that the cached metadata names, or to any node when it
    /// names none (a refusal with NOT_CONTROLLER then refreshes the metadata and retries).
    fn controller_connection(&mut self) -> ClientResult<&mut Connection> {
        let controller = self
            .metadata
            .controller_id
            .filter(|id| self.metadata.broker(*id).is_some());
        let Some(id) = controller else {
            return self.any_connection();
        };
        if self.brokers.get(&id).is_some_and(|c| c.is_broken()) {
            self.brokers.remove(&id);
        }
        if !self.brokers.contains_key(&id) {
            let addr = match self.metadata.broker(id) {
                Some(b) => b.addr(),
                None => return self.any_connection(),
            };
            let conn = Connection::open(&addr, &self.config.connect)?;
            self.brokers.insert(id, conn);
        }
        self.brokers
            .get_mut(&id)
            .ok_or_else(|| ClientError::Invalid("no connection".to_string()))
    }

    /// A new producer id and epoch for an idempotent producer.
    pub fn init_producer_id(&mut self) -> ClientResult<(i64, i16)> {
        let mut request = InitProducerIdRequest::default();
        request.transactional_id = None;
        request.transaction_timeout_ms = -1;
        request.producer_id = ProducerId(-1);
        request.producer_epoch = -1;
        self.with_retries("InitProducerId", |client| {
            let response = client.any_connection()?.call(&request)?;
            if response.error_code != 0 {
                return Err(ClientError::Server {
                    api: "InitProducerId",
                    code: response.error_code,
                    topic: None,
                    partition: None,
                    message: None,
                });
            }
            Ok((response.producer_id.0, response.producer_epoch))
        })
    }
}

/// Whole batches of a fetch answer, decoded, keeping records at or after `from`.
pub fn decode_records(bytes: &Bytes, from: i64) -> ClientResult<Vec<RecordView>> {
    let whole = &bytes[..whole_batches_len(bytes)];
    if whole.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for info in parse_batches(whole)? {
        let batch = &whole[info.position..info.position + info.bytes];
        out.extend(
            batch_records(batch, &info)?
                .into_iter()
                .filter(|r| r.offset >= from),
        );
    }
    Ok(out)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn duration_ms_i32(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn conn_addr(client: &Client, topic: &str, partition: i32) -> String {
    client
        .leader_of(topic, partition)
        .ok()
        .and_then(|id| client.metadata.broker(id))
        .map(|b| b.addr())
        .unwrap_or_else(|| client.config.bootstrap.clone())
}

fn unexpected(addr: String, api: &'static str) -> ClientError {
    ClientError::UnexpectedAnswer {
        addr,
        api,
        what: "response without the partition or topic asked about",
    }
}

/// A partition-level error code as a typed error (an unknown topic gets its own variant).
fn server_result(
    api: &'static str,
    code: i16,
    topic: &str,
    partition: i32,
    message: &Option<StrBytes>,
) -> ClientResult<()> {
    error_result(api, code, topic, Some(partition), message)
}

/// A topic-level error code (CreateTopics, DeleteTopics) as a typed error.
fn topic_result(
    api: &'static str,
    code: i16,
    topic: &str,
    message: &Option<StrBytes>,
) -> ClientResult<()> {
    error_result(api, code, topic, None, message)
}

/// The one mapping of a Kafka error code to a typed error.
fn error_result(
    api: &'static str,
    code: i16,
    topic: &str,
    partition: Option<i32>,
    message: &Option<StrBytes>,
) -> ClientResult<()> {
    use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
    match code.err() {
        None => Ok(()),
        Some(ResponseError::UnknownTopicOrPartition) => Err(ClientError::UnknownTopic {
            topic: topic.to_string(),
        }),
        Some(_) => Err(ClientError::Server {
            api,
            code,
            topic: Some(topic.to_string()),
            partition,
            message: message.as_ref().map(|m| m.as_str().to_string()),
        }),
    }
}
