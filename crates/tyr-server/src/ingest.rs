//! Event ingest (SPEC §9): re-evaluate each event against the daemon's current effective
//! policy (drift), store the batch idempotently (batches arriving together share one
//! transaction), then publish the newly stored events to live subscribers.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use tyr_policy::glob::Homes;
use tyr_policy::{Evaluator, Verdict};
use tyr_proto::events;

use crate::drift::{self, DriftCause, Enforced, EventFacts, Tier};
use crate::fleet::{Effective, Fleet};
use crate::metrics::DbOp;
use crate::store::events::EventRecord;
use crate::store::time::rfc3339;
use crate::store::{Backend, Store, StoreError};

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

/// The stored/API name of a kind (`FILE_READ`, …), from the wire enum's name.
fn kind_name(k: events::Kind) -> Option<&'static str> {
    (k != events::Kind::Unspecified).then(|| k.as_str_name().trim_start_matches("KIND_"))
}

/// The stored/API name of a verdict (`ALLOW`, `DENY`, `ALERT`), from the wire enum's name.
pub fn verdict_name(v: Verdict) -> &'static str {
    events::Verdict::from(v)
        .as_str_name()
        .trim_start_matches("VERDICT_")
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

/// The event id to store: the daemon's when it is a canonical UUID, its canonical form when
/// it parses otherwise, a fresh UUIDv7 when it does not parse.
fn event_id(raw: &str) -> String {
    match uuid::Uuid::parse_str(raw) {
        Ok(_) if raw.len() == 36 && !raw.bytes().any(|b| b.is_ascii_uppercase()) => raw.to_owned(),
        Ok(id) => id.to_string(),
        Err(_) => uuid::Uuid::now_v7().to_string(),
    }
}

/// The record to store for `ev`, with the server's verdict; `Err` names the invalid field (an
/// unspecified enum or a `seq` beyond `i64`).
fn assess(
    daemon_id: &str,
    ev: &IncomingEvent,
    effective: &Effective,
    evaluator: &Evaluator,
    tier: Tier,
    received_ms: i64,
) -> Result<(EventRecord, Option<DriftCause>), &'static str> {
    let kind = kind_name(ev.kind()).ok_or("kind")?;
    let verdict = Verdict::try_from(ev.verdict()).map_err(|_| "verdict")?;
    let enforced = enforced_of(ev.enforced()).ok_or("enforced")?;
    let seq = i64::try_from(ev.seq).map_err(|_| "seq")?;
    let outcome = tyr_proto::convert::to_request(ev).ok().map(|request| {
        let facts = EventFacts {
            request,
            verdict,
            enforced,
            policy_version: ev.policy_version.clone(),
            builtin_restriction: ev
                .metadata
                .get("policy")
                .is_some_and(|p| tyr_policy::eval::is_builtin_restriction(p)),
        };
        drift::assess(evaluator, &effective.version, tier, &facts)
    });
    let timestamp_ns = i64::try_from(ev.timestamp_ns).unwrap_or(i64::MAX);
    // The daemon's clock orders events, but never beyond the server's clock plus a skew
    // allowance: a future-dated event would otherwise head every listing and outlive
    // retention. `timestamp_ns` keeps what the daemon reported.
    let ts = (timestamp_ns / 1_000_000).min(received_ms.saturating_add(MAX_CLOCK_SKEW_MS));
    let metadata = ev
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let cause = outcome.and_then(|o| o.cause);
    let record = EventRecord {
        event_id: event_id(&ev.event_id),
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
    Ok((record, cause))
}

/// The records of a batch, the drift cause of each, and how many events were invalid.
fn assess_batch(
    daemon_id: &str,
    batch: &[IncomingEvent],
    effective: &Effective,
    tier: Tier,
) -> (Vec<EventRecord>, Vec<Option<DriftCause>>, usize) {
    // Patterns are parsed once per batch, not once per event.
    let evaluator = Evaluator::new(&effective.set, &Homes::default());
    let received_ms = crate::store::time::now_ms();
    let mut records = Vec::with_capacity(batch.len());
    let mut causes = Vec::with_capacity(batch.len());
    for ev in batch {
        match assess(daemon_id, ev, effective, &evaluator, tier, received_ms) {
            Ok((record, cause)) => {
                records.push(record);
                causes.push(cause);
            }
            Err(field) => tracing::warn!(daemon_id, seq = ev.seq, field, "invalid event refused"),
        }
    }
    let rejected = batch.len() - records.len();
    (records, causes, rejected)
}

/// Stores a batch from `daemon_id` and returns the highest `seq` of the batch, now durable
/// (0 for an empty batch). Events already stored (same daemon and `seq`, or same `event_id`)
/// are skipped, so resending a batch is harmless. Invalid events are counted, logged and
/// acknowledged without being stored, so they cannot wedge the daemon's spool. A daemon
/// whose tier is not reported yet gets no `tier_limit` excuse. Batches of several daemons
/// arriving together are committed together (see [`Committer`]).
pub async fn ingest(
    store: &Store,
    fleet: &Fleet,
    daemon_id: &str,
    batch: Vec<IncomingEvent>,
) -> Result<u64, IngestError> {
    if batch.is_empty() {
        // A batch of gap records only: nothing to evaluate or store here.
        return Ok(0);
    }
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
    if records.is_empty() {
        return Ok(ack);
    }
    let stored = fleet.committer.store(store, records).await?;
    if let Some(took) = stored.took {
        fleet.metrics.observe_db(DbOp::InsertEvents, took);
    }
    let fresh = stored.records.into_iter().zip(stored.fresh).zip(causes);
    for ((record, _), cause) in fresh.filter(|((_, fresh), _)| *fresh) {
        fleet.metrics.event_ingested(&record.kind, &record.verdict);
        if let Some(c) = cause {
            fleet.metrics.drift(c);
        }
        fleet.publish_event(Arc::new(record));
    }
    Ok(ack)
}

/// Most events stored in one transaction.
const MAX_GROUP_EVENTS: usize = 4096;

/// Group commit of ingested batches. A batch that arrives while transactions are running (at
/// most one on SQLite, which has one writer; two on PostgreSQL) waits, and every batch
/// waiting is then stored in the next transaction, which costs about what storing one does:
/// with many daemons streaming, transactions grow instead of queueing. The writers are tasks
/// of their own, so a caller that goes away (a closed stream) cannot stall the others.
#[derive(Debug, Default)]
pub(crate) struct Committer {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Running writer tasks.
    writers: usize,
}

/// A batch waiting to be stored, and where to hand it back.
#[derive(Debug)]
struct Job {
    records: Vec<EventRecord>,
    reply: oneshot::Sender<Result<Stored, String>>,
}

/// A stored batch: its records, whether each was newly stored, and (for the first batch of a
/// transaction only, so each transaction is measured once) how long the transaction took.
#[derive(Debug)]
struct Stored {
    records: Vec<EventRecord>,
    fresh: Vec<bool>,
    took: Option<Duration>,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Committer {
    /// Stores `records` (one daemon's batch), possibly together with other batches.
    async fn store(&self, store: &Store, records: Vec<EventRecord>) -> Result<Stored, StoreError> {
        let (reply, done) = oneshot::channel();
        let lanes = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 2,
        };
        let start_writer = {
            let mut q = lock(&self.queue);
            q.jobs.push(Job { records, reply });
            let start = q.writers < lanes;
            q.writers += usize::from(start);
            start
        };
        if start_writer {
            tokio::spawn(write(store.clone(), self.queue.clone()));
        }
        match done.await {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(e)) => Err(StoreError::Internal(e)),
            Err(_) => Err(StoreError::Internal("the event writer stopped".into())),
        }
    }
}

/// Gives a writer's slot back if its task ends early (a panic, runtime shutdown), so later
/// batches start a new writer instead of waiting forever.
struct Slot(Option<Arc<Mutex<Queue>>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            lock(&queue).writers -= 1;
        }
    }
}

/// A writer: stores waiting batches, a group per transaction, until none is left.
async fn write(store: Store, queue: Arc<Mutex<Queue>>) {
    let mut slot = Slot(Some(queue.clone()));
    loop {
        let jobs: Vec<Job> = {
            let mut q = lock(&queue);
            if q.jobs.is_empty() {
                q.writers -= 1;
                slot.0 = None;
                return;
            }
            let mut events = 0;
            let take = q
                .jobs
                .iter()
                .take_while(|j| {
                    let first = events == 0;
                    events += j.records.len();
                    first || events <= MAX_GROUP_EVENTS
                })
                .count();
            q.jobs.drain(..take).collect()
        };
        commit(&store, jobs).await;
    }
}

/// Stores `jobs` in one transaction and answers each.
async fn commit(store: &Store, jobs: Vec<Job>) {
    let mut records = Vec::with_capacity(jobs.iter().map(|j| j.records.len()).sum());
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        replies.push((job.records.len(), job.reply));
        records.extend(job.records);
    }
    let started = Instant::now();
    match store.insert_events(&records).await {
        Ok(fresh) => {
            let took = started.elapsed();
            let (mut records, mut fresh) = (records.into_iter(), fresh.into_iter());
            for (i, (len, reply)) in replies.into_iter().enumerate() {
                let stored = Stored {
                    records: records.by_ref().take(len).collect(),
                    fresh: fresh.by_ref().take(len).collect(),
                    took: (i == 0).then_some(took),
                };
                // Err: the caller went away; its batch is stored all the same.
                let _ = reply.send(Ok(stored));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tyr_policy::EffectiveSet;

    use super::*;

    fn effective() -> Effective {
        Effective {
            version: "builtin-audit".into(),
            base: None,
            overlays: Vec::new(),
            set: EffectiveSet::default(),
        }
    }

    fn valid() -> IncomingEvent {
        let mut e = IncomingEvent {
            event_id: "0190A8B2-7C3D-7E4F-8A9B-0C1D2E3F4A5B".into(),
            seq: 7,
            resource: "/tmp/x".into(),
            ..IncomingEvent::default()
        };
        e.set_kind(events::Kind::Exec);
        e.set_verdict(events::Verdict::Deny);
        e.set_enforced(events::Enforced::Blocked);
        e
    }

    fn run(ev: &IncomingEvent) -> Result<(EventRecord, Option<DriftCause>), &'static str> {
        let eff = effective();
        let evaluator = Evaluator::new(&eff.set, &Homes::default());
        assess("d", ev, &eff, &evaluator, Tier::Lsm, 0)
    }

    #[test]
    fn names_come_from_the_wire_enums() {
        let (record, cause) = run(&valid()).expect("valid");
        assert_eq!(record.kind, "EXEC");
        assert_eq!(record.verdict, "DENY");
        assert_eq!(record.server_verdict.as_deref(), Some("ALLOW"));
        assert_eq!(cause, Some(DriftCause::StalePolicy));
        assert_eq!(record.event_id, "0190a8b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b");
        assert_eq!(kind_name(events::Kind::NetConnect), Some("NET_CONNECT"));
        assert_eq!(kind_name(events::Kind::Unspecified), None);
        assert_eq!(verdict_name(Verdict::Alert), "ALERT");
    }

    #[test]
    fn invalid_events_name_the_field() {
        let mut e = valid();
        e.kind = 0;
        assert_eq!(run(&e).err(), Some("kind"));
        let mut e = valid();
        e.verdict = 99;
        assert_eq!(run(&e).err(), Some("verdict"));
        let mut e = valid();
        e.enforced = 0;
        assert_eq!(run(&e).err(), Some("enforced"));
        let mut e = valid();
        e.seq = u64::MAX;
        assert_eq!(run(&e).err(), Some("seq"));
    }
}
