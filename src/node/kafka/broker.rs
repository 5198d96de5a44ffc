//! What the Kafka front end on one shard knows and how it reaches the shards: the senders to
//! every shard's inbox (a partition's request goes to the shard owning its group, and the
//! answer comes back on a oneshot channel), and a cached copy of the controller's state for
//! routing. Nothing here is shared between threads or locked: each shard's front end has its
//! own `Broker`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;

use crate::node::controller::{
    Command, ControllerState, Outcome, Retention, Topic, CONTROLLER_GROUP,
};
use crate::node::requests::{PartitionRequest, RequestError};
use crate::node::shard::{GroupLeader, ShardMsg, ShardView};

/// How long a cached controller state routes requests before it is asked again. A topic
/// unknown to the cache is looked up afresh at once, so a new topic is never refused for
/// this long; a deleted one may be routed to its (gone) group, which answers
/// UNKNOWN_TOPIC_OR_PARTITION.
const VIEW_TTL: Duration = Duration::from_millis(200);

/// The node-level facts the front end answers with.
#[derive(Debug, Clone)]
pub struct BrokerSetup {
    pub node_id: u64,
    /// The address this node advertises to Kafka clients (its `kafka_addr`, with the port the
    /// listener really has).
    pub advertised: SocketAddr,
    /// This node's admin HTTP address (DescribeConfigs `tern.http.addr`: `configs.rs`).
    pub http_addr: SocketAddr,
    pub cluster_id: String,
    /// `read_only` in the node's configuration: every write is refused.
    pub read_only: bool,
    pub shard: u32,
    pub shards: u32,
    pub senders: Vec<mpsc::Sender<ShardMsg>>,
    /// The `[retention]` section: the retention of topics created without their own.
    pub default_retention: Retention,
}

pub struct Broker {
    pub setup: BrokerSetup,
    view: RefCell<Option<(Instant, Rc<ControllerState>)>>,
    /// Topics of the cached state already looked up, shared: a produce or fetch then costs a
    /// reference count, not a copy of the topic and its partitions' replica lists. When the
    /// state is replaced, a topic the new state holds unchanged is kept; the others go.
    topics: RefCell<HashMap<String, Rc<Topic>>>,
    /// A refresh of the cached state is on its way: requests meanwhile use the cached state
    /// (at most one refresh's round trip older than `VIEW_TTL`) instead of each asking the
    /// shard for a copy of its own, which under load made every connection refresh at once
    /// whenever the cache expired.
    refreshing: Cell<bool>,
    /// This front end's own senders to every shard (copies of `setup.senders`), tried first
    /// without waiting: a clone of a sender allocates its parking slot, so one is made only
    /// when a shard's inbox is full and the request has to wait for room.
    senders: RefCell<Vec<mpsc::Sender<ShardMsg>>>,
}

/// Clears `Broker::refreshing` when the refresh ends, returned or dropped.
struct RefreshGuard<'a>(&'a Cell<bool>);

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Broker {
    pub fn new(setup: BrokerSetup) -> Rc<Self> {
        Rc::new(Broker {
            senders: RefCell::new(setup.senders.clone()),
            setup,
            view: RefCell::new(None),
            topics: RefCell::new(HashMap::new()),
            refreshing: Cell::new(false),
        })
    }

    fn sender(&self, shard: u32) -> Result<mpsc::Sender<ShardMsg>, RequestError> {
        self.setup
            .senders
            .get(shard as usize)
            .cloned()
            .ok_or(RequestError::ShuttingDown)
    }

    async fn send(&self, shard: u32, msg: ShardMsg) -> Result<(), RequestError> {
        let msg = {
            let mut senders = self.senders.borrow_mut();
            let tx = senders
                .get_mut(shard as usize)
                .ok_or(RequestError::ShuttingDown)?;
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_disconnected() => return Err(RequestError::ShuttingDown),
                // Full: wait for room on a sender of its own, as every request did before.
                Err(e) => e.into_inner(),
            }
        };
        self.sender(shard)?
            .send(msg)
            .await
            .map_err(|_| RequestError::ShuttingDown)
    }

    /// Sends a request for partition group `group` to its shard and waits for the answer.
    pub async fn ask<T>(
        &self,
        group: u64,
        make: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> PartitionRequest,
    ) -> Result<T, RequestError> {
        let (tx, rx) = oneshot::channel();
        let shard = tern_engine::shard_for_group(group, self.setup.shards);
        self.send(
            shard,
            ShardMsg::Partition {
                group,
                request: make(tx),
            },
        )
        .await?;
        rx.await.unwrap_or(Err(RequestError::ShuttingDown))
    }

    /// A controller command, proposed on the shard hosting the controller group.
    pub async fn controller(&self, command: Command) -> Result<Outcome, RequestError> {
        let (tx, rx) = oneshot::channel();
        let shard = tern_engine::shard_for_group(CONTROLLER_GROUP, self.setup.shards);
        self.send(shard, ShardMsg::Controller { command, reply: tx })
            .await?;
        rx.await.unwrap_or(Err(RequestError::ShuttingDown))
    }

    async fn shard_view(&self, shard: u32) -> Result<ShardView, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.send(shard, ShardMsg::View { reply: tx }).await?;
        rx.await.map_err(|_| RequestError::ShuttingDown)
    }

    /// The controller state: asked afresh from the shard when `refresh` is set, else from
    /// the cache when it is fresh or another request is refreshing it.
    pub async fn state(&self, refresh: bool) -> Result<Rc<ControllerState>, RequestError> {
        if let Some((at, state)) = &*self.view.borrow() {
            if !refresh && (at.elapsed() < VIEW_TTL || self.refreshing.get()) {
                return Ok(state.clone());
            }
        }
        self.refreshing.set(true);
        let _guard = RefreshGuard(&self.refreshing);
        let view = self.shard_view(self.setup.shard).await?;
        let state = Rc::new(view.controller.map(|b| *b).unwrap_or_default());
        *self.view.borrow_mut() = Some((Instant::now(), state.clone()));
        self.topics
            .borrow_mut()
            .retain(|name, t| state.topic(name) == Some(&**t));
        Ok(state)
    }

    /// The topic of this name, looking again once if the cache does not know it.
    pub async fn topic(&self, name: &str) -> Result<Option<Rc<Topic>>, RequestError> {
        for refresh in [false, true] {
            let state = self.state(refresh).await?;
            if let Some(t) = self.shared_topic(&state, name) {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// The topic of this id, looking again once if the cache does not know it.
    pub async fn topic_by_id(&self, id: uuid::Uuid) -> Result<Option<Rc<Topic>>, RequestError> {
        for refresh in [false, true] {
            let state = self.state(refresh).await?;
            if let Some(t) = state.topics().values().find(|t| t.id == id) {
                return Ok(self.shared_topic(&state, &t.name));
            }
        }
        Ok(None)
    }

    /// Topic `name` of `state`, shared through `topics` while `state` is the cached one.
    fn shared_topic(&self, state: &Rc<ControllerState>, name: &str) -> Option<Rc<Topic>> {
        let current = matches!(&*self.view.borrow(), Some((_, s)) if Rc::ptr_eq(s, state));
        if current {
            if let Some(t) = self.topics.borrow().get(name) {
                return Some(t.clone());
            }
        }
        let t = Rc::new(state.topic(name)?.clone());
        if current {
            self.topics.borrow_mut().insert(name.to_string(), t.clone());
        }
        Some(t)
    }

    /// Who leads each group hosted on this node, from every shard.
    pub async fn leaders(&self) -> Result<Vec<GroupLeader>, RequestError> {
        let mut out = Vec::new();
        for shard in 0..self.setup.shards {
            out.extend(self.shard_view(shard).await?.leaders);
        }
        Ok(out)
    }
}
