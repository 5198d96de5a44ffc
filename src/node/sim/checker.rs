//! The invariants, checked as the simulation runs. Every observation (an acknowledgement, a
//! fetch, a node's status, the committed part of a node's log) is compared with everything
//! observed before; the first contradiction is the violation the seed reports.

use std::collections::{BTreeMap, HashMap};

use tern_raft::message::NodeId;

use super::super::records::{batch_values, parse_batches};
use super::super::requests::FetchReply;
use super::super::shard::ShardStatus;

/// One acknowledged produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub base_offset: u64,
    pub values: Vec<Vec<u8>>,
}

/// The value of the record with sequence `sequence` that idempotent producer `producer_id`
/// writes to `partition`: unique, and naming its producer and sequence, so the checker can
/// read a partition's log as each producer's sequence of batches.
pub fn idempotent_value(producer_id: i64, partition: u32, sequence: i32) -> Vec<u8> {
    format!("i{producer_id}-p{partition}-s{sequence}").into_bytes()
}

/// The producer id and sequence of a record written by [`idempotent_value`].
fn parse_idempotent_value(value: &[u8]) -> Option<(i64, i32)> {
    let s = std::str::from_utf8(value).ok()?.strip_prefix('i')?;
    let (producer_id, rest) = s.split_once("-p")?;
    let (_, sequence) = rest.split_once("-s")?;
    Some((producer_id.parse().ok()?, sequence.parse().ok()?))
}

#[derive(Default)]
struct PartitionModel {
    /// Offset -> record, for every record acknowledged or served by a fetch (both are
    /// committed, so neither may ever change).
    records: BTreeMap<u64, Vec<u8>>,
    /// Record -> offset: every produced value is unique, so it may sit at one offset only.
    offset_of: HashMap<Vec<u8>, u64>,
    acked: Vec<Acked>,
    /// The offset after the last acknowledged record.
    acked_end: u64,
    /// The same for the one plain (not idempotent) producer of the partition, one request at
    /// a time: each of its acknowledgements must come after the previous one.
    plain_acked_end: u64,
    /// Idempotent producer id -> first sequence -> base offset of each acknowledged batch.
    /// A producer's batches must sit in the log in sequence order; pipelined batches may be
    /// acknowledged in any order, so each acknowledgement is compared with both neighbours.
    idempotent: BTreeMap<i64, BTreeMap<i32, u64>>,
}

#[derive(Default)]
pub struct Checker {
    partitions: BTreeMap<u64, PartitionModel>,
    /// (group, term) -> the node seen leading it.
    leaders: BTreeMap<(u64, u64), NodeId>,
    /// (group, index) -> (term, CRC32C of the data) of committed entries, whoever served them.
    committed: BTreeMap<(u64, u64), (u64, u32)>,
    pub acks: u64,
    /// Of `acks`: those of idempotent producers' batches.
    pub idempotent_acks: u64,
    pub fetches: u64,
    pub entries_compared: u64,
    /// A running hash of every acknowledgement and fetch answer in order: two runs of a seed
    /// must end with the same value (the replay test compares it).
    pub trace: u32,
}

pub type Violation = String;

impl Checker {
    pub fn acked(&self, group: u64) -> &[Acked] {
        self.partitions
            .get(&group)
            .map_or(&[], |p| p.acked.as_slice())
    }

    pub fn acked_end(&self, group: u64) -> u64 {
        self.partitions.get(&group).map_or(0, |p| p.acked_end)
    }

    /// The highest offset known to be committed, plus one.
    pub fn known_end(&self, group: u64) -> u64 {
        self.partitions
            .get(&group)
            .and_then(|p| p.records.keys().next_back())
            .map_or(0, |o| o + 1)
    }

    fn trace_in(&mut self, words: &[u64]) {
        for w in words {
            self.trace = crc32c::crc32c_append(self.trace, &w.to_le_bytes());
        }
    }

    fn record(
        &mut self,
        group: u64,
        offset: u64,
        value: &[u8],
        what: &str,
    ) -> Result<(), Violation> {
        let p = self.partitions.entry(group).or_default();
        if let Some(old) = p.records.get(&offset) {
            if old.as_slice() != value {
                return Err(format!(
                    "group {group} offset {offset}: {what} shows {:?}, earlier {:?} (a committed record changed or an offset was reused)",
                    String::from_utf8_lossy(value),
                    String::from_utf8_lossy(old)
                ));
            }
        }
        if let Some(&at) = p.offset_of.get(value) {
            if at != offset {
                return Err(format!(
                    "group {group}: record {:?} at offset {offset} ({what}) and at offset {at}",
                    String::from_utf8_lossy(value)
                ));
            }
        }
        p.records.insert(offset, value.to_vec());
        p.offset_of.insert(value.to_vec(), offset);
        Ok(())
    }

    /// An acknowledgement to the partition's plain producer.
    pub fn on_ack(&mut self, group: u64, node: NodeId, ack: Acked) -> Result<(), Violation> {
        let end = self.partitions.get(&group).map_or(0, |p| p.plain_acked_end);
        if ack.base_offset < end {
            return Err(format!(
                "group {group}: node {node} acknowledged offset {} after offsets up to {end} were acknowledged to the same producer (offsets reordered or reused)",
                ack.base_offset
            ));
        }
        let ack_end = ack.base_offset + ack.values.len() as u64;
        self.record_ack(group, node, ack)?;
        self.partitions.entry(group).or_default().plain_acked_end = ack_end;
        Ok(())
    }

    /// An acknowledgement of idempotent producer `producer_id`'s batch starting at `sequence`
    /// (perhaps of a retry, answered with the offset of the copy written first). Its records
    /// must come after those of the producer's acknowledged batches of lower sequences and
    /// before those of higher ones.
    pub fn on_idempotent_ack(
        &mut self,
        group: u64,
        node: NodeId,
        producer_id: i64,
        sequence: i32,
        ack: Acked,
    ) -> Result<(), Violation> {
        self.idempotent_acks += 1;
        let base = ack.base_offset;
        if let Some(p) = self.partitions.get(&group) {
            if let Some(batches) = p.idempotent.get(&producer_id) {
                let before = batches.range(..sequence).next_back();
                let after = batches.range(sequence + 1..).next();
                let misplaced = before
                    .filter(|(_, &o)| o >= base)
                    .or(after.filter(|(_, &o)| o <= base));
                if let Some((s, o)) = misplaced {
                    return Err(format!(
                        "group {group}: node {node} acknowledged producer {producer_id}'s sequence {sequence} at offset {base}, its sequence {s} at offset {o} (batches out of sequence order)"
                    ));
                }
            }
        }
        self.record_ack(group, node, ack)?;
        self.partitions
            .entry(group)
            .or_default()
            .idempotent
            .entry(producer_id)
            .or_default()
            .insert(sequence, base);
        Ok(())
    }

    fn record_ack(&mut self, group: u64, node: NodeId, ack: Acked) -> Result<(), Violation> {
        self.acks += 1;
        self.trace_in(&[group, node, ack.base_offset, ack.values.len() as u64]);
        for (i, v) in ack.values.iter().enumerate() {
            self.record(group, ack.base_offset + i as u64, v, "an acknowledgement")?;
        }
        let p = self.partitions.entry(group).or_default();
        p.acked_end = p.acked_end.max(ack.base_offset + ack.values.len() as u64);
        p.acked.push(ack);
        Ok(())
    }

    /// An idempotent producer's batch refused as OUT_OF_ORDER_SEQUENCE. When every batch
    /// before it had been acknowledged before it was sent, the leader that refused it had
    /// forgotten a committed batch: the producer would be refused for ever (and a retry of
    /// the forgotten batch written twice). Nothing in the simulation expires producer state
    /// (no retention, fewer than `PRODUCERS_PER_PARTITION_MAX` producers, one batch in
    /// flight beyond `BATCHES_PER_PRODUCER_MAX` never), so there is no legitimate case.
    pub fn on_out_of_order(
        &mut self,
        group: u64,
        node: NodeId,
        producer_id: i64,
        sequence: i32,
        expected: i32,
        predecessors_acked: bool,
    ) -> Result<(), Violation> {
        if !predecessors_acked {
            return Ok(());
        }
        Err(format!(
            "group {group}: node {node} refused producer {producer_id}'s sequence {sequence} as out of order (expected {expected}) although every earlier batch was acknowledged before it was sent: the producer is stuck"
        ))
    }

    /// Every record of partition `group` that node `node` serves, from offset 0 to its end
    /// (after the cluster healed): each idempotent producer's records must be its sequences
    /// 0, 1, 2, ... in offset order, each once, and include every acknowledged one.
    pub fn on_whole_log(
        &self,
        group: u64,
        node: NodeId,
        log: &BTreeMap<u64, Vec<u8>>,
    ) -> Result<(), Violation> {
        let mut next: HashMap<i64, (i32, u64)> = HashMap::new();
        for (&offset, value) in log {
            let Some((producer_id, sequence)) = parse_idempotent_value(value) else {
                continue;
            };
            let (expected, after) = next.get(&producer_id).copied().unwrap_or((0, 0));
            if sequence != expected {
                let what = if sequence < expected {
                    "stored twice or out of order"
                } else {
                    "skipped"
                };
                return Err(format!(
                    "group {group}: node {node} serves producer {producer_id}'s sequence {sequence} at offset {offset} after its sequence {} at offset {after} (a batch {what})",
                    expected - 1
                ));
            }
            next.insert(producer_id, (sequence + 1, offset));
        }
        let Some(p) = self.partitions.get(&group) else {
            return Ok(());
        };
        for (producer_id, batches) in &p.idempotent {
            let written = next.get(producer_id).map_or(0, |&(n, _)| n);
            if let Some((&s, _)) = batches.range(written..).next() {
                return Err(format!(
                    "group {group}: node {node} does not serve producer {producer_id}'s acknowledged sequence {s}"
                ));
            }
        }
        Ok(())
    }

    /// A fetch at `offset` answered by `node`: the records it returns must be a dense run of
    /// offsets starting at or before `offset`, below the high watermark, agreeing with
    /// everything acknowledged or fetched before. Returns the records.
    pub fn on_fetch(
        &mut self,
        group: u64,
        node: NodeId,
        offset: u64,
        reply: &FetchReply,
    ) -> Result<Vec<(u64, Vec<u8>)>, Violation> {
        self.fetches += 1;
        self.trace_in(&[
            group,
            node,
            offset,
            reply.high_watermark,
            reply.records.len() as u64,
        ]);
        let ctx =
            |what: String| format!("group {group}: fetch at {offset} from node {node}: {what}");
        if reply.records.is_empty() {
            // Nothing at or after the offset yet (or on this node yet): nothing to compare.
            return Ok(Vec::new());
        }
        let batches =
            parse_batches(&reply.records).map_err(|e| ctx(format!("records do not parse: {e}")))?;
        let mut out = Vec::new();
        let mut next: Option<u64> = None;
        for b in &batches {
            let base =
                u64::try_from(b.base_offset).map_err(|_| ctx("negative base offset".into()))?;
            match next {
                None if !(base <= offset && offset < base + b.record_count) => {
                    return Err(ctx(format!(
                        "first batch covers [{base}, {}) which does not hold the offset",
                        base + b.record_count
                    )))
                }
                Some(n) if n != base => {
                    return Err(ctx(format!(
                        "batch at {base} follows a batch ending at {n} (offsets not dense)"
                    )))
                }
                _ => {}
            }
            let bytes = &reply.records[b.position..b.position + b.bytes];
            let values =
                batch_values(bytes, b).map_err(|e| ctx(format!("batch does not decode: {e}")))?;
            for (i, v) in values.into_iter().enumerate() {
                out.push((base + i as u64, v));
            }
            next = Some(base + b.record_count);
        }
        if let Some(end) = next {
            if end > reply.high_watermark {
                return Err(ctx(format!(
                    "served records up to {end}, past its high watermark {}",
                    reply.high_watermark
                )));
            }
        }
        for (o, v) in &out {
            self.record(group, *o, v, &format!("a fetch from node {node}"))?;
        }
        Ok(out)
    }

    /// A node's status: at most one leader per term per group; no group halted, no shard
    /// stopped (the simulation injects no I/O errors).
    pub fn on_status(&mut self, node: NodeId, status: &ShardStatus) -> Result<(), Violation> {
        if let Some(why) = &status.failed {
            return Err(format!("node {node}: shard stopped: {why}"));
        }
        for g in &status.groups {
            if let Some(why) = &g.halted {
                return Err(format!("node {node}: group {} halted: {why}", g.group));
            }
            if g.role == "leader" {
                if let Some(&other) = self.leaders.get(&(g.group, g.term)) {
                    if other != node {
                        return Err(format!(
                            "group {}: nodes {other} and {node} both lead term {}",
                            g.group, g.term
                        ));
                    }
                }
                self.leaders.insert((g.group, g.term), node);
            }
        }
        Ok(())
    }

    /// A committed entry read from `node`'s log: every node must hold the same entry at the
    /// same committed index (for group 0 this is the controller's view agreeing everywhere).
    pub fn on_committed_entry(
        &mut self,
        node: NodeId,
        group: u64,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<(), Violation> {
        self.entries_compared += 1;
        let crc = crc32c::crc32c(data);
        match self.committed.get(&(group, index)) {
            Some(&(t, c)) if (t, c) != (term, crc) => Err(format!(
                "group {group} index {index}: node {node} has committed (term {term}, crc {crc:08x}), another node (term {t}, crc {c:08x})"
            )),
            Some(_) => Ok(()),
            None => {
                self.committed.insert((group, index), (term, crc));
                Ok(())
            }
        }
    }
}
