//! InitProducerId: hands an idempotent producer its id (epoch 0). Ids are allocated by each
//! node without a round trip to the controller:
//!
//! `producer_id = node_id (15 bits) << 48 | (unix_ms << 4 | n) (48 bits)`
//!
//! where `n` counts ids taken in the same millisecond (an id is never below the previous one
//! this process gave out). Ids are unique across nodes (node ids differ) and across restarts
//! (the clock moved on), as long as the wall clock does not step back across a restart and
//! a node gives out fewer than 16 ids per millisecond on average. Transactions
//! (`transactional_id`) are not supported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::broker::Broker;

/// Bits of the per-node part of an id.
const LOCAL_BITS: u32 = 48;
const NODE_ID_MASK: u64 = (1 << 15) - 1;

/// The last local part handed out by this process (all shards: an atomic, off the hot path).
static LAST_LOCAL: AtomicU64 = AtomicU64::new(0);

fn next_local() -> u64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let floor = (now_ms << 4) & ((1 << LOCAL_BITS) - 1);
    let mut last = LAST_LOCAL.load(Ordering::Relaxed);
    loop {
        let next = floor.max(last + 1) & ((1 << LOCAL_BITS) - 1);
        match LAST_LOCAL.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

pub fn allocate(node_id: u64) -> i64 {
    compose(node_id, next_local())
}

/// The id of node `node_id`'s local part `local` (the layout above). The node simulation
/// hands out ids with it from its simulated clock.
pub fn compose(node_id: u64, local: u64) -> i64 {
    (((node_id & NODE_ID_MASK) << LOCAL_BITS) | (local & ((1 << LOCAL_BITS) - 1))) as i64
}

pub fn handle(broker: &Broker, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    if r.transactional_id.is_some() {
        out.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        out.producer_id = ProducerId(-1);
        out.producer_epoch = -1;
        return out;
    }
    // A producer that asks again with its id keeps it with the next epoch (KIP-360); its
    // old epoch is then fenced on every partition it writes.
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX {
        out.producer_id = r.producer_id;
        out.producer_epoch = r.producer_epoch + 1;
        return out;
    }
    out.producer_id = ProducerId(allocate(broker.setup.node_id));
    out.producer_epoch = 0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_and_carry_the_node() {
        let a = allocate(3);
        let b = allocate(3);
        assert!(b > a && a > 0);
        assert_eq!((a as u64) >> LOCAL_BITS, 3);
    }
}
