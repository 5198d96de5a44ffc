//! The load generator of the blocking clients (`produce`, `etcd`, `raft-engine`): one thread
//! per worker, each with its own connection or handle, one operation in flight each.
//!
//! Closed loop (no rate): the next operation leaves when the previous one returned; latency is
//! the round trip. Open loop (a rate): operations leave on a fixed schedule, the workers'
//! schedules staggered over one interval; latency counts from each operation's *intended*
//! send time, so a stalled server shows up as queueing delay instead of being hidden (no
//! coordinated omission). The same accounting for tern and for the peers it is compared with,
//! so their figures can be put side by side.

use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::{BenchError, Result};
use crate::load::new_histogram;

/// One worker's connection: sends one operation and returns when it is acknowledged.
pub trait Op {
    /// Sends operation number `seq` of this worker; returns the payload bytes it carried.
    fn send(&mut self, seq: u64) -> Result<u64>;
}

/// Shape of a run shared by every worker.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub workers: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Open loop: operations per second over all workers.
    pub rate: Option<f64>,
}

/// What the workers measured inside the window, added up.
pub struct ThreadTotals {
    pub latency_ns: Histogram<u64>,
    pub ops: u64,
    pub payload_bytes: u64,
    pub seconds: f64,
    /// Acknowledged payload bytes per whole second of the window.
    pub bytes_per_second: Vec<u64>,
}

struct WorkerOutcome {
    latency_ns: Histogram<u64>,
    ops: u64,
    payload_bytes: u64,
    bytes_per_second: Vec<u64>,
}

/// Opens one `Op` per worker with `open(index)` (before the clock starts), runs them on the
/// schedule and merges what they measured. The first worker error fails the run.
pub fn run<O, F>(s: Schedule, open: F) -> Result<ThreadTotals>
where
    O: Op + Send,
    F: Fn(usize) -> Result<O> + Sync,
{
    if s.workers == 0 {
        return Err(BenchError::Arg {
            arg: "concurrency",
            why: "must be at least 1".into(),
        });
    }
    let mut ops = Vec::with_capacity(s.workers);
    for w in 0..s.workers {
        ops.push(open(w)?);
    }
    // Every worker shares one start, a little ahead, so none of them is late from the start.
    let start = Instant::now() + Duration::from_millis(100);
    let results: Vec<Result<WorkerOutcome>> = thread::scope(|scope| {
        let handles: Vec<_> = ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| scope.spawn(move || worker(index, op, s, start)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BenchError::Arg {
                        arg: "concurrency",
                        why: "a worker thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut totals = ThreadTotals {
        latency_ns: new_histogram(),
        ops: 0,
        payload_bytes: 0,
        seconds: s.duration.as_secs_f64(),
        bytes_per_second: Vec::new(),
    };
    for r in results {
        let o = r?;
        // Same bounds on both sides, so adding cannot fail; saturate if it ever did.
        if totals.latency_ns.add(&o.latency_ns).is_err() {
            for v in o.latency_ns.iter_recorded() {
                totals
                    .latency_ns
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        totals.ops += o.ops;
        totals.payload_bytes += o.payload_bytes;
        if totals.bytes_per_second.len() < o.bytes_per_second.len() {
            totals.bytes_per_second.resize(o.bytes_per_second.len(), 0);
        }
        for (t, b) in totals.bytes_per_second.iter_mut().zip(&o.bytes_per_second) {
            *t += b;
        }
    }
    Ok(totals)
}

fn worker<O: Op>(index: usize, mut op: O, s: Schedule, start: Instant) -> Result<WorkerOutcome> {
    let warmup_end = start + s.warmup;
    let end = warmup_end + s.duration;
    let interval = s
        .rate
        .map(|r| Duration::from_secs_f64(s.workers as f64 / r.max(f64::MIN_POSITIVE)));
    let offset = interval.map_or(Duration::ZERO, |i| {
        i.mul_f64(index as f64 / s.workers as f64)
    });
    let mut out = WorkerOutcome {
        latency_ns: new_histogram(),
        ops: 0,
        payload_bytes: 0,
        bytes_per_second: vec![0; s.duration.as_secs_f64().ceil() as usize],
    };
    let now = Instant::now();
    if start > now {
        thread::sleep(start - now);
    }
    let mut seq: u64 = 0;
    // Bounded by `end`: every pass either sends (and time moves on) or leaves.
    loop {
        let intended = match interval {
            Some(i) => {
                let t = start + offset + i.mul_f64(seq as f64);
                let now = Instant::now();
                if t > now {
                    thread::sleep(t - now);
                }
                t
            }
            None => Instant::now(),
        };
        if intended >= end || Instant::now() >= end {
            break;
        }
        let sent = intended;
        let bytes = op.send(seq)?;
        let done = Instant::now();
        seq += 1;
        if sent >= warmup_end && done <= end {
            let ns = done.duration_since(sent).as_nanos().min(u64::MAX as u128) as u64;
            out.latency_ns
                .saturating_record(ns.clamp(1, crate::load::LATENCY_NS_MAX));
            out.ops += 1;
            out.payload_bytes += bytes;
            let second = done.duration_since(warmup_end).as_secs() as usize;
            if let Some(b) = out.bytes_per_second.get_mut(second) {
                *b += bytes;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleepy(Duration);

    impl Op for Sleepy {
        fn send(&mut self, _seq: u64) -> Result<u64> {
            thread::sleep(self.0);
            Ok(10)
        }
    }

    #[test]
    fn closed_loop_counts_every_op_inside_the_window() {
        let s = Schedule {
            workers: 2,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            rate: None,
        };
        let t = run(s, |_| Ok(Sleepy(Duration::from_millis(1)))).unwrap();
        assert!(t.ops > 0);
        assert_eq!(t.payload_bytes, 10 * t.ops);
        assert_eq!(t.bytes_per_second.iter().sum::<u64>(), t.payload_bytes);
        assert!(t.latency_ns.min() >= 1_000_000, "each op sleeps 1 ms");
    }

    #[test]
    fn open_loop_latency_counts_from_the_intended_time() {
        // 4 ops/s per worker but each takes 400 ms: every op after the first is late, and
        // the lateness is part of its latency.
        let s = Schedule {
            workers: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(1300),
            rate: Some(4.0),
        };
        let t = run(s, |_| Ok(Sleepy(Duration::from_millis(400)))).unwrap();
        assert!(t.ops >= 2, "{}", t.ops);
        assert!(t.latency_ns.max() >= 500_000_000, "{}", t.latency_ns.max());
    }

    #[test]
    fn an_error_fails_the_run() {
        struct Broken;
        impl Op for Broken {
            fn send(&mut self, _seq: u64) -> Result<u64> {
                Err(BenchError::Arg {
                    arg: "server",
                    why: "refused".into(),
                })
            }
        }
        let s = Schedule {
            workers: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(100),
            rate: None,
        };
        assert!(run(s, |_| Ok(Broken)).is_err());
    }
}
