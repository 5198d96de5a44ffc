//! The simulated network: a [`PeerTransport`] per node over one shared, seeded message
//! scheduler. Every message sent is lost, duplicated or delayed by a number of ticks drawn
//! from the seed (different delays reorder messages), and never crosses a cut link or
//! reaches a node that is down. Delivery happens when the simulation calls
//! [`SimNet::deliver_due`], in (deadline, send order) order, so a seed replays exactly.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Poll, Waker};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_net::{Outbound, PeerEvent, PeerTransport, SendError, TransportStats};
use tern_raft::message::NodeId;

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
                inbox.queue.push_back(event);
                if let Some(w) = inbox.waker.take() {
                    wake.push(w);
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
