//! A batch being formed: records are placed at their final offsets in an aligned buffer as
//! appends arrive; headers and checksums are filled in when the writer cuts the batch and
//! knows its sequence number (so every record carries its batch's sequence, checked on read).

use crate::constants::{
    BATCH_BYTES_MAX, BATCH_HEADER_PAYLOAD_BYTES, BATCH_RECORDS_MAX, BLOCK_BYTES,
    RECORD_HEADER_BYTES,
};
use crate::format::record::{encode_record, seal_record_in_place, RecordFields};
use crate::format::{align_up, BatchHeaderPayload, RecordKind};
use crate::storage::IoBuf;

/// Bytes taken by the batch header record at the start of every batch.
pub const BATCH_HEADER_RECORD_BYTES: usize = RECORD_HEADER_BYTES + BATCH_HEADER_PAYLOAD_BYTES;

/// A record to be placed in a batch: what a request asks to write, before the batch gives it
/// a sequence number and an offset. The meaning of `term`, `index` and `aux` depends on
/// `kind` (see [`RecordKind`]).
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub kind: RecordKind,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub aux: u64,
    pub payload: &'a [u8],
}

impl NewRecord<'_> {
    /// Bytes the record takes in a batch (header and payload; records are not padded).
    pub fn bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }
}

/// One record of a forming batch.
#[derive(Debug, Clone)]
pub struct Op {
    pub kind: RecordKind,
    pub group: u64,
    pub term: u64,
    pub index: u64,
    pub aux: u64,
    /// Offset of the record header inside the batch.
    pub offset_in_batch: usize,
    pub payload_len: u32,
    /// Kept for `SnapshotMeta` and `GroupMeta`, whose payloads the group table stores.
    pub snapshot_meta: Option<Vec<u8>>,
}

pub struct BatchBuilder<B: IoBuf> {
    pub buf: B,
    /// Bytes used so far (batch header included).
    pub len: usize,
    pub ops: Vec<Op>,
}

impl<B: IoBuf> BatchBuilder<B> {
    /// `buf` must be at least one block long; its contents do not matter.
    pub fn new(buf: B) -> Self {
        assert!(buf.as_bytes().len() as u64 >= BLOCK_BYTES);
        BatchBuilder {
            buf,
            len: BATCH_HEADER_RECORD_BYTES,
            ops: Vec::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.as_bytes().len()
    }

    /// Bytes needed to add these records.
    pub fn bytes_for<'a>(records: impl IntoIterator<Item = &'a NewRecord<'a>>) -> usize {
        records.into_iter().map(NewRecord::bytes).sum()
    }

    /// Whether `records` more records taking `bytes` fit the buffer and the record count
    /// bound of one batch.
    pub fn fits(&self, bytes: usize, records: usize) -> bool {
        align_up((self.len + bytes) as u64, BLOCK_BYTES) as usize <= self.capacity()
            && self.ops.len() + records <= BATCH_RECORDS_MAX as usize
    }

    /// Places a record; the caller checked `fits`.
    pub fn push(&mut self, rec: &NewRecord<'_>) {
        let at = self.len;
        let end = at + rec.bytes();
        assert!(align_up(end as u64, BLOCK_BYTES) as usize <= self.capacity());
        assert!(self.ops.len() < BATCH_RECORDS_MAX as usize);
        self.buf.as_bytes_mut()[at + RECORD_HEADER_BYTES..end].copy_from_slice(rec.payload);
        self.ops.push(Op {
            kind: rec.kind,
            group: rec.group,
            term: rec.term,
            index: rec.index,
            aux: rec.aux,
            offset_in_batch: at,
            payload_len: rec.payload.len() as u32,
            snapshot_meta: rec.kind.payload_kept().then(|| rec.payload.to_vec()),
        });
        self.len = end;
    }

    /// Writes every header (batch header first) for batch `seq`, trims the buffer to whole
    /// blocks and returns it with the ops and the batch size.
    pub fn finish(mut self, seq: u64, durable_seq: u64) -> (B, Vec<Op>, u64) {
        let batch_bytes = align_up(self.len as u64, BLOCK_BYTES);
        // Requests are bounded before they are queued (`WalConfig::request_bytes_max`), so
        // the header's u32 fields cannot wrap.
        assert!(batch_bytes <= BATCH_BYTES_MAX && self.ops.len() <= BATCH_RECORDS_MAX as usize);
        let bytes = self.buf.as_bytes_mut();
        for op in &self.ops {
            let at = op.offset_in_batch;
            let end = at + RECORD_HEADER_BYTES + op.payload_len as usize;
            let fields = RecordFields {
                kind: op.kind,
                batch_seq: seq,
                group: op.group,
                term: op.term,
                index: op.index,
                aux: op.aux,
            };
            seal_record_in_place(&mut bytes[at..end], fields);
        }
        // Padding after the last record must read as zero: scanners and the format require
        // it, and the buffer may hold stale bytes (see `alloc_buf_for_overwrite`).
        bytes[self.len..batch_bytes as usize].fill(0);
        let payload = BatchHeaderPayload {
            batch_bytes: batch_bytes as u32,
            record_count: self.ops.len() as u32,
            reserved: 0,
        };
        let fields = RecordFields {
            kind: RecordKind::BatchHeader,
            batch_seq: seq,
            group: 0,
            term: 0,
            index: 0,
            aux: durable_seq,
        };
        encode_record(
            &mut bytes[..BATCH_HEADER_RECORD_BYTES],
            fields,
            bytemuck::bytes_of(&payload),
        );
        self.buf.trim_to(batch_bytes as usize);
        (self.buf, self.ops, batch_bytes)
    }
}
