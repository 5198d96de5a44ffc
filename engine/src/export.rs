//! The export format of one group (`tern export-topic` / `tern import-topic`), specified in
//! `docs/export-format.md`. All multi-byte integers are little-endian.
//!
//! ```text
//! file    = { ExportHeader (128 bytes) | snapshot meta (snapshot_meta_bytes) |
//!             entry * entry_count | ExportTrailer (24 bytes) }
//! entry   = { EntryHeader (24 bytes) | data (data_bytes) }
//! ```
//!
//! Every piece carries its own CRC32C (header + snapshot meta, each entry) and the trailer
//! holds the CRC32C of every byte before it, so a truncated, torn or edited file is refused.
//! The decoder checks every length against a bound before allocating and never panics.

use std::io::{Read, Write};

use bytemuck::{Pod, Zeroable};

use crate::constants::RECORD_PAYLOAD_BYTES_MAX;
use crate::format::{crc32c, crc32c_append};

pub const EXPORT_MAGIC: u32 = u32::from_le_bytes(*b"TRNX");
pub const EXPORT_TRAILER_MAGIC: u32 = u32::from_le_bytes(*b"TRNE");
/// Version written by this build; the decoder accepts exactly this version.
pub const EXPORT_VERSION: u16 = 1;
pub const EXPORT_HEADER_BYTES: usize = 128;
pub const EXPORT_ENTRY_HEADER_BYTES: usize = 24;
pub const EXPORT_TRAILER_BYTES: usize = 24;

/// `flags` bit: the header's hard state fields are meaningful.
pub const FLAG_HARD_STATE: u16 = 1;
/// `flags` bit: the group's log starts after a snapshot (fields `snapshot_*`).
pub const FLAG_SNAPSHOT: u16 = 2;

/// Encoding (128 bytes):
/// `{ u32 magic "TRNX" | u16 version | u16 flags | u32 header_bytes (128) | u32 crc32c |
///    u64 group | u64 entry_count | u64 first_index | u64 last_index | u64 term_first |
///    u64 term_last | u64 hard_term | u64 hard_vote | u64 hard_commit | u64 snapshot_term |
///    u64 snapshot_index | u64 created_unix_ms | u32 snapshot_meta_bytes | u32 reserved |
///    u64 reserved }`
///
/// `crc32c` covers the 128 header bytes (crc field taken as zero) followed by the snapshot
/// metadata bytes. `first_index..=last_index` is the group's log (`last_index =
/// first_index - 1` when empty); `entry_count = last_index + 1 - first_index`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct ExportHeader {
    pub magic: u32,
    pub version: u16,
    pub flags: u16,
    pub header_bytes: u32,
    pub crc32c: u32,
    pub group: u64,
    pub entry_count: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub term_first: u64,
    pub term_last: u64,
    pub hard_term: u64,
    pub hard_vote: u64,
    pub hard_commit: u64,
    pub snapshot_term: u64,
    pub snapshot_index: u64,
    pub created_unix_ms: u64,
    pub snapshot_meta_bytes: u32,
    pub reserved0: u32,
    pub reserved1: u64,
}

/// Encoding (24 bytes): `{ u64 term | u64 index | u32 data_bytes | u32 crc32c }`; `crc32c`
/// covers the 24 bytes (crc field taken as zero) followed by the data.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct ExportEntryHeader {
    pub term: u64,
    pub index: u64,
    pub data_bytes: u32,
    pub crc32c: u32,
}

/// Encoding (24 bytes): `{ u32 magic "TRNE" | u32 reserved | u64 entry_count |
///   u32 file_crc32c | u32 reserved }`; `file_crc32c` covers every byte before the trailer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct ExportTrailer {
    pub magic: u32,
    pub reserved0: u32,
    pub entry_count: u64,
    pub file_crc32c: u32,
    pub reserved1: u32,
}

const _: () = assert!(std::mem::size_of::<ExportHeader>() == EXPORT_HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<ExportEntryHeader>() == EXPORT_ENTRY_HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<ExportTrailer>() == EXPORT_TRAILER_BYTES);

/// What an export holds besides its entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportMeta {
    pub group: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub term_first: u64,
    pub term_last: u64,
    /// (term, vote, commit)
    pub hard_state: Option<(u64, u64, u64)>,
    /// (term, index, metadata)
    pub snapshot: Option<(u64, u64, Vec<u8>)>,
    pub created_unix_ms: u64,
}

impl ExportMeta {
    pub fn entry_count(&self) -> u64 {
        (self.last_index + 1).saturating_sub(self.first_index)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a tern export file (magic {found:#010x})")]
    BadMagic { found: u32 },
    #[error("unsupported export version {0} (this build reads {EXPORT_VERSION})")]
    BadVersion(u16),
    #[error("file ends early: {what}")]
    Truncated { what: String },
    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        what: String,
        stored: u32,
        computed: u32,
    },
    #[error("invalid {what}")]
    Invalid { what: String },
}

/// Streams an export: header first, then exactly `meta.entry_count()` consecutive entries,
/// then [`finish`](Self::finish) writes the trailer.
pub struct ExportWriter<W: Write> {
    out: W,
    crc: u32,
    next_index: u64,
    meta: ExportMeta,
    written: u64,
}

impl<W: Write> ExportWriter<W> {
    pub fn new(mut out: W, meta: ExportMeta) -> Result<Self, ExportError> {
        if meta.last_index + 1 < meta.first_index {
            return Err(ExportError::Invalid {
                what: format!("range first {} last {}", meta.first_index, meta.last_index),
            });
        }
        let mut flags = 0;
        let (hard_term, hard_vote, hard_commit) = match meta.hard_state {
            Some(hs) => {
                flags |= FLAG_HARD_STATE;
                hs
            }
            None => (0, 0, 0),
        };
        let (snapshot_term, snapshot_index, snap_meta): (u64, u64, &[u8]) = match &meta.snapshot {
            Some((t, i, m)) => {
                flags |= FLAG_SNAPSHOT;
                (*t, *i, m)
            }
            None => (0, 0, &[]),
        };
        if snap_meta.len() > RECORD_PAYLOAD_BYTES_MAX as usize {
            return Err(ExportError::Invalid {
                what: format!("snapshot metadata of {} bytes", snap_meta.len()),
            });
        }
        let mut header = ExportHeader {
            magic: EXPORT_MAGIC,
            version: EXPORT_VERSION,
            flags,
            header_bytes: EXPORT_HEADER_BYTES as u32,
            crc32c: 0,
            group: meta.group,
            entry_count: meta.entry_count(),
            first_index: meta.first_index,
            last_index: meta.last_index,
            term_first: meta.term_first,
            term_last: meta.term_last,
            hard_term,
            hard_vote,
            hard_commit,
            snapshot_term,
            snapshot_index,
            created_unix_ms: meta.created_unix_ms,
            snapshot_meta_bytes: snap_meta.len() as u32,
            reserved0: 0,
            reserved1: 0,
        };
        header.crc32c = crc32c_append(crc32c(bytemuck::bytes_of(&header)), snap_meta);
        let head = bytemuck::bytes_of(&header);
        out.write_all(head)?;
        out.write_all(snap_meta)?;
        let crc = crc32c_append(crc32c(head), snap_meta);
        Ok(ExportWriter {
            out,
            crc,
            next_index: meta.first_index,
            meta,
            written: 0,
        })
    }

    /// Writes the next entry; indexes must be consecutive from `first_index`.
    pub fn write_entry(&mut self, term: u64, index: u64, data: &[u8]) -> Result<(), ExportError> {
        if index != self.next_index || index > self.meta.last_index {
            return Err(ExportError::Invalid {
                what: format!(
                    "entry index {index} (expected {} within ..={})",
                    self.next_index, self.meta.last_index
                ),
            });
        }
        if data.len() > RECORD_PAYLOAD_BYTES_MAX as usize {
            return Err(ExportError::Invalid {
                what: format!("entry {index} of {} bytes", data.len()),
            });
        }
        let mut h = ExportEntryHeader {
            term,
            index,
            data_bytes: data.len() as u32,
            crc32c: 0,
        };
        h.crc32c = crc32c_append(crc32c(bytemuck::bytes_of(&h)), data);
        let head = bytemuck::bytes_of(&h);
        self.out.write_all(head)?;
        self.out.write_all(data)?;
        self.crc = crc32c_append(crc32c_append(self.crc, head), data);
        self.next_index += 1;
        self.written += 1;
        Ok(())
    }

    /// Writes the trailer and returns the writer (the caller flushes and syncs it).
    pub fn finish(mut self) -> Result<W, ExportError> {
        if self.written != self.meta.entry_count() {
            return Err(ExportError::Invalid {
                what: format!(
                    "export of {} entries, header says {}",
                    self.written,
                    self.meta.entry_count()
                ),
            });
        }
        let t = ExportTrailer {
            magic: EXPORT_TRAILER_MAGIC,
            reserved0: 0,
            entry_count: self.written,
            file_crc32c: self.crc,
            reserved1: 0,
        };
        self.out.write_all(bytemuck::bytes_of(&t))?;
        Ok(self.out)
    }
}

/// One entry read back (checksum verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    pub term: u64,
    pub index: u64,
    pub data: Vec<u8>,
}

/// Streams an export back: [`open`](Self::open) checks the header, [`next_entry`] returns
/// entries until the trailer, which is checked (count and whole-file checksum) before `None`.
///
/// [`next_entry`]: Self::next_entry
pub struct ExportReader<R: Read> {
    input: R,
    crc: u32,
    pub meta: ExportMeta,
    next_index: u64,
    read: u64,
    done: bool,
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), ExportError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ExportError::Truncated { what: what.into() }
        } else {
            ExportError::Io(e)
        }
    })
}

impl<R: Read> ExportReader<R> {
    pub fn open(mut input: R) -> Result<Self, ExportError> {
        let mut raw = [0u8; EXPORT_HEADER_BYTES];
        read_exact_or(&mut input, &mut raw, "header")?;
        let h: ExportHeader = bytemuck::pod_read_unaligned(&raw);
        if h.magic != EXPORT_MAGIC {
            return Err(ExportError::BadMagic { found: h.magic });
        }
        if h.version != EXPORT_VERSION {
            return Err(ExportError::BadVersion(h.version));
        }
        if h.header_bytes as usize != EXPORT_HEADER_BYTES {
            return Err(ExportError::Invalid {
                what: format!("header_bytes {}", h.header_bytes),
            });
        }
        if h.snapshot_meta_bytes > RECORD_PAYLOAD_BYTES_MAX {
            return Err(ExportError::Invalid {
                what: format!("snapshot_meta_bytes {}", h.snapshot_meta_bytes),
            });
        }
        let mut snap_meta = vec![0u8; h.snapshot_meta_bytes as usize];
        read_exact_or(&mut input, &mut snap_meta, "snapshot metadata")?;
        let mut zeroed = h;
        zeroed.crc32c = 0;
        let computed = crc32c_append(crc32c(bytemuck::bytes_of(&zeroed)), &snap_meta);
        if computed != h.crc32c {
            return Err(ExportError::BadChecksum {
                what: "header".into(),
                stored: h.crc32c,
                computed,
            });
        }
        if h.flags & !(FLAG_HARD_STATE | FLAG_SNAPSHOT) != 0 {
            return Err(ExportError::Invalid {
                what: format!("flags {:#x}", h.flags),
            });
        }
        if h.first_index == 0
            || h.last_index.checked_add(1).is_none()
            || h.last_index + 1 < h.first_index
            || h.entry_count != h.last_index + 1 - h.first_index
        {
            return Err(ExportError::Invalid {
                what: format!(
                    "index range {}..={} with {} entries",
                    h.first_index, h.last_index, h.entry_count
                ),
            });
        }
        let meta = ExportMeta {
            group: h.group,
            first_index: h.first_index,
            last_index: h.last_index,
            term_first: h.term_first,
            term_last: h.term_last,
            hard_state: (h.flags & FLAG_HARD_STATE != 0).then_some((
                h.hard_term,
                h.hard_vote,
                h.hard_commit,
            )),
            snapshot: (h.flags & FLAG_SNAPSHOT != 0).then(|| {
                (
                    h.snapshot_term,
                    h.snapshot_index,
                    std::mem::take(&mut snap_meta),
                )
            }),
            created_unix_ms: h.created_unix_ms,
        };
        let crc = crc32c_append(crc32c(&raw), meta.snapshot.as_ref().map_or(&[], |s| &s.2));
        Ok(ExportReader {
            input,
            crc,
            next_index: meta.first_index,
            meta,
            read: 0,
            done: false,
        })
    }

    /// The next entry, or `None` after a verified trailer.
    pub fn next_entry(&mut self) -> Result<Option<ExportEntry>, ExportError> {
        if self.done {
            return Ok(None);
        }
        if self.read == self.meta.entry_count() {
            let mut raw = [0u8; EXPORT_TRAILER_BYTES];
            read_exact_or(&mut self.input, &mut raw, "trailer")?;
            let t: ExportTrailer = bytemuck::pod_read_unaligned(&raw);
            if t.magic != EXPORT_TRAILER_MAGIC || t.reserved0 != 0 || t.reserved1 != 0 {
                return Err(ExportError::Invalid {
                    what: format!("trailer magic {:#010x}", t.magic),
                });
            }
            if t.entry_count != self.read {
                return Err(ExportError::Invalid {
                    what: format!(
                        "trailer counts {} entries, read {}",
                        t.entry_count, self.read
                    ),
                });
            }
            if t.file_crc32c != self.crc {
                return Err(ExportError::BadChecksum {
                    what: "whole file".into(),
                    stored: t.file_crc32c,
                    computed: self.crc,
                });
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(ExportError::Invalid {
                    what: "bytes after the trailer".into(),
                });
            }
            self.done = true;
            return Ok(None);
        }
        let what = format!("entry {}", self.next_index);
        let mut raw = [0u8; EXPORT_ENTRY_HEADER_BYTES];
        read_exact_or(&mut self.input, &mut raw, &what)?;
        let h: ExportEntryHeader = bytemuck::pod_read_unaligned(&raw);
        if h.index != self.next_index {
            return Err(ExportError::Invalid {
                what: format!("{what}: header says index {}", h.index),
            });
        }
        if h.data_bytes > RECORD_PAYLOAD_BYTES_MAX {
            return Err(ExportError::Invalid {
                what: format!("{what}: length {}", h.data_bytes),
            });
        }
        let mut data = vec![0u8; h.data_bytes as usize];
        read_exact_or(&mut self.input, &mut data, &what)?;
        let mut zeroed = h;
        zeroed.crc32c = 0;
        let computed = crc32c_append(crc32c(bytemuck::bytes_of(&zeroed)), &data);
        if computed != h.crc32c {
            return Err(ExportError::BadChecksum {
                what,
                stored: h.crc32c,
                computed,
            });
        }
        self.crc = crc32c_append(crc32c_append(self.crc, &raw), &data);
        self.next_index += 1;
        self.read += 1;
        Ok(Some(ExportEntry {
            term: h.term,
            index: h.index,
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let meta = ExportMeta {
            group: 7,
            first_index: 5,
            last_index: 9,
            term_first: 1,
            term_last: 2,
            hard_state: Some((2, 1, 8)),
            snapshot: Some((1, 4, b"snap".to_vec())),
            created_unix_ms: 1,
        };
        let mut w = ExportWriter::new(Vec::new(), meta).unwrap();
        for i in 5..=9u64 {
            w.write_entry(1 + i / 8, i, &vec![i as u8; i as usize * 3])
                .unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<(ExportMeta, Vec<ExportEntry>), ExportError> {
        let mut r = ExportReader::open(bytes)?;
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        Ok((r.meta.clone(), out))
    }

    #[test]
    fn round_trip() {
        let (meta, entries) = read_all(&sample()).unwrap();
        assert_eq!(meta.group, 7);
        assert_eq!(meta.snapshot, Some((1, 4, b"snap".to_vec())));
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[4].data, vec![9u8; 27]);
    }

    #[test]
    fn every_flip_and_truncation_is_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(read_all(&bad).is_err(), "flip at {i} accepted");
            }
        }
        for len in 0..bytes.len() {
            assert!(
                read_all(&bytes[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
    }
}
