//! The peer acceptor: one thread per node that accepts peer connections, reads and checks the
//! dialer's Hello, and hands the socket to the shard the Hello names.
//!
//! Why a thread and not a listener per shard: glommio's listeners share the port with
//! SO_REUSEPORT and the kernel picks the shard, so most connections would land on the wrong
//! shard, and a glommio `TcpStream` cannot move to another executor. A std socket can: it is
//! `Send`, crosses to the shard over a channel, and becomes a glommio stream there. Handshakes
//! are rare (one per peer and shard, then again only after a failure), so one thread reading
//! them one at a time, each bounded by `handshake_timeout`, costs nothing on the hot path.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use tracing::{debug, info, warn};

use crate::constants::HANDSHAKE_PAYLOAD_BYTES_MAX;
use crate::error::{FrameError, WireError};
use crate::handshake::{Hello, LocalIdentity, Refusal, RefuseReason};
use crate::peer_frame::PeerFrame;
use crate::tcp::frame_io::{read_frame_blocking, ReadError};
use crate::tcp::PeerDirectory;
use crate::transport::TransportConfig;
use crate::view::SharedView;

/// A connection whose Hello was accepted, on its way to its shard.
pub(crate) struct HandedConnection {
    pub stream: TcpStream,
    pub hello: Hello,
}

/// After a failed `accept` (e.g. out of file descriptors) wait this long before the next, so
/// a persistent error does not spin the thread.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

pub(crate) struct Acceptor {
    pub identity: LocalIdentity,
    pub peers: PeerDirectory,
    pub config: TransportConfig,
    pub shards: Vec<mpsc::Sender<HandedConnection>>,
    pub stop: Arc<AtomicBool>,
    /// What this node answers a ViewQuery with.
    pub view: SharedView,
}

impl Acceptor {
    pub(crate) fn run(mut self, listener: TcpListener) {
        let local = listener.local_addr().ok();
        info!(node = self.identity.node_id, addr = ?local, "peer acceptor listening");
        while !self.stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((stream, addr)) => {
                    if self.stop.load(Ordering::Acquire) {
                        break;
                    }
                    self.handle(stream, addr);
                }
                Err(err) => {
                    warn!(node = self.identity.node_id, "peer accept failed: {err}");
                    std::thread::sleep(ACCEPT_ERROR_PAUSE);
                }
            }
        }
        debug!(node = self.identity.node_id, "peer acceptor stopped");
    }

    fn handle(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let timeout = Some(self.config.handshake_timeout);
        let prepared = stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .and_then(|()| stream.set_nodelay(true));
        if let Err(err) = prepared {
            warn!(%addr, "peer connection set-up failed: {err}");
            return;
        }
        let hello = match read_frame_blocking(&mut stream, HANDSHAKE_PAYLOAD_BYTES_MAX) {
            Ok(read) => match read.frame {
                PeerFrame::Hello(hello) => hello,
                PeerFrame::ViewQuery(hello) => return self.answer_view(stream, addr, &hello),
                other => {
                    let detail = format!("first frame is {}, not Hello", other.frame_type().name());
                    return refuse(stream, addr, Refusal::new(RefuseReason::Malformed, detail));
                }
            },
            Err(ReadError::Wire {
                error: WireError::Frame(FrameError::Version { version, supported }),
                ..
            }) => {
                let detail =
                    format!("peer speaks protocol version {version}, this node speaks {supported}");
                return refuse(
                    stream,
                    addr,
                    Refusal::new(RefuseReason::VersionUnsupported, detail),
                );
            }
            Err(ReadError::Wire { error, .. }) => {
                return refuse(
                    stream,
                    addr,
                    Refusal::new(RefuseReason::Malformed, error.to_string()),
                );
            }
            Err(err) => {
                warn!(%addr, "peer handshake failed: {err}");
                return;
            }
        };
        let known = |node| self.peers.contains(node);
        if let Err(refusal) = self.identity.check(&hello, None, None, known) {
            return refuse(stream, addr, refusal);
        }
        let shard = hello.shard as usize;
        let handed = HandedConnection { stream, hello };
        // `check` refused shards out of range, so the index exists.
        if let Err(err) = self.shards[shard].try_send(handed) {
            let full = err.is_full();
            let handed = err.into_inner();
            let detail = if full {
                format!(
                    "shard {shard} has {} handshakes waiting",
                    self.config.handoff_queue_max
                )
            } else {
                format!("shard {shard} is shutting down")
            };
            refuse(
                handed.stream,
                addr,
                Refusal::new(RefuseReason::Busy, detail),
            );
        }
    }
}

impl Acceptor {
    /// Answers a ViewQuery (checked like a Hello, whatever shard it names) and closes.
    fn answer_view(&self, mut stream: TcpStream, addr: SocketAddr, hello: &Hello) {
        let query = Hello { shard: 0, ..*hello };
        // Any node of this cluster may ask, also one no member knows yet: a new node asks
        // before `tern cluster add-node` put it in the directory, and the answer (cluster id,
        // bootstrapped, voters) tells it nothing a member could not see.
        if let Err(refusal) = self.identity.check(&query, None, None, |_| true) {
            return refuse(stream, addr, refusal);
        }
        let mut frame = Vec::new();
        PeerFrame::View(self.view.get()).encode(&mut frame);
        if let Err(err) = stream.write_all(&frame) {
            debug!(%addr, "could not send the view: {err}");
        }
    }
}

/// Sends the refusal (best effort: the socket has the handshake timeout) and closes.
fn refuse(mut stream: TcpStream, addr: SocketAddr, refusal: Refusal) {
    warn!(%addr, "refused peer connection: {refusal}");
    let mut frame = Vec::new();
    PeerFrame::Refuse(refusal).encode(&mut frame);
    if let Err(err) = stream.write_all(&frame) {
        debug!(%addr, "could not send the refusal: {err}");
    }
}
