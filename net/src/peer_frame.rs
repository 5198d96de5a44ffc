//! A whole frame of the peer protocol, decoded: the frame codec plus the payload codec of its
//! type. The one reader the transport (and the fuzz tests) use.

use tern_raft::message::Message;

use crate::entry_repair::EntryRepair;
use crate::error::{DecodeError, WireError};
use crate::frame::{decode_frame, encode_frame, FrameType};
use crate::handshake::{Hello, Refusal};
use crate::heartbeat::HeartbeatBatch;
use crate::message_codec::{decode_batch, encode_batch};
use crate::node_report::NodeReport;
use crate::recovery_stream::RecoveryMessage;
use crate::view::ClusterView;
use crate::GroupId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFrame {
    Hello(Hello),
    Refuse(Refusal),
    Raft(Vec<(GroupId, Message)>),
    Heartbeats(HeartbeatBatch),
    ViewQuery(Hello),
    View(ClusterView),
    EntryRepair(EntryRepair),
    NodeReport(NodeReport),
    Recovery(RecoveryMessage),
}

impl PeerFrame {
    pub fn frame_type(&self) -> FrameType {
        match self {
            PeerFrame::Hello(_) => FrameType::Hello,
            PeerFrame::Refuse(_) => FrameType::Refuse,
            PeerFrame::Raft(_) => FrameType::RaftBatch,
            PeerFrame::Heartbeats(_) => FrameType::Heartbeats,
            PeerFrame::ViewQuery(_) => FrameType::ViewQuery,
            PeerFrame::View(_) => FrameType::View,
            PeerFrame::EntryRepair(_) => FrameType::EntryRepair,
            PeerFrame::NodeReport(_) => FrameType::NodeReport,
            PeerFrame::Recovery(_) => FrameType::Recovery,
        }
    }

    /// Appends the whole frame (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> usize {
        encode_frame(out, self.frame_type(), |payload| match self {
            PeerFrame::Hello(hello) => hello.encode(payload),
            PeerFrame::Refuse(refusal) => refusal.encode(payload),
            PeerFrame::Raft(messages) => encode_batch(payload, messages.iter()),
            PeerFrame::Heartbeats(batch) => batch.encode(payload),
            PeerFrame::ViewQuery(hello) => hello.encode(payload),
            PeerFrame::View(view) => view.encode(payload),
            PeerFrame::EntryRepair(repair) => repair.encode(payload),
            PeerFrame::NodeReport(report) => report.encode(payload),
            PeerFrame::Recovery(message) => message.encode(payload),
        })
    }

    /// Decodes a payload whose frame header and checksum were already checked.
    pub fn decode_payload(frame_type: FrameType, payload: &[u8]) -> Result<PeerFrame, DecodeError> {
        Ok(match frame_type {
            FrameType::Hello => PeerFrame::Hello(Hello::decode(payload)?),
            FrameType::Refuse => PeerFrame::Refuse(Refusal::decode(payload)?),
            FrameType::RaftBatch => PeerFrame::Raft(decode_batch(payload)?),
            FrameType::Heartbeats => PeerFrame::Heartbeats(HeartbeatBatch::decode(payload)?),
            FrameType::ViewQuery => PeerFrame::ViewQuery(Hello::decode(payload)?),
            FrameType::View => PeerFrame::View(ClusterView::decode(payload)?),
            FrameType::EntryRepair => PeerFrame::EntryRepair(EntryRepair::decode(payload)?),
            FrameType::NodeReport => PeerFrame::NodeReport(NodeReport::decode(payload)?),
            FrameType::Recovery => PeerFrame::Recovery(RecoveryMessage::decode(payload)?),
        })
    }

    /// Decodes the first frame of `buf`; returns it and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(PeerFrame, usize), WireError> {
        let (frame_type, payload, used) = decode_frame(buf)?;
        Ok((PeerFrame::decode_payload(frame_type, payload)?, used))
    }
}
