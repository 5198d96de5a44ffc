//! Fixed limits of the peer protocol. Limits that an operator may tune live in
//! [`crate::TransportConfig`]; these are the ones both ends of a connection must agree on.

/// The peer protocol version carried in every frame header and in the handshake. Version 2
/// added the `quiesce` flag to heartbeats (docs/raft.md, "Quiescence of idle groups").
pub const PROTOCOL_VERSION: u16 = 2;

/// `{ u32 payload_len | u32 crc32c | u16 version | u16 frame_type }`.
pub const FRAME_HEADER_BYTES: usize = 12;

/// The largest frame payload accepted, checked against the header before anything is
/// allocated. It bounds what one peer can make this node allocate per connection. It must hold
/// one AppendEntries of the Raft core's `append_bytes_max` (1 MiB by default, and always at
/// least one entry) or one snapshot chunk (`snapshot_chunk_bytes`, 1 MiB), with room for an
/// entry larger than the batching limit.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// The largest payload accepted as the first frame of a connection (a Hello or a Refuse), so a
/// peer that has not yet proved who it is cannot make this node allocate much.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 1024;

/// Text of a handshake refusal; longer reasons are cut (at a character boundary).
pub const REFUSE_DETAIL_BYTES_MAX: usize = 512;

const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(REFUSE_DETAIL_BYTES_MAX <= u16::MAX as usize);
// A Refuse (4 bytes of header fields + detail) and a Hello (36 bytes) fit a handshake frame.
const _: () = assert!(4 + REFUSE_DETAIL_BYTES_MAX <= HANDSHAKE_PAYLOAD_BYTES_MAX);
