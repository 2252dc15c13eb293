//! The userspace event pipeline (DESIGN "Event flow"): source → `events.allow` filter →
//! aggregate → spool. Events are spooled as their JSON encoding ([`Event`] serde); the
//! stream to the server reads them back from the spool.

pub mod aggregate;
pub mod source;
pub mod spool;

use std::time::Instant;

use crate::config::AllowEvents;
use crate::event::{Event, Verdict};
use aggregate::Aggregator;
use spool::{MAX_PAYLOAD, Spool, SpoolError, SpoolRecord};

/// A batch is appended to the spool at this many events…
const BATCH_EVENTS: usize = 100;

/// Whether `event` is to be sent (SPEC §9): deny and alert always, allow for classified
/// agents, and for other processes only with `events.allow: all`.
pub fn wanted(event: &Event, allow: AllowEvents) -> bool {
    event.verdict != Verdict::Allow || event.agent_type.is_some() || allow == AllowEvents::All
}

/// What the pipeline did, for the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events taken in.
    pub received: u64,
    /// Events refused (malformed input, too large to spool).
    pub rejected: u64,
    /// Allow events not sent because of `events.allow`.
    pub filtered: u64,
    /// Events folded into an identical earlier one by aggregation.
    pub merged: u64,
    /// Records appended to the spool.
    pub spooled: u64,
    /// Seq of the last record appended (0 if none).
    pub last_seq: u64,
}

/// The stages between a source and the spool. Time is passed in, so it is testable without
/// a clock; the caller calls [`Pipeline::tick`] periodically and [`Pipeline::finish`] at the
/// end.
pub struct Pipeline<'a> {
    spool: &'a mut Spool,
    aggregator: Aggregator,
    allow: AllowEvents,
    /// Largest encoded event accepted, and the batch size in bytes that triggers an append.
    max_bytes: usize,
    batch: Vec<SpoolRecord>,
    batch_bytes: usize,
    counts: Counts,
}

impl<'a> Pipeline<'a> {
    /// A pipeline into `spool`, whose bound is `capacity_bytes`.
    pub fn new(
        spool: &'a mut Spool,
        aggregator: Aggregator,
        allow: AllowEvents,
        capacity_bytes: u64,
    ) -> Self {
        let quarter = usize::try_from(capacity_bytes / 4).unwrap_or(usize::MAX);
        Pipeline {
            spool,
            aggregator,
            allow,
            max_bytes: quarter.min(MAX_PAYLOAD),
            batch: Vec::new(),
            batch_bytes: 0,
            counts: Counts::default(),
        }
    }

    /// Changes which allow events are kept (a server override of `events.allow`).
    pub fn set_allow(&mut self, allow: AllowEvents) {
        self.allow = allow;
    }

    /// Takes one event at `now`.
    pub fn ingest(&mut self, event: Event, now: Instant) -> Result<(), SpoolError> {
        self.counts.received += 1;
        if !wanted(&event, self.allow) {
            self.counts.filtered += 1;
            return Ok(());
        }
        let out = self.aggregator.push(event, now);
        self.emit(out)
    }

    /// Counts a malformed input event.
    pub fn reject(&mut self) {
        self.counts.received += 1;
        self.counts.rejected += 1;
    }

    /// Releases events whose aggregation window has closed and spools what is batched.
    pub fn tick(&mut self, now: Instant) -> Result<(), SpoolError> {
        let out = self.aggregator.flush_expired(now);
        self.emit(out)?;
        self.append()
    }

    /// The spool, for the agent plane (pending records, acknowledgements).
    pub fn spool_mut(&mut self) -> &mut Spool {
        self.spool
    }

    /// Releases and spools everything held.
    pub fn finish(&mut self) -> Result<Counts, SpoolError> {
        let out = self.aggregator.flush_all();
        self.emit(out)?;
        self.append()?;
        Ok(self.counts)
    }

    fn emit(&mut self, events: Vec<Event>) -> Result<(), SpoolError> {
        for event in events {
            self.counts.merged += event.count.saturating_sub(1);
            let bytes = match serde_json::to_vec(&event) {
                Ok(b) if b.len() <= self.max_bytes => b,
                Ok(b) => {
                    tracing::error!(
                        bytes = b.len(),
                        limit = self.max_bytes,
                        resource = %event.resource,
                        "event too large to spool, dropped"
                    );
                    self.counts.rejected += 1;
                    continue;
                }
                Err(e) => {
                    tracing::error!("cannot encode event: {e}");
                    self.counts.rejected += 1;
                    continue;
                }
            };
            self.batch_bytes += bytes.len();
            self.batch.push(SpoolRecord::Event(bytes));
            if self.batch.len() >= BATCH_EVENTS || self.batch_bytes >= self.max_bytes {
                self.append()?;
            }
        }
        Ok(())
    }

    fn append(&mut self) -> Result<(), SpoolError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let last = tokio::task::block_in_place(|| self.spool.append_batch(&self.batch))?;
        self.counts.spooled += self.batch.len() as u64;
        self.counts.last_seq = last;
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Enforced, Kind, Severity};
    use spool::SpoolOptions;
    use std::time::Duration;

    fn event(pid: u32, verdict: Verdict, agent: Option<&str>) -> Event {
        Event {
            kind: Kind::Exec,
            resource: "/bin/sh".into(),
            verdict,
            enforced: Enforced::None,
            severity: Severity::Low,
            policy_version: "v1".into(),
            rule: None,
            pid,
            ppid: 1,
            uid: 0,
            process_exe: "/bin/bash".into(),
            cmdline: String::new(),
            agent_type: agent.map(str::to_owned),
            discovered_agent_id: None,
            timestamp_ns: 1,
            metadata: Default::default(),
            count: 1,
        }
    }

    #[test]
    fn allow_events_of_unclassified_processes_need_events_allow_all() {
        let allow = event(1, Verdict::Allow, None);
        assert!(!wanted(&allow, AllowEvents::Agents));
        assert!(wanted(&allow, AllowEvents::All));
        assert!(wanted(
            &event(1, Verdict::Allow, Some("aider")),
            AllowEvents::Agents
        ));
        assert!(wanted(&event(1, Verdict::Deny, None), AllowEvents::Agents));
        assert!(wanted(&event(1, Verdict::Alert, None), AllowEvents::Agents));
    }

    fn spooled_events(spool: &mut Spool) -> Vec<Event> {
        spool
            .pending(0, usize::MAX)
            .expect("pending")
            .into_iter()
            .map(|(_, r)| match r {
                SpoolRecord::Event(b) => serde_json::from_slice(&b).expect("event JSON"),
                SpoolRecord::Gap(g) => panic!("unexpected gap {g:?}"),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn events_are_filtered_aggregated_and_spooled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool =
            Spool::open(dir.path(), SpoolOptions::with_capacity(1 << 20)).expect("open");
        let t0 = Instant::now();
        let window = Duration::from_secs(1);
        let mut p = Pipeline::new(
            &mut spool,
            Aggregator::new(window, 16),
            AllowEvents::Agents,
            1 << 20,
        );
        for _ in 0..3 {
            p.ingest(event(1, Verdict::Deny, None), t0).expect("ingest");
        }
        p.ingest(event(2, Verdict::Allow, None), t0)
            .expect("ingest");
        p.ingest(event(3, Verdict::Allow, Some("codex")), t0)
            .expect("ingest");
        p.reject();
        p.tick(t0 + window / 2).expect("tick");
        let counts = p.finish().expect("finish");
        assert_eq!(
            counts,
            Counts {
                received: 6,
                rejected: 1,
                filtered: 1,
                merged: 2,
                spooled: 2,
                last_seq: 2,
            }
        );
        let events = spooled_events(&mut spool);
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].pid, events[0].count), (1, 3));
        assert_eq!(events[1].agent_type.as_deref(), Some("codex"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn batches_are_appended_at_a_hundred_events_and_oversized_events_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool =
            Spool::open(dir.path(), SpoolOptions::with_capacity(1 << 20)).expect("open");
        let t0 = Instant::now();
        let mut p = Pipeline::new(
            &mut spool,
            Aggregator::new(Duration::ZERO, 1),
            AllowEvents::All,
            1 << 20,
        );
        for pid in 0..150 {
            p.ingest(event(pid, Verdict::Deny, None), t0)
                .expect("ingest");
        }
        assert_eq!(p.counts.spooled, 100, "one batch of 100 appended");
        let mut huge = event(999, Verdict::Deny, None);
        huge.cmdline = "x".repeat(300_000);
        p.ingest(huge, t0).expect("ingest");
        let counts = p.finish().expect("finish");
        assert_eq!((counts.spooled, counts.rejected), (150, 1));
        assert_eq!(spooled_events(&mut spool).len(), 150);
    }
}
