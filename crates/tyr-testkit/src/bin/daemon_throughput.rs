//! End-to-end throughput of one real `tyrd` streaming to a real `tyr-server` (separate
//! processes, mTLS): N events from `--events-from` go through the daemon's pipeline and
//! spool, over the agent plane, into the server's database; the run ends when the spool
//! reports every record acknowledged, then checks every seq 1..N is stored exactly once.
//!
//! `cargo build --release -p tyr-server -p tyrd -p tyr-testkit &&
//! target/release/daemon_throughput --events 100000`

use std::time::{Duration, Instant};

use tyr_testkit::{Db, TestDaemon, TestServer, wait_for, write_events};

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut events: u64 = 100_000;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--events", Some(v)) => events = v.parse().map_err(|_| "bad --events")?,
            _ => return Err(format!("usage: daemon_throughput [--events N] ({flag}?)")),
        }
    }
    let server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("events.jsonl");
    write_events(&file, usize::try_from(events).map_err(|e| e.to_string())?);

    let started = Instant::now();
    let daemon = TestDaemon::start(&server, Some(&file));
    let id = wait_for("enrollment", Duration::from_secs(60), || {
        let id = daemon.agent_id();
        async move { id }
    })
    .await;
    let enrolled = started.elapsed();
    wait_for("all acknowledged", Duration::from_secs(1800), || {
        let (last, acked) = daemon.spool_state();
        async move { (last >= events && acked == last).then_some(()) }
    })
    .await;
    let total = started.elapsed();
    let seqs = admin.event_seqs(&id).await;
    let exact = seqs.len() as u64 == events && seqs.iter().copied().eq(1..=events);
    println!("| events | enrollment | all stored and acknowledged | events/s | exactly once |");
    println!("|---|---|---|---|---|");
    println!(
        "| {events} | {:.0} ms | {:.2} s | {:.0} | {} |",
        enrolled.as_secs_f64() * 1e3,
        total.as_secs_f64(),
        events as f64 / total.as_secs_f64(),
        if exact { "yes" } else { "NO" }
    );
    if exact {
        Ok(())
    } else {
        Err(format!("{} stored for {events} events", seqs.len()))
    }
}
