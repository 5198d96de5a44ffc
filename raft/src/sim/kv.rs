//! The simulated application: a key-value state machine with put / get / compare-and-set.

use std::collections::BTreeMap;

/// A client command as stored in an entry.
///
/// Encoding: `{ u64 op_id | u8 kind (1 put, 2 cas) | u8 key | u64 a | u64 b }`, little-endian;
/// put writes `a`; cas writes `b` if the key holds `a` (0 = absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    pub op_id: u64,
    pub key: u8,
    pub kind: CommandKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Put { value: u64 },
    Cas { expected: u64, new: u64 },
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(26);
        out.extend_from_slice(&self.op_id.to_le_bytes());
        let (kind, a, b) = match self.kind {
            CommandKind::Put { value } => (1u8, value, 0),
            CommandKind::Cas { expected, new } => (2u8, expected, new),
        };
        out.push(kind);
        out.push(self.key);
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Option<Command> {
        if buf.len() != 26 {
            return None;
        }
        let u64_at = |i: usize| {
            buf.get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let (a, b) = (u64_at(10)?, u64_at(18)?);
        let kind = match buf[8] {
            1 => CommandKind::Put { value: a },
            2 => CommandKind::Cas {
                expected: a,
                new: b,
            },
            _ => return None,
        };
        Some(Command {
            op_id: u64_at(0)?,
            key: buf[9],
            kind,
        })
    }
}

/// The state machine. Absent keys read as 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    pub map: BTreeMap<u8, u64>,
}

impl KvStore {
    pub fn get(&self, key: u8) -> u64 {
        self.map.get(&key).copied().unwrap_or(0)
    }

    /// Applies a command; returns the CAS outcome (true for a put).
    pub fn apply(&mut self, cmd: &Command) -> bool {
        match cmd.kind {
            CommandKind::Put { value } => {
                self.map.insert(cmd.key, value);
                true
            }
            CommandKind::Cas { expected, new } => {
                if self.get(cmd.key) == expected {
                    self.map.insert(cmd.key, new);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Encoding: `{ u8 key | u64 value }*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.map {
            out.push(*k);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Option<KvStore> {
        if !buf.len().is_multiple_of(9) {
            return None;
        }
        let mut map = BTreeMap::new();
        for rec in buf.chunks_exact(9) {
            map.insert(rec[0], u64::from_le_bytes(rec[1..9].try_into().ok()?));
        }
        Some(KvStore { map })
    }
}
