//! One shard's side of the peer transport: outbound connections (one per peer, each with a
//! bounded queue and a writer task) and inbound connections (one reader task each).
//!
//! Where messages are dropped, and why it is safe (Raft retransmits every message it needs):
//! 1. `send` on a full queue (`send_queue_messages_max` / `send_queue_bytes_max`):
//!    counted in `dropped_queue_full`.
//! 2. A failed connect or handshake drops everything queued for that peer, and a failed write
//!    drops the messages of that write: counted in `dropped_unreachable`, and the caller gets
//!    [`PeerEvent::Unreachable`] so Raft stops pipelining to the peer.
//!
//! Backpressure on the receiving side: readers wait for room in the shard's bounded event
//! queue (`inbound_events_max`), so a slow shard stops reading, TCP flow control stalls the
//! sender's writes, and the sender's queue fills and drops (1.).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_lite::{AsyncWriteExt, StreamExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::Task;
use tern_raft::message::NodeId;
use tracing::{debug, info, warn};

use super::acceptor::HandedConnection;
use super::frame_io::{read_frame, ReadError};
use super::send_queue::{outbound_bytes, wait_ready, SendQueue};
use super::PeerDirectory;
use crate::constants::{FRAME_PAYLOAD_BYTES_MAX, HANDSHAKE_PAYLOAD_BYTES_MAX};
use crate::handshake::{Hello, LocalIdentity, Refusal};
use crate::message_codec::batch_encoded_bytes;
use crate::peer_frame::PeerFrame;
use crate::transport::{
    Outbound, PeerEvent, PeerTransport, SendError, TransportConfig, TransportStats,
};

/// A socket write gathers up to this many frame batches, so one write serves many messages
/// without one peer's backlog building a huge buffer.
const FRAMES_PER_WRITE_MAX: usize = 4;

struct Shared {
    shard: u32,
    identity: LocalIdentity,
    peers: PeerDirectory,
    config: TransportConfig,
    stats: RefCell<TransportStats>,
    events_tx: LocalSender<PeerEvent>,
    events_rx: LocalReceiver<PeerEvent>,
    outbound: RefCell<HashMap<NodeId, Outgoing>>,
    /// The newest inbound connection of each peer; a newer one replaces (and so closes) it.
    inbound: RefCell<HashMap<NodeId, Task<()>>>,
    handoff_task: RefCell<Option<Task<()>>>,
}

struct Outgoing {
    queue: Rc<RefCell<SendQueue>>,
    _writer: Task<()>,
}

/// One shard's peer transport over glommio TCP. Dropping it closes every connection it owns.
pub struct TcpTransport {
    shared: Rc<Shared>,
}

impl TcpTransport {
    pub(super) fn start(
        shard: u32,
        identity: LocalIdentity,
        peers: PeerDirectory,
        config: TransportConfig,
        handoff: mpsc::Receiver<HandedConnection>,
    ) -> TcpTransport {
        let (events_tx, events_rx) = local_channel::new_bounded(config.inbound_events_max);
        let shared = Rc::new(Shared {
            shard,
            identity,
            peers,
            config,
            stats: RefCell::default(),
            events_tx,
            events_rx,
            outbound: RefCell::default(),
            inbound: RefCell::default(),
            handoff_task: RefCell::default(),
        });
        let task = glommio::spawn_local(take_handoffs(Rc::downgrade(&shared), handoff));
        *shared.handoff_task.borrow_mut() = Some(task);
        TcpTransport { shared }
    }

    pub fn shard(&self) -> u32 {
        self.shared.shard
    }

    /// Messages waiting in the queue to `peer`.
    pub fn queued(&self, peer: NodeId) -> usize {
        self.shared
            .outbound
            .borrow()
            .get(&peer)
            .map_or(0, |out| out.queue.borrow().len())
    }

    fn outgoing_queue(&self, peer: NodeId) -> Result<Rc<RefCell<SendQueue>>, SendError> {
        if let Some(out) = self.shared.outbound.borrow().get(&peer) {
            return Ok(out.queue.clone());
        }
        if peer == self.shared.identity.node_id || !self.shared.peers.contains(peer) {
            return Err(SendError::UnknownPeer(peer));
        }
        let config = &self.shared.config;
        let queue = Rc::new(RefCell::new(SendQueue::new(
            config.send_queue_messages_max,
            config.send_queue_bytes_max,
        )));
        let writer = glommio::spawn_local(write_loop(self.shared.clone(), peer, queue.clone()));
        self.shared.outbound.borrow_mut().insert(
            peer,
            Outgoing {
                queue: queue.clone(),
                _writer: writer,
            },
        );
        Ok(queue)
    }
}

impl PeerTransport for TcpTransport {
    fn send(&self, to: NodeId, outbound: Outbound) -> Result<(), SendError> {
        let bytes = outbound_bytes(&outbound);
        if batch_encoded_bytes(bytes) > FRAME_PAYLOAD_BYTES_MAX {
            return Err(SendError::TooLarge { to, bytes });
        }
        let queue = self.outgoing_queue(to)?;
        let pushed = queue.borrow_mut().push(outbound, bytes);
        if !pushed {
            self.shared.stats.borrow_mut().dropped_queue_full += 1;
            return Err(SendError::QueueFull(to));
        }
        Ok(())
    }

    async fn next_event(&self) -> Option<PeerEvent> {
        self.shared.events_rx.recv().await
    }

    fn stats(&self) -> TransportStats {
        *self.shared.stats.borrow()
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        // Taken out of the cells first: dropping a task cancels it, which drops its future and
        // with it an `Rc<Shared>`, and must not happen while a cell is borrowed.
        let outbound: Vec<Outgoing> = self
            .shared
            .outbound
            .borrow_mut()
            .drain()
            .map(|(_, out)| out)
            .collect();
        for out in &outbound {
            out.queue.borrow_mut().close();
        }
        drop(outbound);
        let inbound: Vec<Task<()>> = self
            .shared
            .inbound
            .borrow_mut()
            .drain()
            .map(|(_, task)| task)
            .collect();
        drop(inbound);
        let handoff = self.shared.handoff_task.borrow_mut().take();
        drop(handoff);
    }
}

/// The exponential reconnect delay: doubles per failure, bounded.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("no address known")]
    UnknownAddress,
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("handshake with {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("handshake with {addr}: {source}")]
    Read { addr: SocketAddr, source: ReadError },
    #[error("{addr} refused the handshake: {refusal}")]
    RefusedByPeer { addr: SocketAddr, refusal: Refusal },
    #[error("refused the answer of {addr}: {refusal}")]
    RefusedByUs { addr: SocketAddr, refusal: Refusal },
    #[error("{addr} answered the Hello with a {frame} frame")]
    UnexpectedFrame {
        addr: SocketAddr,
        frame: &'static str,
    },
}

fn io_error(err: glommio::GlommioError<()>) -> std::io::Error {
    std::io::Error::from(err)
}

/// Connects to `peer` and runs the dialer's side of the handshake.
async fn dial(shared: &Shared, peer: NodeId) -> Result<TcpStream, DialError> {
    let addr = shared.peers.get(peer).ok_or(DialError::UnknownAddress)?;
    let config = &shared.config;
    let mut stream = TcpStream::connect_timeout(addr, config.connect_timeout)
        .await
        .map_err(|err| DialError::Connect {
            addr,
            source: io_error(err),
        })?;
    let io = |source: std::io::Error| DialError::Io { addr, source };
    stream.set_nodelay(true).map_err(|e| io(io_error(e)))?;
    stream
        .set_read_timeout(Some(config.handshake_timeout))
        .map_err(|e| io(io_error(e)))?;
    stream
        .set_write_timeout(Some(config.handshake_timeout))
        .map_err(|e| io(io_error(e)))?;
    let mut frame = Vec::new();
    PeerFrame::Hello(shared.identity.hello(peer, shared.shard)).encode(&mut frame);
    stream.write_all(&frame).await.map_err(io)?;
    let answer = read_frame(&mut stream, HANDSHAKE_PAYLOAD_BYTES_MAX)
        .await
        .map_err(|source| DialError::Read { addr, source })?;
    match answer.frame {
        PeerFrame::Hello(hello) => {
            if let Err(refusal) =
                shared
                    .identity
                    .check(&hello, Some(peer), Some(shared.shard), |_| true)
            {
                let mut frame = Vec::new();
                PeerFrame::Refuse(refusal.clone()).encode(&mut frame);
                // Best effort: the peer learns why we hang up.
                let _ = stream.write_all(&frame).await;
                return Err(DialError::RefusedByUs { addr, refusal });
            }
        }
        PeerFrame::Refuse(refusal) => return Err(DialError::RefusedByPeer { addr, refusal }),
        other => {
            return Err(DialError::UnexpectedFrame {
                addr,
                frame: other.frame_type().name(),
            })
        }
    }
    stream.set_read_timeout(None).map_err(|e| io(io_error(e)))?;
    stream
        .set_write_timeout(Some(config.write_timeout))
        .map_err(|e| io(io_error(e)))?;
    Ok(stream)
}

/// Tells the shard that messages to `peer` were lost. If the event queue is full the signal is
/// dropped: the shard is already behind, and Raft notices an unreachable peer by itself
/// (missing responses) — the signal only makes it notice sooner.
fn report_unreachable(shared: &Shared, peer: NodeId, dropped: u64) {
    shared.stats.borrow_mut().dropped_unreachable += dropped;
    if shared
        .events_tx
        .try_send(PeerEvent::Unreachable { peer })
        .is_err()
    {
        debug!(peer, "unreachable signal dropped: event queue full");
    }
}

/// The writer of one outbound connection: connects when there is something to send, writes
/// batches, reconnects after failures with bounded exponential backoff.
async fn write_loop(shared: Rc<Shared>, peer: NodeId, queue: Rc<RefCell<SendQueue>>) {
    let config = shared.config.clone();
    let mut backoff = Backoff::new(config.reconnect_delay_min, config.reconnect_delay_max);
    let mut connection: Option<TcpStream> = None;
    let mut failures_in_a_row = 0u64;
    let mut buf = Vec::new();
    let node = shared.identity.node_id;
    let shard = shared.shard;
    while wait_ready(&queue).await {
        let mut stream = match connection.take() {
            Some(stream) => stream,
            None => match dial(&shared, peer).await {
                Ok(stream) => {
                    shared.stats.borrow_mut().connects += 1;
                    info!(node, shard, peer, "connected to peer");
                    backoff.reset();
                    failures_in_a_row = 0;
                    stream
                }
                Err(err) => {
                    {
                        let mut stats = shared.stats.borrow_mut();
                        stats.connect_failures += 1;
                        if matches!(
                            err,
                            DialError::RefusedByPeer { .. } | DialError::RefusedByUs { .. }
                        ) {
                            stats.handshakes_refused += 1;
                        }
                    }
                    failures_in_a_row += 1;
                    // The first failure is news; repeats of it while the peer stays down are not.
                    if failures_in_a_row == 1 {
                        warn!(node, shard, peer, "cannot reach peer: {err}");
                    } else {
                        debug!(
                            node,
                            shard, peer, failures_in_a_row, "cannot reach peer: {err}"
                        );
                    }
                    let dropped = queue.borrow_mut().clear();
                    report_unreachable(&shared, peer, dropped);
                    glommio::timer::sleep(backoff.failed()).await;
                    continue;
                }
            },
        };
        let drained = queue.borrow_mut().drain(
            config.frame_batch_bytes_max,
            config.frame_batch_bytes_max * FRAMES_PER_WRITE_MAX,
        );
        buf.clear();
        let mut frames = 0u64;
        // Heartbeats go first and may overtake Raft messages queued before them: Raft
        // tolerates any reordering (a heartbeat's commit is capped at what the follower is
        // known to hold), and liveness signals should not wait behind bulk appends.
        for batch in drained.heartbeats {
            PeerFrame::Heartbeats(batch).encode(&mut buf);
            frames += 1;
        }
        for report in drained.reports {
            PeerFrame::NodeReport(report).encode(&mut buf);
            frames += 1;
        }
        for messages in drained.raft_frames {
            PeerFrame::Raft(messages).encode(&mut buf);
            frames += 1;
        }
        for repair in drained.repairs {
            PeerFrame::EntryRepair(repair).encode(&mut buf);
            frames += 1;
        }
        for message in drained.recovery {
            PeerFrame::Recovery(message).encode(&mut buf);
            frames += 1;
        }
        match stream.write_all(&buf).await {
            Ok(()) => {
                let mut stats = shared.stats.borrow_mut();
                stats.frames_sent += frames;
                stats.bytes_sent += buf.len() as u64;
                stats.messages_sent += drained.messages;
                connection = Some(stream);
            }
            Err(err) => {
                warn!(node, shard, peer, "peer connection broke: {err}");
                report_unreachable(&shared, peer, drained.messages);
            }
        }
        // A large buffer from a burst is not kept for the life of the connection.
        if buf.capacity() > config.frame_batch_bytes_max * FRAMES_PER_WRITE_MAX * 2 {
            buf = Vec::new();
        }
    }
}

/// Takes the connections the acceptor hands to this shard.
async fn take_handoffs(
    shared: std::rc::Weak<Shared>,
    mut handoff: mpsc::Receiver<HandedConnection>,
) {
    while let Some(handed) = handoff.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let peer = handed.hello.node_id;
        match accept_handed(&shared, handed).await {
            Ok(stream) => {
                let reader = glommio::spawn_local(read_loop(shared.clone(), peer, stream));
                let replaced = shared.inbound.borrow_mut().insert(peer, reader);
                if replaced.is_some() {
                    debug!(
                        node = shared.identity.node_id,
                        shard = shared.shard,
                        peer,
                        "newer inbound connection replaces the old one"
                    );
                }
                drop(replaced);
            }
            Err(err) => warn!(
                node = shared.identity.node_id,
                shard = shared.shard,
                peer,
                "could not complete an inbound handshake: {err}"
            ),
        }
    }
}

/// Makes the handed std socket a glommio stream on this shard and answers the Hello.
async fn accept_handed(shared: &Shared, handed: HandedConnection) -> std::io::Result<TcpStream> {
    let HandedConnection { stream, hello } = handed;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    let mut stream = TcpStream::from(socket2::Socket::from(stream));
    stream
        .set_write_timeout(Some(shared.config.handshake_timeout))
        .map_err(io_error)?;
    let answer: Hello = shared.identity.hello(hello.node_id, shared.shard);
    let mut frame = Vec::new();
    PeerFrame::Hello(answer).encode(&mut frame);
    stream.write_all(&frame).await?;
    Ok(stream)
}

/// Reads one inbound connection until it closes or sends something invalid.
async fn read_loop(shared: Rc<Shared>, peer: NodeId, stream: TcpStream) {
    let node = shared.identity.node_id;
    let shard = shared.shard;
    let mut stream = stream.buffered();
    loop {
        let read = match read_frame(&mut stream, FRAME_PAYLOAD_BYTES_MAX).await {
            Ok(read) => read,
            Err(ReadError::Closed) => {
                debug!(node, shard, peer, "peer closed its connection");
                return;
            }
            Err(err) => {
                if matches!(err, ReadError::Wire { .. }) {
                    shared.stats.borrow_mut().inbound_errors += 1;
                }
                warn!(node, shard, peer, "closing inbound peer connection: {err}");
                return;
            }
        };
        let event = match check_inbound(node, peer, read.frame) {
            Ok(event) => event,
            Err(reason) => {
                shared.stats.borrow_mut().inbound_errors += 1;
                warn!(
                    node,
                    shard, peer, "closing inbound peer connection: {reason}"
                );
                return;
            }
        };
        {
            let mut stats = shared.stats.borrow_mut();
            stats.frames_received += 1;
            stats.bytes_received += read.bytes as u64;
            stats.messages_received += match &event {
                PeerEvent::Raft { messages, .. } => messages.len() as u64,
                PeerEvent::Heartbeats(batch) => batch.len() as u64,
                PeerEvent::Repair(_) => 1,
                PeerEvent::Report(_) => 1,
                PeerEvent::Recovery(_) => 1,
                PeerEvent::Unreachable { .. } => 0,
            };
        }
        // Waits for room: this is where a slow shard pushes back on its peers.
        if shared.events_tx.send(event).await.is_err() {
            return;
        }
    }
}

/// The connection-level checks of a received frame: only data frames after the handshake, and
/// every message from the connected peer to this node.
fn check_inbound(node: NodeId, peer: NodeId, frame: PeerFrame) -> Result<PeerEvent, String> {
    match frame {
        PeerFrame::Raft(messages) => {
            if let Some((group, message)) = messages
                .iter()
                .find(|(_, m)| m.from != peer || m.to != node)
            {
                return Err(format!(
                    "group {group}: message {} -> {} on the connection from {peer} to {node}",
                    message.from, message.to
                ));
            }
            Ok(PeerEvent::Raft {
                from: peer,
                messages,
            })
        }
        PeerFrame::Heartbeats(batch) => {
            if batch.from != peer || batch.to != node {
                return Err(format!(
                    "heartbeats {} -> {} on the connection from {peer} to {node}",
                    batch.from, batch.to
                ));
            }
            Ok(PeerEvent::Heartbeats(batch))
        }
        PeerFrame::EntryRepair(repair) => {
            if repair.from() != peer || repair.to() != node {
                return Err(format!(
                    "repair message {} -> {} on the connection from {peer} to {node}",
                    repair.from(),
                    repair.to()
                ));
            }
            Ok(PeerEvent::Repair(repair))
        }
        PeerFrame::NodeReport(report) => {
            if report.from != peer || report.to != node {
                return Err(format!(
                    "node report {} -> {} on the connection from {peer} to {node}",
                    report.from, report.to
                ));
            }
            Ok(PeerEvent::Report(report))
        }
        PeerFrame::Recovery(message) => {
            if message.from() != peer || message.to() != node {
                return Err(format!(
                    "recovery message {} -> {} on the connection from {peer} to {node}",
                    message.from(),
                    message.to()
                ));
            }
            Ok(PeerEvent::Recovery(message))
        }
        other => Err(format!(
            "unexpected {} frame after the handshake",
            other.frame_type().name()
        )),
    }
}
