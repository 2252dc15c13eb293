//! Agent-plane load simulator: N simulated daemons in one process, each with its own key,
//! certificate and mTLS connection, against a real `tyr-server` process (SQLite, or
//! PostgreSQL with `--postgres URL`). Measures registration, event ingest (batches of 100,
//! up to 8 in flight per daemon, each acknowledged after commit) and policy-push fan-out; or,
//! with `--hold SECONDS`, keeps every daemon connected and heartbeating (every
//! `--heartbeat` seconds, default 30) and samples how many the server reports online, with
//! the server's CPU and RSS.
//!
//! `cargo build --release -p tyr-server -p tyr-testkit && target/release/agent_load
//! --daemons 200 --events 2000` or `… --daemons 10000 --hold 100`

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
    /// Seconds to hold the fleet connected (0: the ingest and fan-out run).
    hold: u64,
    heartbeat: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        daemons: 100,
        events: 1000,
        db: Db::Sqlite,
        hold: 0,
        heartbeat: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--daemons" => args.daemons = value.parse().map_err(|_| "bad --daemons")?,
            "--events" => args.events = value.parse().map_err(|_| "bad --events")?,
            "--postgres" => args.db = Db::Postgres(value),
            "--hold" => args.hold = value.parse().map_err(|_| "bad --hold")?,
            "--heartbeat" => {
                args.heartbeat = value
                    .parse()
                    .ok()
                    .filter(|&h| h > 0)
                    .ok_or("bad --heartbeat")?;
            }
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

/// Registers `n` daemons with `token`, 32 at a time.
async fn register_all(
    server: &Arc<TestServer>,
    token: &Arc<String>,
    n: usize,
) -> Result<Vec<grpc::Credentials>, String> {
    let mut creds = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
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
    Ok(creds)
}

/// Opens every daemon's stream (64 at a time) and waits for its first PolicyPush.
async fn connect_all(
    server: &Arc<TestServer>,
    creds: &[grpc::Credentials],
) -> Result<Vec<OpenStream>, String> {
    let mut streams = Vec::with_capacity(creds.len());
    for chunk in creds.chunks(64) {
        let opens: Vec<_> = chunk
            .iter()
            .map(|c| {
                let server = server.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    let mut s = grpc::open_stream(&server, Some(&c)).await?;
                    match next_msg(&mut s).await? {
                        server_message::Msg::PolicyPush(_) => Ok(s),
                        other => Err(format!("expected a PolicyPush, got {other:?}")),
                    }
                })
            })
            .collect();
        for o in opens {
            streams.push(o.await.map_err(|e| e.to_string())??);
        }
    }
    Ok(streams)
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
    let creds = register_all(&server, &token, args.daemons).await?;
    let register_time = started.elapsed();

    let started = Instant::now();
    let streams = connect_all(&server, &creds).await?;
    let connect_time = started.elapsed();
    if args.hold > 0 {
        return hold::run(
            &server,
            &admin,
            streams,
            &args,
            (register_time, connect_time),
        )
        .await;
    }

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

/// `--hold`: the fleet stays connected and heartbeats; the server's view is sampled.
mod hold {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    use tokio::sync::watch;
    use tyr_proto::agent::{AgentMessage, Heartbeat, agent_message::Msg};
    use tyr_testkit::grpc::OpenStream;
    use tyr_testkit::{Admin, TestServer};

    use super::{Args, ms, now_ns};

    /// One server sample.
    struct Sample {
        at: Duration,
        online: usize,
        /// Last heartbeat within one interval (+ 5 s).
        fresh: usize,
        /// Server CPU since the previous sample, in % of one core.
        cpu: f64,
        rss_mb: u64,
    }

    /// The server process's pid, found by its data directory in `/proc/*/environ`.
    fn server_pid(server: &TestServer) -> Option<u32> {
        let want = format!("TYR_DATA_DIR={}", server.data_dir.path().display());
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            env.split(|&b| b == 0)
                .any(|v| v == want.as_bytes())
                .then_some(pid)
        })
    }

    /// `(utime + stime in clock ticks, RSS in MB)` of `pid`.
    fn usage(pid: u32) -> (u64, u64) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): 14th and 15th overall.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        (ticks, rss_kb / 1024)
    }

    /// `(online, fresh)`: daemons the server reports online, and those whose last heartbeat
    /// is younger than `fresh` (one interval and some slack).
    async fn online(admin: &Admin, fresh: Duration) -> Result<(usize, usize), String> {
        let (status, list) = admin.get("/api/v1/agents").await;
        if status != 200 {
            return Err(format!("GET /agents: {status}"));
        }
        let now = OffsetDateTime::now_utc();
        let list = list.as_array().cloned().unwrap_or_default();
        let online = list.iter().filter(|d| d["status"] == "online").count();
        let fresh = list
            .iter()
            .filter_map(|d| OffsetDateTime::parse(d["last_seen"].as_str()?, &Rfc3339).ok())
            .filter(|&t| (now - t).unsigned_abs() < fresh)
            .count();
        Ok((online, fresh))
    }

    /// One daemon: a heartbeat every `period` (the first after `offset`), server messages
    /// read and dropped, until `stop`. `Err` when the stream ends early.
    async fn daemon(
        mut s: OpenStream,
        period: Duration,
        offset: Duration,
        mut stop: watch::Receiver<bool>,
        sent: Arc<AtomicUsize>,
    ) -> Result<(), String> {
        let start = tokio::time::Instant::now() + offset;
        let mut tick = tokio::time::interval_at(start, period);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let hb = AgentMessage {
                        msg: Some(Msg::Heartbeat(Heartbeat { sent_at_ns: now_ns(), ..Heartbeat::default() })),
                    };
                    s.tx.send(hb).await.map_err(|e| e.to_string())?;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                m = s.rx.message() => match m {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("stream ended".into()),
                    Err(status) => return Err(status.to_string()),
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Holds `streams` for `args.hold` seconds, sampling every heartbeat interval; prints a
    /// table row and the samples.
    pub async fn run(
        server: &TestServer,
        admin: &Admin,
        streams: Vec<OpenStream>,
        args: &Args,
        (register_time, connect_time): (Duration, Duration),
    ) -> Result<(), String> {
        let pid = server_pid(server).ok_or("tyr-server process not found")?;
        let tck: f64 = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        let period = Duration::from_secs(args.heartbeat);
        let n = streams.len();
        let (stop_tx, stop) = watch::channel(false);
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                // Heartbeats spread over the interval, as real daemons' would be.
                let offset = period.mul_f64(i as f64 / n as f64);
                tokio::spawn(daemon(s, period, offset, stop.clone(), sent.clone()))
            })
            .collect();
        let started = Instant::now();
        let (mut ticks, _) = usage(pid);
        let mut last = started;
        let mut samples = Vec::new();
        let end = started + Duration::from_secs(args.hold);
        loop {
            let next = (last + period).min(end);
            tokio::time::sleep_until(next.into()).await;
            let (t, rss_mb) = usage(pid);
            let cpu = t.saturating_sub(ticks) as f64 / tck / last.elapsed().as_secs_f64() * 100.0;
            ticks = t;
            last = Instant::now();
            let (online, fresh) = online(admin, period + Duration::from_secs(5)).await?;
            samples.push(Sample {
                at: started.elapsed(),
                online,
                fresh,
                cpu,
                rss_mb,
            });
            if Instant::now() >= end {
                break;
            }
        }
        let _ = stop_tx.send(true);
        let mut ended_early = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.map_err(|e| e.to_string())? {
                ended_early.push(e);
            }
        }
        let min_online = samples.iter().map(|s| s.online).min().unwrap_or(0);
        // The first sample comes before every daemon's first heartbeat of the hold.
        let min_fresh = samples.iter().skip(1).map(|s| s.fresh).min().unwrap_or(0);
        let cpu = samples.iter().map(|s| s.cpu).sum::<f64>() / samples.len().max(1) as f64;
        let rss = samples.iter().map(|s| s.rss_mb).max().unwrap_or(0);
        println!(
            "| daemons | heartbeat | held | register all | connect all | online (min over samples) | heartbeat < interval + 5 s ago (min after the first interval) | streams ended early | heartbeats sent | server CPU (avg, % of a core) | server RSS (max) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {n} | {} s | {} s | {} | {} | {min_online} | {min_fresh} | {} | {} | {cpu:.1} | {rss} MB |",
            args.heartbeat,
            args.hold,
            ms(register_time),
            ms(connect_time),
            ended_early.len(),
            sent.load(Ordering::Relaxed),
        );
        for s in &samples {
            println!(
                "t={:>5.1} s online={} fresh={} cpu={:.1}% rss={} MB",
                s.at.as_secs_f64(),
                s.online,
                s.fresh,
                s.cpu,
                s.rss_mb
            );
        }
        if let Some(e) = ended_early.first() {
            println!("first early end: {e}");
        }
        Ok(())
    }
}
