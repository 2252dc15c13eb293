//! Conversions between wire types and tyr-policy types. A wire enum at its `UNSPECIFIED` zero
//! value (or at a number this build does not know) is an error, never a silent default.

use tyr_policy::{Action, Request, Severity, Verdict, request::Context};

use crate::events;

impl From<Verdict> for events::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => events::Verdict::Allow,
            Verdict::Alert => events::Verdict::Alert,
            Verdict::Deny => events::Verdict::Deny,
        }
    }
}

impl TryFrom<events::Verdict> for Verdict {
    type Error = String;

    fn try_from(v: events::Verdict) -> Result<Self, String> {
        match v {
            events::Verdict::Allow => Ok(Verdict::Allow),
            events::Verdict::Alert => Ok(Verdict::Alert),
            events::Verdict::Deny => Ok(Verdict::Deny),
            events::Verdict::Unspecified => Err("verdict is unspecified".into()),
        }
    }
}

impl From<Action> for events::Kind {
    fn from(a: Action) -> Self {
        match a {
            Action::FileRead => events::Kind::FileRead,
            Action::FileWrite => events::Kind::FileWrite,
            Action::Exec => events::Kind::Exec,
            Action::NetConnect => events::Kind::NetConnect,
            Action::TlsConnect => events::Kind::Tls,
        }
    }
}

impl TryFrom<events::Kind> for Action {
    type Error = String;

    fn try_from(k: events::Kind) -> Result<Self, String> {
        match k {
            events::Kind::FileRead => Ok(Action::FileRead),
            events::Kind::FileWrite => Ok(Action::FileWrite),
            events::Kind::Exec => Ok(Action::Exec),
            events::Kind::NetConnect => Ok(Action::NetConnect),
            events::Kind::Tls => Ok(Action::TlsConnect),
            events::Kind::Unspecified => Err("event kind is unspecified".into()),
        }
    }
}

impl From<Severity> for events::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Low => events::Severity::Low,
            Severity::Medium => events::Severity::Medium,
            Severity::High => events::Severity::High,
            Severity::Critical => events::Severity::Critical,
        }
    }
}

impl TryFrom<events::Severity> for Severity {
    type Error = String;

    fn try_from(s: events::Severity) -> Result<Self, String> {
        match s {
            events::Severity::Low => Ok(Severity::Low),
            events::Severity::Medium => Ok(Severity::Medium),
            events::Severity::High => Ok(Severity::High),
            events::Severity::Critical => Ok(Severity::Critical),
            events::Severity::Unspecified => Err("severity is unspecified".into()),
        }
    }
}

/// The request the daemon decided when it reported `event`, rebuilt for the server to
/// re-evaluate (drift): action, resource (normalised as [`Request::new`] does), port and DNS
/// names (`NET_CONNECT`), calling binary, agent type and the Cedar context (uid, pid).
/// Empty strings mean "unknown". Errors on an unspecified kind, a resource that does not parse
/// for its kind, or a port above 65535.
pub fn to_request(event: &events::Event) -> Result<Request, String> {
    let action = Action::try_from(event.kind())?;
    let mut req = Request::new(action, &event.resource)?;
    if action == Action::NetConnect {
        if event.port != 0 {
            let port = u16::try_from(event.port)
                .map_err(|_| format!("port {} is out of range", event.port))?;
            req = req.with_port(port);
        }
        req = req.with_domains(&event.domains);
    }
    if !event.process_exe.is_empty() {
        req = req.with_binary(&event.process_exe);
    }
    if !event.agent_type.is_empty() {
        req = req.with_agent_type(&event.agent_type);
    }
    Ok(req.with_context(Context {
        uid: Some(event.uid),
        pid: Some(event.pid),
    }))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use prost::Message;
    use tyr_policy::Resource;

    use super::*;
    use crate::events::{Event, EventBatch, Gap, GapReason, Record, record};

    #[test]
    fn verdicts_round_trip_and_unspecified_is_rejected() {
        for v in [Verdict::Allow, Verdict::Alert, Verdict::Deny] {
            let wire = events::Verdict::from(v);
            assert_eq!(
                wire.as_str_name(),
                format!("VERDICT_{}", v.as_str().to_uppercase())
            );
            assert_eq!(Verdict::try_from(wire), Ok(v));
        }
        assert!(Verdict::try_from(events::Verdict::Unspecified).is_err());
    }

    #[test]
    fn actions_round_trip_and_unspecified_is_rejected() {
        for a in Action::ALL {
            assert_eq!(Action::try_from(events::Kind::from(a)), Ok(a));
        }
        assert_eq!(events::Kind::from(Action::TlsConnect), events::Kind::Tls);
        assert!(Action::try_from(events::Kind::Unspecified).is_err());
    }

    #[test]
    fn severities_round_trip_and_unspecified_is_rejected() {
        for s in [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            assert_eq!(Severity::try_from(events::Severity::from(s)), Ok(s));
        }
        assert!(Severity::try_from(events::Severity::Unspecified).is_err());
    }

    fn event(kind: events::Kind, resource: &str) -> Event {
        Event {
            kind: kind as i32,
            resource: resource.into(),
            pid: 42,
            uid: 1000,
            ..Event::default()
        }
    }

    #[test]
    fn file_request_is_normalised_with_binary_agent_and_context() {
        let mut e = event(events::Kind::FileRead, "/home/u//.ssh/./id_rsa");
        e.process_exe = "/usr/bin/cat".into();
        e.agent_type = "claude-code".into();
        e.port = 80; // ignored outside NET_CONNECT
        e.domains = vec!["x.test".into()];
        let req = to_request(&e).expect("valid event");
        assert_eq!(req.action, Action::FileRead);
        assert_eq!(req.resource, Resource::Path("/home/u/.ssh/id_rsa".into()));
        assert_eq!(req.binary.as_deref(), Some("/usr/bin/cat"));
        assert_eq!(req.agent_type.as_deref(), Some("claude-code"));
        assert!(req.domains.is_empty());
        assert_eq!(req.context.uid, Some(1000));
        assert_eq!(req.context.pid, Some(42));
    }

    #[test]
    fn empty_strings_mean_unknown() {
        let req = to_request(&event(events::Kind::Exec, "/bin/sh")).expect("valid event");
        assert_eq!(req.binary, None);
        assert_eq!(req.agent_type, None);
    }

    #[test]
    fn net_request_carries_port_and_lowercased_domains() {
        let mut e = event(events::Kind::NetConnect, "::ffff:10.0.0.1");
        e.port = 443;
        e.domains = vec!["API.Example.test".into()];
        let req = to_request(&e).expect("valid event");
        assert_eq!(
            req.resource,
            Resource::Addr {
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                port: 443
            }
        );
        assert_eq!(req.domains, vec!["api.example.test".to_string()]);
    }

    #[test]
    fn net_port_in_resource_is_kept_when_port_field_is_zero() {
        let req = to_request(&event(events::Kind::NetConnect, "10.0.0.1:8080")).expect("valid");
        assert!(matches!(req.resource, Resource::Addr { port: 8080, .. }));
    }

    #[test]
    fn tls_request_is_the_lowercased_sni() {
        let req = to_request(&event(events::Kind::Tls, "API.OpenAI.com.")).expect("valid");
        assert_eq!(req.action, Action::TlsConnect);
        assert_eq!(req.resource, Resource::Sni("api.openai.com".into()));
    }

    #[test]
    fn bad_events_are_errors() {
        assert!(to_request(&event(events::Kind::Unspecified, "/etc/passwd")).is_err());
        assert!(to_request(&event(events::Kind::FileRead, "etc/passwd")).is_err());
        assert!(to_request(&event(events::Kind::NetConnect, "not-an-ip")).is_err());
        let mut e = event(events::Kind::NetConnect, "10.0.0.1");
        e.port = 70_000;
        assert!(to_request(&e).is_err());
        let mut e = event(events::Kind::FileRead, "/etc/passwd");
        e.kind = 99; // a kind from a newer daemon
        assert!(to_request(&e).is_err());
    }

    #[test]
    fn batch_survives_the_wire() {
        let mut e = event(events::Kind::FileWrite, "/tmp/x");
        e.seq = 7;
        e.set_verdict(events::Verdict::Deny);
        e.set_enforced(events::Enforced::Blocked);
        e.metadata.insert("k".into(), "v".into());
        let gap = Gap {
            first_seq: 8,
            last_seq: 10,
            dropped: 3,
            reason: GapReason::SpoolFull as i32,
            timestamp_ns: 1,
        };
        let batch = EventBatch {
            records: vec![
                Record {
                    record: Some(record::Record::Event(e)),
                },
                Record {
                    record: Some(record::Record::Gap(gap)),
                },
            ],
        };
        let decoded = EventBatch::decode(batch.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, batch);
    }
}
