//! Reading one frame from a socket: header, length check, then exactly the payload. The same
//! two steps (`FrameHeader::decode`, `FrameHeader::check_payload`) for the blocking handshake
//! reader of the acceptor thread and the async readers on the shards.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

use crate::constants::FRAME_HEADER_BYTES;
use crate::error::{FrameError, WireError};
use crate::frame::FrameHeader;
use crate::peer_frame::PeerFrame;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection between frames.
    #[error("connection closed by the peer")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// A frame arrived but cannot be trusted; `version` is what its header said, so a
    /// handshake can answer a version mismatch.
    #[error("{error}")]
    Wire {
        error: WireError,
        version: Option<u16>,
    },
}

impl ReadError {
    fn wire(error: impl Into<WireError>, version: Option<u16>) -> Self {
        ReadError::Wire {
            error: error.into(),
            version,
        }
    }
}

/// A decoded frame and its size on the wire.
pub(crate) struct ReadFrame {
    pub frame: PeerFrame,
    pub bytes: usize,
}

fn eof_is_closed(err: io::Error, at_frame_start: bool) -> ReadError {
    if err.kind() == io::ErrorKind::UnexpectedEof && at_frame_start {
        ReadError::Closed
    } else {
        ReadError::Io(err)
    }
}

fn finish(header: FrameHeader, payload: &[u8]) -> Result<ReadFrame, ReadError> {
    let frame_type = header
        .check_payload(payload)
        .map_err(|error| ReadError::wire(error, Some(header.version())))?;
    let frame = PeerFrame::decode_payload(frame_type, payload)
        .map_err(|error| ReadError::wire(error, None))?;
    Ok(ReadFrame {
        frame,
        bytes: FRAME_HEADER_BYTES + payload.len(),
    })
}

/// Decodes a header and checks its length against the protocol's maximum and the caller's
/// (smaller during the handshake), before the payload buffer is allocated.
fn header(
    bytes: &[u8; FRAME_HEADER_BYTES],
    payload_bytes_max: usize,
) -> Result<FrameHeader, ReadError> {
    let header =
        FrameHeader::decode(bytes).map_err(|error: FrameError| ReadError::wire(error, None))?;
    if header.payload_bytes() > payload_bytes_max {
        let error = FrameError::Oversize {
            payload_bytes: header.payload_bytes(),
            payload_bytes_max,
        };
        return Err(ReadError::wire(error, None));
    }
    Ok(header)
}

/// Reads one frame from a blocking socket (its read timeout bounds the wait).
pub(crate) fn read_frame_blocking(
    stream: &mut impl io::Read,
    payload_bytes_max: usize,
) -> Result<ReadFrame, ReadError> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    stream
        .read_exact(&mut head)
        .map_err(|e| eof_is_closed(e, true))?;
    let header = header(&head, payload_bytes_max)?;
    let mut payload = vec![0u8; header.payload_bytes()];
    stream
        .read_exact(&mut payload)
        .map_err(|e| eof_is_closed(e, false))?;
    finish(header, &payload)
}

/// Reads one frame from an async socket.
pub(crate) async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    payload_bytes_max: usize,
) -> Result<ReadFrame, ReadError> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| eof_is_closed(e, true))?;
    let header = header(&head, payload_bytes_max)?;
    let mut payload = vec![0u8; header.payload_bytes()];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| eof_is_closed(e, false))?;
    finish(header, &payload)
}
