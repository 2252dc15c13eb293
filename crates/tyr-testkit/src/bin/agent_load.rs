//! Agent-plane load simulator: N simulated daemons in one process, each with its own key,
//! certificate and mTLS connection, against a real `tyr-server` process (SQLite, or
//! PostgreSQL with `--postgres URL`). Measures registration, event ingest (batches of 100,
//! up to 8 in flight per daemon, each acknowledged after commit) and policy-push fan-out.
//!
//! `cargo build --release -p tyr-server -p tyr-testkit && target/release/agent_load
//! --daemons 200 --events 2000`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::Barrier;
use tyr_proto::agent::{AgentMessage, agent_message::Msg, server_message};
use tyr_proto::events::{self, EventBatch, Record, record};
use tyr_testkit::grpc::{self, OpenStream};
use tyr_testkit::{Db, TestServer};

const BATCH: u64 = 100;
const WINDOW: usize = 8;

struct Args {
    daemons: usize,
    events: u64,
    db: Db,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        daemons: 100,
        events: 1000,
        db: Db::Sqlite,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--daemons" => args.daemons = value.parse().map_err(|_| "bad --daemons")?,
            "--events" => args.events = value.parse().map_err(|_| "bad --events")?,
            "--postgres" => args.db = Db::Postgres(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn event(seq: u64, now_ns: u64) -> Record {
    Record {
        record: Some(record::Record::Event(events::Event {
            seq,
            kind: events::Kind::FileRead.into(),
            resource: format!("/home/dev/project/src/file{}.rs", seq % 500),
            verdict: events::Verdict::Allow.into(),
            enforced: events::Enforced::None.into(),
            severity: events::Severity::Low.into(),
            policy_version: "builtin-audit".into(),
            pid: 4242,
            process_exe: "/usr/bin/node".into(),
            agent_type: "claude-code".into(),
            timestamp_ns: now_ns + seq,
            ..events::Event::default()
        })),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn next_msg(s: &mut OpenStream) -> Result<server_message::Msg, String> {
    match tokio::time::timeout(Duration::from_secs(60), s.rx.message()).await {
        Ok(Ok(Some(m))) => m.msg.ok_or_else(|| "empty message".to_owned()),
        Ok(Ok(None)) => Err("stream ended".into()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("no message within 60 s".into()),
    }
}

/// Sends `n` events in batches; returns each batch's acknowledgement latency.
async fn stream_events(s: &mut OpenStream, n: u64) -> Result<Vec<Duration>, String> {
    let base = now_ns();
    let mut sent: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut next = 1;
    let mut latencies = Vec::new();
    while next <= n || !sent.is_empty() {
        while next <= n && sent.len() < WINDOW {
            let last = (next + BATCH - 1).min(n);
            let records = (next..=last).map(|q| event(q, base)).collect();
            let msg = AgentMessage {
                msg: Some(Msg::EventBatch(EventBatch { records })),
            };
            s.tx.send(msg).await.map_err(|e| e.to_string())?;
            sent.push_back((last, Instant::now()));
            next = last + 1;
        }
        match next_msg(s).await? {
            server_message::Msg::EventAck(a) => {
                let (last, at) = sent.pop_front().ok_or("unexpected ack")?;
                if a.seq != last {
                    return Err(format!("ack {} for batch ending {last}", a.seq));
                }
                latencies.push(at.elapsed());
            }
            _ => continue,
        }
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let server = Arc::new(TestServer::start(args.db.clone()).await);
    let admin = server.admin().await;
    // One token for the whole fleet (the bootstrap token allows 1,000 uses).
    let max_uses = u32::try_from(args.daemons).map_err(|_| "too many daemons")?;
    let token = Arc::new(admin.enrollment_token(max_uses, 1).await.1);

    let started = Instant::now();
    let mut creds = Vec::with_capacity(args.daemons);
    for chunk in (0..args.daemons).collect::<Vec<_>>().chunks(32) {
        let regs: Vec<_> = chunk
            .iter()
            .map(|_| {
                let s = server.clone();
                let token = token.clone();
                tokio::spawn(async move { grpc::register(&s, &token).await })
            })
            .collect();
        for r in regs {
            creds.push(
                r.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let register_time = started.elapsed();

    let started = Instant::now();
    let mut streams = Vec::with_capacity(args.daemons);
    for c in &creds {
        let mut s = grpc::open_stream(&server, Some(c)).await?;
        match next_msg(&mut s).await? {
            server_message::Msg::PolicyPush(_) => streams.push(s),
            other => return Err(format!("expected a PolicyPush, got {other:?}")),
        }
    }
    let connect_time = started.elapsed();

    // Ingest: every daemon streams its events at once.
    let barrier = Arc::new(Barrier::new(args.daemons + 1));
    let mut tasks = Vec::new();
    for mut s in streams {
        let barrier = barrier.clone();
        let n = args.events;
        tasks.push(tokio::spawn(async move {
            let lat = stream_events(&mut s, n).await?;
            barrier.wait().await;
            // Fan-out: wait for the push of the overlay assigned below.
            loop {
                if let server_message::Msg::PolicyPush(p) = next_msg(&mut s).await?
                    && p.policy_version.contains("claude-code=")
                {
                    return Ok::<_, String>((lat, Instant::now()));
                }
            }
        }));
    }
    let ingest_started = Instant::now();
    barrier.wait().await;
    let ingest_time = ingest_started.elapsed();

    let yaml = "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: load\nspec:\n  default: allow\n  rules:\n    - {name: ssh, action: file_read, resource_pattern: \"/home/*/.ssh/**\", verdict: deny}\n";
    let (_, body) = admin.post("/api/v1/policies", &json!({"yaml": yaml})).await;
    let version = body["version"].as_i64().ok_or("no policy version")?;
    let posted = Instant::now();
    let (status, body) = admin
        .post(
            "/api/v1/policy-assignments",
            &json!({"target_type": "agent_type", "target_id": "claude-code", "policy": "load", "version": version}),
        )
        .await;
    if !(200..300).contains(&status) {
        return Err(format!("assignment failed: {status} {body}"));
    }
    let mut acks = Vec::new();
    let mut pushes = Vec::new();
    for t in tasks {
        let (lat, got) = t.await.map_err(|e| e.to_string())??;
        acks.extend(lat);
        pushes.push(got.saturating_duration_since(posted));
    }
    acks.sort_unstable();
    pushes.sort_unstable();
    let total = args.daemons as u64 * args.events;
    println!(
        "| daemons | events/daemon | register all | connect all (first push) | ingest | events/s | batch ack p50 / p99 | push fan-out p50 / max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {:.0} | {} / {} | {} / {} |",
        args.daemons,
        args.events,
        ms(register_time),
        ms(connect_time),
        ms(ingest_time),
        total as f64 / ingest_time.as_secs_f64(),
        ms(percentile(&acks, 0.5)),
        ms(percentile(&acks, 0.99)),
        ms(percentile(&pushes, 0.5)),
        ms(pushes.last().copied().unwrap_or_default()),
    );
    Ok(())
}
