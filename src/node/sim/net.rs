//! The simulated network: a [`PeerTransport`] per node over one shared, seeded message
//! scheduler. Every message sent is lost, duplicated or delayed by a number of ticks drawn
//! from the seed (different delays reorder messages), and never crosses a cut link or
//! reaches a node that is down. Delivery happens when the simulation calls
//! [`SimNet::deliver_due`], in (deadline, send order) order, so a seed replays exactly.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_net::{Outbound, PeerEvent, PeerTransport, SendError, TransportStats};
use tern_raft::message::{MessageBody, NodeId};

use super::super::rebuild::NodeRebuild;

/// How unreliable the network is; percentages are per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetFaults {
    pub loss_pct: u32,
    pub duplicate_pct: u32,
    /// Delivery delay is drawn from `0..=delay_ticks_max`.
    pub delay_ticks_max: u64,
}

impl NetFaults {
    pub const NONE: NetFaults = NetFaults {
        loss_pct: 0,
        duplicate_pct: 0,
        delay_ticks_max: 1,
    };
}

#[derive(Default)]
struct Inbox {
    up: bool,
    queue: VecDeque<PeerEvent>,
    waker: Option<Waker>,
}

struct State {
    rng: SmallRng,
    now: u64,
    seq: u64,
    faults: NetFaults,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    in_flight: BTreeMap<(u64, u64), (NodeId, PeerEvent)>,
    inboxes: BTreeMap<NodeId, Inbox>,
    stats: TransportStats,
    /// Nodes that lost their disk and are being rebuilt: what they send is checked.
    rebuilding: BTreeMap<NodeId, Arc<NodeRebuild>>,
    /// Per (node, group): the highest commit index a leader sent it (AppendEntries,
    /// heartbeat, or a snapshot's index), as delivered.
    commit_delivered: BTreeMap<(NodeId, u64), u64>,
    /// The first message a rebuilding group must not have sent.
    violation: Option<String>,
}

pub struct SimNet {
    state: RefCell<State>,
}

impl SimNet {
    pub fn new(seed: u64, faults: NetFaults) -> Rc<Self> {
        Rc::new(SimNet {
            state: RefCell::new(State {
                rng: SmallRng::seed_from_u64(seed),
                now: 0,
                seq: 0,
                faults,
                cut: BTreeSet::new(),
                in_flight: BTreeMap::new(),
                inboxes: BTreeMap::new(),
                stats: TransportStats::default(),
                rebuilding: BTreeMap::new(),
                commit_delivered: BTreeMap::new(),
                violation: None,
            }),
        })
    }

    pub fn set_faults(&self, faults: NetFaults) {
        self.state.borrow_mut().faults = faults;
    }

    /// The endpoint of `node`, which is up from now on.
    pub fn endpoint(self: &Rc<Self>, node: NodeId) -> SimEndpoint {
        let mut st = self.state.borrow_mut();
        let inbox = st.inboxes.entry(node).or_default();
        inbox.up = true;
        inbox.queue.clear();
        SimEndpoint {
            node,
            net: self.clone(),
        }
    }

    /// `node` crashed: what was queued for it is gone, and so is what reaches it until it
    /// comes back. Its endpoint's `next_event` ends.
    pub fn down(&self, node: NodeId) {
        let mut st = self.state.borrow_mut();
        let inbox = st.inboxes.entry(node).or_default();
        inbox.up = false;
        inbox.queue.clear();
        if let Some(w) = inbox.waker.take() {
            w.wake();
        }
    }

    /// `node` lost its disk and runs rebuilding (this life): until each of its groups
    /// finished, it must grant no vote and acknowledge no entry above a commit index a leader
    /// sent it (docs/replication.md, section 5). Forgets what it was sent in earlier lives.
    pub fn watch_rebuild(&self, node: NodeId, rebuild: Arc<NodeRebuild>) {
        let mut st = self.state.borrow_mut();
        st.rebuilding.insert(node, rebuild);
        st.commit_delivered.retain(|(n, _), _| *n != node);
    }

    pub fn unwatch_rebuild(&self, node: NodeId) {
        self.state.borrow_mut().rebuilding.remove(&node);
    }

    /// The first vote or acknowledgement a rebuilding group sent, if any.
    pub fn take_violation(&self) -> Option<String> {
        self.state.borrow_mut().violation.take()
    }

    /// Cuts both directions between the two sides.
    pub fn partition(&self, side: &[NodeId], other: &[NodeId]) {
        let mut st = self.state.borrow_mut();
        for &a in side {
            for &b in other {
                st.cut.insert((a, b));
                st.cut.insert((b, a));
            }
        }
    }

    pub fn heal(&self) {
        self.state.borrow_mut().cut.clear();
    }

    /// Delivers every message whose delay ran out by tick `now`.
    pub fn deliver_due(&self, now: u64) {
        let mut wake = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            st.now = now;
            let later = st.in_flight.split_off(&(now + 1, 0));
            let due = std::mem::replace(&mut st.in_flight, later);
            for (_, (to, event)) in due {
                let inbox = st.inboxes.entry(to).or_default();
                if !inbox.up {
                    continue;
                }
                let commits: Vec<(u64, u64)> = match &event {
                    PeerEvent::Raft { messages, .. } => messages
                        .iter()
                        .filter_map(|(g, m)| match &m.body {
                            MessageBody::Append { commit, .. } => Some((*g, *commit)),
                            MessageBody::Heartbeat { commit, .. } => Some((*g, *commit)),
                            MessageBody::Snapshot { meta, .. } => Some((*g, meta.index)),
                            _ => None,
                        })
                        .collect(),
                    PeerEvent::Heartbeats(hb) => {
                        hb.heartbeats.iter().map(|h| (h.group, h.commit)).collect()
                    }
                    _ => Vec::new(),
                };
                inbox.queue.push_back(event);
                if let Some(w) = inbox.waker.take() {
                    wake.push(w);
                }
                for (g, c) in commits {
                    let slot = st.commit_delivered.entry((to, g)).or_default();
                    *slot = (*slot).max(c);
                }
            }
        }
        for w in wake {
            w.wake();
        }
    }
}

/// One node's view of the simulated network.
pub struct SimEndpoint {
    node: NodeId,
    net: Rc<SimNet>,
}

impl PeerTransport for SimEndpoint {
    fn send(&self, to: NodeId, outbound: Outbound) -> Result<(), SendError> {
        let mut st = self.net.state.borrow_mut();
        let st = &mut *st;
        if !st.inboxes.contains_key(&to) {
            return Err(SendError::UnknownPeer(to));
        }
        if let (Some(rb), Outbound::Raft(group, m)) = (st.rebuilding.get(&self.node), &outbound) {
            if !rb.group_is_normal(*group) && st.violation.is_none() {
                let heard = st
                    .commit_delivered
                    .get(&(self.node, *group))
                    .copied()
                    .unwrap_or(0);
                st.violation = match m.body {
                    MessageBody::VoteResp { reject: false, pre } => Some(format!(
                        "node {} lost its disk and granted a {}vote in group {group} (term {}) before it was rebuilt",
                        self.node,
                        if pre { "pre-" } else { "" },
                        m.term
                    )),
                    MessageBody::AppendResp {
                        reject: false,
                        index,
                        ..
                    } if index > heard => Some(format!(
                        "node {} lost its disk and acknowledged index {index} of group {group} before it was rebuilt; no leader had told it of a commit above {heard}",
                        self.node
                    )),
                    _ => None,
                };
            }
        }
        let (event, messages) = match outbound {
            Outbound::Raft(group, m) => (
                PeerEvent::Raft {
                    from: self.node,
                    messages: vec![(group, m)],
                },
                1,
            ),
            Outbound::Heartbeats(hb) => {
                let n = (hb.heartbeats.len() + hb.responses.len()) as u64;
                (PeerEvent::Heartbeats(hb), n)
            }
            Outbound::Repair(repair) => (PeerEvent::Repair(repair), 1),
            Outbound::Report(report) => (PeerEvent::Report(report), 1),
            Outbound::Recovery(message) => (PeerEvent::Recovery(message), 1),
        };
        st.stats.messages_sent += messages;
        if st.cut.contains(&(self.node, to)) || st.rng.gen_range(0..100) < st.faults.loss_pct {
            st.stats.dropped_unreachable += messages;
            return Ok(());
        }
        let copies = if st.rng.gen_range(0..100) < st.faults.duplicate_pct {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = st.now + st.rng.gen_range(0..=st.faults.delay_ticks_max);
            st.seq += 1;
            let seq = st.seq;
            st.in_flight.insert((at, seq), (to, event.clone()));
        }
        Ok(())
    }

    fn next_event(&self) -> impl Future<Output = Option<PeerEvent>> {
        poll_fn(move |cx| {
            let mut st = self.net.state.borrow_mut();
            let Some(inbox) = st.inboxes.get_mut(&self.node) else {
                return Poll::Ready(None);
            };
            if !inbox.up {
                return Poll::Ready(None);
            }
            match inbox.queue.pop_front() {
                Some(e) => Poll::Ready(Some(e)),
                None => {
                    inbox.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    fn stats(&self) -> TransportStats {
        self.net.state.borrow().stats
    }
}
