//! The framing the node's per-group metadata records share (the snapshot metadata, the
//! offset checkpoint, the group ledger; docs/format.md): `{ u32 magic | u16 version |
//! u16 reserved (0) | u32 crc32c of the body | body }`, little-endian. One writer and one
//! checker of that header, so every record checks length, magic, version, reserved bytes
//! and checksum the same way before its own decoder reads a byte of the body.

/// Bytes before the body.
pub const HEADER_BYTES: usize = 12;

/// `body` behind its header.
pub fn frame(magic: u32, version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a record framed with `magic` and `version`, once the header checks out.
pub fn unframe(bytes: &[u8], magic: u32, version: u16) -> Result<&[u8], String> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if word(0) != magic {
        return Err("bad magic".into());
    }
    let found = u16::from_le_bytes([header[4], header[5]]);
    if found != version {
        return Err(format!("unknown version {found}"));
    }
    if header[6..8] != [0, 0] {
        return Err("reserved bytes are not zero".into());
    }
    if crc32c::crc32c(body) != word(8) {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: u32 = u32::from_le_bytes(*b"TEST");

    #[test]
    fn a_framed_body_comes_back_and_every_header_fault_is_named() {
        let framed = frame(MAGIC, 3, b"body");
        assert_eq!(unframe(&framed, MAGIC, 3), Ok(&b"body"[..]));
        assert!(unframe(&framed[..11], MAGIC, 3)
            .unwrap_err()
            .contains("shorter"));
        assert_eq!(unframe(&framed, MAGIC + 1, 3), Err("bad magic".into()));
        assert_eq!(unframe(&framed, MAGIC, 4), Err("unknown version 3".into()));
        let mut reserved = framed.clone();
        reserved[7] = 1;
        assert!(unframe(&reserved, MAGIC, 3)
            .unwrap_err()
            .contains("reserved"));
        for at in [8, HEADER_BYTES] {
            let mut flipped = framed.clone();
            flipped[at] ^= 1;
            assert_eq!(unframe(&flipped, MAGIC, 3), Err("checksum mismatch".into()));
        }
    }
}
