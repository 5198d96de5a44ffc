//! One Kafka listener per shard. Every shard binds the same address with SO_REUSEPORT (what
//! glommio's listener sets) and the kernel spreads new connections over the shards; a
//! connection is then served entirely on the shard that accepted it, and requests for
//! partitions of other shards travel over those shards' inboxes ([`super::broker`]). The
//! node checks once, before the shards start, that no other process listens on the address
//! (`tern_net::listen::ensure_addr_free`), because SO_REUSEPORT would otherwise share it.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use tracing::{debug, info, warn};

use super::broker::{Broker, BrokerSetup};
use super::connection;
use super::CONNECTIONS_PER_SHARD_MAX;

/// Accepts and serves Kafka connections on this shard until the returned task is dropped.
/// Must run on the shard's executor. `addr` must already be checked free (and resolved, if
/// its port was 0).
pub fn spawn(addr: SocketAddr, setup: BrokerSetup) -> Result<glommio::Task<()>, String> {
    let listener = glommio::net::TcpListener::bind(addr)
        .map_err(|e| format!("kafka listener on {addr}: {e}"))?;
    let shard = setup.shard;
    info!(shard, %addr, "kafka listener bound");
    let broker = Broker::new(setup);
    let open = Rc::new(Cell::new(0usize));
    Ok(glommio::spawn_local(async move {
        // Connections are detached: they end with their client, or with the executor.
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(shard, "kafka accept failed: {e}");
                    // Out of descriptors, most likely: give the others a moment to close.
                    glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let peer = stream.peer_addr().ok();
            if open.get() >= CONNECTIONS_PER_SHARD_MAX {
                warn!(
                    shard,
                    ?peer,
                    limit = CONNECTIONS_PER_SHARD_MAX,
                    "kafka connection refused: too many connections on this shard"
                );
                continue;
            }
            open.set(open.get() + 1);
            let broker = broker.clone();
            let open = open.clone();
            glommio::spawn_local(async move {
                debug!(shard, ?peer, "kafka connection opened");
                connection::serve(stream, broker).await;
                open.set(open.get() - 1);
            })
            .detach();
        }
    }))
}
