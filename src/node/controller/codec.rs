//! The controller's binary framing and field codec, shared by commands (Raft entry payloads)
//! and snapshots: one reader of the format.
//!
//! Frame, all integers little-endian:
//!
//! ```text
//! u32 magic | u16 version | u16 kind | u32 body_bytes | u32 crc32c | body
//! ```
//!
//! The checksum covers the 12 header bytes before it and the body, so a flipped kind or
//! version is caught as surely as a flipped body byte.
//!
//! Length and checksum are checked before a byte of the body is trusted; every read inside
//! the body is bounds-checked and returns [`CodecError`], never panics.

use std::net::SocketAddr;

use uuid::Uuid;

pub const FRAME_HEADER_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{what}: {len} bytes, shorter than the {need}-byte header")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("{what}: bad magic {found:#010x}")]
    Magic { what: &'static str, found: u32 },
    #[error("{what}: format version {found} (this build reads {supported})")]
    Version {
        what: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("{what}: header says {declared} body bytes, {actual} present")]
    Length {
        what: &'static str,
        declared: u64,
        actual: usize,
    },
    #[error("{what}: checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("{what}: unknown kind {kind}")]
    Kind { what: &'static str, kind: u16 },
    #[error("{what}: field {field} runs past the end of the body")]
    Truncated {
        what: &'static str,
        field: &'static str,
    },
    #[error("{what}: field {field}: {why}")]
    Invalid {
        what: &'static str,
        field: &'static str,
        why: String,
    },
    #[error("{what}: {extra} bytes after the last field")]
    Trailing { what: &'static str, extra: usize },
}

/// A checked frame: kind and body.
pub struct Frame<'a> {
    pub kind: u16,
    pub body: &'a [u8],
}

pub fn encode_frame(
    what: &'static str,
    magic: u32,
    version: u16,
    kind: u16,
    body: &[u8],
) -> Result<Vec<u8>, CodecError> {
    let body_bytes = u32::try_from(body.len()).map_err(|_| CodecError::Invalid {
        what,
        field: "body",
        why: format!("{} bytes do not fit a u32 length", body.len()),
    })?;
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&body_bytes.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

pub fn decode_frame<'a>(
    what: &'static str,
    magic: u32,
    version: u16,
    bytes: &'a [u8],
) -> Result<Frame<'a>, CodecError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(CodecError::Short {
            what,
            len: bytes.len(),
            need: FRAME_HEADER_BYTES,
        });
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let found = u32_at(0);
    if found != magic {
        return Err(CodecError::Magic { what, found });
    }
    let found_version = u16_at(4);
    if found_version != version {
        return Err(CodecError::Version {
            what,
            found: found_version,
            supported: version,
        });
    }
    let kind = u16_at(6);
    let declared = u32_at(8) as u64;
    let body = &bytes[FRAME_HEADER_BYTES..];
    if declared != body.len() as u64 {
        return Err(CodecError::Length {
            what,
            declared,
            actual: body.len(),
        });
    }
    let stored = u32_at(12);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[..12]), body);
    if stored != computed {
        return Err(CodecError::Checksum {
            what,
            stored,
            computed,
        });
    }
    Ok(Frame { kind, body })
}

/// Appends fields to a body.
pub struct Writer {
    what: &'static str,
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new(what: &'static str) -> Self {
        Writer {
            what,
            buf: Vec::new(),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    pub fn uuid(&mut self, v: Uuid) {
        self.buf.extend_from_slice(v.as_bytes());
    }
    /// `u16 length | UTF-8 bytes`.
    pub fn str(&mut self, field: &'static str, v: &str) -> Result<(), CodecError> {
        let len = u16::try_from(v.len()).map_err(|_| CodecError::Invalid {
            what: self.what,
            field,
            why: format!("{} bytes, more than a u16 length holds", v.len()),
        })?;
        self.u16(len);
        self.buf.extend_from_slice(v.as_bytes());
        Ok(())
    }
    /// A count of items that follow (`u32`).
    pub fn count(&mut self, field: &'static str, n: usize) -> Result<(), CodecError> {
        let n = u32::try_from(n).map_err(|_| CodecError::Invalid {
            what: self.what,
            field,
            why: format!("{n} items, more than a u32 count holds"),
        })?;
        self.u32(n);
        Ok(())
    }
    /// `u8 0` for none, `u8 1 | u64` for some.
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.u64(x);
            }
        }
    }
    pub fn addr(&mut self, field: &'static str, v: SocketAddr) -> Result<(), CodecError> {
        self.str(field, &v.to_string())
    }
}

/// Reads fields from a checked body; every read is bounds-checked.
pub struct Reader<'a> {
    what: &'static str,
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, body: &'a [u8]) -> Self {
        Reader { what, body, pos: 0 }
    }

    pub fn invalid(&self, field: &'static str, why: impl Into<String>) -> CodecError {
        CodecError::Invalid {
            what: self.what,
            field,
            why: why.into(),
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or(CodecError::Truncated {
                what: self.what,
                field,
            })?;
        let out = &self.body[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub fn bool(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.invalid(field, format!("boolean byte {v}"))),
        }
    }
    pub fn uuid(&mut self, field: &'static str) -> Result<Uuid, CodecError> {
        Ok(Uuid::from_bytes(self.array(field)?))
    }
    pub fn str(&mut self, field: &'static str) -> Result<String, CodecError> {
        let len = self.u16(field)? as usize;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.invalid(field, "not UTF-8"))
    }
    pub fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, CodecError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.u64(field)?)),
            v => Err(self.invalid(field, format!("option tag {v}"))),
        }
    }
    pub fn addr(&mut self, field: &'static str) -> Result<SocketAddr, CodecError> {
        let text = self.str(field)?;
        text.parse()
            .map_err(|e| self.invalid(field, format!("{text:?}: {e}")))
    }
    /// A count of items that each take at least `item_bytes_min` bytes: refused when the rest
    /// of the body cannot hold them, so a corrupt count never sizes an allocation.
    pub fn count(
        &mut self,
        field: &'static str,
        item_bytes_min: usize,
    ) -> Result<usize, CodecError> {
        let n = self.u32(field)? as usize;
        let left = self.body.len() - self.pos;
        if n.saturating_mul(item_bytes_min.max(1)) > left {
            return Err(CodecError::Truncated {
                what: self.what,
                field,
            });
        }
        Ok(n)
    }
    pub fn finish(self) -> Result<(), CodecError> {
        let extra = self.body.len() - self.pos;
        if extra != 0 {
            return Err(CodecError::Trailing {
                what: self.what,
                extra,
            });
        }
        Ok(())
    }
}
