//! Spool records to wire records (`tyr.events.v1.Record`).

use std::time::{SystemTime, UNIX_EPOCH};

use tyr_proto::events;

use crate::event::{Enforced, Event, Kind, Severity, Verdict};
use crate::pipeline::spool::{Gap, GapReason, SpoolRecord};

/// The event id of record `seq` of daemon `agent_id`: a UUIDv7 with the event's millisecond
/// time and bits derived from the agent id and `seq`, so a resent record keeps its id.
pub fn event_id(agent_id: &uuid::Uuid, seq: u64, timestamp_ns: u64) -> String {
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&agent_id.as_bytes()[6..]);
    for (b, s) in bits[2..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    uuid::Builder::from_unix_timestamp_millis(timestamp_ns / 1_000_000, &bits)
        .into_uuid()
        .to_string()
}

fn wire_event(agent_id: &uuid::Uuid, seq: u64, e: Event) -> events::Event {
    let kind = match e.kind {
        Kind::FileRead => events::Kind::FileRead,
        Kind::FileWrite => events::Kind::FileWrite,
        Kind::Exec => events::Kind::Exec,
        Kind::NetConnect => events::Kind::NetConnect,
        Kind::Tls => events::Kind::Tls,
    };
    let verdict = match e.verdict {
        Verdict::Allow => events::Verdict::Allow,
        Verdict::Deny => events::Verdict::Deny,
        Verdict::Alert => events::Verdict::Alert,
    };
    let enforced = match e.enforced {
        Enforced::None => events::Enforced::None,
        Enforced::Blocked => events::Enforced::Blocked,
        Enforced::Killed => events::Enforced::Killed,
    };
    let severity = match e.severity {
        Severity::Low => events::Severity::Low,
        Severity::Medium => events::Severity::Medium,
        Severity::High => events::Severity::High,
        Severity::Critical => events::Severity::Critical,
    };
    let port = if e.kind == Kind::NetConnect {
        e.metadata
            .get("port")
            .and_then(|p| p.parse::<u16>().ok())
            .map_or(0, u32::from)
    } else {
        0
    };
    events::Event {
        event_id: event_id(agent_id, seq, e.timestamp_ns),
        daemon_id: agent_id.to_string(),
        seq,
        discovered_agent_id: e.discovered_agent_id.unwrap_or_default(),
        agent_type: e.agent_type.unwrap_or_default(),
        kind: kind.into(),
        resource: e.resource,
        verdict: verdict.into(),
        enforced: enforced.into(),
        severity: severity.into(),
        policy_version: e.policy_version,
        rule: e.rule.unwrap_or_default(),
        pid: e.pid,
        ppid: e.ppid,
        uid: e.uid,
        process_exe: e.process_exe,
        cmdline: e.cmdline,
        timestamp_ns: e.timestamp_ns,
        metadata: e.metadata.into_iter().collect(),
        count: u32::try_from(e.count).unwrap_or(u32::MAX),
        port,
        domains: Vec::new(),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The wire gap for the gap record `seq`: it covers the lost numbers when they had any,
/// else only its own number.
fn wire_gap(seq: u64, g: Gap) -> events::Gap {
    let (first_seq, last_seq) = if g.first_dropped_seq == 0 {
        (seq, seq)
    } else {
        (g.first_dropped_seq, g.last_dropped_seq)
    };
    let reason = match g.reason {
        GapReason::SpoolFull | GapReason::Corrupt => events::GapReason::SpoolFull,
        GapReason::RingBuffer => events::GapReason::RingBuffer,
    };
    events::Gap {
        first_seq,
        last_seq,
        dropped: g.count,
        reason: reason.into(),
        timestamp_ns: now_ns(),
    }
}

/// The wire form of spool record `seq`, with the highest seq the server will see in it; an
/// event that no longer decodes becomes a one-event gap (it is lost, and said so).
pub fn to_wire(agent_id: &uuid::Uuid, seq: u64, record: SpoolRecord) -> (events::Record, u64) {
    let gap = |g: Gap| {
        let w = wire_gap(seq, g);
        let max = w.last_seq.max(w.first_seq);
        (events::record::Record::Gap(w), max)
    };
    let (record, max) = match record {
        SpoolRecord::Event(bytes) => match serde_json::from_slice::<Event>(&bytes) {
            Ok(e) => (
                events::record::Record::Event(wire_event(agent_id, seq, e)),
                seq,
            ),
            Err(err) => {
                tracing::error!(
                    seq,
                    "spooled event does not decode, reported as lost: {err}"
                );
                gap(Gap {
                    first_dropped_seq: seq,
                    last_dropped_seq: seq,
                    count: 1,
                    reason: GapReason::Corrupt,
                })
            }
        },
        SpoolRecord::Gap(g) => gap(g),
    };
    (
        events::Record {
            record: Some(record),
        },
        max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        serde_json::from_str(
            r#"{"kind":"NET_CONNECT","resource":"10.0.0.1","verdict":"DENY","pid":7,
                "timestamp_ns":1700000000123456789,"metadata":{"port":"443"}}"#,
        )
        .expect("event")
    }

    #[test]
    fn event_ids_are_stable_v7_and_distinct_per_seq() {
        let agent = uuid::Uuid::new_v4();
        let a = event_id(&agent, 1, 1_700_000_000_000_000_000);
        assert_eq!(a, event_id(&agent, 1, 1_700_000_000_000_000_000));
        assert_ne!(a, event_id(&agent, 2, 1_700_000_000_000_000_000));
        assert_eq!(
            uuid::Uuid::parse_str(&a).expect("uuid").get_version_num(),
            7
        );
    }

    #[test]
    fn events_and_gaps_map_to_wire_records() {
        let agent = uuid::Uuid::new_v4();
        let bytes = serde_json::to_vec(&event()).expect("json");
        let (r, max) = to_wire(&agent, 5, SpoolRecord::Event(bytes));
        assert_eq!(max, 5);
        let Some(events::record::Record::Event(e)) = r.record else {
            panic!("not an event");
        };
        assert_eq!(
            (e.seq, e.port, e.kind()),
            (5, 443, events::Kind::NetConnect)
        );
        assert_eq!(e.verdict(), events::Verdict::Deny);
        assert_eq!(e.daemon_id, agent.to_string());

        let ring = Gap {
            first_dropped_seq: 0,
            last_dropped_seq: 0,
            count: 9,
            reason: GapReason::RingBuffer,
        };
        let (r, max) = to_wire(&agent, 8, SpoolRecord::Gap(ring));
        assert_eq!(max, 8);
        assert!(
            matches!(r.record, Some(events::record::Record::Gap(g)) if g.dropped == 9 && g.first_seq == 8)
        );

        let (r, max) = to_wire(&agent, 9, SpoolRecord::Event(b"garbage".to_vec()));
        assert_eq!(max, 9);
        assert!(matches!(r.record, Some(events::record::Record::Gap(g)) if g.dropped == 1));
    }
}
