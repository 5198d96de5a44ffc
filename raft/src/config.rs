//! Per-group configuration with documented defaults, checked by [`Config::validate`].
//!
//! Time is counted in ticks: the caller decides how long a tick is. With tern's default of one
//! tick every 10 ms, the defaults below give a 50 ms heartbeat and a 150–300 ms election timeout.

use crate::message::{NodeId, NO_NODE};

/// Configuration of one Raft group member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id. Must not be 0.
    pub id: NodeId,
    /// A leader sends heartbeats every `heartbeat_ticks`. Default 5 (50 ms at 10 ms/tick).
    pub heartbeat_ticks: u64,
    /// The election timeout is drawn uniformly from `[election_ticks_min, election_ticks_max)`
    /// after each reset. Defaults 15 and 30 (150–300 ms). `election_ticks_min` is also the
    /// check-quorum period, the leader-lease period for votes and the transfer timeout.
    /// Must exceed `heartbeat_ticks`.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// Ask for pre-votes before starting a real election, so a partitioned node that rejoins
    /// cannot force the cluster into a new term. Default true.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within `election_ticks_min`,
    /// and voters ignore vote requests while they hear from a leader. Default true.
    pub check_quorum: bool,
    /// Flow control: AppendEntries messages in flight per follower. Default 256, minimum 1.
    pub inflight_msgs_max: usize,
    /// Flow control: entry bytes in flight per follower. Default 8 MiB.
    pub inflight_bytes_max: u64,
    /// Entry bytes in one AppendEntries message (at least one entry is always sent). Default 1 MiB.
    pub append_bytes_max: u64,
    /// Entry bytes handed to the application in one `Ready` to apply. Default 16 MiB.
    pub apply_bytes_max: u64,
    /// A leader refuses proposals while more than this many bytes are appended but not yet
    /// applied. 0 means no limit. Default 64 MiB.
    pub uncommitted_bytes_max: u64,
    /// Snapshot bytes in one chunk message. Default 1 MiB.
    pub snapshot_chunk_bytes: u64,
    /// A snapshot chunk without an answer after this many ticks is sent again. Default 30.
    pub snapshot_retry_ticks: u64,
    /// An entry fetch (`Ready::fetches`) not completed after this many ticks is forgotten and
    /// asked again when the entries are next needed. Default 30.
    pub fetch_retry_ticks: u64,
    /// Largest snapshot a follower accepts (it buffers one in memory while receiving).
    /// Default 1 GiB.
    pub snapshot_bytes_max: u64,
    /// Read requests queued while a new leader has not yet committed an entry of its term.
    /// Default 1024.
    pub pending_reads_max: usize,
    /// The index the application's state machine has applied (on restart); committed entries
    /// after it are handed out to apply again. Default 0 (= the snapshot).
    pub applied: u64,
    /// Seed of the per-node random number generator used for election timeouts. 0 means
    /// derive it from `id`.
    pub seed: u64,
    /// Quiescence of idle groups: a leader with nothing in flight sends one heartbeat marked
    /// `quiesce` and then no more; its followers stop counting election ticks (docs/raft.md,
    /// "Quiescence of idle groups"). The caller must then supply liveness per peer node and
    /// call [`crate::RawNode::unquiesce`] when a peer node falls silent. Default false.
    pub quiesce: bool,
}

impl Config {
    /// The documented defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            heartbeat_ticks: 5,
            election_ticks_min: 15,
            election_ticks_max: 30,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max: 256,
            inflight_bytes_max: 8 << 20,
            append_bytes_max: 1 << 20,
            apply_bytes_max: 16 << 20,
            uncommitted_bytes_max: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_retry_ticks: 30,
            fetch_retry_ticks: 30,
            snapshot_bytes_max: 1 << 30,
            pending_reads_max: 1024,
            applied: 0,
            seed: 0,
            quiesce: false,
        }
    }

    /// Checks the configuration; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.id == NO_NODE {
            return bad("id", "must not be 0 (0 means no node)");
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return bad("election_ticks_min", "must be greater than heartbeat_ticks");
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return bad(
                "election_ticks_max",
                "must be greater than election_ticks_min",
            );
        }
        if self.inflight_msgs_max == 0 {
            return bad("inflight_msgs_max", "must be at least 1");
        }
        if self.inflight_bytes_max == 0 {
            return bad("inflight_bytes_max", "must be at least 1");
        }
        if self.append_bytes_max == 0 {
            return bad("append_bytes_max", "must be at least 1");
        }
        if self.apply_bytes_max == 0 {
            return bad("apply_bytes_max", "must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0 {
            return bad("snapshot_chunk_bytes", "must be at least 1");
        }
        if self.snapshot_retry_ticks == 0 {
            return bad("snapshot_retry_ticks", "must be at least 1");
        }
        if self.fetch_retry_ticks == 0 {
            return bad("fetch_retry_ticks", "must be at least 1");
        }
        if self.pending_reads_max == 0 {
            return bad("pending_reads_max", "must be at least 1");
        }
        Ok(())
    }
}

/// A configuration value is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: {field} {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        assert_eq!(Config::new(1).validate(), Ok(()));
        let mut cfg = Config::new(0);
        assert_eq!(cfg.validate().map_err(|e| e.field), Err("id"));
        cfg = Config::new(1);
        cfg.election_ticks_min = 5;
        assert_eq!(
            cfg.validate().map_err(|e| e.field),
            Err("election_ticks_min")
        );
        cfg = Config::new(1);
        cfg.election_ticks_max = 15;
        assert_eq!(
            cfg.validate().map_err(|e| e.field),
            Err("election_ticks_max")
        );
        cfg = Config::new(1);
        cfg.inflight_msgs_max = 0;
        let err = cfg.validate().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid raft config: inflight_msgs_max must be at least 1")
        );
    }
}
