//! The whole controller state as one snapshot: what the controller group's Raft snapshot
//! carries, so the state survives restarts and log compaction.
//!
//! Encoding: one frame (see `codec.rs`) with magic `TCSN`, version [`SNAPSHOT_VERSION`], kind
//! 1; body:
//!
//! ```text
//! u64 applied_index | u64 next_group
//! u32 member_count  | member_count × (u64 node_id, str peer_addr, str kafka_addr, str http_addr)
//! u32 topic_count   | topic_count × topic
//! topic = str name | uuid id | u8 replication_factor | retention | bool read_only
//!       | u64 created_index | u32 partition_count
//!       | partition_count × (u64 group | u32 replica_count | replica_count × u64 node
//!                          | u32 initial_count | initial_count × u64 node)
//! u32 removed_count | removed_count × u64 node
//! ```
//!
//! Version 1 had no initial replicas and no removed nodes; it is still read (its partitions'
//! replicas never moved, so they are the initial ones, and nothing was removed).
//!
//! Members and topics are written in key order, so equal states encode to equal bytes. A
//! decoded snapshot is checked against every invariant of the state before it is used.

use std::collections::BTreeMap;

use super::codec::{decode_frame, encode_frame, CodecError, Reader, Writer};
use super::command::{read_member, read_retention, write_member, write_retention};
use super::state::{ControllerState, Partition, Topic};

/// "TCSN" little-endian.
pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"TCSN");
pub const SNAPSHOT_VERSION: u16 = 2;
/// Read, not written: without the initial replicas.
const SNAPSHOT_VERSION_1: u16 = 1;
const KIND_STATE: u16 = 1;
const WHAT: &str = "controller snapshot";

/// Smallest encodings, to bound counts before allocating (see `Reader::count`).
const MEMBER_BYTES_MIN: usize = 8 + 3 * 2;
const TOPIC_BYTES_MIN: usize = 2 + 16 + 1 + 2 + 1 + 8 + 4;
const PARTITION_BYTES_MIN: usize = 8 + 4;

impl ControllerState {
    pub fn encode_snapshot(&self) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer::new(WHAT);
        w.u64(self.applied_index);
        w.u64(self.next_group);
        w.count("members", self.members.len())?;
        for m in self.members.values() {
            write_member(&mut w, m)?;
        }
        w.count("topics", self.topics.len())?;
        for t in self.topics.values() {
            w.str("topic.name", &t.name)?;
            w.uuid(t.id);
            w.u8(t.replication_factor);
            write_retention(&mut w, t.retention);
            w.bool(t.read_only);
            w.u64(t.created_index);
            w.count("topic.partitions", t.partitions.len())?;
            for p in &t.partitions {
                w.u64(p.group);
                w.count("partition.replicas", p.replicas.len())?;
                for r in &p.replicas {
                    w.u64(*r);
                }
                w.count("partition.initial", p.initial.len())?;
                for r in &p.initial {
                    w.u64(*r);
                }
            }
        }
        w.count("removed", self.removed.len())?;
        for n in &self.removed {
            w.u64(*n);
        }
        encode_frame(WHAT, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, KIND_STATE, &w.buf)
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<ControllerState, CodecError> {
        let (frame, version) = match decode_frame(WHAT, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, bytes) {
            Ok(frame) => (frame, SNAPSHOT_VERSION),
            Err(CodecError::Version { found, .. }) if found == SNAPSHOT_VERSION_1 => (
                decode_frame(WHAT, SNAPSHOT_MAGIC, SNAPSHOT_VERSION_1, bytes)?,
                SNAPSHOT_VERSION_1,
            ),
            Err(e) => return Err(e),
        };
        if frame.kind != KIND_STATE {
            return Err(CodecError::Kind {
                what: WHAT,
                kind: frame.kind,
            });
        }
        let mut r = Reader::new(WHAT, frame.body);
        let applied_index = r.u64("applied_index")?;
        let next_group = r.u64("next_group")?;
        let mut members = BTreeMap::new();
        for _ in 0..r.count("members", MEMBER_BYTES_MIN)? {
            let m = read_member(&mut r)?;
            if members.insert(m.node_id, m).is_some() {
                return Err(r.invalid("members", "a node listed twice"));
            }
        }
        let mut topics = BTreeMap::new();
        for _ in 0..r.count("topics", TOPIC_BYTES_MIN)? {
            let name = r.str("topic.name")?;
            let id = r.uuid("topic.id")?;
            let replication_factor = r.u8("topic.replication_factor")?;
            let retention = read_retention(&mut r)?;
            let read_only = r.bool("topic.read_only")?;
            let created_index = r.u64("topic.created_index")?;
            let mut partitions = Vec::new();
            for _ in 0..r.count("topic.partitions", PARTITION_BYTES_MIN)? {
                let group = r.u64("partition.group")?;
                let replicas = (0..r.count("partition.replicas", 8)?)
                    .map(|_| r.u64("partition.replica"))
                    .collect::<Result<Vec<_>, _>>()?;
                let initial = if version == SNAPSHOT_VERSION_1 {
                    replicas.clone()
                } else {
                    (0..r.count("partition.initial", 8)?)
                        .map(|_| r.u64("partition.initial"))
                        .collect::<Result<Vec<_>, _>>()?
                };
                partitions.push(Partition {
                    group,
                    replicas,
                    initial,
                });
            }
            let topic = Topic {
                name: name.clone(),
                id,
                replication_factor,
                retention,
                read_only,
                created_index,
                partitions,
            };
            if topics.insert(name, topic).is_some() {
                return Err(r.invalid("topics", "a topic listed twice"));
            }
        }
        let mut removed = std::collections::BTreeSet::new();
        if version != SNAPSHOT_VERSION_1 {
            for _ in 0..r.count("removed", 8)? {
                if !removed.insert(r.u64("removed.node")?) {
                    return Err(r.invalid("removed", "a node listed twice"));
                }
            }
        }
        r.finish()?;
        let state = ControllerState {
            applied_index,
            next_group,
            members,
            topics,
            removed,
        };
        state
            .check_invariants()
            .map_err(|why| CodecError::Invalid {
                what: WHAT,
                field: "state",
                why,
            })?;
        Ok(state)
    }
}
