//! The frame: the unit every byte between two nodes travels in.
//!
//! Encoding (all little-endian):
//! `frame = { u32 payload_len | u32 crc32c | u16 version | u16 frame_type | payload }`
//!
//! - `payload_len` counts the bytes after the 12-byte header; at most
//!   [`FRAME_PAYLOAD_BYTES_MAX`], checked before a payload buffer is allocated.
//! - `crc32c` covers bytes 8.. of the frame: `version`, `frame_type` and the payload. So a
//!   flipped version or type is reported as a checksum error, not misread.
//! - `version` is [`PROTOCOL_VERSION`]. The header layout is fixed across versions, so a node
//!   can always read a peer's header far enough to say which version it speaks.
//!
//! Checks run in this order: length (before allocating), checksum, version, type. The payload
//! is then decoded by the codec of its type (`message_codec`, `heartbeat`, `handshake`).

use crate::constants::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, PROTOCOL_VERSION};
use crate::error::FrameError;

/// What a frame's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameType {
    /// The first frame each way: cluster id, node id, shard, version (`handshake`).
    Hello = 1,
    /// A handshake refused, with a reason; the sender closes the connection after it.
    Refuse = 2,
    /// A batch of `(group, Message)` (`message_codec`).
    RaftBatch = 3,
    /// The heartbeats and heartbeat responses of many groups for one node pair (`heartbeat`).
    Heartbeats = 4,
    /// Instead of Hello: "what is your cluster view?" (`view`); answered by one View frame.
    ViewQuery = 5,
    /// The answer to ViewQuery; the sender closes the connection after it.
    View = 6,
    /// A request for a copy of a damaged log entry, or the answer (`entry_repair`). Numbered
    /// apart from the other families so that frame types added beside it do not collide.
    EntryRepair = 16,
    /// A node's addresses and the groups it leads (`node_report`).
    NodeReport = 7,
    /// The recovery stream: a fetch of committed entries, a chunk of them, or a refusal
    /// (`recovery_stream`). Numbered after EntryRepair, in the same family.
    Recovery = 17,
}

impl FrameType {
    pub const ALL: [FrameType; 9] = [
        FrameType::Hello,
        FrameType::Refuse,
        FrameType::RaftBatch,
        FrameType::Heartbeats,
        FrameType::ViewQuery,
        FrameType::View,
        FrameType::EntryRepair,
        FrameType::NodeReport,
        FrameType::Recovery,
    ];

    pub fn from_u16(frame_type: u16) -> Result<FrameType, FrameError> {
        FrameType::ALL
            .into_iter()
            .find(|t| *t as u16 == frame_type)
            .ok_or(FrameError::UnknownType { frame_type })
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "Hello",
            FrameType::Refuse => "Refuse",
            FrameType::RaftBatch => "RaftBatch",
            FrameType::Heartbeats => "Heartbeats",
            FrameType::ViewQuery => "ViewQuery",
            FrameType::View => "View",
            FrameType::EntryRepair => "EntryRepair",
            FrameType::NodeReport => "NodeReport",
            FrameType::Recovery => "Recovery",
        }
    }
}

/// A frame header whose length has been checked; its checksum is checked with the payload by
/// [`FrameHeader::check_payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Invariant: `payload_bytes <= FRAME_PAYLOAD_BYTES_MAX`.
    payload_bytes: usize,
    crc32c: u32,
    version: u16,
    frame_type: u16,
}

impl FrameHeader {
    /// Parses the fixed header and checks the length, the only field that can be trusted
    /// before the payload is read (it decides how much to read and allocate).
    pub fn decode(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, FrameError> {
        let field = |at: usize| [bytes[at], bytes[at + 1]];
        let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        let payload_bytes = u32::from_le_bytes(word(0)) as usize;
        if payload_bytes > FRAME_PAYLOAD_BYTES_MAX {
            return Err(FrameError::Oversize {
                payload_bytes,
                payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX,
            });
        }
        Ok(FrameHeader {
            payload_bytes,
            crc32c: u32::from_le_bytes(word(4)),
            version: u16::from_le_bytes(field(8)),
            frame_type: u16::from_le_bytes(field(10)),
        })
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// The version the peer wrote, readable even when the frame is refused for it.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Checks the checksum over version, type and `payload`, then the version and the type.
    pub fn check_payload(&self, payload: &[u8]) -> Result<FrameType, FrameError> {
        if payload.len() != self.payload_bytes {
            return Err(FrameError::Truncated {
                needed: FRAME_HEADER_BYTES + self.payload_bytes,
                available: FRAME_HEADER_BYTES + payload.len(),
            });
        }
        let actual = frame_crc(self.version, self.frame_type, payload);
        if actual != self.crc32c {
            return Err(FrameError::Checksum {
                expected: self.crc32c,
                actual,
            });
        }
        if self.version != PROTOCOL_VERSION {
            return Err(FrameError::Version {
                version: self.version,
                supported: PROTOCOL_VERSION,
            });
        }
        FrameType::from_u16(self.frame_type)
    }
}

fn frame_crc(version: u16, frame_type: u16, payload: &[u8]) -> u32 {
    let mut typed = [0u8; 4];
    typed[..2].copy_from_slice(&version.to_le_bytes());
    typed[2..].copy_from_slice(&frame_type.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&typed), payload)
}

/// Appends one frame to `out`: reserves the header, lets `write_payload` append the payload,
/// then fills in length and checksum. Returns the frame's total size.
///
/// Panics if the payload exceeds [`FRAME_PAYLOAD_BYTES_MAX`]: callers size their batches
/// below it, so that is a programmer error.
pub fn encode_frame(
    out: &mut Vec<u8>,
    frame_type: FrameType,
    write_payload: impl FnOnce(&mut Vec<u8>),
) -> usize {
    encode_frame_with_version(out, PROTOCOL_VERSION, frame_type as u16, write_payload)
}

/// [`encode_frame`] with any version and type: what tests use to forge frames a peer of
/// another version (or a broken one) would send.
pub fn encode_frame_with_version(
    out: &mut Vec<u8>,
    version: u16,
    frame_type: u16,
    write_payload: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    write_payload(out);
    let payload_bytes = out.len() - start - FRAME_HEADER_BYTES;
    assert!(
        payload_bytes <= FRAME_PAYLOAD_BYTES_MAX,
        "frame payload of {payload_bytes} bytes exceeds FRAME_PAYLOAD_BYTES_MAX"
    );
    let crc = frame_crc(version, frame_type, &out[start + FRAME_HEADER_BYTES..]);
    let header = &mut out[start..start + FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header[8..10].copy_from_slice(&version.to_le_bytes());
    header[10..12].copy_from_slice(&frame_type.to_le_bytes());
    out.len() - start
}

/// Decodes the first frame of `buf`: its type, its payload and the bytes it took. For readers
/// that already hold the bytes (tests, fuzzing); the transport reads header then payload from
/// the socket with the same two checks.
pub fn decode_frame(buf: &[u8]) -> Result<(FrameType, &[u8], usize), FrameError> {
    let Some(header_bytes) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES,
            available: buf.len(),
        });
    };
    let header = FrameHeader::decode(header_bytes)?;
    let frame_bytes = FRAME_HEADER_BYTES + header.payload_bytes();
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..frame_bytes) else {
        return Err(FrameError::Truncated {
            needed: frame_bytes,
            available: buf.len(),
        });
    };
    let frame_type = header.check_payload(payload)?;
    Ok((frame_type, payload, frame_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type() {
        for frame_type in FrameType::ALL {
            let mut buf = Vec::new();
            let size = encode_frame(&mut buf, frame_type, |out| {
                out.extend_from_slice(b"payload")
            });
            assert_eq!(size, FRAME_HEADER_BYTES + 7);
            let (got_type, payload, used) = decode_frame(&buf).unwrap();
            assert_eq!(
                (got_type, payload, used),
                (frame_type, &b"payload"[..], size)
            );
        }
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[0..4].copy_from_slice(&(FRAME_PAYLOAD_BYTES_MAX as u32 + 1).to_le_bytes());
        assert!(matches!(
            FrameHeader::decode(&header),
            Err(FrameError::Oversize { payload_bytes, .. }) if payload_bytes == FRAME_PAYLOAD_BYTES_MAX + 1
        ));
    }
}
