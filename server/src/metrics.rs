//! Counters and gauges for `/metrics` (Prometheus text format).
//!
//! A handful of atomics rendered by hand: the `prometheus` crate would bring
//! a registry, protobuf support and a global default we do not want, for six
//! numbers. Histograms of the store come from `store::metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The server's own metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub docs_loaded: Gauge,
    pub docs_unloaded_total: Counter,
    pub cold_replies: Counter,
    pub changes_applied: Counter,
    pub rejected_inputs: Counter,
    pub auth_failures: Counter,
    pub actor_panics: Counter,
    /// Times a case's actor routed what it may send (after each command
    /// and each timed retry): a case that spins shows here.
    pub doc_routes: Counter,
    /// Times a device was not sent a case's news because its outbound
    /// channel was nearly full.
    pub held_back: Counter,
}

impl Metrics {
    /// Renders these metrics, plus the store's, as Prometheus text.
    pub fn render(&self, store: &str) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP casesync_{name} {help}");
            let _ = writeln!(out, "# TYPE casesync_{name} {kind}");
            let _ = writeln!(out, "casesync_{name} {value}");
        };
        line(
            "connections",
            "gauge",
            "Open sync connections.",
            self.connections.get().to_string(),
        );
        line(
            "connections_total",
            "counter",
            "Sync connections accepted since start.",
            self.connections_total.get().to_string(),
        );
        line(
            "documents_loaded",
            "gauge",
            "Documents held in memory by an actor.",
            self.docs_loaded.get().to_string(),
        );
        line(
            "documents_unloaded_total",
            "counter",
            "Documents unloaded after being idle.",
            self.docs_unloaded_total.get().to_string(),
        );
        line(
            "cold_replies_total",
            "counter",
            "Devices with nothing answered from storage while their document loaded.",
            self.cold_replies.get().to_string(),
        );
        line(
            "changes_applied_total",
            "counter",
            "Changes applied and durably stored.",
            self.changes_applied.get().to_string(),
        );
        line(
            "rejected_inputs_total",
            "counter",
            "Frames or sync messages refused by the guards or the protocol.",
            self.rejected_inputs.get().to_string(),
        );
        line(
            "auth_failures_total",
            "counter",
            "Requests refused for a missing or invalid token.",
            self.auth_failures.get().to_string(),
        );
        line(
            "document_actor_panics_total",
            "counter",
            "Document actors that panicked and were restarted.",
            self.actor_panics.get().to_string(),
        );
        line(
            "document_routes_total",
            "counter",
            "Times a document actor routed its outgoing messages (after each command or timed retry).",
            self.doc_routes.get().to_string(),
        );
        line(
            "devices_held_back_total",
            "counter",
            "Times a device was held back from a document's news because its outbound channel was nearly full.",
            self.held_back.get().to_string(),
        );
        out.push_str(store);
        out
    }
}
