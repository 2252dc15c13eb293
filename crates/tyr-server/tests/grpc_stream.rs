//! `Stream` against the real `tyr-server` process over real mTLS, the test playing the
//! daemon: who is refused, policy pushes on connect and on assignment changes, event batches
//! acknowledged once and stored once, revocation cutting a live stream.

use std::time::{Duration, Instant};

use serde_json::json;
use tyr_proto::agent::{
    AgentMessage, Heartbeat, RenewRequest, ServerMessage, agent_message::Msg, server_message,
};
use tyr_proto::events::{self, EventBatch, Record, record};
use tyr_testkit::grpc::{self, Credentials, OpenStream, issue_client_cert, other_ca};
use tyr_testkit::{Admin, Db, TestServer};

const WAIT: Duration = Duration::from_secs(10);

mod common;
use common::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_tyr-server");

async fn server() -> TestServer {
    TestServer::start_bin(BIN, Db::Sqlite).await
}

async fn next(s: &mut OpenStream) -> Result<server_message::Msg, tonic::Status> {
    match tokio::time::timeout(WAIT, s.rx.message()).await {
        Ok(Ok(Some(ServerMessage { msg: Some(m) }))) => Ok(m),
        Ok(Ok(other)) => panic!("stream ended or empty message: {other:?}"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no server message within {WAIT:?}"),
    }
}

async fn send(s: &OpenStream, msg: Msg) {
    s.tx.send(AgentMessage { msg: Some(msg) })
        .await
        .expect("send");
}

fn push_version(m: server_message::Msg) -> String {
    match m {
        server_message::Msg::PolicyPush(p) => {
            serde_json::from_str::<serde_json::Value>(&p.effective_set_json).expect("json set");
            p.policy_version
        }
        other => panic!("expected a PolicyPush, got {other:?}"),
    }
}

async fn connected(server: &TestServer, creds: &Credentials) -> OpenStream {
    let mut s = grpc::open_stream(server, Some(creds))
        .await
        .expect("stream");
    assert_eq!(
        push_version(next(&mut s).await.expect("push")),
        "builtin-audit"
    );
    s
}

fn event(seq: u64) -> Record {
    Record {
        record: Some(record::Record::Event(events::Event {
            event_id: String::new(),
            seq,
            kind: events::Kind::FileRead.into(),
            resource: format!("/data/{seq}"),
            verdict: events::Verdict::Allow.into(),
            enforced: events::Enforced::None.into(),
            severity: events::Severity::Low.into(),
            policy_version: "builtin-audit".into(),
            pid: 42,
            timestamp_ns: 1_700_000_000_000_000_000 + seq,
            agent_type: "claude-code".into(),
            ..events::Event::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_refuses_callers_without_a_live_ca_certificate() {
    let server = server().await;
    let admin = server.admin().await;
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");

    // No client certificate: TLS lets it through (for Register), Stream does not.
    let err = grpc::open_stream(&server, None).await.expect_err("no cert");
    assert!(err.contains("Unauthenticated"), "{err}");

    // A certificate naming the same agent from another CA: refused by TLS.
    let (ca, key) = other_ca();
    let foreign = issue_client_cert(&ca, &key, &creds.agent_id, -1, 30);
    let err = grpc::open_stream(&server, Some(&foreign))
        .await
        .expect_err("foreign CA");
    assert!(
        !err.contains("PermissionDenied"),
        "refused by TLS, not later: {err}"
    );

    // An expired certificate from the server's own CA: refused by TLS.
    let expired = issue_client_cert(
        &server.ca_pem(),
        &server.ca_key_pem(),
        &creds.agent_id,
        -40,
        -10,
    );
    let err = grpc::open_stream(&server, Some(&expired))
        .await
        .expect_err("expired");
    assert!(
        !err.contains("PermissionDenied"),
        "refused by TLS, not later: {err}"
    );

    // A valid certificate from the server's CA for an agent that never enrolled.
    let stranger = issue_client_cert(
        &server.ca_pem(),
        &server.ca_key_pem(),
        "0196a3b2-7d1e-7c00-8000-000000000001",
        -1,
        30,
    );
    let err = grpc::open_stream(&server, Some(&stranger))
        .await
        .expect_err("unknown agent");
    assert!(err.contains("PermissionDenied"), "{err}");

    // A valid certificate from the server's CA naming the enrolled agent, but not the one
    // issued to it (a leaked CA key's product, or a certificate renewal replaced): refused.
    let other = issue_client_cert(
        &server.ca_pem(),
        &server.ca_key_pem(),
        &creds.agent_id,
        -1,
        30,
    );
    let err = grpc::open_stream(&server, Some(&other))
        .await
        .expect_err("not the daemon's current certificate");
    assert!(err.contains("PermissionDenied"), "{err}");

    // The real certificate works, until the daemon is revoked.
    drop(connected(&server, &creds).await);
    let (status, _) = admin
        .delete(&format!("/api/v1/agents/{}", creds.agent_id))
        .await;
    assert_eq!(status, 204);
    let err = grpc::open_stream(&server, Some(&creds))
        .await
        .expect_err("revoked");
    assert!(err.contains("PermissionDenied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclassifications_reach_the_daemon_live_and_after_a_reconnect() {
    let server = server().await;
    let admin = server.admin().await;
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");
    let mut s = connected(&server, &creds).await;
    let id = "0192f0c4-1111-8000-8000-000000000001";
    let update = tyr_proto::agent::DiscoveredAgentUpdate {
        id: id.into(),
        agent_type: "quarantine".into(),
        display_name: "python3".into(),
        process_signature: "quarantine:/usr/bin/python3:uid=1000".into(),
        pids: vec![4242],
        first_seen_ns: 1,
        last_seen_ns: 2,
    };
    send(&s, Msg::DiscoveredAgent(update.clone())).await;
    let found = tyr_testkit::wait_for("the discovered agent", WAIT, || {
        let admin = &admin;
        async move {
            let (status, _) = admin.get(&format!("/api/v1/discovered-agents/{id}")).await;
            (status == 200).then_some(())
        }
    });
    found.await;
    let (status, body) = admin
        .patch(
            &format!("/api/v1/discovered-agents/{id}"),
            &serde_json::json!({"agent_type": "codex"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let expected = server_message::Msg::Reclassify(tyr_proto::agent::Reclassify {
        discovered_agent_id: id.into(),
        agent_type: "codex".into(),
    });
    assert_eq!(next(&mut s).await.expect("live"), expected);

    // The daemon was away (or restarted) and still reports its own type: told again.
    drop(s);
    let mut s = connected(&server, &creds).await;
    send(&s, Msg::DiscoveredAgent(update.clone())).await;
    assert_eq!(next(&mut s).await.expect("replayed"), expected);
    // Once it reports the admin's type, nothing more is sent.
    let applied = tyr_proto::agent::DiscoveredAgentUpdate {
        agent_type: "codex".into(),
        ..update
    };
    send(&s, Msg::DiscoveredAgent(applied)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.rx.message())
            .await
            .is_err(),
        "no further message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_cuts_a_live_stream() {
    let server = server().await;
    let admin = server.admin().await;
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");
    let mut s = connected(&server, &creds).await;
    let started = Instant::now();
    let (status, _) = admin
        .delete(&format!("/api/v1/agents/{}", creds.agent_id))
        .await;
    assert_eq!(status, 204);
    let err = next(&mut s).await.expect_err("the stream must be cut");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

async fn apply_policy(admin: &Admin, name: &str) -> i64 {
    let yaml = format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  default: allow\n  rules:\n    - name: no-ssh\n      action: file_read\n      resource_pattern: \"/home/*/.ssh/**\"\n      verdict: deny\n"
    );
    let (status, body) = admin.post("/api/v1/policies", &json!({"yaml": yaml})).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    body["version"].as_i64().expect("version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_changes_are_pushed_to_connected_daemons_within_a_second() {
    let server = server().await;
    let admin = server.admin().await;
    let a = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("a");
    let b = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("b");
    let mut sa = connected(&server, &a).await;
    let mut sb = connected(&server, &b).await;
    let version = apply_policy(&admin, "laptops").await;

    // A base for daemon `a` reaches `a` only.
    let started = Instant::now();
    let (status, body) = admin
        .post(
            "/api/v1/policy-assignments",
            &json!({"target_type": "daemon", "target_id": a.agent_id, "policy": "laptops", "version": version}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let got = push_version(next(&mut sa).await.expect("push to a"));
    let latency = started.elapsed();
    assert_eq!(got, format!("base=laptops@{version}"));
    assert!(latency < Duration::from_secs(1), "push took {latency:?}");

    // An overlay for an agent type reaches every daemon.
    let started = Instant::now();
    let (status, body) = admin
        .post(
            "/api/v1/policy-assignments",
            &json!({"target_type": "agent_type", "target_id": "claude-code", "policy": "laptops", "version": version}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let got_b = push_version(next(&mut sb).await.expect("push to b"));
    let got_a = push_version(next(&mut sa).await.expect("push to a"));
    let latency = started.elapsed();
    assert_eq!(
        got_b,
        format!("builtin-audit;claude-code=laptops@{version}")
    );
    assert_eq!(
        got_a,
        format!("base=laptops@{version};claude-code=laptops@{version}")
    );
    assert!(latency < Duration::from_secs(1), "push took {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_after_commit_and_stored_once_sqlite() {
    batches_are_acknowledged_after_commit_and_stored_once(server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_after_commit_and_stored_once_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres, &std::env::temp_dir()).await else {
        return;
    };
    let server = TestServer::start_bin(BIN, Db::Postgres(db.url.clone())).await;
    batches_are_acknowledged_after_commit_and_stored_once(server).await;
    db.drop().await;
}

async fn batches_are_acknowledged_after_commit_and_stored_once(server: TestServer) {
    let admin = server.admin().await;
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");
    let mut s = connected(&server, &creds).await;

    send(&s, Msg::Heartbeat(Heartbeat::default())).await;
    let batch = |seqs: std::ops::RangeInclusive<u64>| {
        Msg::EventBatch(EventBatch {
            records: seqs.map(event).collect(),
        })
    };
    send(&s, batch(1..=50)).await;
    assert!(matches!(next(&mut s).await, Ok(server_message::Msg::EventAck(a)) if a.seq == 50));
    // A resend after a lost ack, overlapping the next records: stored once.
    send(&s, batch(41..=60)).await;
    assert!(matches!(next(&mut s).await, Ok(server_message::Msg::EventAck(a)) if a.seq == 60));
    let seqs = admin.event_seqs(&creds.agent_id).await;
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());

    let (_, agents) = admin.get("/api/v1/agents").await;
    let me = agents
        .as_array()
        .and_then(|a| a.iter().find(|d| d["id"] == creds.agent_id.as_str()))
        .cloned()
        .expect("listed");
    assert_eq!(me["status"], "online", "{me}");
    assert_eq!(me["tier"], "observe", "{me}");

    // A stream that does not start with a CapabilityReport is refused.
    let first = AgentMessage {
        msg: Some(Msg::Heartbeat(Heartbeat::default())),
    };
    let mut raw = grpc::open_stream_with(&server, Some(&creds), first)
        .await
        .expect("stream");
    let err = next(&mut raw).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_sessions_and_the_server_exits_promptly() {
    let mut server = server().await;
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");
    let mut s = connected(&server, &creds).await;
    let started = Instant::now();
    let (exited_ok, err) = tokio::join!(server.terminate(Duration::from_secs(15)), next(&mut s));
    let err = err.expect_err("the session must end");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(exited_ok, "{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

fn gap(first_seq: u64, last_seq: u64, dropped: u64, reason: events::GapReason) -> Record {
    Record {
        record: Some(record::Record::Gap(events::Gap {
            first_seq,
            last_seq,
            dropped,
            reason: reason.into(),
            timestamp_ns: 1_700_000_000_000_000_000,
        })),
    }
}

async fn agent(admin: &Admin, id: &str) -> serde_json::Value {
    let (status, me) = admin.get(&format!("/api/v1/agents/{id}")).await;
    assert_eq!(status, 200, "{me}");
    me
}

async fn metric(server: &TestServer, line_prefix: &str) -> u64 {
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_records_are_counted_once_before_their_ack_sqlite() {
    gap_records_are_counted_once_before_their_ack(server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_records_are_counted_once_before_their_ack_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres, &std::env::temp_dir()).await else {
        return;
    };
    let server = TestServer::start_bin(BIN, Db::Postgres(db.url.clone())).await;
    gap_records_are_counted_once_before_their_ack(server).await;
    db.drop().await;
}

async fn gap_records_are_counted_once_before_their_ack(server: TestServer) {
    use events::GapReason::{RingBuffer, SpoolFull};
    let admin = server.admin().await;
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");
    let id = creds.agent_id.as_str();
    let mut s = connected(&server, &creds).await;
    let me = agent(&admin, id).await;
    assert_eq!(
        (me["events_lost"].as_i64(), me["gap_records"].as_i64()),
        (Some(0), Some(0))
    );
    assert!(me["last_gap_at"].is_null(), "{me}");
    let batch = |records: Vec<Record>| Msg::EventBatch(EventBatch { records });

    // Records 1..=10 were dropped (spool full), then 11 and 12 arrived, then a ring-buffer
    // gap record numbered 13 reports 7 more; the ack covers 13 once both are committed.
    let records = vec![
        gap(1, 10, 10, SpoolFull),
        event(11),
        event(12),
        gap(13, 13, 7, RingBuffer),
    ];
    send(&s, batch(records.clone())).await;
    assert!(matches!(next(&mut s).await, Ok(server_message::Msg::EventAck(a)) if a.seq == 13));
    let me = agent(&admin, id).await;
    assert_eq!(me["events_lost"], 17, "{me}");
    assert_eq!(me["gap_records"], 2, "{me}");
    assert!(me["last_gap_at"].is_string(), "{me}");

    // Resent after a lost ack: counted once.
    send(&s, batch(records)).await;
    assert!(matches!(next(&mut s).await, Ok(server_message::Msg::EventAck(a)) if a.seq == 13));
    assert_eq!(agent(&admin, id).await["events_lost"], 17);

    // A spool-full gap that took the ring-buffer gap record 13 (7 events) and records
    // 14..=20 with it reports 14 lost: only the 7 not yet counted are added.
    send(&s, batch(vec![gap(13, 20, 14, SpoolFull), event(21)])).await;
    assert!(matches!(next(&mut s).await, Ok(server_message::Msg::EventAck(a)) if a.seq == 21));
    let me = agent(&admin, id).await;
    assert_eq!(me["events_lost"], 24, "{me}");
    assert_eq!(me["gap_records"], 3, "{me}");
    assert_eq!(admin.event_seqs(id).await, vec![11, 12, 21]);

    // In the list and in /metrics too.
    let (_, list) = admin.get("/api/v1/agents").await;
    let listed = list
        .as_array()
        .and_then(|a| a.iter().find(|d| d["id"] == id))
        .cloned()
        .expect("listed");
    assert_eq!(listed["events_lost"], 24, "{listed}");
    assert_eq!(
        metric(&server, "tyr_events_lost_total{reason=\"spool_full\"}").await,
        17
    );
    assert_eq!(
        metric(&server, "tyr_events_lost_total{reason=\"ring_buffer\"}").await,
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_applies_the_registration_csr_size_limit() {
    let server = server().await;
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");

    // A valid CSR behind explanatory text (which PEM allows), over the size limit: refused
    // before parsing, as at registration, and the stream ends.
    let (_, csr) = grpc::key_and_csr();
    let oversized = format!("{}\n{csr}", "x".repeat(tyr_server::pki::MAX_CSR_PEM));
    let mut s = connected(&server, &creds).await;
    send(&s, Msg::RenewRequest(RenewRequest { csr_pem: oversized })).await;
    let err = next(&mut s).await.expect_err("oversized CSR refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");

    // The same CSR without the padding renews the certificate.
    let mut s = connected(&server, &creds).await;
    send(&s, Msg::RenewRequest(RenewRequest { csr_pem: csr })).await;
    match next(&mut s).await.expect("renewed") {
        server_message::Msg::RenewResponse(r) => {
            assert!(r.client_cert_pem.contains("BEGIN CERTIFICATE"));
        }
        other => panic!("expected a RenewResponse, got {other:?}"),
    }
}
