//! A plain (non-atomic) histogram with power-of-two buckets, for counters a shard keeps on its
//! own thread and copies out when `/metrics` is scraped (docs/operations/metrics.md). One
//! implementation for the WAL's fsync latency and batch size and the node's request latencies.

/// Buckets with a finite upper bound; one more counts everything above the last.
pub const LOG2_BUCKETS: usize = 20;

/// Bucket `i` counts observations `<= BASE << i` (and above the previous bound); the last
/// slot counts those above `BASE << (LOG2_BUCKETS - 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log2Histogram<const BASE: u64> {
    /// Per-bucket (not cumulative) counts; `counts[LOG2_BUCKETS]` is the overflow bucket.
    pub counts: [u64; LOG2_BUCKETS + 1],
    pub sum: u64,
}

/// Microseconds: 16 µs up to about 8.4 s.
pub type LatencyHistogramUs = Log2Histogram<16>;
/// Bytes: 512 B up to 256 MiB.
pub type SizeHistogramBytes = Log2Histogram<512>;

impl<const BASE: u64> Default for Log2Histogram<BASE> {
    fn default() -> Self {
        Log2Histogram {
            counts: [0; LOG2_BUCKETS + 1],
            sum: 0,
        }
    }
}

impl<const BASE: u64> Log2Histogram<BASE> {
    pub fn observe(&mut self, value: u64) {
        let slot = (0..LOG2_BUCKETS)
            .find(|&i| value <= BASE << i)
            .unwrap_or(LOG2_BUCKETS);
        self.counts[slot] += 1;
        self.sum = self.sum.saturating_add(value);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Upper bound of finite bucket `i`.
    pub fn bound(i: usize) -> u64 {
        BASE << i
    }

    /// Adds another histogram's observations (merging shards).
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// The observations made since `earlier`, a copy of this same histogram taken before
    /// (a benchmark's window).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = *self;
        for (a, b) in out.counts.iter_mut().zip(earlier.counts.iter()) {
            *a = a.saturating_sub(*b);
        }
        out.sum = out.sum.saturating_sub(earlier.sum);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_covers_them() {
        let mut h = Log2Histogram::<16>::default();
        h.observe(0);
        h.observe(16);
        h.observe(17);
        h.observe(u64::MAX / 2);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LOG2_BUCKETS], 1);
        assert_eq!(h.count(), 4);
        let mut m = h;
        m.merge(&h);
        assert_eq!(m.count(), 8);
        assert_eq!(Log2Histogram::<16>::bound(2), 64);
    }
}
