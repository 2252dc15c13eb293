//! Benchmark (ignored by default): batched ingest throughput (with drift re-evaluation
//! against a 40-rule base policy) and `GET /events` latency with
//! two filters over a large table, on SQLite and (with `TYR_TEST_DATABASE_URL`) PostgreSQL.
//!
//! ```sh
//! BENCH_EVENTS=2000000 TYR_TEST_DATABASE_URL=postgres://… \
//!   cargo test --release -p tyr-server --test bench_events -- --ignored --nocapture --test-threads 1
//! ```

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::Value;
use support::daemon;
use tyr_proto::events::{Enforced, Event, Kind, Verdict};
use tyr_server::drift::Tier;
use tyr_server::ingest::ingest;
use tyr_server::store::time::now_ms;

const DAEMONS: usize = 20;
const MONTH_MS: u64 = 30 * 86_400_000;
const KINDS: [Kind; 5] = [
    Kind::FileRead,
    Kind::FileWrite,
    Kind::Exec,
    Kind::NetConnect,
    Kind::Tls,
];
const TYPES: [&str; 4] = ["claude-code", "cursor", "codex", ""];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A cheap deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Event `n` of `total`: timestamps rise over the 30 days before `now_ms` (events arrive
/// roughly in time order), with a few seconds of jitter.
fn make_event(rng: &mut Rng, d: usize, seq: u64, n: u64, total: u64, now_ms: u64) -> Event {
    let r = rng.next();
    let agent_type = ((r >> 28) % 4) as usize;
    let kind = KINDS[(r % 5) as usize];
    let resource = match kind {
        Kind::NetConnect => format!("10.{}.{}.{}", r % 200, (r >> 8) % 250, (r >> 16) % 250),
        Kind::Tls => format!("api{}.example.com", r % 50),
        Kind::Exec => format!("/usr/bin/tool{}", r % 300),
        _ => format!("/home/dev/project{}/src/file{}.rs", r % 40, (r >> 8) % 5000),
    };
    let verdict = match (r >> 20) % 20 {
        0..=15 => Verdict::Allow,
        16..=18 => Verdict::Deny,
        _ => Verdict::Alert,
    };
    let mut e = Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        seq,
        agent_type: TYPES[agent_type].to_owned(),
        // Classified agents' events name the discovered agent; unclassified processes' do not.
        discovered_agent_id: if TYPES[agent_type].is_empty() {
            String::new()
        } else {
            uuid::Uuid::from_u128(((d as u128) << 64) | agent_type as u128).to_string()
        },
        resource,
        policy_version: "base=bench@1".to_owned(),
        pid: 1000 + (r % 5000) as u32,
        ppid: 1,
        uid: 1000,
        process_exe: "/usr/bin/node".to_owned(),
        cmdline: "node /opt/agent/cli.js --session 42".to_owned(),
        timestamp_ns: (now_ms - MONTH_MS + n * MONTH_MS / total + (r >> 32) % 5000) * 1_000_000,
        ..Event::default()
    };
    e.set_kind(kind);
    e.set_verdict(verdict);
    e.set_enforced(if verdict == Verdict::Deny {
        Enforced::Blocked
    } else {
        Enforced::None
    });
    e
}

/// A 40-rule base policy: dotfile and secret reads/writes, exec of tools, egress.
/// Events in rising time order, with a gap-free `seq` per daemon.
struct Generator {
    seqs: [u64; DAEMONS],
    rng: Rng,
    now: u64,
    n: u64,
    total: u64,
}

impl Generator {
    /// The next `size` events of daemon `d`.
    fn batch(&mut self, d: usize, size: usize) -> (usize, Vec<Event>) {
        let events = (0..size)
            .map(|_| {
                self.seqs[d] += 1;
                self.n += 1;
                make_event(&mut self.rng, d, self.seqs[d], self.n, self.total, self.now)
            })
            .collect();
        (d, events)
    }
}

fn bench_policy() -> String {
    let mut y = String::from(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: bench}\nspec:\n  default: allow\n  rules:\n",
    );
    let dot = [
        ".ssh",
        ".aws",
        ".gnupg",
        ".kube",
        ".docker",
        ".config/gcloud",
        ".netrc",
        ".npmrc",
    ];
    for (i, d) in dot.iter().enumerate() {
        for action in ["file_read", "file_write"] {
            y.push_str(&format!(
                "    - {{name: dot-{i}-{action}, action: {action}, resource_pattern: \"~/{d}/**\", verdict: deny}}\n"
            ));
        }
    }
    for i in 0..12 {
        y.push_str(&format!(
            "    - {{name: secrets-{i}, action: file_read, resource_pattern: \"/home/dev/project{i}/**/.env*\", verdict: alert}}\n"
        ));
    }
    for i in 0..8 {
        y.push_str(&format!(
            "    - {{name: tool-{i}, action: exec, resource_pattern: \"/usr/bin/tool{i}*\", verdict: deny}}\n"
        ));
    }
    y.push_str("    - {name: egress, action: net_connect, cidrs: [\"10.0.0.0/8\"], ports: [443], verdict: alert}\n");
    y.push_str("    - {name: sni, action: tls_connect, sni_pattern: \"api1*.example.com\", verdict: deny}\n");
    y
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The settings of the PostgreSQL server that matter for ingest (bench/pg-tune.sh).
async fn pg_config(url: &str) -> String {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let mut out = Vec::new();
    for name in [
        "server_version",
        "shared_buffers",
        "max_wal_size",
        "checkpoint_timeout",
        "wal_compression",
        "wal_buffers",
        "synchronous_commit",
        "fsync",
    ] {
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&pool)
            .await
            .expect("show");
        out.push(format!("{name}={v}"));
    }
    pool.close().await;
    out.join(" ")
}

/// The 1, 5 and 15 minute load averages: other work on the machine.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn run(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let total = env_usize("BENCH_EVENTS", 1_000_000);
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let mut daemons = Vec::new();
    for i in 0..DAEMONS {
        daemons.push(daemon(&store, &format!("host-{i:02}"), Tier::Lsm).await);
    }
    support::apply(&s, &admin, &bench_policy()).await;
    for d in &daemons {
        support::assign(&s, &admin, "daemon", d, "bench", 1).await;
    }
    let mut events = Generator {
        seqs: [0; DAEMONS],
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        now: u64::try_from(now_ms()).expect("time") - 5000,
        n: 0,
        total: total as u64,
    };
    let mut stored = 0usize;
    let db = s.db.as_ref().expect("db");
    if backend == Backend::Postgres {
        println!("BENCH Postgres config: {}", pg_config(&db.url).await);
    }
    println!(
        "BENCH {backend:?} load average before ingest: {}",
        loadavg()
    );

    // Throughput at two batch sizes, 100 000 events each, one batch at a time (one stream).
    // Events are generated before the clock starts: the daemons' work, not the server's.
    for batch_size in [100usize, 1000] {
        let count = 100_000.min(total / 2);
        let batches: Vec<(usize, Vec<Event>)> = (0..count / batch_size)
            .map(|i| events.batch(i % DAEMONS, batch_size))
            .collect();
        let started = Instant::now();
        for (d, batch) in batches {
            ingest(&store, &fleet, &daemons[d], batch)
                .await
                .expect("ingest");
        }
        let secs = started.elapsed().as_secs_f64();
        stored += count;
        println!(
            "BENCH {backend:?} ingest batch={batch_size}: {count} events in {secs:.1} s = {:.0} events/s",
            count as f64 / secs
        );
    }

    // A fleet: every daemon streams batches of 100 at once (one task per daemon, as the
    // gRPC plane runs one session per daemon).
    let count = 100_000.min(total / 2) / (DAEMONS * 100) * DAEMONS * 100;
    if count > 0 {
        let per_daemon = count / DAEMONS / 100;
        let work: Vec<Vec<Vec<Event>>> = (0..DAEMONS)
            .map(|d| (0..per_daemon).map(|_| events.batch(d, 100).1).collect())
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .zip(daemons.clone())
            .map(|(batches, d)| {
                let (store, fleet) = (store.clone(), fleet.clone());
                tokio::spawn(async move {
                    for batch in batches {
                        ingest(&store, &fleet, &d, batch).await.expect("ingest");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("stream task");
        }
        let secs = started.elapsed().as_secs_f64();
        stored += count;
        println!(
            "BENCH {backend:?} ingest {DAEMONS} concurrent streams, batch=100: {count} events in {secs:.1} s = {:.0} events/s",
            count as f64 / secs
        );
    }

    // Fill the table with batches of 1000.
    let filled_from = stored;
    let started = Instant::now();
    while stored < total {
        let (d, batch) = events.batch((stored / 1000) % DAEMONS, 1000.min(total - stored));
        stored += batch.len();
        ingest(&store, &fleet, &daemons[d], batch)
            .await
            .expect("ingest");
    }
    println!(
        "BENCH {backend:?} loaded {stored} events (fill at {:.0} events/s)",
        (stored - filled_from) as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );

    println!("BENCH {backend:?} load average after ingest: {}", loadavg());

    // Planner statistics, as autovacuum (PostgreSQL) or `ANALYZE` (SQLite) keep them.
    let started = Instant::now();
    db.execute(match backend {
        Backend::Sqlite => "ANALYZE",
        Backend::Postgres => "ANALYZE events",
    })
    .await;
    println!(
        "BENCH {backend:?} ANALYZE in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // GET /events with two filters, first page of 100, over REST (TLS, JSON).
    let queries = [
        ("agent_id+verdict", "verdict=DENY&agent_id={d}"),
        ("agent_type+kind", "agent_type=cursor&kind=EXEC"),
        ("agent_id+since", "agent_id={d}&since=24h"),
    ];
    for (label, q) in queries {
        let mut lat = Vec::new();
        let mut rows = 0;
        for i in 0..200 {
            let path = format!(
                "/api/v1/events?limit=100&{}",
                q.replace("{d}", &daemons[i % DAEMONS])
            );
            let t = Instant::now();
            let r = s.get(&path).bearer_auth(&admin).send().await.expect("get");
            assert_eq!(r.status(), StatusCode::OK);
            let body: Value = r.json().await.expect("json");
            lat.push(t.elapsed());
            rows += body["events"].as_array().map_or(0, Vec::len);
        }
        lat.sort();
        println!(
            "BENCH {backend:?} GET /events {label} over {stored}: p50 {:.1} ms, p99 {:.1} ms ({} rows/page on average)",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            rows / 200
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release --ignored"]
async fn bench_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release --ignored"]
async fn bench_postgres() {
    run(Backend::Postgres).await;
}
