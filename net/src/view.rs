//! The cluster-view query: what a starting node asks its peers before it may vote.
//!
//! A node whose data directory holds no admitted identity cannot tell on its own whether the
//! cluster is being created or its own disk was wiped (it would then forget the votes and
//! entries it promised). Its peers can. So before it creates any Raft group it dials each
//! peer's peer port with a `ViewQuery` frame (instead of `Hello`; the payload is a `Hello`,
//! checked the same way: cluster, version, known node), and the peer's acceptor answers one
//! `View` frame and closes.
//!
//! Encoding (all little-endian):
//! ```text
//! ViewQuery = Hello (36 bytes, see handshake)
//! View      = { u64 node_id | 16 bytes cluster uuid | u8 bootstrapped | u8 reserved (0)
//!             | u32 n | n * u64 voter }
//! ```

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tern_raft::message::NodeId;

use crate::constants::HANDSHAKE_PAYLOAD_BYTES_MAX;
use crate::cursor::Cursor;
use crate::error::DecodeError;
use crate::handshake::{LocalIdentity, Refusal};
use crate::peer_frame::PeerFrame;
use crate::tcp::frame_io::{read_frame_blocking, ReadError};

/// Voters listed in one answer, at most (the controller's limit on members is lower).
pub const VIEW_VOTERS_MAX: usize = 64;

/// What a node says about its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub node_id: NodeId,
    pub cluster_uuid: [u8; 16],
    /// The node is admitted and runs the controller: the cluster exists.
    pub bootstrapped: bool,
    /// The controller's voters as this node knows them (empty when not bootstrapped).
    pub voters: Vec<NodeId>,
}

impl ClusterView {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.extend_from_slice(&self.cluster_uuid);
        out.push(self.bootstrapped as u8);
        out.push(0);
        let voters = &self.voters[..self.voters.len().min(VIEW_VOTERS_MAX)];
        out.extend_from_slice(&(voters.len() as u32).to_le_bytes());
        for v in voters {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub fn decode(payload: &[u8]) -> Result<ClusterView, DecodeError> {
        let mut cur = Cursor::new(payload);
        let node_id = cur.u64("view.node_id")?;
        let hi = cur.u64("view.cluster_uuid")?;
        let lo = cur.u64("view.cluster_uuid")?;
        let mut cluster_uuid = [0u8; 16];
        cluster_uuid[..8].copy_from_slice(&hi.to_le_bytes());
        cluster_uuid[8..].copy_from_slice(&lo.to_le_bytes());
        let bootstrapped = cur.bool("view.bootstrapped")?;
        let reserved = cur.u8("view.reserved")?;
        if reserved != 0 {
            return Err(DecodeError::Invalid(format!(
                "view.reserved is {reserved}, not 0"
            )));
        }
        let n = cur.count("view.voters", 8)?;
        if n > VIEW_VOTERS_MAX {
            return Err(DecodeError::Invalid(format!(
                "view lists {n} voters, at most {VIEW_VOTERS_MAX}"
            )));
        }
        let mut voters = Vec::with_capacity(n);
        for _ in 0..n {
            voters.push(cur.u64("view.voter")?);
        }
        cur.finish("view")?;
        Ok(ClusterView {
            node_id,
            cluster_uuid,
            bootstrapped,
            voters,
        })
    }
}

/// The view a node's acceptor answers with; the node updates it as its state changes.
#[derive(Clone, Debug, Default)]
pub struct SharedView(Arc<RwLock<ClusterView>>);

impl SharedView {
    pub fn new(view: ClusterView) -> Self {
        SharedView(Arc::new(RwLock::new(view)))
    }

    pub fn get(&self) -> ClusterView {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, view: ClusterView) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = view;
    }
}

/// Why a view query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ViewQueryError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} refused the query: {refusal}")]
    Refused { addr: SocketAddr, refusal: Refusal },
    #[error("{addr}: {source}")]
    Read {
        addr: SocketAddr,
        #[source]
        source: ReadError,
    },
    #[error("{addr} answered with a {frame} frame, not View")]
    Unexpected {
        addr: SocketAddr,
        frame: &'static str,
    },
}

/// Asks node `to` at `addr` for its view (blocking, each step bounded by `timeout`).
pub fn query_view(
    addr: SocketAddr,
    identity: &LocalIdentity,
    to: NodeId,
    timeout: Duration,
) -> Result<ClusterView, ViewQueryError> {
    let connect = |source| ViewQueryError::Connect { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(connect)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(connect)?;
    let mut frame = Vec::new();
    PeerFrame::ViewQuery(identity.hello(to, 0)).encode(&mut frame);
    stream.write_all(&frame).map_err(connect)?;
    let read = read_frame_blocking(&mut stream, HANDSHAKE_PAYLOAD_BYTES_MAX)
        .map_err(|source| ViewQueryError::Read { addr, source })?;
    match read.frame {
        PeerFrame::View(view) => Ok(view),
        PeerFrame::Refuse(refusal) => Err(ViewQueryError::Refused { addr, refusal }),
        other => Err(ViewQueryError::Unexpected {
            addr,
            frame: other.frame_type().name(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let v = ClusterView {
            node_id: 3,
            cluster_uuid: [7; 16],
            bootstrapped: true,
            voters: vec![1, 2, 3],
        };
        let mut buf = Vec::new();
        v.encode(&mut buf);
        assert_eq!(ClusterView::decode(&buf).unwrap(), v);
        for cut in 0..buf.len() {
            assert!(ClusterView::decode(&buf[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = buf.clone();
        bad[25] = 1; // reserved
        assert!(ClusterView::decode(&bad).is_err());
        let mut bad = buf.clone();
        bad[24] = 2; // bool
        assert!(ClusterView::decode(&bad).is_err());
    }
}
