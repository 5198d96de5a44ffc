//! Summaries of what the shards measured: merged latency percentiles, throughput, engine
//! counters; printed as a table for people or one JSON line for machines.
//!
//! Units: latency in µs (recorded in ns, so sub-µs resolution survives), MB = 10^6 bytes
//! (as fio's `bw_bytes` / 10^6), KiB = 1024 bytes.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tern_engine::WalStats;

use crate::load::{new_histogram, ShardOutcome};

/// Latency percentiles in µs.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyUs {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencyUs {
    pub fn from_ns(h: &Histogram<u64>) -> LatencyUs {
        let us = |ns: u64| round1(ns as f64 / 1000.0);
        LatencyUs {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            p9999_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
            mean_us: round1(h.mean() / 1000.0),
        }
    }
}

/// Everything the shards measured, added up.
pub struct Totals {
    pub latency_ns: Histogram<u64>,
    pub appends: u64,
    pub payload_bytes: u64,
    /// The longest shard window (shards run side by side, so rates divide by it).
    pub window: Duration,
    pub stats: WalStats,
    /// Acknowledged payload bytes per second of the window, all shards added.
    pub bytes_per_second: Vec<u64>,
}

impl Totals {
    pub fn merge(outcomes: &[ShardOutcome]) -> Totals {
        let mut t = Totals {
            latency_ns: new_histogram(),
            appends: 0,
            payload_bytes: 0,
            window: Duration::ZERO,
            stats: WalStats::default(),
            bytes_per_second: Vec::new(),
        };
        for o in outcomes {
            // Both histograms have the same bounds, so adding cannot fail; saturate if it did.
            if t.latency_ns.add(&o.latency_ns).is_err() {
                for v in o.latency_ns.iter_recorded() {
                    t.latency_ns
                        .saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
            t.appends += o.appends;
            t.payload_bytes += o.payload_bytes;
            t.window = t.window.max(o.window);
            t.stats.batches += o.stats.batches;
            t.stats.batch_bytes += o.stats.batch_bytes;
            t.stats.records += o.stats.records;
            t.stats.fsyncs += o.stats.fsyncs;
            t.stats.segments_created += o.stats.segments_created;
            t.stats.segments_purged += o.stats.segments_purged;
            t.stats.write_us += o.stats.write_us;
            t.stats.fsync_us += o.stats.fsync_us;
            if t.bytes_per_second.len() < o.bytes_per_second.len() {
                t.bytes_per_second.resize(o.bytes_per_second.len(), 0);
            }
            for (sum, b) in t.bytes_per_second.iter_mut().zip(&o.bytes_per_second) {
                *sum += b;
            }
        }
        t
    }

    pub fn seconds(&self) -> f64 {
        self.window.as_secs_f64().max(1e-9)
    }
}

/// Throughput and engine behaviour over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub appends: u64,
    pub payload_bytes: u64,
    pub seconds: f64,
    /// Acknowledged payload, MB/s.
    pub write_mbps: f64,
    pub appends_per_s: f64,
    pub batches: u64,
    pub avg_batch_kib: f64,
    pub records_per_batch: f64,
    pub fsyncs: u64,
    pub fsyncs_per_s: f64,
    /// Bytes the WAL wrote (headers, padding to blocks included), MB/s.
    pub device_write_mbps: f64,
    pub segments_created: u64,
    /// Mean time of one batch write and of one batch fdatasync, issue to completion, µs.
    pub avg_write_us: f64,
    pub avg_fsync_us: f64,
}

impl Throughput {
    pub fn from_totals(t: &Totals) -> Throughput {
        let s = t.seconds();
        let per_batch = |x: u64| {
            if t.stats.batches == 0 {
                0.0
            } else {
                x as f64 / t.stats.batches as f64
            }
        };
        Throughput {
            appends: t.appends,
            payload_bytes: t.payload_bytes,
            seconds: round3(s),
            write_mbps: round1(t.payload_bytes as f64 / s / 1e6),
            appends_per_s: round1(t.appends as f64 / s),
            batches: t.stats.batches,
            avg_batch_kib: round1(per_batch(t.stats.batch_bytes) / 1024.0),
            records_per_batch: round1(per_batch(t.stats.records)),
            fsyncs: t.stats.fsyncs,
            fsyncs_per_s: round1(t.stats.fsyncs as f64 / s),
            device_write_mbps: round1(t.stats.batch_bytes as f64 / s / 1e6),
            segments_created: t.stats.segments_created,
            avg_write_us: round1(per_batch(t.stats.write_us)),
            avg_fsync_us: round1(per_batch(t.stats.fsync_us)),
        }
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A number with thousands separators, for tables.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The latency block of a table: a header line and a value line, aligned.
pub fn latency_table(l: &LatencyUs) -> String {
    let cols = [
        ("p50", l.p50_us),
        ("p90", l.p90_us),
        ("p99", l.p99_us),
        ("p99.9", l.p999_us),
        ("p99.99", l.p9999_us),
        ("max", l.max_us),
        ("mean", l.mean_us),
    ];
    let mut head = format!("  {:<14}", "latency (µs)");
    let mut vals = format!("  {:<14}", "");
    for (name, v) in cols {
        head.push_str(&format!("{name:>10}"));
        vals.push_str(&format!("{v:>10.1}"));
    }
    format!("{head}\n{vals}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.4), "1,234,567");
    }

    #[test]
    fn latency_from_ns_histogram() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = LatencyUs::from_ns(&h);
        assert!((l.p50_us - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() <= 1.0, "{l:?}");
    }
}
