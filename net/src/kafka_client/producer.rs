//! A producer over [`Client`]: builds v2 batches and, with acks=all, is idempotent (Kafka's
//! InitProducerId + per-partition sequence numbers), so a retry after a lost answer or a
//! leader change is stored once.

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
    /// acknowledged, and a retry reuses it.
    pub fn send(
        &mut self,
        topic: &str,
        partition: i32,
        values: &[&[u8]],
    ) -> ClientResult<ProduceAck> {
        let key = (topic.to_string(), partition);
        let stamp = match self.identity {
            Some((producer_id, producer_epoch)) => ProducerStamp {
                producer_id,
                producer_epoch,
                base_sequence: self.sequences.get(&key).copied().unwrap_or(0),
            },
            None => ProducerStamp::NONE,
        };
        let batch = build_batch_for(values, now_ms(), stamp);
        let ack = self
            .client
            .produce(topic, partition, Bytes::from(batch), self.acks)?;
        if self.identity.is_some() {
            // Kafka's sequence numbers wrap from i32::MAX to 0.
            let next = stamp.base_sequence.wrapping_add(values.len() as i32) & i32::MAX;
            self.sequences.insert(key, next);
        }
        Ok(ack)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
