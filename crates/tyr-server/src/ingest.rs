//! Event ingest (SPEC §9): re-evaluate each event against the daemon's current effective
//! policy (drift), store the batch idempotently in one transaction, then publish the newly
//! stored events to live subscribers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tyr_policy::glob::Homes;
use tyr_policy::{Evaluator, Verdict};
use tyr_proto::events;

use crate::drift::{self, DriftCause, Enforced, EventFacts, Tier};
use crate::fleet::{Effective, Fleet};
use crate::metrics::DbOp;
use crate::store::events::EventRecord;
use crate::store::time::rfc3339;
use crate::store::{Store, StoreError};

/// How far ahead of the server's clock a daemon's event time may be (5 minutes).
const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// An event as the daemon sends it.
pub type IncomingEvent = events::Event;

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No daemon has this id.
    #[error("unknown daemon {0}")]
    UnknownDaemon(String),
    /// The daemon was revoked.
    #[error("daemon {0} is revoked")]
    Revoked(String),
    /// The database failed; nothing of the batch is stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn kind_name(k: events::Kind) -> Option<&'static str> {
    Some(match k {
        events::Kind::FileRead => "FILE_READ",
        events::Kind::FileWrite => "FILE_WRITE",
        events::Kind::Exec => "EXEC",
        events::Kind::NetConnect => "NET_CONNECT",
        events::Kind::Tls => "TLS",
        events::Kind::Unspecified => return None,
    })
}

/// The stored/API name of a verdict (`ALLOW`, `DENY`, `ALERT`).
pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "ALLOW",
        Verdict::Alert => "ALERT",
        Verdict::Deny => "DENY",
    }
}

fn enforced_of(e: events::Enforced) -> Option<Enforced> {
    match e {
        events::Enforced::None => Some(Enforced::None),
        events::Enforced::Blocked => Some(Enforced::Blocked),
        events::Enforced::Killed => Some(Enforced::Killed),
        events::Enforced::Unspecified => None,
    }
}

fn severity_name(s: events::Severity) -> Option<&'static str> {
    Some(match s {
        events::Severity::Low => "low",
        events::Severity::Medium => "medium",
        events::Severity::High => "high",
        events::Severity::Critical => "critical",
        events::Severity::Unspecified => return None,
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The record to store for `ev`, with the server's verdict; `None` when the event is invalid
/// (an unspecified enum or a `seq` beyond `i64`).
fn assess(
    daemon_id: &str,
    ev: &IncomingEvent,
    effective: &Effective,
    evaluator: &Evaluator,
    tier: Tier,
    received_ms: i64,
) -> Option<(EventRecord, Option<DriftCause>)> {
    let kind = kind_name(ev.kind())?;
    let verdict = Verdict::try_from(ev.verdict()).ok()?;
    let enforced = enforced_of(ev.enforced())?;
    let seq = i64::try_from(ev.seq).ok()?;
    let outcome = tyr_proto::convert::to_request(ev).ok().map(|request| {
        let facts = EventFacts {
            request,
            verdict,
            enforced,
            policy_version: ev.policy_version.clone(),
        };
        drift::assess(evaluator, &effective.version, tier, &facts)
    });
    let timestamp_ns = i64::try_from(ev.timestamp_ns).unwrap_or(i64::MAX);
    // The daemon's clock orders events, but never beyond the server's clock plus a skew
    // allowance: a future-dated event would otherwise head every listing and outlive
    // retention. `timestamp_ns` keeps what the daemon reported.
    let ts = (timestamp_ns / 1_000_000).min(received_ms.saturating_add(MAX_CLOCK_SKEW_MS));
    let event_id = match uuid::Uuid::parse_str(&ev.event_id) {
        Ok(id) => id.to_string(),
        Err(_) => uuid::Uuid::now_v7().to_string(),
    };
    let metadata = ev
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let cause = outcome.and_then(|o| o.cause);
    let record = EventRecord {
        event_id,
        daemon_id: daemon_id.to_owned(),
        seq,
        discovered_agent_id: non_empty(&ev.discovered_agent_id),
        agent_type: non_empty(&ev.agent_type),
        kind: kind.to_owned(),
        resource: ev.resource.clone(),
        verdict: verdict_name(verdict).to_owned(),
        enforced: enforced.as_str().to_owned(),
        severity: severity_name(ev.severity()).map(str::to_owned),
        policy_version: non_empty(&ev.policy_version),
        rule: non_empty(&ev.rule),
        pid: Some(i64::from(ev.pid)),
        ppid: Some(i64::from(ev.ppid)),
        uid: Some(i64::from(ev.uid)),
        process_exe: non_empty(&ev.process_exe),
        cmdline: non_empty(&ev.cmdline),
        timestamp_ns,
        timestamp: rfc3339(ts),
        count: i64::from(ev.count.max(1)),
        metadata,
        server_verdict: outcome.map(|o| verdict_name(o.server_verdict).to_owned()),
        drift_detected: outcome.is_some_and(|o| o.drift_detected),
        drift_cause: cause.map(|c| c.as_str().to_owned()),
        ts,
    };
    Some((record, cause))
}

/// The records of a batch, the drift cause by `seq`, and how many events were invalid.
fn assess_batch(
    daemon_id: &str,
    batch: &[IncomingEvent],
    effective: &Effective,
    tier: Tier,
) -> (Vec<EventRecord>, HashMap<i64, DriftCause>, usize) {
    // Patterns are parsed once per batch, not once per event.
    let evaluator = Evaluator::new(&effective.set, &Homes::default());
    let received_ms = crate::store::time::now_ms();
    let mut records = Vec::with_capacity(batch.len());
    let mut causes = HashMap::new();
    for ev in batch {
        match assess(daemon_id, ev, effective, &evaluator, tier, received_ms) {
            Some((record, cause)) => {
                if let Some(c) = cause {
                    causes.entry(record.seq).or_insert(c);
                }
                records.push(record);
            }
            None => tracing::warn!(daemon_id, seq = ev.seq, "invalid event refused"),
        }
    }
    let rejected = batch.len() - records.len();
    (records, causes, rejected)
}

/// Stores a batch from `daemon_id` and returns the highest `seq` of the batch, now durable
/// (0 for an empty batch). Events already stored (same daemon and `seq`, or same `event_id`)
/// are skipped, so resending a batch is harmless. Invalid events are counted, logged and
/// acknowledged without being stored, so they cannot wedge the daemon's spool. A daemon
/// whose tier is not reported yet gets no `tier_limit` excuse.
pub async fn ingest(
    store: &Store,
    fleet: &Fleet,
    daemon_id: &str,
    batch: Vec<IncomingEvent>,
) -> Result<u64, IngestError> {
    let Some(daemon) = store.daemon(daemon_id).await? else {
        return Err(IngestError::UnknownDaemon(daemon_id.to_owned()));
    };
    if daemon.revoked {
        return Err(IngestError::Revoked(daemon_id.to_owned()));
    }
    let ack = batch.iter().map(|e| e.seq).max().unwrap_or(0);
    let tier = daemon
        .tier
        .as_deref()
        .and_then(Tier::from_name)
        .unwrap_or(Tier::Lsm);
    let effective = fleet.effective(store, daemon_id).await?;
    let owner = daemon_id.to_owned();
    // Re-evaluation is CPU work (a policy walk per event): keep it off the async workers.
    let (records, causes, rejected) =
        tokio::task::spawn_blocking(move || assess_batch(&owner, &batch, &effective, tier))
            .await
            .map_err(|e| StoreError::Internal(format!("drift assessment failed: {e}")))?;
    if rejected > 0 {
        fleet.metrics.events_rejected(rejected as u64);
    }
    let started = Instant::now();
    let inserted = store.insert_events(daemon_id, &records).await?;
    fleet
        .metrics
        .observe_db(DbOp::InsertEvents, started.elapsed());
    let mut fresh: HashSet<i64> = inserted.into_iter().collect();
    for record in records {
        if !fresh.remove(&record.seq) {
            continue;
        }
        fleet.metrics.event_ingested(&record.kind, &record.verdict);
        if let Some(&c) = causes.get(&record.seq) {
            fleet.metrics.drift(c);
        }
        fleet.publish_event(Arc::new(record));
    }
    Ok(ack)
}
