//! The raw figures of one run that the charts are drawn from (`--samples FILE` on every load
//! command): the latency distribution as CDF points and the acknowledged throughput of every
//! second of the window. One small JSON object per run; `tern-bench plot` reads them back.

use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Quantiles drawn per decade of "nines" (0.9, 0.99, ...): enough for a smooth curve.
/// `--samples FILE [--label L]`: where a load command saves its samples for `tern-bench plot`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SamplesArgs {
    /// Also write the latency CDF and per-second throughput to this JSON file (for `plot`).
    #[arg(long)]
    pub samples: Option<std::path::PathBuf>,
    /// Name of this run in the chart's legend [default: the command's name].
    #[arg(long)]
    pub label: Option<String>,
}

impl SamplesArgs {
    /// Writes the samples if --samples was given.
    pub fn save(
        &self,
        default_label: &str,
        latency_ns: &Histogram<u64>,
        per_second: &[u64],
    ) -> Result<()> {
        match &self.samples {
            Some(path) => {
                let label = self.label.as_deref().unwrap_or(default_label);
                Samples::new(label, latency_ns, per_second).write(path)
            }
            None => Ok(()),
        }
    }
}

const POINTS_PER_NINE: u32 = 20;
/// Deepest quantile drawn: 99.999 %.
const NINES_MAX: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Samples {
    /// What ran, as the chart's legend says it, e.g. "tern" or "etcd".
    pub label: String,
    /// (latency µs, quantile 0..1), quantile ascending; the last point is the maximum.
    pub cdf: Vec<(f64, f64)>,
    /// Acknowledged payload MB/s (10^6 bytes) of each second of the measured window.
    pub mb_per_s: Vec<f64>,
}

impl Samples {
    pub fn new(label: &str, latency_ns: &Histogram<u64>, bytes_per_second: &[u64]) -> Samples {
        let mut cdf = Vec::new();
        if !latency_ns.is_empty() {
            for k in 0..=NINES_MAX * POINTS_PER_NINE {
                // q = 1 - 10^(-k / POINTS_PER_NINE): evenly spaced on the "nines" axis.
                let q = 1.0 - 10f64.powf(-(k as f64) / POINTS_PER_NINE as f64);
                cdf.push((latency_ns.value_at_quantile(q) as f64 / 1000.0, q));
            }
            cdf.push((latency_ns.max() as f64 / 1000.0, 1.0));
        }
        Samples {
            label: label.to_string(),
            cdf,
            mb_per_s: bytes_per_second.iter().map(|b| *b as f64 / 1e6).collect(),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)?;
        std::fs::write(path, text).map_err(|e| BenchError::io(path, e))
    }

    pub fn read(path: &Path) -> Result<Samples> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        Ok(serde_json::from_str(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::new_histogram;

    #[test]
    fn cdf_is_monotonic_and_ends_at_the_maximum() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            h.record(us * 1000).unwrap();
        }
        let s = Samples::new("tern", &h, &[2_000_000, 3_000_000]);
        assert!(s
            .cdf
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let last = s.cdf.last().unwrap();
        assert_eq!(last.1, 1.0);
        assert!((last.0 - 10_000.0).abs() < 10.0, "{last:?}");
        assert_eq!(s.mb_per_s, vec![2.0, 3.0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        s.write(&path).unwrap();
        // JSON keeps a float to within its last bit, not always exactly.
        let back = Samples::read(&path).unwrap();
        assert_eq!((back.label.as_str(), back.cdf.len()), ("tern", s.cdf.len()));
        for (a, b) in back.cdf.iter().zip(&s.cdf) {
            assert!(
                (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-12,
                "{a:?} {b:?}"
            );
        }
        assert_eq!(back.mb_per_s, s.mb_per_s);
    }

    #[test]
    fn an_empty_histogram_has_no_points() {
        let s = Samples::new("etcd", &new_histogram(), &[]);
        assert!(s.cdf.is_empty());
    }
}
