//! A small cluster driven command by command, shared by the data-driven scripts
//! (`testdata/*.txt`) and the paper-conformance tests. Persistence is synchronous unless a node
//! is put in `manual-persist` mode, where its batches wait for an explicit `persist`.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;
use std::rc::Rc;

use tern_raft::{
    ConfChange, ConfState, Config, EntryFetch, EntryKind, LogStorage, MemStorage, Message, NodeId,
    PersistAck, RawNode, Ready, Role,
};

pub type Disk = Rc<RefCell<MemStorage>>;

pub struct Batch {
    pub rd: Ready,
    pub gated: Vec<Message>,
    pub ack: PersistAck,
}

pub struct Node {
    pub raft: Option<RawNode<Disk>>,
    pub disk: Disk,
    pub cfg: Config,
    pub manual_persist: bool,
    pub pending: VecDeque<Batch>,
    pub last_role: (Role, u64),
}

#[derive(Default)]
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub queue: VecDeque<Message>,
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    pub out: String,
    /// Entry reads the cores asked for, completed by `complete_fetches` (and `stabilize`).
    pub fetches: VecDeque<(NodeId, EntryFetch)>,
    /// While set, messages from this node are moved to `held` instead of being delivered
    /// (to deliver them later, in another order than the network would).
    pub hold_from: Option<NodeId>,
    pub held: Vec<Message>,
}

/// Options of `add-nodes`.
#[derive(Clone)]
pub struct NodeOpts {
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub append_bytes_max: u64,
    pub inflight_msgs_max: usize,
    pub snapshot_chunk_bytes: u64,
    /// Election timeouts follow: `[3 * heartbeat_ticks, 6 * heartbeat_ticks)`.
    pub heartbeat_ticks: u64,
    /// `Config::quiesce`.
    pub quiesce: bool,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            pre_vote: true,
            check_quorum: true,
            append_bytes_max: 1 << 20,
            inflight_msgs_max: 256,
            snapshot_chunk_bytes: 1 << 20,
            heartbeat_ticks: 5,
            quiesce: false,
        }
    }
}

impl Cluster {
    /// Three voters with `opts`; node 1 campaigns and leads.
    pub fn three_led_by_one(opts: &NodeOpts) -> Cluster {
        let mut c = Cluster::default();
        c.add_nodes(3, None, opts);
        c.raft_mut(1).campaign();
        c.stabilize();
        assert_eq!(c.raft(1).role(), Role::Leader);
        c
    }

    pub fn raft(&self, id: NodeId) -> &RawNode<Disk> {
        self.nodes[&id].raft.as_ref().expect("node is up")
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut RawNode<Disk> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raft.as_mut())
            .expect("node is up")
    }

    /// Adds `count` nodes with the next ids; `voters` is their bootstrap configuration
    /// (empty: they join later through a configuration change).
    pub fn add_nodes(&mut self, count: u64, voters: Option<Vec<NodeId>>, opts: &NodeOpts) {
        let first = self.nodes.keys().last().copied().unwrap_or(0) + 1;
        let ids: Vec<NodeId> = (first..first + count).collect();
        let voters = voters.unwrap_or_else(|| ids.clone());
        for id in ids {
            let mut cfg = Config::new(id);
            cfg.seed = id;
            cfg.pre_vote = opts.pre_vote;
            cfg.check_quorum = opts.check_quorum;
            cfg.append_bytes_max = opts.append_bytes_max;
            cfg.inflight_msgs_max = opts.inflight_msgs_max;
            cfg.snapshot_chunk_bytes = opts.snapshot_chunk_bytes;
            cfg.heartbeat_ticks = opts.heartbeat_ticks;
            cfg.quiesce = opts.quiesce;
            cfg.election_ticks_min = 3 * opts.heartbeat_ticks;
            cfg.election_ticks_max = 6 * opts.heartbeat_ticks;
            let disk = Rc::new(RefCell::new(MemStorage::new_with_conf(&voters)));
            let raft = RawNode::new(cfg.clone(), disk.clone()).expect("valid config");
            self.nodes.insert(
                id,
                Node {
                    raft: Some(raft),
                    disk,
                    cfg,
                    manual_persist: false,
                    pending: VecDeque::new(),
                    last_role: (Role::Follower, 0),
                },
            );
        }
    }

    /// Runs every node's Ready loop once. Returns whether anything happened.
    pub fn process_ready(&mut self) -> bool {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut any = false;
        for id in ids {
            any |= self.process_ready_node(id);
        }
        any
    }

    pub fn process_ready_node(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(raft) = node.raft.as_mut() else {
            return false;
        };
        if !raft.has_ready() {
            return false;
        }
        let rd = raft.ready();
        let mut gated = Vec::new();
        let mut sent = Vec::new();
        for m in &rd.messages {
            if m.before_persist {
                sent.push(m.msg.clone());
            } else {
                gated.push(m.msg.clone());
            }
        }
        for e in &rd.committed_entries {
            let data = match e.kind {
                EntryKind::ConfChange => format!(
                    "conf {:?}",
                    ConfState::decode(&e.data).map(|c| (c.voters, c.voters_outgoing, c.learners))
                ),
                EntryKind::Normal if e.data.is_empty() => "noop".to_string(),
                EntryKind::Normal => String::from_utf8_lossy(&e.data).to_string(),
            };
            let _ = writeln!(self.out, "{id} applied {}/{} {data}", e.term, e.index);
        }
        for r in &rd.read_states {
            let _ = writeln!(self.out, "{id} read ctx={} index={}", r.ctx, r.index);
        }
        if let Some(s) = &rd.snapshot {
            let _ = writeln!(
                self.out,
                "{id} installs snapshot {}/{}",
                s.meta.term, s.meta.index
            );
        }
        for f in &rd.fetches {
            let _ = writeln!(
                self.out,
                "{id} fetch {:?} [{}, {})",
                f.purpose, f.low, f.high
            );
            self.fetches.push_back((id, *f));
        }
        let ack = rd.persist_ack;
        self.queue.extend(sent);
        let batch = Batch { rd, gated, ack };
        let node = self.nodes.get_mut(&id).expect("known node");
        node.pending.push_back(batch);
        if !node.manual_persist {
            self.persist(id);
        }
        self.report_role(id);
        true
    }

    /// Makes every pending batch of `id` durable, in order.
    pub fn persist(&mut self, id: NodeId) {
        loop {
            let node = self.nodes.get_mut(&id).expect("known node");
            let Some(batch) = node.pending.pop_front() else {
                break;
            };
            {
                let mut disk = node.disk.borrow_mut();
                if let Some(s) = &batch.rd.snapshot {
                    disk.apply_snapshot(s.clone());
                }
                disk.append(&batch.rd.entries);
                if let Some(hs) = batch.rd.hard_state {
                    disk.hard_state = hs;
                }
            }
            self.queue.extend(batch.gated);
            if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                raft.on_persisted(batch.ack);
            }
        }
        self.report_role(id);
    }

    fn report_role(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(raft) = node.raft.as_ref() else {
            return;
        };
        let now = (raft.role(), raft.term());
        if now != node.last_role {
            node.last_role = now;
            let _ = writeln!(self.out, "{id} is {:?} at term {}", now.0, now.1);
        }
    }

    /// Delivers every queued message once (new messages wait for the next round).
    pub fn deliver(&mut self) -> bool {
        let msgs: Vec<Message> = self.queue.drain(..).collect();
        let any = !msgs.is_empty();
        for m in msgs {
            if self.hold_from == Some(m.from) {
                let _ = writeln!(self.out, "held {m}");
                self.held.push(m);
                continue;
            }
            let up = self.nodes.get(&m.to).is_some_and(|n| n.raft.is_some());
            if self.blocked.contains(&(m.from, m.to)) || !up {
                let _ = writeln!(self.out, "dropped {m}");
                continue;
            }
            let _ = writeln!(self.out, "{m}");
            let to = m.to;
            if let Err(e) = self.raft_mut(to).step(m) {
                let _ = writeln!(self.out, "{to} refused: {e}");
            }
        }
        any
    }

    /// Completes every entry read asked for so far: fills the node's cache, then tells its
    /// core. Returns whether there was any.
    pub fn complete_fetches(&mut self) -> bool {
        let fetches: Vec<(NodeId, EntryFetch)> = self.fetches.drain(..).collect();
        let any = !fetches.is_empty();
        for (id, f) in fetches {
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            node.disk
                .borrow_mut()
                .fill_cache(f.low, f.high, f.bytes_max);
            if let Some(raft) = node.raft.as_mut() {
                raft.on_entries_fetched(f);
            }
        }
        any
    }

    /// Processes, delivers and completes fetches until nothing moves (bounded).
    pub fn stabilize(&mut self) {
        for _ in 0..1000 {
            let a = self.process_ready();
            let b = self.deliver();
            let c = self.complete_fetches();
            if !a && !b && !c {
                return;
            }
        }
        panic!("stabilize did not converge");
    }

    /// `stabilize`, holding every message `id` sends in `held`.
    pub fn stabilize_holding_from(&mut self, id: NodeId) {
        self.hold_from = Some(id);
        self.stabilize();
        self.hold_from = None;
    }

    pub fn tick(&mut self, id: NodeId, count: u64) {
        for _ in 0..count {
            self.raft_mut(id).tick();
        }
    }

    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.blocked.clear();
        for (gi, a) in groups.iter().enumerate() {
            for (gj, b) in groups.iter().enumerate() {
                if gi != gj {
                    for x in a {
                        for y in b {
                            self.blocked.insert((*x, *y));
                        }
                    }
                }
            }
        }
    }

    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.raft = None;
        node.pending.clear();
        self.fetches.retain(|(n, _)| *n != id);
    }

    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let raft = RawNode::new(node.cfg.clone(), node.disk.clone()).expect("restart");
        node.last_role = (raft.role(), raft.term());
        node.raft = Some(raft);
    }

    pub fn status(&self) -> String {
        let mut s = String::new();
        for (id, n) in &self.nodes {
            match n.raft.as_ref() {
                Some(r) => {
                    let st = r.status();
                    let _ = writeln!(
                        s,
                        "{id}: {:?} term={} leader={} commit={} applied={} last={} persisted={} voters={:?}{}{}",
                        st.role,
                        st.term,
                        st.leader,
                        st.commit,
                        st.applied,
                        st.last_index,
                        st.persisted_index,
                        st.conf.voters,
                        if st.conf.voters_outgoing.is_empty() { String::new() } else { format!(" outgoing={:?}", st.conf.voters_outgoing) },
                        if st.conf.learners.is_empty() { String::new() } else { format!(" learners={:?}", st.conf.learners) },
                    );
                }
                None => {
                    let _ = writeln!(s, "{id}: down");
                }
            }
        }
        s
    }

    pub fn log(&self, id: NodeId) -> String {
        let r = self.raft(id);
        let mut s = format!("{id}: first={} [", r.first_index());
        for i in r.first_index()..=r.last_index() {
            let sep = if i == r.first_index() { "" } else { " " };
            let _ = write!(s, "{sep}{}/{i}", r.log_term(i).unwrap_or(0));
        }
        s.push_str("]\n");
        s
    }

    /// Compacts node `id`'s durable log into a snapshot at `index` (data: `"snap@<index>"`
    /// padded to `size` bytes).
    pub fn compact(&mut self, id: NodeId, index: u64, size: usize) {
        let conf = self.raft(id).conf().clone();
        let node = &self.nodes[&id];
        let mut data = format!("snap@{index}").into_bytes();
        data.resize(size.max(data.len()), b'.');
        node.disk.borrow_mut().compact(index, conf, data);
        let _ = node.disk.borrow().last_index();
    }

    pub fn conf_change(&mut self, id: NodeId, change: &ConfChange) -> String {
        match self.raft_mut(id).propose_conf_change(change) {
            Ok((t, i)) => format!("ok {t}/{i}\n"),
            Err(e) => format!("error: {e}\n"),
        }
    }
}
