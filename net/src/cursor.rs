//! A bounds-checked little-endian reader over a byte slice: the only way the decoders read
//! peer bytes, so a short buffer is always an error and never a panic.

use crate::error::DecodeError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    pub(crate) fn bytes(
        &mut self,
        count: usize,
        what: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < count {
            return Err(DecodeError::Truncated {
                what,
                needed: count,
                available: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(count);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A boolean is one byte, 0 or 1; anything else is malformed.
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadBool { what, value }),
        }
    }

    /// Reads an element count and checks that `count` elements of at least `element_bytes_min`
    /// each can fit in what is left, so a forged count never drives a large allocation.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        element_bytes_min: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(what)? as usize;
        let fits = count
            .checked_mul(element_bytes_min)
            .is_some_and(|bytes| bytes <= self.buf.len());
        if !fits {
            return Err(DecodeError::CountTooLarge {
                what,
                count,
                remaining: self.buf.len(),
            });
        }
        Ok(count)
    }

    /// Every decoder ends here: bytes after the last field mean the sender and receiver
    /// disagree on the layout.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                what,
                count: self.buf.len(),
            })
        }
    }
}
