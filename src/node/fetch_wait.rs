//! Long-poll fetches: a fetch at the high watermark (nothing new to read) waits on its shard
//! until the partition commits more records or its wait ends, as Kafka's `max_wait_ms` asks.
//! The shard wakes a partition's parked fetches when it applies committed entries to it, and
//! answers the expired ones on each tick (so a wait ends within one tick of its deadline).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::requests::PartitionRequest;

/// Fetches parked on one shard at a time; past it a fetch is answered empty at once (the
/// client polls again), so parked requests cannot grow without bound.
pub const PARKED_FETCHES_MAX: usize = 4096;
/// The longest wait honoured (Kafka clients ask for 500 ms by default).
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;

struct Parked {
    deadline: Instant,
    request: PartitionRequest,
}

#[derive(Default)]
pub struct FetchWaiters {
    by_group: HashMap<u64, Vec<Parked>>,
    count: usize,
}

impl FetchWaiters {
    /// Parks a `PartitionRequest::Fetch` with its `wait_ms_max`; gives it back when full.
    pub fn park(&mut self, group: u64, request: PartitionRequest) -> Result<(), PartitionRequest> {
        let PartitionRequest::Fetch { wait_ms_max, .. } = &request else {
            return Err(request);
        };
        if self.count >= PARKED_FETCHES_MAX {
            return Err(request);
        }
        let wait = Duration::from_millis((*wait_ms_max).min(FETCH_WAIT_MS_MAX));
        self.by_group.entry(group).or_default().push(Parked {
            deadline: Instant::now() + wait,
            request,
        });
        self.count += 1;
        Ok(())
    }

    /// The fetches parked on `group`, to be asked again (each with what is left of its wait).
    pub fn take(&mut self, group: u64) -> Vec<(u64, PartitionRequest)> {
        let Some(parked) = self.by_group.remove(&group) else {
            return Vec::new();
        };
        self.count -= parked.len();
        let now = Instant::now();
        parked
            .into_iter()
            .map(|p| (group, with_wait_left(p, now)))
            .collect()
    }

    /// Fetches whose wait ended (asked again with no wait: they answer empty) or whose
    /// client went away (their answer goes nowhere).
    pub fn expired(&mut self, now: Instant) -> Vec<(u64, PartitionRequest)> {
        let mut out = Vec::new();
        for (&group, parked) in self.by_group.iter_mut() {
            let mut i = 0;
            while i < parked.len() {
                let gone = matches!(
                    &parked[i].request,
                    PartitionRequest::Fetch { reply, .. } if reply.is_canceled()
                );
                if parked[i].deadline <= now || gone {
                    let p = parked.swap_remove(i);
                    if !gone {
                        out.push((group, with_wait_left(p, now)));
                    }
                    self.count -= 1;
                } else {
                    i += 1;
                }
            }
        }
        self.by_group.retain(|_, v| !v.is_empty());
        out
    }
}

fn with_wait_left(p: Parked, now: Instant) -> PartitionRequest {
    match p.request {
        PartitionRequest::Fetch {
            offset,
            bytes_max,
            reply,
            ..
        } => PartitionRequest::Fetch {
            offset,
            bytes_max,
            wait_ms_max: p.deadline.saturating_duration_since(now).as_millis() as u64,
            reply,
        },
        other => other,
    }
}
