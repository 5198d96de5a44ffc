//! A producer over [`Client`]: builds v2 batches and, with acks=all, is idempotent (Kafka's
//! InitProducerId + per-partition sequence numbers), so a retry after a lost answer or a
//! leader change is stored once.
//!
//! A failed send leaves its batch in doubt: the server may have stored it. Sending the same
//! values again reuses its sequence (the server answers a duplicate with the original
//! offsets). Sending *different* values must not reuse it: if the doubtful batch was stored
//! and the new one has as many records, the server would take the new batch for a duplicate
//! and acknowledge records it never stored. So the producer first takes a new producer id,
//! whose sequences start afresh; the doubtful batch stays stored or not, unacknowledged.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::client::{Acks, Client, ProduceAck};
use super::error::ClientResult;
use crate::records::{build_batch_for, ProducerStamp};

/// Produces batches of values; see the module docs.
#[derive(Debug)]
pub struct Producer {
    client: Client,
    acks: Acks,
    /// Producer id and epoch when idempotent (acks=all only, as Kafka requires).
    identity: Option<(i64, i16)>,
    /// Next sequence number per (topic, partition).
    sequences: HashMap<(String, i32), i32>,
    /// Per (topic, partition), a fingerprint of the values of a batch whose send failed
    /// (see the module docs).
    in_doubt: HashMap<(String, i32), u32>,
}

impl Producer {
    /// A producer with `acks`; idempotent when `acks` is [`Acks::All`] and `idempotent` is set.
    pub fn new(mut client: Client, acks: Acks, idempotent: bool) -> ClientResult<Producer> {
        let identity = if idempotent && acks == Acks::All {
            Some(client.init_producer_id()?)
        } else {
            None
        };
        Ok(Producer {
            client,
            acks,
            identity,
            sequences: HashMap::new(),
            in_doubt: HashMap::new(),
        })
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    pub fn is_idempotent(&self) -> bool {
        self.identity.is_some()
    }

    /// Sends `values` as one batch to `topic`-`partition` and waits for the acknowledgement.
    /// The batch carries the next sequence number; it advances only when the batch is
    /// acknowledged, and a retry of the same values reuses it. Different values after a
    /// failed send get a new producer id first (module docs).
    pub fn send(
        &mut self,
        topic: &str,
        partition: i32,
        values: &[&[u8]],
    ) -> ClientResult<ProduceAck> {
        let key = (topic.to_string(), partition);
        let fingerprint = fingerprint(values);
        if self.identity.is_some()
            && self
                .in_doubt
                .get(&key)
                .is_some_and(|&doubtful| doubtful != fingerprint)
        {
            self.identity = Some(self.client.init_producer_id()?);
            self.sequences.clear();
            self.in_doubt.clear();
        }
        let stamp = match self.identity {
            Some((producer_id, producer_epoch)) => ProducerStamp {
                producer_id,
                producer_epoch,
                base_sequence: self.sequences.get(&key).copied().unwrap_or(0),
            },
            None => ProducerStamp::NONE,
        };
        let batch = build_batch_for(values, now_ms(), stamp);
        let ack = match self
            .client
            .produce(topic, partition, Bytes::from(batch), self.acks)
        {
            Ok(ack) => ack,
            Err(e) => {
                if self.identity.is_some() {
                    self.in_doubt.insert(key, fingerprint);
                }
                return Err(e);
            }
        };
        self.in_doubt.remove(&key);
        if self.identity.is_some() {
            // Kafka's sequence numbers wrap from i32::MAX to 0.
            let next = stamp.base_sequence.wrapping_add(values.len() as i32) & i32::MAX;
            self.sequences.insert(key, next);
        }
        Ok(ack)
    }
}

/// CRC32C over the values, each preceded by its length: tells a retry of the same batch
/// from a different one (two different batches collide with odds of 2^-32, and only then
/// would a sequence be reused).
fn fingerprint(values: &[&[u8]]) -> u32 {
    values.iter().fold(0, |crc, v| {
        let crc = crc32c::crc32c_append(crc, &(v.len() as u64).to_le_bytes());
        crc32c::crc32c_append(crc, v)
    })
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
