//! Latency summaries.

use std::time::Duration;

use serde_json::{json, Value};

/// Count, mean and nearest-rank percentiles of durations, in milliseconds.
pub fn summary(samples: &[Duration]) -> Value {
    if samples.is_empty() {
        return json!({ "count": 0 });
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[rank.clamp(1, ms.len()) - 1]
    };
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    json!({
        "count": ms.len(),
        "mean_ms": round3(mean),
        "p50_ms": round3(pct(50.0)),
        "p95_ms": round3(pct(95.0)),
        "p99_ms": round3(pct(99.0)),
        "max_ms": round3(ms[ms.len() - 1]),
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
