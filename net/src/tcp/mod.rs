//! The peer transport over TCP on glommio.
//!
//! - [`PeerNetwork::start`] (outside the executors, once per node) binds the peer address —
//!   refusing it if another process listens there — and starts the acceptor thread
//!   (`acceptor.rs`), which checks each dialer's Hello and hands the socket to its shard.
//! - [`ShardPeerSetup::start`] (on each shard's executor) starts that shard's
//!   [`TcpTransport`] (`shard.rs`): one outbound connection per peer node, dialed lazily with
//!   bounded exponential backoff, fed by a bounded queue; and the inbound connections the
//!   acceptor hands over, read by one task each.
//!
//! So every connection serves one (peer node, shard) pair and one direction: shard k of node A
//! sends to shard k of node B over its own connection, and B answers over B's own connection
//! to A. Raft traffic never crosses shards, and each side redials only its own connections.

mod acceptor;
mod frame_io;
mod send_queue;
mod shard;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use futures_channel::mpsc;
use tern_raft::message::NodeId;
use tracing::warn;

use crate::error::NetError;
use crate::handshake::LocalIdentity;
use crate::listen::bind_std_listener;
use crate::transport::TransportConfig;

pub use frame_io::ReadError;
pub use shard::TcpTransport;

/// Peer addresses, shared by the acceptor thread and every shard. Read when a connection is
/// made (never per message); written when membership changes.
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory {
    peers: Arc<RwLock<BTreeMap<NodeId, SocketAddr>>>,
}

impl PeerDirectory {
    pub fn new(peers: impl IntoIterator<Item = (NodeId, SocketAddr)>) -> Self {
        PeerDirectory {
            peers: Arc::new(RwLock::new(peers.into_iter().collect())),
        }
    }

    // A panic while holding this lock can only come from a bug elsewhere in the thread; the
    // map itself is always consistent (single inserts and removes), so poisoning is ignored.
    pub fn set(&self, node: NodeId, addr: SocketAddr) {
        self.peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, addr);
    }

    pub fn remove(&self, node: NodeId) {
        self.peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&node);
    }

    pub fn get(&self, node: NodeId) -> Option<SocketAddr> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied()
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.get(node).is_some()
    }
}

/// A node's peer listener; stops (and joins its thread) when dropped.
pub struct PeerNetwork {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What one shard needs to start its transport; `Send`, so it can move into the executor.
pub struct ShardPeerSetup {
    shard: u32,
    identity: LocalIdentity,
    peers: PeerDirectory,
    config: TransportConfig,
    handoff: mpsc::Receiver<acceptor::HandedConnection>,
}

impl PeerNetwork {
    /// Binds `listen_addr` (refused if another process listens there) and starts accepting.
    /// Returns one [`ShardPeerSetup`] per shard, in shard order.
    pub fn start(
        identity: LocalIdentity,
        listen_addr: SocketAddr,
        peers: PeerDirectory,
        config: TransportConfig,
    ) -> Result<(PeerNetwork, Vec<ShardPeerSetup>), NetError> {
        config.validate()?;
        if identity.shard_count == 0 {
            return Err(NetError::Config {
                key: "shard_count",
                reason: "must be at least 1".to_string(),
            });
        }
        let listener = bind_std_listener(listen_addr)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        let mut setups = Vec::new();
        for shard in 0..identity.shard_count {
            let (sender, receiver) = mpsc::channel(config.handoff_queue_max);
            senders.push(sender);
            setups.push(ShardPeerSetup {
                shard,
                identity,
                peers: peers.clone(),
                config: config.clone(),
                handoff: receiver,
            });
        }
        let acceptor = acceptor::Acceptor {
            identity,
            peers,
            config,
            shards: senders,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("tern-peer-accept-{}", identity.node_id))
            .spawn(move || acceptor.run(listener))?;
        Ok((
            PeerNetwork {
                local_addr,
                stop,
                thread: Some(thread),
            },
            setups,
        ))
    }

    /// The address peers dial (with the port the kernel chose if port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits for the acceptor thread. Connections already handed to
    /// shards live until their shard's transport is dropped.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // `accept` blocks: a connection of our own wakes it to see the flag. If even that
        // fails the thread is left blocked in accept, and leaked rather than waited for.
        match TcpStream::connect_timeout(
            &wake_addr(self.local_addr),
            std::time::Duration::from_secs(1),
        ) {
            Ok(_) => {
                if thread.join().is_err() {
                    warn!("peer acceptor thread panicked");
                }
            }
            Err(err) => warn!("could not wake the peer acceptor to stop it: {err}"),
        }
    }
}

/// The address to connect to in order to reach a listener bound to `addr` (an unspecified
/// address such as 0.0.0.0 is reached through loopback).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut wake = addr;
    if addr.ip().is_unspecified() {
        wake.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    wake
}

impl Drop for PeerNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ShardPeerSetup {
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Starts this shard's transport. Must run on the shard's glommio executor.
    pub fn start(self) -> TcpTransport {
        TcpTransport::start(
            self.shard,
            self.identity,
            self.peers,
            self.config,
            self.handoff,
        )
    }
}
