//! A small Prometheus registry on atomics, rendered as text at `GET /metrics`.
//!
//! Counters with a fixed label set are arrays of atomics; HTTP and gRPC request counters are
//! maps keyed by their labels (route templates and codes, so the cardinality is bounded).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::drift::DriftCause;

/// Event kinds as stored and in the API.
pub const KINDS: [&str; 5] = ["FILE_READ", "FILE_WRITE", "EXEC", "NET_CONNECT", "TLS"];
/// Event verdicts as stored and in the API.
pub const VERDICTS: [&str; 3] = ["ALLOW", "DENY", "ALERT"];
/// Why daemons lost events (gap record reasons, as stored).
pub const GAP_REASONS: [&str; 2] = ["spool_full", "ring_buffer"];
const CAUSES: [DriftCause; 3] = [
    DriftCause::StalePolicy,
    DriftCause::TierLimit,
    DriftCause::Mismatch,
];

/// Upper bounds (seconds) of latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with [`BUCKETS`] (cumulative at render time).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// Database operations whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbOp {
    /// Storing an event batch.
    InsertEvents,
    /// `GET /events`.
    QueryEvents,
    /// The effective set of a daemon (cache miss).
    LoadEffective,
    /// Dashboard statistics.
    Stats,
}

const DB_OPS: [(DbOp, &str); 4] = [
    (DbOp::InsertEvents, "insert_events"),
    (DbOp::QueryEvents, "query_events"),
    (DbOp::LoadEffective, "load_effective"),
    (DbOp::Stats, "stats"),
];

/// Every metric of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    events: [[AtomicU64; VERDICTS.len()]; KINDS.len()],
    events_rejected: AtomicU64,
    drift: [AtomicU64; CAUSES.len()],
    events_lost: [AtomicU64; GAP_REASONS.len()],
    gap_records: [AtomicU64; GAP_REASONS.len()],
    sse_dropped: AtomicU64,
    policy_push: Histogram,
    db: [Histogram; DB_OPS.len()],
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
    grpc: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    /// Counts one stored event (`kind`, `verdict` as in [`KINDS`], [`VERDICTS`]).
    pub fn event_ingested(&self, kind: &str, verdict: &str) {
        let k = KINDS.iter().position(|&x| x == kind);
        let v = VERDICTS.iter().position(|&x| x == verdict);
        if let (Some(k), Some(v)) = (k, v) {
            self.events[k][v].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts events refused at ingest (unspecified enums, out-of-range numbers).
    pub fn events_rejected(&self, n: u64) {
        self.events_rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one stored drifted event.
    pub fn drift(&self, cause: DriftCause) {
        if let Some(i) = CAUSES.iter().position(|&c| c == cause) {
            self.drift[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one new gap record of a daemon: `lost` more events lost for `reason` (one of
    /// [`GAP_REASONS`]).
    pub fn gap(&self, reason: &str, lost: u64) {
        if let Some(i) = GAP_REASONS.iter().position(|&r| r == reason) {
            self.gap_records[i].fetch_add(1, Ordering::Relaxed);
            self.events_lost[i].fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Counts events an SSE subscriber lost because it read too slowly.
    pub fn sse_dropped(&self, n: u64) {
        self.sse_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Time from a policy push to the daemon's acknowledgement (fed by the agent plane).
    pub fn observe_policy_push(&self, d: Duration) {
        self.policy_push.observe(d);
    }

    /// Latency of one database operation.
    pub fn observe_db(&self, op: DbOp, d: Duration) {
        if let Some(i) = DB_OPS.iter().position(|&(o, _)| o == op) {
            self.db[i].observe(d);
        }
    }

    /// Counts one REST request by method, route template and status.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        if let Ok(mut m) = self.http.lock() {
            *m.entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
    }

    /// Counts one agent-plane call by method and status code (fed by the agent plane).
    pub fn grpc_request(&self, method: &str, code: &str) {
        if let Ok(mut m) = self.grpc.lock() {
            *m.entry((method.to_owned(), code.to_owned())).or_default() += 1;
        }
    }

    /// The Prometheus text exposition; `agents` is `(status, count)` from the store.
    pub fn render(&self, agents: &[(&str, u64)]) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "tyr_events_ingested_total",
            "counter",
            "Events stored, by kind and daemon verdict.",
        );
        for (k, kind) in KINDS.iter().enumerate() {
            for (v, verdict) in VERDICTS.iter().enumerate() {
                let n = self.events[k][v].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "tyr_events_ingested_total{{kind=\"{kind}\",verdict=\"{verdict}\"}} {n}"
                );
            }
        }
        head(
            &mut out,
            "tyr_events_rejected_total",
            "counter",
            "Events refused at ingest (invalid records).",
        );
        let _ = writeln!(
            out,
            "tyr_events_rejected_total {}",
            self.events_rejected.load(Ordering::Relaxed)
        );
        head(
            &mut out,
            "tyr_drift_events_total",
            "counter",
            "Stored events whose server verdict differs from the daemon's, by cause.",
        );
        for (i, cause) in CAUSES.iter().enumerate() {
            let n = self.drift[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tyr_drift_events_total{{cause=\"{}\"}} {n}",
                cause.as_str()
            );
        }
        head(
            &mut out,
            "tyr_events_lost_total",
            "counter",
            "Events daemons reported lost (gap records), by reason.",
        );
        for (i, reason) in GAP_REASONS.iter().enumerate() {
            let n = self.events_lost[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "tyr_events_lost_total{{reason=\"{reason}\"}} {n}");
        }
        head(
            &mut out,
            "tyr_event_gap_records_total",
            "counter",
            "Gap records received from daemons, by reason.",
        );
        for (i, reason) in GAP_REASONS.iter().enumerate() {
            let n = self.gap_records[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tyr_event_gap_records_total{{reason=\"{reason}\"}} {n}"
            );
        }
        head(
            &mut out,
            "tyr_agents",
            "gauge",
            "Daemons by status (online, stale, offline).",
        );
        for (status, n) in agents {
            let _ = writeln!(out, "tyr_agents{{status=\"{status}\"}} {n}");
        }
        head(
            &mut out,
            "tyr_sse_dropped_events_total",
            "counter",
            "Events not delivered to slow SSE subscribers.",
        );
        let _ = writeln!(
            out,
            "tyr_sse_dropped_events_total {}",
            self.sse_dropped.load(Ordering::Relaxed)
        );
        head(
            &mut out,
            "tyr_policy_push_duration_seconds",
            "histogram",
            "Time from a policy push to the daemon's acknowledgement.",
        );
        self.policy_push
            .render(&mut out, "tyr_policy_push_duration_seconds", "");
        head(
            &mut out,
            "tyr_db_query_duration_seconds",
            "histogram",
            "Latency of database operations.",
        );
        for (i, (_, op)) in DB_OPS.iter().enumerate() {
            self.db[i].render(
                &mut out,
                "tyr_db_query_duration_seconds",
                &format!("op=\"{op}\""),
            );
        }
        head(
            &mut out,
            "tyr_http_requests_total",
            "counter",
            "REST requests by method, route and status.",
        );
        if let Ok(m) = self.http.lock() {
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "tyr_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        head(
            &mut out,
            "tyr_grpc_requests_total",
            "counter",
            "Agent-plane calls by method and status code.",
        );
        if let Ok(m) = self.grpc.lock() {
            for ((method, code), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "tyr_grpc_requests_total{{method=\"{}\",code=\"{}\"}} {n}",
                    escape(method),
                    escape(code)
                );
            }
        }
        out
    }
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.event_ingested("EXEC", "DENY");
        m.event_ingested("EXEC", "DENY");
        m.event_ingested("BOGUS", "DENY");
        m.drift(DriftCause::TierLimit);
        m.gap("spool_full", 40);
        m.gap("spool_full", 2);
        m.observe_db(DbOp::Stats, Duration::from_millis(2));
        m.observe_db(DbOp::Stats, Duration::from_secs(10));
        m.http_request("GET", "/api/v1/events", 200);
        let text = m.render(&[("online", 3)]);
        assert!(text.contains("tyr_events_ingested_total{kind=\"EXEC\",verdict=\"DENY\"} 2\n"));
        assert!(text.contains("tyr_drift_events_total{cause=\"tier_limit\"} 1\n"));
        assert!(text.contains("tyr_agents{status=\"online\"} 3\n"));
        assert!(text.contains("tyr_events_lost_total{reason=\"spool_full\"} 42\n"));
        assert!(text.contains("tyr_event_gap_records_total{reason=\"spool_full\"} 2\n"));
        assert!(text.contains("tyr_events_lost_total{reason=\"ring_buffer\"} 0\n"));
        assert!(
            text.contains("tyr_db_query_duration_seconds_bucket{op=\"stats\",le=\"0.0025\"} 1\n")
        );
        assert!(
            text.contains("tyr_db_query_duration_seconds_bucket{op=\"stats\",le=\"+Inf\"} 2\n")
        );
        assert!(text.contains(
            "tyr_http_requests_total{method=\"GET\",route=\"/api/v1/events\",status=\"200\"} 1\n"
        ));
    }
}
