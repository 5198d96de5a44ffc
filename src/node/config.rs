//! `tern serve` configuration: defaults, the `tern.toml` file, command-line flags over it, and
//! one `validate()` that refuses out-of-range values by the key's name.
//!
//! Precedence: built-in defaults < `--config FILE` < flags. Every key and its default is
//! documented in `docs/configuration.md`; the tests below check that the documented defaults
//! are the ones in code (`defaults_match_documented_file`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer};
use tern_engine::constants::SHARDS_MAX;
use tern_engine::{EngineConfig, RecoveryMode, WalConfig};
use uuid::Uuid;

use crate::node::controller::{Member, Retention};

/// Node ids are 1..=NODE_ID_MAX; 0 means "no node" in the Raft core.
pub const NODE_ID_MAX: u64 = u32::MAX as u64;
/// Initial voters listed in `peers`, at most. Raft groups of more than a handful of voters
/// are slow to commit; the bound keeps a typo from creating a thousand-voter controller.
pub const PEERS_MAX: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and values of the wrong type; toml's message names the key
    /// and the line.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {why}")]
    Invalid { key: String, why: String },
}

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        why: why.into(),
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// One initial voter: `ID=IP:PORT` (the peer address of node ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PeerSpec {
    pub node_id: u64,
    pub addr: SocketAddr,
}

impl FromStr for PeerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not ID=IP:PORT"))?;
        let node_id = id
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("{s:?}: node id {id:?}: {e}"))?;
        let addr = addr
            .trim()
            .parse::<SocketAddr>()
            .map_err(|e| format!("{s:?}: address {addr:?}: {e} (expected IP:PORT)"))?;
        Ok(PeerSpec { node_id, addr })
    }
}

impl TryFrom<String> for PeerSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.node_id, self.addr)
    }
}

/// The `--peers` flag's value: a whole list (one flag, comma-separated), so that clap does
/// not treat it as repeated values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerList(pub Vec<PeerSpec>);

impl FromStr for PeerList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_peer_list(s).map(PeerList)
    }
}

/// Parses `ID=IP:PORT,ID=IP:PORT,...` (the `--peers` flag); an empty string is no peers.
pub fn parse_peer_list(s: &str) -> Result<Vec<PeerSpec>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PeerSpec::from_str)
        .collect()
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    humantime_serde::deserialize(d)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_optional_duration(&text).map_err(serde::de::Error::custom)
}

/// A size written as a number of bytes or as text (`"10 GiB"`, `"none"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum BytesOrText {
    Bytes(u64),
    Text(String),
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    match BytesOrText::deserialize(d)? {
        BytesOrText::Bytes(n) => Ok(Some(ByteSize::b(n))),
        BytesOrText::Text(text) => parse_optional_bytes(&text).map_err(serde::de::Error::custom),
    }
}

fn de_recovery_mode<'de, D: Deserializer<'de>>(d: D) -> Result<RecoveryMode, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// `"none"` or a humantime duration (`"7days"`, `"12h"`).
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "none" {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| format!("{text:?}: {e} (expected a duration such as \"7days\" or \"none\")"))
}

/// `"none"` or a size (`"10 GiB"`).
pub fn parse_optional_bytes(text: &str) -> Result<Option<ByteSize>, String> {
    if text.trim() == "none" {
        return Ok(None);
    }
    text.trim()
        .parse::<ByteSize>()
        .map(Some)
        .map_err(|e| format!("{text:?}: {e} (expected a size such as \"10 GiB\" or \"none\")"))
}

/// Raft timing. Durations must be whole multiples of `tick`; the Raft core counts ticks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    #[serde(deserialize_with = "de_duration")]
    pub tick: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub heartbeat_interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub election_timeout_min: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub election_timeout_max: Duration,
    /// Idle groups go quiet: no heartbeats, no election timers (docs/raft.md, "Quiescence of
    /// idle groups"); the per-node-pair heartbeat keeps them alive.
    pub quiesce_idle_groups: bool,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            tick: Duration::from_millis(10),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            quiesce_idle_groups: true,
        }
    }
}

/// The same timing in ticks, as `tern_raft::Config` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTicks {
    pub heartbeat_ticks: u64,
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
}

impl RaftSection {
    /// Valid only after [`NodeConfig::validate`].
    pub fn ticks(&self) -> RaftTicks {
        let tick = self.tick.as_nanos().max(1);
        let n = |d: Duration| (d.as_nanos() / tick) as u64;
        RaftTicks {
            heartbeat_ticks: n(self.heartbeat_interval),
            election_ticks_min: n(self.election_timeout_min),
            election_ticks_max: n(self.election_timeout_max),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.tick < Duration::from_millis(1) || self.tick > Duration::from_secs(1) {
            return Err(invalid(
                "raft.tick",
                format!("{:?} must be between 1ms and 1s", self.tick),
            ));
        }
        let tick = self.tick.as_nanos();
        for (key, d) in [
            ("raft.heartbeat_interval", self.heartbeat_interval),
            ("raft.election_timeout_min", self.election_timeout_min),
            ("raft.election_timeout_max", self.election_timeout_max),
        ] {
            if d.as_nanos() == 0 || d.as_nanos() % tick != 0 {
                return Err(invalid(
                    key,
                    format!(
                        "{d:?} must be a positive multiple of raft.tick ({:?})",
                        self.tick
                    ),
                ));
            }
        }
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(invalid(
                "raft.election_timeout_min",
                format!(
                    "{:?} must exceed raft.heartbeat_interval ({:?}), or followers elect a new \
                     leader between two heartbeats",
                    self.election_timeout_min, self.heartbeat_interval
                ),
            ));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(invalid(
                "raft.election_timeout_max",
                format!(
                    "{:?} must exceed raft.election_timeout_min ({:?}): the randomized range \
                     is what keeps elections from colliding",
                    self.election_timeout_max, self.election_timeout_min
                ),
            ));
        }
        if self.election_timeout_max > Duration::from_secs(60) {
            return Err(invalid(
                "raft.election_timeout_max",
                format!("{:?} is over the 60s bound", self.election_timeout_max),
            ));
        }
        Ok(())
    }
}

/// The engine settings an operator tunes (names as in `tern_engine::WalConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub segment_bytes: ByteSize,
    pub batch_bytes_max: ByteSize,
    #[serde(deserialize_with = "de_duration")]
    pub batch_delay_max: Duration,
    pub batches_inflight_max: usize,
    pub pending_bytes_max: ByteSize,
    #[serde(deserialize_with = "de_recovery_mode")]
    pub recovery_mode: RecoveryMode,
    pub io_memory_bytes: ByteSize,
    pub pin_cpus: bool,
}

impl Default for EngineSection {
    fn default() -> Self {
        let wal = WalConfig::default();
        let engine = EngineConfig::default();
        EngineSection {
            segment_bytes: ByteSize::b(wal.segment_bytes),
            batch_bytes_max: ByteSize::b(wal.batch_bytes_max),
            batch_delay_max: wal.batch_delay_max,
            batches_inflight_max: wal.batches_inflight_max,
            pending_bytes_max: ByteSize::b(wal.pending_bytes_max),
            recovery_mode: wal.recovery_mode,
            io_memory_bytes: ByteSize::b(engine.io_memory_bytes as u64),
            pin_cpus: engine.pin_cpus,
        }
    }
}

/// Retention of topics created without their own (Kafka's `retention.bytes`/`retention.ms`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Per partition; `None` keeps everything.
    #[serde(deserialize_with = "de_opt_bytes")]
    pub bytes_max: Option<ByteSize>,
    /// Records older than this are compacted away; `None` keeps everything.
    #[serde(deserialize_with = "de_opt_duration")]
    pub age_max: Option<Duration>,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            bytes_max: None,
            age_max: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// Replica recovery (snapshot streaming to lagging or rebuilt replicas) limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySection {
    /// Node-wide budget shared by the shards, per second, for sending and receiving
    /// snapshot and catch-up data; 0 = no limit.
    pub bandwidth_bytes_per_sec_max: ByteSize,
    /// Partitions recovering at once on one shard (the controller is always first).
    pub partitions_per_shard_max: u32,
    /// Pause between passes of the background scrubber (reads every located entry, hands
    /// damage to the repair from peers); `None` ("none"): no scrubber.
    #[serde(deserialize_with = "de_opt_duration")]
    pub scrub_interval: Option<Duration>,
    /// The scrubber's read budget per shard, per second.
    pub scrub_bytes_per_sec_max: ByteSize,
    /// A partition writes an offset checkpoint after this much applied payload (as well as
    /// every 1024 entries): a bound on what a restart reads to rebuild its offsets.
    pub offset_checkpoint_bytes: ByteSize,
    /// Recovery stream: bytes a rebuilding replica asks for per chunk.
    pub chunk_bytes: ByteSize,
    /// Recovery stream: chunks requested at once per partition.
    pub chunks_inflight_max: u32,
    /// Recovery stream: how long a chunk request waits for its answer.
    #[serde(deserialize_with = "de_duration")]
    pub chunk_timeout: Duration,
    /// Recovery stream: a rebuilding partition pulls chunks only while its log ends more than
    /// this many entries before its leader's commit.
    pub lag_entries_max: u64,
}

impl Default for RecoverySection {
    fn default() -> Self {
        RecoverySection {
            bandwidth_bytes_per_sec_max: ByteSize::mib(100),
            partitions_per_shard_max: 2,
            scrub_interval: Some(Duration::from_secs(24 * 3600)),
            scrub_bytes_per_sec_max: ByteSize::mib(8),
            offset_checkpoint_bytes: ByteSize::b(crate::node::offset_checkpoint::CHECKPOINT_BYTES),
            chunk_bytes: ByteSize::mib(1),
            chunks_inflight_max: 4,
            chunk_timeout: Duration::from_secs(5),
            lag_entries_max: 1024,
        }
    }
}

impl RecoverySection {
    /// The recovery stream's settings with times in ticks of `tick_ms`; back-off from
    /// 100 ms to 10 s (docs/replication.md, section 2).
    pub fn stream_limits(&self, tick_ms: u64) -> super::recovery_stream_rules::StreamLimits {
        let ticks = |ms: u64| ms.div_ceil(tick_ms.max(1)).max(1);
        super::recovery_stream_rules::StreamLimits {
            chunk_bytes: self.chunk_bytes.as_u64(),
            chunks_inflight_max: self.chunks_inflight_max,
            chunk_timeout_ticks: ticks(self.chunk_timeout.as_millis() as u64),
            lag_entries_max: self.lag_entries_max,
            backoff_min_ticks: ticks(100),
            backoff_max_ticks: ticks(10_000),
            tick_ms: tick_ms.max(1),
        }
    }
}

/// Everything `tern serve` is configured with. Top-level keys of `tern.toml` are the fields
/// up to `shutdown_timeout`; the rest are `[raft]`, `[engine]`, `[retention]`, `[recovery]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub node_id: u64,
    /// Needed to create the data directory of a node of a multi-node cluster (the same on
    /// every node); a standalone node generates one. Once the directory exists it must match.
    pub cluster_id: Option<Uuid>,
    pub kafka_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Initial voters of the controller, this node included; empty = single-node cluster.
    pub peers: Vec<PeerSpec>,
    /// 0 = one per CPU. Fixed when the data directory is created.
    pub shards: u32,
    pub read_only: bool,
    /// A single-node cluster that opens no peer listener and refuses to grow.
    pub standalone: bool,
    /// Flag only (`--bootstrap`): this start creates a new cluster with `peers` as its
    /// initial voters, without asking them first (see `bootstrap.rs`).
    #[serde(skip)]
    pub bootstrap: bool,
    /// Flag only (`--rebuild`): a voter whose data directory was wiped is rebuilt from its
    /// peers under its old id instead of being refused (docs/replication.md).
    #[serde(skip)]
    pub rebuild: bool,
    /// Flag only (`--force-new-cluster`): before serving, make this node the only voter of
    /// every group it holds, the controller included, keeping what it had committed
    /// (`force_new_cluster.rs`; docs/operations/cluster.md, section 6). A one-shot recovery
    /// action, so deliberately not a `tern.toml` key that could stay set.
    #[serde(skip)]
    pub force_new_cluster: bool,
    pub log_format: LogFormat,
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    pub raft: RaftSection,
    pub engine: EngineSection,
    pub retention: RetentionSection,
    pub recovery: RecoverySection,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./tern-data"),
            node_id: 1,
            cluster_id: None,
            kafka_addr: loopback(9092),
            peer_addr: loopback(9093),
            http_addr: loopback(9090),
            peers: Vec::new(),
            shards: 0,
            read_only: false,
            standalone: false,
            bootstrap: false,
            rebuild: false,
            force_new_cluster: false,
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(10),
            raft: RaftSection::default(),
            engine: EngineSection::default(),
            retention: RetentionSection::default(),
            recovery: RecoverySection::default(),
        }
    }
}

/// The flags of `tern serve`; each one, when given, replaces the file's key of the same name.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeFlags {
    /// Configuration file (TOML; keys in docs/configuration.md). Without it, defaults apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./tern-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's id, 1.. [default: 1]. Fixed when the data directory is created.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<u64>,
    /// Cluster id (a UUID). Required to create a node of a multi-node cluster (the same on
    /// every node); a standalone node generates one at first start.
    #[arg(long, value_name = "UUID")]
    pub cluster_id: Option<Uuid>,
    /// Kafka client listener [default: 127.0.0.1:9092].
    #[arg(long, value_name = "IP:PORT")]
    pub kafka_addr: Option<SocketAddr>,
    /// Peer (Raft) listener [default: 127.0.0.1:9093].
    #[arg(long, value_name = "IP:PORT")]
    pub peer_addr: Option<SocketAddr>,
    /// HTTP listener for /metrics, /health, admin [default: 127.0.0.1:9090].
    #[arg(long, value_name = "IP:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// Initial voters, this node included: ID=IP:PORT,... (peer addresses). Empty: a
    /// single-node cluster.
    #[arg(long, value_name = "ID=IP:PORT,...")]
    pub peers: Option<PeerList>,
    /// Shards (pinned executors), 0 = one per CPU [default: 0]. Fixed at creation.
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Refuse produce and topic changes; reads keep working.
    #[arg(long)]
    pub read_only: bool,
    /// Single-node cluster without a peer listener; refuses --peers naming other nodes.
    #[arg(long)]
    pub standalone: bool,
    /// This start creates a new cluster: a node whose data directory is new becomes a voter
    /// of it at once, without asking its peers (as etcd's --initial-cluster-state=new). Never
    /// pass it to a node whose data was lost: it would forget the votes it gave.
    #[arg(long)]
    pub bootstrap: bool,
    /// This node's data directory was lost or wiped and the cluster still counts it as a
    /// voter: rebuild it from its peers under its old id. Until every partition is rebuilt it
    /// grants no votes and acknowledges nothing its leader has not already committed, so it
    /// cannot forget a promise (docs/replication.md). Without the flag such a start is
    /// refused; with it, a directory that was not wiped starts normally.
    #[arg(long)]
    pub rebuild: bool,
    /// Recovery when no majority of the cluster can be brought back consistent (the
    /// replicas diverged, or the other nodes are lost): this node becomes the only voter of
    /// every group it holds and the controller's only member, keeping everything it had
    /// committed and dropping the entries it had not seen committed. The other nodes are
    /// then wiped and added back with `tern cluster add-node` (docs/operations/cluster.md,
    /// section 6). Refused on an empty or rebuilding directory; running it again is harmless.
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Log line format [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// WAL recovery mode: tolerate-tail, absolute, tolerate-any [default: tolerate-tail].
    #[arg(long, value_name = "MODE")]
    pub recovery_mode: Option<RecoveryMode>,
}

impl NodeConfig {
    /// Parses a `tern.toml` text; unknown keys are refused by name. Does not validate.
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Defaults, then the `--config` file, then the flags; validated.
    pub fn load(flags: &ServeFlags) -> Result<NodeConfig, ConfigError> {
        let mut cfg = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                NodeConfig::from_toml(&text, path)?
            }
            None => NodeConfig::default(),
        };
        cfg.apply_flags(flags);
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn apply_flags(&mut self, flags: &ServeFlags) {
        if let Some(v) = &flags.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = flags.node_id {
            self.node_id = v;
        }
        if let Some(v) = flags.cluster_id {
            self.cluster_id = Some(v);
        }
        if let Some(v) = flags.kafka_addr {
            self.kafka_addr = v;
        }
        if let Some(v) = flags.peer_addr {
            self.peer_addr = v;
        }
        if let Some(v) = flags.http_addr {
            self.http_addr = v;
        }
        if let Some(v) = &flags.peers {
            self.peers = v.0.clone();
        }
        if let Some(v) = flags.shards {
            self.shards = v;
        }
        // Boolean flags can only turn a setting on: the file's `true` stays true.
        self.read_only |= flags.read_only;
        self.standalone |= flags.standalone;
        self.bootstrap |= flags.bootstrap;
        self.rebuild |= flags.rebuild;
        self.force_new_cluster |= flags.force_new_cluster;
        if let Some(v) = flags.log_format {
            self.log_format = v;
        }
        if let Some(v) = flags.recovery_mode {
            self.engine.recovery_mode = v;
        }
    }

    /// The other initial voters (without this node).
    pub fn other_peers(&self) -> impl Iterator<Item = &PeerSpec> {
        self.peers.iter().filter(move |p| p.node_id != self.node_id)
    }

    /// True when the controller has voters besides this node.
    pub fn is_multi_node(&self) -> bool {
        self.other_peers().next().is_some()
    }

    /// This node as a controller member (what it proposes about itself once the controller
    /// has a leader; an unchanged member is a no-op update).
    pub fn member(&self) -> Member {
        Member {
            node_id: self.node_id,
            peer_addr: self.peer_addr,
            kafka_addr: self.kafka_addr,
            http_addr: self.http_addr,
        }
    }

    /// Retention of a topic created without its own.
    pub fn default_retention(&self) -> Retention {
        Retention {
            bytes_max: self.retention.bytes_max.map(|b| b.as_u64()),
            age_ms_max: self
                .retention
                .age_max
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Shard count for a new data directory (0 resolved to the CPU count).
    pub fn shards_resolved(&self) -> u32 {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
                .min(SHARDS_MAX)
        } else {
            self.shards
        }
    }

    /// The engine's configuration. Valid only after [`NodeConfig::validate`].
    /// The background scrubber's settings, `None` when `[recovery] scrub_interval = "none"`.
    pub fn scrub_config(&self) -> Option<crate::node::shard::ScrubConfig> {
        self.recovery
            .scrub_interval
            .map(|interval| crate::node::shard::ScrubConfig {
                interval,
                bytes_per_sec_max: self.recovery.scrub_bytes_per_sec_max.as_u64(),
            })
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            shards: self.shards_resolved(),
            pin_cpus: self.engine.pin_cpus,
            io_memory_bytes: self.engine.io_memory_bytes.as_u64() as usize,
            wal: WalConfig {
                segment_bytes: self.engine.segment_bytes.as_u64(),
                batch_bytes_max: self.engine.batch_bytes_max.as_u64(),
                batch_delay_max: self.engine.batch_delay_max,
                batches_inflight_max: self.engine.batches_inflight_max,
                pending_bytes_max: self.engine.pending_bytes_max.as_u64(),
                recovery_mode: self.engine.recovery_mode,
                ..WalConfig::default()
            },
        }
    }

    /// Refuses any out-of-range or contradictory value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if !(1..=NODE_ID_MAX).contains(&self.node_id) {
            return Err(invalid(
                "node_id",
                format!("{} must be between 1 and {NODE_ID_MAX}", self.node_id),
            ));
        }
        if self.cluster_id.is_some_and(|id| id.is_nil()) {
            return Err(invalid("cluster_id", "the nil UUID is not a cluster id"));
        }
        self.validate_listeners()?;
        self.validate_peers()?;
        if self.force_new_cluster && (self.rebuild || self.bootstrap) {
            return Err(invalid(
                "force_new_cluster",
                "--force-new-cluster keeps this node's data as the cluster's; it cannot be \
                 combined with --rebuild or --bootstrap (which start from an empty directory)",
            ));
        }
        if self.shards > SHARDS_MAX {
            return Err(invalid(
                "shards",
                format!(
                    "{} must be between 0 (one per CPU) and {SHARDS_MAX}",
                    self.shards
                ),
            ));
        }
        if self.shutdown_timeout < Duration::from_secs(1)
            || self.shutdown_timeout > Duration::from_secs(600)
        {
            return Err(invalid(
                "shutdown_timeout",
                format!("{:?} must be between 1s and 10min", self.shutdown_timeout),
            ));
        }
        self.raft.validate()?;
        if self.engine.io_memory_bytes.as_u64() < (1 << 20)
            || self.engine.io_memory_bytes.as_u64() > (1 << 34)
        {
            return Err(invalid(
                "engine.io_memory_bytes",
                format!(
                    "{} must be between 1 MiB and 16 GiB",
                    self.engine.io_memory_bytes
                ),
            ));
        }
        // The engine owns the rules of its own settings (one implementation of each rule).
        self.engine_config().validate().map_err(|e| match e {
            tern_engine::Error::Config { key, why } => invalid(&format!("engine.{key}"), why),
            other => invalid("engine", other.to_string()),
        })?;
        if self.retention.bytes_max.is_some_and(|b| b.as_u64() == 0) {
            return Err(invalid(
                "retention.bytes_max",
                "0 would delete every record; use \"none\" to keep everything",
            ));
        }
        if self
            .retention
            .age_max
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(invalid(
                "retention.age_max",
                "must be at least 1s; use \"none\" to keep everything",
            ));
        }
        let budget = self.recovery.bandwidth_bytes_per_sec_max.as_u64();
        if budget != 0 && budget < (1 << 20) {
            return Err(invalid(
                "recovery.bandwidth_bytes_per_sec_max",
                format!(
                    "{} is under 1 MiB: a rebuild would never finish (0 means no limit)",
                    self.recovery.bandwidth_bytes_per_sec_max
                ),
            ));
        }
        if self
            .recovery
            .scrub_interval
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(invalid(
                "recovery.scrub_interval",
                "must be at least 1s; use \"none\" to turn the scrubber off",
            ));
        }
        if self.recovery.scrub_bytes_per_sec_max.as_u64() < (64 << 10) {
            return Err(invalid(
                "recovery.scrub_bytes_per_sec_max",
                format!(
                    "{} is under 64 KiB: a pass would never finish",
                    self.recovery.scrub_bytes_per_sec_max
                ),
            ));
        }
        if self.recovery.offset_checkpoint_bytes.as_u64() < (1 << 20) {
            return Err(invalid(
                "recovery.offset_checkpoint_bytes",
                format!(
                    "{} is under 1 MiB: a checkpoint (up to 64 KiB) would cost more than the \
                     entries it saves reading",
                    self.recovery.offset_checkpoint_bytes
                ),
            ));
        }
        let chunk = self.recovery.chunk_bytes.as_u64();
        if !((4 << 10)..=(8 << 20)).contains(&chunk) {
            return Err(invalid(
                "recovery.chunk_bytes",
                format!(
                    "{} must be between 4 KiB and 8 MiB",
                    self.recovery.chunk_bytes
                ),
            ));
        }
        if !(1..=64).contains(&self.recovery.chunks_inflight_max) {
            return Err(invalid(
                "recovery.chunks_inflight_max",
                format!(
                    "{} must be between 1 and 64",
                    self.recovery.chunks_inflight_max
                ),
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600))
            .contains(&self.recovery.chunk_timeout)
        {
            return Err(invalid(
                "recovery.chunk_timeout",
                "must be between 100ms and 10min",
            ));
        }
        if self.recovery.lag_entries_max == 0 {
            return Err(invalid(
                "recovery.lag_entries_max",
                "must be at least 1 (AppendEntries carries the last entries)",
            ));
        }
        if !(1..=64).contains(&self.recovery.partitions_per_shard_max) {
            return Err(invalid(
                "recovery.partitions_per_shard_max",
                format!(
                    "{} must be between 1 and 64",
                    self.recovery.partitions_per_shard_max
                ),
            ));
        }
        Ok(())
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let listeners = [
            ("kafka_addr", self.kafka_addr),
            ("peer_addr", self.peer_addr),
            ("http_addr", self.http_addr),
        ];
        for (i, (key, a)) in listeners.iter().enumerate() {
            if a.port() == 0 {
                return Err(invalid(key, format!("{a}: port 0 is not a fixed address")));
            }
            for (other_key, b) in &listeners[..i] {
                if a.port() == b.port()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
                {
                    return Err(invalid(key, format!("{a} collides with {other_key} ({b})")));
                }
            }
        }
        Ok(())
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        if self.peers.len() > PEERS_MAX {
            return Err(invalid(
                "peers",
                format!("{} voters listed; at most {PEERS_MAX}", self.peers.len()),
            ));
        }
        for (i, p) in self.peers.iter().enumerate() {
            if !(1..=NODE_ID_MAX).contains(&p.node_id) {
                return Err(invalid(
                    "peers",
                    format!("{p}: node id must be between 1 and {NODE_ID_MAX}"),
                ));
            }
            if p.addr.ip().is_unspecified() || p.addr.port() == 0 {
                return Err(invalid(
                    "peers",
                    format!("{p}: a peer address must be one others can connect to"),
                ));
            }
            for q in &self.peers[..i] {
                if q.node_id == p.node_id {
                    return Err(invalid("peers", format!("node {} listed twice", p.node_id)));
                }
                if q.addr == p.addr {
                    return Err(invalid("peers", format!("{p} and {q} share an address")));
                }
            }
        }
        if self.peers.is_empty() {
            return Ok(());
        }
        let me = self
            .peers
            .iter()
            .find(|p| p.node_id == self.node_id)
            .ok_or_else(|| {
                invalid(
                    "peers",
                    format!(
                        "the initial voters must include this node (node_id = {})",
                        self.node_id
                    ),
                )
            })?;
        let binds_there = me.addr == self.peer_addr
            || (self.peer_addr.ip().is_unspecified() && me.addr.port() == self.peer_addr.port());
        if !binds_there {
            return Err(invalid(
                "peer_addr",
                format!(
                    "{} is not this node's address in peers ({me})",
                    self.peer_addr
                ),
            ));
        }
        if self.standalone && self.is_multi_node() {
            return Err(invalid(
                "standalone",
                "a standalone node has no peers, but peers lists other nodes",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let cfg = NodeConfig::from_toml(text, Path::new("tern.toml"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an Invalid error, got {other}"),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg, NodeConfig::default());
        assert_eq!(cfg.data_dir, PathBuf::from("./tern-data"));
        assert_eq!(cfg.kafka_addr, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(
            cfg.raft.ticks(),
            RaftTicks {
                heartbeat_ticks: 5,
                election_ticks_min: 15,
                election_ticks_max: 30
            }
        );
    }

    /// The example in docs/configuration.md spells out every key with its default; parsing
    /// it must give exactly the defaults, so the document cannot drift from the code.
    #[test]
    fn defaults_match_documented_file() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("closed block");
        let cfg = parse(&doc[start..end]).unwrap();
        assert_eq!(cfg, NodeConfig::default());
    }

    #[test]
    fn sizes_and_durations_in_human_units() {
        let cfg = parse(
            "[engine]\nsegment_bytes = \"128 MiB\"\nbatch_delay_max = \"2ms\"\n\
             [retention]\nbytes_max = \"10 GiB\"\nage_max = \"none\"\n",
        )
        .unwrap();
        assert_eq!(cfg.engine.segment_bytes, ByteSize::mib(128));
        assert_eq!(cfg.engine.batch_delay_max, Duration::from_millis(2));
        assert_eq!(cfg.retention.bytes_max, Some(ByteSize::gib(10)));
        assert_eq!(cfg.retention.age_max, None);
        assert_eq!(cfg.engine_config().wal.segment_bytes, 128 << 20);
        assert_eq!(
            cfg.default_retention(),
            Retention {
                bytes_max: Some(10 << 30),
                age_ms_max: None
            }
        );
        assert_eq!(
            NodeConfig::default().default_retention().age_ms_max,
            Some(7 * 24 * 3600 * 1000)
        );
        assert_eq!(cfg.member().kafka_addr, cfg.kafka_addr);
    }

    #[test]
    fn plain_numbers_are_bytes_and_cluster_id_is_a_uuid() {
        let cfg = parse(
            "cluster_id = \"67e55044-10b1-426f-9247-bb680e5fe0c8\"\n\
             [engine]\nbatch_bytes_max = 65536\n[retention]\nbytes_max = 4096\n",
        )
        .unwrap();
        assert_eq!(cfg.engine.batch_bytes_max, ByteSize::kib(64));
        assert_eq!(cfg.retention.bytes_max, Some(ByteSize::kib(4)));
        assert_eq!(
            cfg.cluster_id.unwrap().to_string(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        let err = parse("cluster_id = \"not-a-uuid\"\n").unwrap_err();
        assert!(err.to_string().contains("cluster_id"), "{err}");
        let err = parse("cluster_id = \"00000000-0000-0000-0000-000000000000\"\n").unwrap_err();
        assert_eq!(key_of(err), "cluster_id");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, key) in [
            ("nodeid = 3\n", "nodeid"),
            ("[raft]\nticks = \"10ms\"\n", "ticks"),
            ("[engine]\nsegment_size = \"64 MiB\"\n", "segment_size"),
            ("[nonsense]\n", "nonsense"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                matches!(err, ConfigError::Parse { .. }) && err.to_string().contains(key),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn wrong_types_are_refused_by_name() {
        let err = parse("node_id = \"one\"\n").unwrap_err();
        assert!(err.to_string().contains("node_id"), "{err}");
        let err = parse("[engine]\nrecovery_mode = \"yolo\"\n").unwrap_err();
        assert!(err.to_string().contains("recovery_mode"), "{err}");
        let err = parse("peers = [\"2:127.0.0.2:9093\"]\n").unwrap_err();
        assert!(err.to_string().contains("peers"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused_by_key() {
        for (text, key) in [
            ("node_id = 0\n", "node_id"),
            ("shards = 100000\n", "shards"),
            ("shutdown_timeout = \"0s\"\n", "shutdown_timeout"),
            ("http_addr = \"127.0.0.1:9092\"\n", "http_addr"),
            ("kafka_addr = \"127.0.0.1:0\"\n", "kafka_addr"),
            (
                "[raft]\nheartbeat_interval = \"15ms\"\n",
                "raft.heartbeat_interval",
            ),
            (
                "[raft]\nelection_timeout_min = \"50ms\"\n",
                "raft.election_timeout_min",
            ),
            (
                "[raft]\nelection_timeout_max = \"150ms\"\n",
                "raft.election_timeout_max",
            ),
            ("[raft]\ntick = \"0s\"\n", "raft.tick"),
            (
                "[engine]\nsegment_bytes = \"1 KiB\"\n",
                "engine.segment_bytes",
            ),
            (
                "[engine]\nbatch_bytes_max = \"1 GiB\"\n",
                "engine.batch_bytes_max",
            ),
            (
                "[engine]\nbatches_inflight_max = 0\n",
                "engine.batches_inflight_max",
            ),
            (
                "[engine]\nio_memory_bytes = \"1 KiB\"\n",
                "engine.io_memory_bytes",
            ),
            ("[retention]\nbytes_max = \"0 B\"\n", "retention.bytes_max"),
            ("[retention]\nage_max = \"0s\"\n", "retention.age_max"),
            (
                "[recovery]\nbandwidth_bytes_per_sec_max = \"1 KiB\"\n",
                "recovery.bandwidth_bytes_per_sec_max",
            ),
            (
                "[recovery]\nscrub_interval = \"10ms\"\n",
                "recovery.scrub_interval",
            ),
            (
                "[recovery]\nscrub_bytes_per_sec_max = \"1 KiB\"\n",
                "recovery.scrub_bytes_per_sec_max",
            ),
            (
                "[recovery]\npartitions_per_shard_max = 0\n",
                "recovery.partitions_per_shard_max",
            ),
            (
                "[recovery]\noffset_checkpoint_bytes = \"64 KiB\"\n",
                "recovery.offset_checkpoint_bytes",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(key_of(err), key, "{text:?}");
        }
    }

    #[test]
    fn a_recovery_budget_of_zero_means_no_limit() {
        let cfg = parse("[recovery]\nbandwidth_bytes_per_sec_max = \"0 B\"\n").unwrap();
        let limits =
            crate::node::recovery_budget::RecoveryLimits::new(&cfg.recovery, cfg.raft.tick);
        assert_eq!(limits.bytes_per_sec_max, 0);
        assert_eq!(limits.partitions_per_shard_max, 2);
        assert_eq!(limits.offset_checkpoint_bytes, 64 << 20);
        let cfg = parse("[recovery]\noffset_checkpoint_bytes = \"8 MiB\"\n").unwrap();
        let limits =
            crate::node::recovery_budget::RecoveryLimits::new(&cfg.recovery, cfg.raft.tick);
        assert_eq!(limits.offset_checkpoint_bytes, 8 << 20);
    }

    #[test]
    fn recovery_stream_keys_default_convert_to_ticks_and_refuse_bad_ranges() {
        let cfg = parse("[raft]\ntick = \"25ms\"\nheartbeat_interval = \"50ms\"\nelection_timeout_min = \"150ms\"\nelection_timeout_max = \"300ms\"\n").unwrap();
        let limits =
            crate::node::recovery_budget::RecoveryLimits::new(&cfg.recovery, cfg.raft.tick);
        assert_eq!(limits.stream.chunk_bytes, 1 << 20);
        assert_eq!(limits.stream.chunks_inflight_max, 4);
        assert_eq!(limits.stream.chunk_timeout_ticks, 200, "5 s at 25 ms");
        assert_eq!(limits.stream.lag_entries_max, 1024);
        assert_eq!(limits.stream.backoff_min_ticks, 4);
        assert_eq!(limits.stream.backoff_max_ticks, 400);
        for (text, key) in [
            (
                "[recovery]\nchunk_bytes = \"1 KiB\"\n",
                "recovery.chunk_bytes",
            ),
            (
                "[recovery]\nchunk_bytes = \"9 MiB\"\n",
                "recovery.chunk_bytes",
            ),
            (
                "[recovery]\nchunks_inflight_max = 0\n",
                "recovery.chunks_inflight_max",
            ),
            (
                "[recovery]\nchunk_timeout = \"10ms\"\n",
                "recovery.chunk_timeout",
            ),
            (
                "[recovery]\nlag_entries_max = 0\n",
                "recovery.lag_entries_max",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(key_of(err), key, "{text:?}");
        }
    }

    #[test]
    fn peers_must_be_consistent() {
        let three = "peers = [\"1=127.0.0.1:9093\", \"2=127.0.0.2:9093\", \"3=127.0.0.3:9093\"]\n";
        let cfg = parse(three).unwrap();
        assert!(cfg.is_multi_node());
        assert_eq!(cfg.other_peers().count(), 2);
        for (text, key) in [
            (
                "node_id = 4\npeers = [\"1=127.0.0.1:9093\", \"2=127.0.0.2:9093\"]\n",
                "peers",
            ),
            (
                "peers = [\"1=127.0.0.1:9093\", \"1=127.0.0.2:9093\"]\n",
                "peers",
            ),
            (
                "peers = [\"1=127.0.0.1:9093\", \"2=127.0.0.1:9093\"]\n",
                "peers",
            ),
            ("peers = [\"1=127.0.0.1:9999\"]\n", "peer_addr"),
            ("peers = [\"1=0.0.0.0:9093\"]\n", "peers"),
            (&format!("standalone = true\n{three}"), "standalone"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(key_of(err), key, "{text:?}");
        }
        // Binding every interface on the listed port is this node's address too.
        parse("peer_addr = \"0.0.0.0:9093\"\npeers = [\"1=127.0.0.1:9093\"]\n").unwrap();
    }

    #[test]
    fn flags_override_the_file() {
        let mut cfg = parse("node_id = 2\nshards = 4\nread_only = true\n").unwrap();
        let flags = ServeFlags {
            node_id: Some(3),
            data_dir: Some(PathBuf::from("/tmp/x")),
            peers: Some("3=127.0.0.1:9093, 4=127.0.0.4:9093".parse().unwrap()),
            recovery_mode: Some(RecoveryMode::Absolute),
            ..ServeFlags::default()
        };
        cfg.apply_flags(&flags);
        cfg.validate().unwrap();
        assert_eq!(cfg.node_id, 3);
        assert_eq!(cfg.shards, 4, "a flag not given leaves the file's value");
        assert!(
            cfg.read_only,
            "an absent boolean flag does not turn the file's true off"
        );
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.engine.recovery_mode, RecoveryMode::Absolute);
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        flags: ServeFlags,
    }

    #[test]
    fn flags_parse_on_the_command_line() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "serve",
            "--node-id",
            "2",
            "--peers",
            "1=127.0.0.1:9093,2=127.0.0.2:9093",
            "--peer-addr",
            "127.0.0.2:9093",
            "--cluster-id",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "--recovery-mode",
            "absolute",
            "--log-format",
            "json",
            "--read-only",
        ])
        .unwrap();
        let mut cfg = NodeConfig::default();
        cfg.apply_flags(&cli.flags);
        cfg.validate().unwrap();
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert!(cfg.read_only && cfg.is_multi_node());
        let cli = Cli::try_parse_from(["serve", "--peers", ""]).unwrap();
        assert_eq!(cli.flags.peers, Some(PeerList(vec![])));
        assert!(Cli::try_parse_from(["serve", "--peers", "1=nowhere"]).is_err());
        assert!(Cli::try_parse_from(["serve", "--cluster-id", "x"]).is_err());
    }

    #[test]
    fn peer_list_parsing() {
        assert_eq!(parse_peer_list("").unwrap(), vec![]);
        let peers = parse_peer_list("1=127.0.0.1:9093,2=[::1]:9093").unwrap();
        assert_eq!(peers[1].addr, "[::1]:9093".parse().unwrap());
        assert!(parse_peer_list("x=127.0.0.1:9093").is_err());
        assert!(parse_peer_list("1=localhost").is_err());
    }
}
