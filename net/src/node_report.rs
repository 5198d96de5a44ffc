//! The node report: what one node tells each peer about itself, every second and when its
//! leadership changes, on each shard's connection: the addresses it was configured with and the
//! partition groups of that shard it leads (with their terms).
//!
//! Two uses (docs/ARCHITECTURE.md, "Node reports"):
//! - the controller leader registers each member's own Kafka and HTTP addresses: when a report
//!   names addresses other than the member's entry, it proposes `AddMember` with them (a
//!   node never has to lead the controller to correct its entry);
//! - every node learns who leads the groups it does not host, so Metadata on any node names
//!   the leader of every partition.
//!
//! Only leaders report a group (the report's sender is the leader), so a receiver keeps, per
//! group, the report with the highest term.
//!
//! Encoding (all little-endian):
//! ```text
//! node_report = { u64 from | u64 to | addr kafka | addr http
//!               | u32 n | n * { u64 group | u64 term } }
//! addr        = { u8 family (4 or 6) | 4 or 16 bytes of IP | u16 port }
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tern_raft::message::{NodeId, NO_NODE};

use crate::cursor::Cursor;
use crate::error::DecodeError;
use crate::GroupId;

const LED_BYTES: usize = 8 * 2;

/// Groups led, at most, in one report: a shard with more sends several reports. Keeps one
/// report far below the frame limit (16 bytes each: 1 MiB).
pub const REPORT_GROUPS_MAX: usize = 65_536;

/// One group the sender leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedGroup {
    pub group: GroupId,
    /// The Raft term in which the sender leads it (Kafka's leader epoch).
    pub term: u64,
}

/// The client-facing addresses a node was configured with. (Its peer address is what the
/// other nodes dial, from their own configuration: not reported.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    pub kafka: SocketAddr,
    pub http: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    pub from: NodeId,
    pub to: NodeId,
    pub addrs: NodeAddrs,
    pub led: Vec<LedGroup>,
}

fn addr_bytes(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

fn encode_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_le_bytes());
}

fn decode_addr(cur: &mut Cursor<'_>, what: &'static str) -> Result<SocketAddr, DecodeError> {
    let ip = match cur.u8(what)? {
        4 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(cur.bytes(4, what)?);
            IpAddr::V4(Ipv4Addr::from(b))
        }
        6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(cur.bytes(16, what)?);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what,
                tag: tag.into(),
            })
        }
    };
    Ok(SocketAddr::new(ip, cur.u16(what)?))
}

impl NodeReport {
    /// Bytes of the encoded payload.
    pub fn encoded_bytes(&self) -> usize {
        8 + 8
            + addr_bytes(&self.addrs.kafka)
            + addr_bytes(&self.addrs.http)
            + 4
            + self.led.len() * LED_BYTES
    }

    /// Appends the payload to `out`. At most [`REPORT_GROUPS_MAX`] groups are written (the
    /// sender splits longer lists; see `chunks`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let led = &self.led[..self.led.len().min(REPORT_GROUPS_MAX)];
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        encode_addr(out, &self.addrs.kafka);
        encode_addr(out, &self.addrs.http);
        out.extend_from_slice(&(led.len() as u32).to_le_bytes());
        for l in led {
            out.extend_from_slice(&l.group.to_le_bytes());
            out.extend_from_slice(&l.term.to_le_bytes());
        }
    }

    /// Decodes a payload; node ids must be non-zero and distinct, terms non-zero.
    pub fn decode(payload: &[u8]) -> Result<NodeReport, DecodeError> {
        let mut cur = Cursor::new(payload);
        let from = cur.u64("report.from")?;
        let to = cur.u64("report.to")?;
        if from == NO_NODE || to == NO_NODE || from == to {
            return Err(DecodeError::Invalid(format!(
                "node report from {from} to {to}"
            )));
        }
        let addrs = NodeAddrs {
            kafka: decode_addr(&mut cur, "report.kafka_addr")?,
            http: decode_addr(&mut cur, "report.http_addr")?,
        };
        let n = cur.count("report.led", LED_BYTES)?;
        if n > REPORT_GROUPS_MAX {
            return Err(DecodeError::Invalid(format!(
                "node report lists {n} groups, at most {REPORT_GROUPS_MAX}"
            )));
        }
        let mut led = Vec::with_capacity(n);
        for _ in 0..n {
            let group = cur.u64("report.group")?;
            let term = cur.u64("report.term")?;
            if term == 0 {
                return Err(DecodeError::Invalid(format!(
                    "node report: group {group} led in term 0"
                )));
            }
            led.push(LedGroup { group, term });
        }
        cur.finish("node report")?;
        Ok(NodeReport {
            from,
            to,
            addrs,
            led,
        })
    }

    /// The reports `from` sends `to`: one per [`REPORT_GROUPS_MAX`] groups led, and one (with
    /// no group) when it leads none, so its addresses always travel.
    pub fn chunks(from: NodeId, to: NodeId, addrs: NodeAddrs, led: &[LedGroup]) -> Vec<Self> {
        let make = |led: &[LedGroup]| NodeReport {
            from,
            to,
            addrs,
            led: led.to_vec(),
        };
        if led.is_empty() {
            return vec![make(&[])];
        }
        led.chunks(REPORT_GROUPS_MAX).map(make).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> NodeReport {
        NodeReport {
            from: 2,
            to: 1,
            addrs: NodeAddrs {
                kafka: "[::1]:19092".parse().unwrap(),
                http: "127.0.0.2:19090".parse().unwrap(),
            },
            led: vec![
                LedGroup { group: 1, term: 3 },
                LedGroup { group: 7, term: 9 },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_truncation_refused() {
        let r = report();
        let mut buf = Vec::new();
        r.encode(&mut buf);
        assert_eq!(buf.len(), r.encoded_bytes());
        assert_eq!(NodeReport::decode(&buf).unwrap(), r);
        for cut in 0..buf.len() {
            assert!(NodeReport::decode(&buf[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(NodeReport::decode(&longer).is_err());
    }

    #[test]
    fn bad_fields_refused() {
        let mut buf = Vec::new();
        report().encode(&mut buf);
        let mut bad = buf.clone();
        bad[16] = 5; // kafka address family
        assert!(NodeReport::decode(&bad).is_err());
        let mut same = buf.clone();
        same[8..16].copy_from_slice(&2u64.to_le_bytes()); // to == from
        assert!(NodeReport::decode(&same).is_err());
        let mut zero_term = buf.clone();
        let at = zero_term.len() - 8;
        zero_term[at..].copy_from_slice(&0u64.to_le_bytes());
        assert!(NodeReport::decode(&zero_term).is_err());
        let mut forged = buf.clone();
        let count_at = buf.len() - 4 - 2 * LED_BYTES;
        forged[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(NodeReport::decode(&forged).is_err());
    }

    #[test]
    fn chunks_always_carry_the_addresses() {
        let r = report();
        assert_eq!(NodeReport::chunks(2, 1, r.addrs, &[]).len(), 1);
        let many: Vec<LedGroup> = (0..REPORT_GROUPS_MAX as u64 + 1)
            .map(|group| LedGroup { group, term: 1 })
            .collect();
        let chunks = NodeReport::chunks(2, 1, r.addrs, &many);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].led.len(), 1);
    }
}
