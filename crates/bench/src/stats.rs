//! Latency samples and their summary.

use std::time::Duration;

use serde::Serialize;

/// p50/p95/p99 (and mean) of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        assert!(!samples.is_empty(), "no samples");
        samples.sort();
        let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
        let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1000.0;
        Latency {
            n: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            mean_ms: mean,
        }
    }
}

/// A throughput run: commands per second and latency under load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    pub concurrency: usize,
    pub commands: usize,
    pub per_second: f64,
    pub latency: Latency,
}
