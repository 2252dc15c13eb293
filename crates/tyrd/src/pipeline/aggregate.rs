//! Collapses repeated identical events (same process, kind, resource, verdict, enforcement,
//! rule, policy version, agent and metadata) arriving within a window into the first of them
//! with a `count`. Events are keyed by a hash of those fields (no copy of the strings) and
//! compared in full on a hit. Memory is bounded: when `max_keys` distinct events are held,
//! all of them are flushed before a new one is taken.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use crate::event::Event;

/// Default aggregation window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);
/// Default bound on distinct events held.
pub const DEFAULT_MAX_KEYS: usize = 4096;

/// Whether `a` and `b` are the same occurrence but for time, counts and enrichment that
/// follows from the process (parent, uid, executable, command line, severity).
fn identical(a: &Event, b: &Event) -> bool {
    a.pid == b.pid
        && a.kind == b.kind
        && a.verdict == b.verdict
        && a.enforced == b.enforced
        && a.resource == b.resource
        && a.rule == b.rule
        && a.policy_version == b.policy_version
        && a.agent_type == b.agent_type
        && a.discovered_agent_id == b.discovered_agent_id
        && a.metadata == b.metadata
}

struct Held {
    event: Event,
    started: Instant,
    order: u64,
}

/// The aggregation stage. Time is passed in by the caller so tests need no clock.
pub struct Aggregator {
    window: Duration,
    max_keys: usize,
    hasher: RandomState,
    held: HashMap<u64, Held>,
    next_order: u64,
}

impl Aggregator {
    /// An aggregator with the given window and bound (at least 1 key).
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Aggregator {
            window,
            max_keys: max_keys.max(1),
            hasher: RandomState::new(),
            held: HashMap::new(),
            next_order: 0,
        }
    }

    fn key(&self, e: &Event) -> u64 {
        self.hasher.hash_one((
            e.pid,
            e.kind,
            e.verdict,
            e.enforced,
            &e.resource,
            &e.rule,
            &e.policy_version,
            &e.agent_type,
            &e.discovered_agent_id,
        ))
    }

    /// Takes one event at time `now`; returns the events that leave the stage because of it
    /// (an expired twin or a colliding one, or everything when the key bound is reached), in
    /// arrival order.
    pub fn push(&mut self, event: Event, now: Instant) -> Vec<Event> {
        let key = self.key(&event);
        let mut out = Vec::new();
        if let Some(held) = self.held.get_mut(&key) {
            if now < held.started + self.window && identical(&held.event, &event) {
                held.event.count = held.event.count.saturating_add(event.count.max(1));
                return out;
            }
            if let Some(old) = self.held.remove(&key) {
                out.push(old.event);
            }
        } else if self.held.len() >= self.max_keys {
            out = self.flush_all();
        }
        let order = self.next_order;
        self.next_order += 1;
        let mut event = event;
        event.count = event.count.max(1);
        self.held.insert(
            key,
            Held {
                event,
                started: now,
                order,
            },
        );
        out
    }

    /// Events whose window has closed at `now`, in arrival order.
    pub fn flush_expired(&mut self, now: Instant) -> Vec<Event> {
        let window = self.window;
        let expired: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.started + window <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut out: Vec<Held> = expired.iter().filter_map(|k| self.held.remove(k)).collect();
        out.sort_by_key(|h| h.order);
        out.into_iter().map(|h| h.event).collect()
    }

    /// Every held event, in arrival order.
    pub fn flush_all(&mut self) -> Vec<Event> {
        let mut out: Vec<Held> = self.held.drain().map(|(_, h)| h).collect();
        out.sort_by_key(|h| h.order);
        out.into_iter().map(|h| h.event).collect()
    }

    /// Number of distinct events held.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Enforced, Kind, Severity, Verdict};

    fn event(pid: u32, resource: &str, ts: u64) -> Event {
        Event {
            kind: Kind::FileRead,
            resource: resource.into(),
            verdict: Verdict::Deny,
            enforced: Enforced::Blocked,
            severity: Severity::High,
            policy_version: "v1".into(),
            rule: Some("r".into()),
            pid,
            ppid: 1,
            uid: 0,
            process_exe: "/bin/cat".into(),
            cmdline: "cat".into(),
            agent_type: None,
            discovered_agent_id: None,
            timestamp_ns: ts,
            metadata: Default::default(),
            count: 1,
        }
    }

    const W: Duration = Duration::from_secs(1);

    #[test]
    fn identical_events_within_the_window_become_one_with_a_count() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new(W, 16);
        for i in 0..5 {
            assert!(
                agg.push(event(7, "/a", i), t0 + Duration::from_millis(i * 100))
                    .is_empty()
            );
        }
        assert!(
            agg.flush_expired(t0 + Duration::from_millis(999))
                .is_empty()
        );
        let out = agg.flush_expired(t0 + W);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 5);
        assert_eq!(out[0].timestamp_ns, 0, "the first occurrence is kept");
        assert_eq!(agg.held(), 0);
    }

    #[test]
    fn differing_key_fields_are_not_merged() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new(W, 16);
        let base = event(7, "/a", 0);
        let mut variants = vec![base.clone(), event(8, "/a", 0), event(7, "/b", 0)];
        let mut e = base.clone();
        e.kind = Kind::FileWrite;
        variants.push(e);
        let mut e = base.clone();
        e.verdict = Verdict::Alert;
        variants.push(e);
        let mut e = base.clone();
        e.rule = None;
        variants.push(e);
        let mut e = base.clone();
        e.enforced = Enforced::None;
        variants.push(e);
        let mut e = base.clone();
        e.policy_version = "v2".into();
        variants.push(e);
        let mut e = base.clone();
        e.agent_type = Some("claude-code".into());
        variants.push(e);
        let mut e = base.clone();
        e.discovered_agent_id = Some("da".into());
        variants.push(e);
        for v in &variants {
            assert!(agg.push(v.clone(), t0).is_empty());
        }
        // Same key, other non-key fields: merged.
        let mut same = base.clone();
        same.uid = 99;
        assert!(agg.push(same, t0).is_empty());
        let out = agg.flush_all();
        assert_eq!(out.len(), variants.len());
        assert_eq!(out[0].count, 2);
        assert!(out[1..].iter().all(|e| e.count == 1));
        assert_eq!(out[1].pid, 8, "arrival order is kept");
    }

    #[test]
    fn events_differing_in_metadata_only_are_kept_apart() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new(W, 16);
        let a = event(7, "/a", 0);
        let mut b = a.clone();
        b.metadata.insert("operation".into(), "rename".into());
        agg.push(a.clone(), t0);
        let out = agg.push(b, t0);
        assert_eq!(out, [a], "the first leaves, uncounted");
        assert_eq!(agg.flush_all()[0].metadata["operation"], "rename");
    }

    #[test]
    fn a_repeat_after_the_window_emits_the_old_one_and_starts_anew() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new(W, 16);
        agg.push(event(7, "/a", 0), t0);
        agg.push(event(7, "/a", 1), t0);
        let out = agg.push(event(7, "/a", 2), t0 + W);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 2);
        let rest = agg.flush_all();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].count, rest[0].timestamp_ns), (1, 2));
    }

    #[test]
    fn reaching_the_key_bound_flushes_everything_held() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new(W, 3);
        for pid in 0..3 {
            assert!(agg.push(event(pid, "/a", 0), t0).is_empty());
        }
        agg.push(event(0, "/a", 0), t0);
        let out = agg.push(event(3, "/a", 0), t0);
        assert_eq!(out.iter().map(|e| e.pid).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(out[0].count, 2);
        assert_eq!(agg.held(), 1);
        for pid in 4..1000 {
            agg.push(event(pid, "/a", 0), t0);
            assert!(agg.held() <= 3);
        }
    }

    #[test]
    fn incoming_counts_are_added_and_zero_counts_count_as_one() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new(W, 4);
        let mut e = event(1, "/a", 0);
        e.count = 0;
        agg.push(e, t0);
        let mut e = event(1, "/a", 0);
        e.count = 10;
        agg.push(e, t0);
        let mut e = event(1, "/a", 0);
        e.count = u64::MAX;
        agg.push(e, t0);
        assert_eq!(agg.flush_all()[0].count, u64::MAX);
    }
}
