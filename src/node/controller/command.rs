//! Controller commands: the payloads of the controller group's (group 0) Raft entries.
//!
//! Encoding: one frame (see `codec.rs`) with magic `TCMD`, version [`COMMAND_VERSION`] and the
//! command's kind; body fields in declaration order:
//!
//! | kind | command          | body                                                              |
//! |------|------------------|-------------------------------------------------------------------|
//! | 1    | AddMember        | u64 node_id, str peer_addr, str kafka_addr, str http_addr          |
//! | 2    | RemoveMember     | u64 node_id                                                       |
//! | 3    | CreateTopic      | str name, uuid id, u32 partitions, u8 replication_factor, retention |
//! | 4    | DeleteTopic      | str name, uuid id                                                 |
//! | 5    | SetTopicConfig   | str name, retention, bool read_only                               |
//! | 6    | SetPreferredLeader | str name, u32 partition, u64 node_id                            |
//!
//! `str` = u16 length + UTF-8; `uuid` = 16 bytes; retention = opt_u64 bytes_max, opt_u64
//! age_ms_max (`opt_u64` = u8 0, or u8 1 + u64). Addresses are `IP:PORT` text.
//!
//! A proposer generates what must be the same everywhere (the topic's UUID) and puts it in
//! the command, so applying it needs no randomness.

use std::net::SocketAddr;

use uuid::Uuid;

use super::codec::{decode_frame, encode_frame, CodecError, Reader, Writer};

/// "TCMD" little-endian.
pub const COMMAND_MAGIC: u32 = u32::from_le_bytes(*b"TCMD");
pub const COMMAND_VERSION: u16 = 1;

/// A cluster member: where its peer, Kafka and HTTP listeners are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: u64,
    pub peer_addr: SocketAddr,
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

/// Kafka's `retention.bytes` (per partition) and `retention.ms`; `None` keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub bytes_max: Option<u64>,
    pub age_ms_max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub id: Uuid,
    pub partitions: u32,
    pub replication_factor: u8,
    pub retention: Retention,
}

impl TopicSpec {
    /// A CreateTopic request as its proposer builds it: the topic's UUID is drawn here, once,
    /// and travels in the command, so every replica applies the same id.
    pub fn new(name: &str, partitions: u32, replication_factor: u8, retention: Retention) -> Self {
        TopicSpec {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            retention,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Adds a member, or updates the addresses of an existing one. Under-replicated
    /// partitions get a replica on it.
    AddMember(Member),
    /// Removes a member; its replicas move to other members where one is free.
    RemoveMember {
        node_id: u64,
    },
    CreateTopic(TopicSpec),
    /// Deletes the topic of this name, if its id is `id` (or `id` is nil: whatever topic
    /// has the name). The id keeps a delayed delete from removing a newer topic.
    DeleteTopic {
        name: String,
        id: Uuid,
    },
    SetTopicConfig {
        name: String,
        retention: Retention,
        read_only: bool,
    },
    /// Moves replica `node_id` of the partition to the front of its replica list: it becomes
    /// the preferred leader, and the partition's leader hands leadership to it once it is
    /// caught up (`leader_balance.rs`). The replica set itself does not change.
    SetPreferredLeader {
        name: String,
        partition: u32,
        node_id: u64,
    },
    /// `tern serve --force-new-cluster` on `node_id`: every other member is removed, as by
    /// `RemoveMember` one after the other, so the cluster is this node alone and each
    /// partition keeps only its replica here. Written into the controller's log by the forced
    /// node itself (never proposed), committed with the configuration change that leaves it
    /// the group's only voter (`force_new_cluster.rs`).
    ForceNewCluster {
        node_id: u64,
    },
}

const KIND_ADD_MEMBER: u16 = 1;
const KIND_REMOVE_MEMBER: u16 = 2;
const KIND_CREATE_TOPIC: u16 = 3;
const KIND_DELETE_TOPIC: u16 = 4;
const KIND_SET_TOPIC_CONFIG: u16 = 5;
const KIND_SET_PREFERRED_LEADER: u16 = 6;
const KIND_FORCE_NEW_CLUSTER: u16 = 7;

const WHAT: &str = "controller command";

pub(super) fn write_retention(w: &mut Writer, r: Retention) {
    w.opt_u64(r.bytes_max);
    w.opt_u64(r.age_ms_max);
}

pub(super) fn read_retention(r: &mut Reader<'_>) -> Result<Retention, CodecError> {
    Ok(Retention {
        bytes_max: r.opt_u64("retention.bytes_max")?,
        age_ms_max: r.opt_u64("retention.age_ms_max")?,
    })
}

pub(super) fn write_member(w: &mut Writer, m: &Member) -> Result<(), CodecError> {
    w.u64(m.node_id);
    w.addr("peer_addr", m.peer_addr)?;
    w.addr("kafka_addr", m.kafka_addr)?;
    w.addr("http_addr", m.http_addr)
}

pub(super) fn read_member(r: &mut Reader<'_>) -> Result<Member, CodecError> {
    Ok(Member {
        node_id: r.u64("node_id")?,
        peer_addr: r.addr("peer_addr")?,
        kafka_addr: r.addr("kafka_addr")?,
        http_addr: r.addr("http_addr")?,
    })
}

impl Command {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer::new(WHAT);
        let kind = match self {
            Command::AddMember(m) => {
                write_member(&mut w, m)?;
                KIND_ADD_MEMBER
            }
            Command::RemoveMember { node_id } => {
                w.u64(*node_id);
                KIND_REMOVE_MEMBER
            }
            Command::CreateTopic(t) => {
                w.str("name", &t.name)?;
                w.uuid(t.id);
                w.u32(t.partitions);
                w.u8(t.replication_factor);
                write_retention(&mut w, t.retention);
                KIND_CREATE_TOPIC
            }
            Command::DeleteTopic { name, id } => {
                w.str("name", name)?;
                w.uuid(*id);
                KIND_DELETE_TOPIC
            }
            Command::SetTopicConfig {
                name,
                retention,
                read_only,
            } => {
                w.str("name", name)?;
                write_retention(&mut w, *retention);
                w.bool(*read_only);
                KIND_SET_TOPIC_CONFIG
            }
            Command::SetPreferredLeader {
                name,
                partition,
                node_id,
            } => {
                w.str("name", name)?;
                w.u32(*partition);
                w.u64(*node_id);
                KIND_SET_PREFERRED_LEADER
            }
            Command::ForceNewCluster { node_id } => {
                w.u64(*node_id);
                KIND_FORCE_NEW_CLUSTER
            }
        };
        encode_frame(WHAT, COMMAND_MAGIC, COMMAND_VERSION, kind, &w.buf)
    }

    /// Checks length and checksum before reading a field; every error is typed.
    pub fn decode(bytes: &[u8]) -> Result<Command, CodecError> {
        let frame = decode_frame(WHAT, COMMAND_MAGIC, COMMAND_VERSION, bytes)?;
        let mut r = Reader::new(WHAT, frame.body);
        let cmd = match frame.kind {
            KIND_ADD_MEMBER => Command::AddMember(read_member(&mut r)?),
            KIND_REMOVE_MEMBER => Command::RemoveMember {
                node_id: r.u64("node_id")?,
            },
            KIND_CREATE_TOPIC => Command::CreateTopic(TopicSpec {
                name: r.str("name")?,
                id: r.uuid("id")?,
                partitions: r.u32("partitions")?,
                replication_factor: r.u8("replication_factor")?,
                retention: read_retention(&mut r)?,
            }),
            KIND_DELETE_TOPIC => Command::DeleteTopic {
                name: r.str("name")?,
                id: r.uuid("id")?,
            },
            KIND_SET_TOPIC_CONFIG => Command::SetTopicConfig {
                name: r.str("name")?,
                retention: read_retention(&mut r)?,
                read_only: r.bool("read_only")?,
            },
            KIND_SET_PREFERRED_LEADER => Command::SetPreferredLeader {
                name: r.str("name")?,
                partition: r.u32("partition")?,
                node_id: r.u64("node_id")?,
            },
            KIND_FORCE_NEW_CLUSTER => Command::ForceNewCluster {
                node_id: r.u64("node_id")?,
            },
            kind => return Err(CodecError::Kind { what: WHAT, kind }),
        };
        r.finish()?;
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command> {
        vec![
            Command::AddMember(Member {
                node_id: 2,
                peer_addr: "127.0.0.2:9093".parse().unwrap(),
                kafka_addr: "[::1]:9092".parse().unwrap(),
                http_addr: "127.0.0.2:9090".parse().unwrap(),
            }),
            Command::RemoveMember { node_id: 7 },
            Command::CreateTopic(TopicSpec {
                name: "orders".into(),
                id: Uuid::from_u128(0x1234),
                partitions: 64,
                replication_factor: 3,
                retention: Retention {
                    bytes_max: Some(1 << 30),
                    age_ms_max: None,
                },
            }),
            Command::DeleteTopic {
                name: "orders".into(),
                id: Uuid::nil(),
            },
            Command::SetTopicConfig {
                name: "orders".into(),
                retention: Retention::default(),
                read_only: true,
            },
            Command::SetPreferredLeader {
                name: "orders".into(),
                partition: 3,
                node_id: 2,
            },
            Command::ForceNewCluster { node_id: 3 },
        ]
    }

    #[test]
    fn round_trip() {
        for cmd in samples() {
            let bytes = cmd.encode().unwrap();
            assert_eq!(Command::decode(&bytes).unwrap(), cmd);
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_a_typed_error() {
        for cmd in samples() {
            let bytes = cmd.encode().unwrap();
            for cut in 0..bytes.len() {
                assert!(
                    Command::decode(&bytes[..cut]).is_err(),
                    "{cmd:?} cut at {cut}"
                );
            }
            for i in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[i / 8] ^= 1 << (i % 8);
                assert!(Command::decode(&b).is_err(), "{cmd:?} flip {i}");
            }
        }
    }

    #[test]
    fn wrong_version_kind_and_trailing_bytes() {
        let mut bytes = samples()[1].encode().unwrap();
        bytes[4] = 2;
        assert!(matches!(
            Command::decode(&bytes),
            Err(CodecError::Version { found: 2, .. })
        ));
        let body = 7u64.to_le_bytes();
        let unknown = encode_frame(WHAT, COMMAND_MAGIC, COMMAND_VERSION, 99, &body).unwrap();
        assert!(matches!(
            Command::decode(&unknown),
            Err(CodecError::Kind { kind: 99, .. })
        ));
        let mut long = body.to_vec();
        long.push(0);
        let trailing = encode_frame(
            WHAT,
            COMMAND_MAGIC,
            COMMAND_VERSION,
            KIND_REMOVE_MEMBER,
            &long,
        )
        .unwrap();
        assert!(matches!(
            Command::decode(&trailing),
            Err(CodecError::Trailing { extra: 1, .. })
        ));
    }

    #[test]
    fn oversize_name_is_an_encode_error_not_a_panic() {
        let cmd = Command::DeleteTopic {
            name: "x".repeat(70_000),
            id: Uuid::nil(),
        };
        assert!(matches!(cmd.encode(), Err(CodecError::Invalid { .. })));
    }
}
