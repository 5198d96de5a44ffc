//! Node reports on a shard (the wire format is `tern_net::node_report`): what this shard tells
//! every other member, and what it keeps of what they tell it.
//!
//! - **Sending.** Every [`REPORT_TICKS`] ticks, and at the next tick after the set of groups
//!   this shard leads changed, the shard sends each other member the node's Kafka and HTTP
//!   addresses and the groups of this shard it leads, with their terms. The connection is the
//!   shard's own, so a peer receives it on the same shard, where those groups live.
//! - **Leaders of groups not hosted here.** A receiver keeps, per group, the leader with the
//!   highest term reported, and forgets it after [`REPORT_EXPIRY_TICKS`] without a refresh (a
//!   dead leader stops being advertised). Metadata on any node then names the leader of every
//!   partition, not only of those it hosts.
//! - **Members' own addresses.** The controller's leader compares the addresses in a report
//!   with the sender's member entry and proposes `AddMember` with the reported ones when they
//!   differ ([`address_update`]): each node's entry holds what it was configured with, without
//!   the node having to lead the controller. Only members already registered are updated;
//!   a report never adds a member.

use std::collections::{BTreeMap, HashMap};

use tern_net::{LedGroup, NodeAddrs, NodeReport};

use super::controller::{ControllerState, Member};
use super::shard::GroupLeader;

/// Ticks between two full reports (1 s at the default 10 ms tick). A change of leadership is
/// reported at the next tick anyway; the period only refreshes (and repairs lost reports),
/// so it is long: a full report costs 16 bytes per led group and peer.
pub const REPORT_TICKS: u64 = 100;
/// A reported leader not refreshed for this many ticks is forgotten.
pub const REPORT_EXPIRY_TICKS: u64 = 4 * REPORT_TICKS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reported {
    leader: u64,
    term: u64,
    seen_tick: u64,
}

/// One shard's side of the reports.
#[derive(Debug, Default)]
pub struct NodeReports {
    /// Leaders of this shard's groups as other nodes reported them.
    remote: HashMap<u64, Reported>,
    /// What the last report said this shard leads, and when it was sent.
    last_led: Vec<LedGroup>,
    last_sent_tick: Option<u64>,
    /// Address updates this node proposed as controller leader: (controller term, member),
    /// so a refused or slow proposal is not repeated for every report of the term.
    proposed: HashMap<u64, (u64, Member)>,
}

impl NodeReports {
    /// Whether a report is due at tick `now`, given what the shard leads now (sorted by group).
    pub fn due(&mut self, now: u64, led: &[LedGroup]) -> bool {
        let periodic = match self.last_sent_tick {
            None => true,
            Some(sent) => now.saturating_sub(sent) >= REPORT_TICKS,
        };
        if !periodic && led == self.last_led.as_slice() {
            return false;
        }
        self.last_led = led.to_vec();
        self.last_sent_tick = Some(now);
        true
    }

    /// Takes in the groups `report` says its sender leads, and forgets leaders not refreshed
    /// since `now - REPORT_EXPIRY_TICKS`.
    pub fn record(&mut self, report: &NodeReport, now: u64) {
        for l in &report.led {
            let fresh = Reported {
                leader: report.from,
                term: l.term,
                seen_tick: now,
            };
            self.remote
                .entry(l.group)
                .and_modify(|known| {
                    let stale = now.saturating_sub(known.seen_tick) > REPORT_EXPIRY_TICKS;
                    if l.term >= known.term || stale {
                        *known = fresh;
                    }
                })
                .or_insert(fresh);
        }
        self.remote
            .retain(|_, r| now.saturating_sub(r.seen_tick) <= REPORT_EXPIRY_TICKS);
    }

    /// The leaders this shard knows: its hosted groups' own view (`local`), completed or
    /// superseded by reports — a group not hosted here, or hosted without a known leader, or
    /// whose reported leader has a higher term.
    pub fn leaders(&self, local: Vec<GroupLeader>, now: u64) -> Vec<GroupLeader> {
        let mut out: BTreeMap<u64, GroupLeader> = local.into_iter().map(|l| (l.group, l)).collect();
        for (&group, r) in &self.remote {
            if now.saturating_sub(r.seen_tick) > REPORT_EXPIRY_TICKS {
                continue;
            }
            let reported = GroupLeader {
                group,
                leader: r.leader,
                term: r.term,
            };
            out.entry(group)
                .and_modify(|known| {
                    if known.leader == 0 || r.term > known.term {
                        *known = reported;
                    }
                })
                .or_insert(reported);
        }
        out.into_values().collect()
    }

    /// The `AddMember` the controller leader (in `term`) should propose for `report`, if any:
    /// see [`address_update`]; at most once per member, addresses and term.
    pub fn address_proposal(
        &mut self,
        state: &ControllerState,
        report: &NodeReport,
        term: u64,
    ) -> Option<Member> {
        let member = address_update(state, report.from, report.addrs)?;
        if self.proposed.get(&member.node_id) == Some(&(term, member.clone())) {
            return None;
        }
        self.proposed.insert(member.node_id, (term, member.clone()));
        Some(member)
    }

    /// Forgets a proposal that could not be made, so the next report tries again.
    pub fn proposal_failed(&mut self, node_id: u64) {
        self.proposed.remove(&node_id);
    }
}

/// The member entry `node_id` should have given the addresses it reports, when that differs
/// from its entry in `state`. `None` for a node that is not a member (reports never add one)
/// or whose entry already holds them. The peer address stays as registered.
pub fn address_update(state: &ControllerState, node_id: u64, addrs: NodeAddrs) -> Option<Member> {
    let known = state.members().get(&node_id)?;
    let wanted = Member {
        kafka_addr: addrs.kafka,
        http_addr: addrs.http,
        ..known.clone()
    };
    (wanted != *known).then_some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::controller::Command;

    fn addrs(port: u16) -> NodeAddrs {
        NodeAddrs {
            kafka: format!("127.0.0.2:{port}").parse().unwrap(),
            http: format!("127.0.0.2:{}", port + 1).parse().unwrap(),
        }
    }

    fn report(from: u64, led: &[(u64, u64)]) -> NodeReport {
        NodeReport {
            from,
            to: 1,
            addrs: addrs(19092),
            led: led
                .iter()
                .map(|&(group, term)| LedGroup { group, term })
                .collect(),
        }
    }

    fn leader(group: u64, leader: u64, term: u64) -> GroupLeader {
        GroupLeader {
            group,
            leader,
            term,
        }
    }

    #[test]
    fn highest_term_wins_and_stale_reports_expire() {
        let mut r = NodeReports::default();
        r.record(&report(2, &[(5, 3), (6, 1)]), 0);
        r.record(&report(3, &[(5, 2)]), 1); // an older term: ignored
        assert_eq!(r.leaders(vec![], 1), vec![leader(5, 2, 3), leader(6, 2, 1)]);
        r.record(&report(3, &[(5, 4)]), 2);
        assert_eq!(r.leaders(vec![], 2)[0], leader(5, 3, 4));
        // Node 3 stops reporting; node 2 keeps reporting group 6 only.
        let later = 3 + REPORT_EXPIRY_TICKS;
        r.record(&report(2, &[(6, 1)]), later);
        assert_eq!(r.leaders(vec![], later), vec![leader(6, 2, 1)]);
    }

    #[test]
    fn local_view_completed_not_overridden_by_older_reports() {
        let mut r = NodeReports::default();
        r.record(&report(2, &[(5, 3), (7, 9)]), 0);
        let local = vec![leader(5, 1, 4), leader(7, 0, 9)];
        assert_eq!(r.leaders(local, 0), vec![leader(5, 1, 4), leader(7, 2, 9)]);
    }

    #[test]
    fn due_periodically_and_when_leadership_changes() {
        let mut r = NodeReports::default();
        let led = vec![LedGroup { group: 1, term: 2 }];
        assert!(r.due(0, &led));
        assert!(!r.due(1, &led));
        assert!(r.due(2, &[]));
        assert!(!r.due(3, &[]));
        assert!(r.due(2 + REPORT_TICKS, &[]));
    }

    #[test]
    fn addresses_updated_for_members_only_once_per_term() {
        let mut state = ControllerState::default();
        let m = Member {
            node_id: 2,
            peer_addr: "127.0.0.2:9093".parse().unwrap(),
            kafka_addr: "127.0.0.2:9092".parse().unwrap(),
            http_addr: "127.0.0.2:9090".parse().unwrap(),
        };
        state.apply(1, &Command::AddMember(m.clone())).unwrap();
        let mut r = NodeReports::default();
        assert_eq!(r.address_proposal(&state, &report(9, &[]), 1), None);
        let want = r.address_proposal(&state, &report(2, &[]), 1).unwrap();
        assert_eq!(want.peer_addr, m.peer_addr);
        assert_eq!(want.kafka_addr, addrs(19092).kafka);
        assert_eq!(want.http_addr, addrs(19092).http);
        assert_eq!(r.address_proposal(&state, &report(2, &[]), 1), None);
        assert_eq!(
            r.address_proposal(&state, &report(2, &[]), 2),
            Some(want.clone())
        );
        r.proposal_failed(2);
        assert_eq!(
            r.address_proposal(&state, &report(2, &[]), 2),
            Some(want.clone())
        );
        state.apply(2, &Command::AddMember(want)).unwrap();
        assert_eq!(r.address_proposal(&state, &report(2, &[]), 3), None);
    }
}
