//! Counters and histograms for group commit, ready to be rendered as
//! Prometheus text on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-bucket histogram, like Prometheus's. Safe to update and read from
/// any thread without a lock.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending; a last `+Inf` bucket is implied.
    bounds: &'static [f64],
    /// Per-bucket counts (not cumulative); one more than `bounds`.
    counts: Vec<AtomicU64>,
    /// Sum of observations, as `f64` bits.
    sum_bits: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // Only the writer thread observes, so this loop does not spin in
        // practice; it stays correct if that changes.
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
        }
    }
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`, the last bound being `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl HistogramSnapshot {
    /// Appends this histogram in the Prometheus text format.
    pub fn write_prometheus(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, count) in &self.buckets {
            if bound.is_infinite() {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
            } else {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Buckets for commit latency, in seconds (fsync on a phone-class SSD is
/// around a millisecond; on a busy disk, tens).
const SECONDS_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for the number of requests sharing one transaction.
const REQUESTS_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// What the group committer counts.
#[derive(Debug)]
pub struct CommitMetrics {
    transactions_committed: AtomicU64,
    transactions_failed: AtomicU64,
    requests_committed: AtomicU64,
    requests_failed: AtomicU64,
    requests_per_transaction: Histogram,
    commit_seconds: Histogram,
    queue_wait_seconds: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            transactions_committed: AtomicU64::new(0),
            transactions_failed: AtomicU64::new(0),
            requests_committed: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            requests_per_transaction: Histogram::new(REQUESTS_BOUNDS),
            commit_seconds: Histogram::new(SECONDS_BOUNDS),
            queue_wait_seconds: Histogram::new(SECONDS_BOUNDS),
        }
    }
}

impl CommitMetrics {
    /// Records one transaction: how many requests it held, how many of them
    /// failed on their own, whether it committed, and how long the
    /// transaction (including its fsync) took.
    pub(crate) fn record_transaction(
        &self,
        requests: usize,
        failed_requests: usize,
        committed: bool,
        seconds: f64,
    ) {
        let requests = requests as u64;
        let failed_requests = failed_requests as u64;
        if committed {
            self.transactions_committed.fetch_add(1, Ordering::Relaxed);
            self.requests_committed
                .fetch_add(requests.saturating_sub(failed_requests), Ordering::Relaxed);
            self.requests_failed
                .fetch_add(failed_requests, Ordering::Relaxed);
        } else {
            self.transactions_failed.fetch_add(1, Ordering::Relaxed);
            self.requests_failed.fetch_add(requests, Ordering::Relaxed);
        }
        self.requests_per_transaction.observe(requests as f64);
        self.commit_seconds.observe(seconds);
    }

    pub(crate) fn record_queue_wait(&self, seconds: f64) {
        self.queue_wait_seconds.observe(seconds);
    }

    pub fn snapshot(&self) -> CommitMetricsSnapshot {
        CommitMetricsSnapshot {
            transactions_committed: self.transactions_committed.load(Ordering::Relaxed),
            transactions_failed: self.transactions_failed.load(Ordering::Relaxed),
            requests_committed: self.requests_committed.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            requests_per_transaction: self.requests_per_transaction.snapshot(),
            commit_seconds: self.commit_seconds.snapshot(),
            queue_wait_seconds: self.queue_wait_seconds.snapshot(),
        }
    }
}

/// The group committer's counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitMetricsSnapshot {
    /// Transactions that committed (each is one fsync of the WAL).
    pub transactions_committed: u64,
    /// Transactions that failed as a whole.
    pub transactions_failed: u64,
    /// Write requests stored.
    pub requests_committed: u64,
    /// Write requests that got an error.
    pub requests_failed: u64,
    /// Requests grouped into each transaction.
    pub requests_per_transaction: HistogramSnapshot,
    /// Time to apply and commit one transaction, fsync included.
    pub commit_seconds: HistogramSnapshot,
    /// Time a request waited in the queue before its transaction began.
    pub queue_wait_seconds: HistogramSnapshot,
}

impl CommitMetricsSnapshot {
    /// Renders these metrics in the Prometheus text format, each name
    /// starting with `prefix` (e.g. `casesync_store`).
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        let counters = [
            (
                "transactions_committed_total",
                "Store transactions committed (one fsync each).",
                self.transactions_committed,
            ),
            (
                "transactions_failed_total",
                "Store transactions that failed as a whole.",
                self.transactions_failed,
            ),
            (
                "requests_committed_total",
                "Write requests stored.",
                self.requests_committed,
            ),
            (
                "requests_failed_total",
                "Write requests that got an error.",
                self.requests_failed,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {prefix}_{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}_{name} counter");
            let _ = writeln!(out, "{prefix}_{name} {value}");
        }
        self.requests_per_transaction.write_prometheus(
            &mut out,
            &format!("{prefix}_requests_per_transaction"),
            "Write requests grouped into one transaction.",
        );
        self.commit_seconds.write_prometheus(
            &mut out,
            &format!("{prefix}_commit_seconds"),
            "Time to apply and durably commit one transaction, fsync included.",
        );
        self.queue_wait_seconds.write_prometheus(
            &mut out,
            &format!("{prefix}_queue_wait_seconds"),
            "Time a write request waited before its transaction began.",
        );
        out
    }
}
