//! Test-only helpers: the real `tyr-server` and `tyrd` binaries started as separate processes
//! on temporary directories and free ports ([`TestServer`], [`TestDaemon`]), an admin REST
//! client ([`Admin`]), agent-plane clients and certificates ([`grpc`]), and polling with a
//! deadline instead of sleeps ([`wait_for`]).
//!
//! Binaries are looked up next to the running test's directory (`target/<profile>/`), or at
//! `TYR_SERVER_BIN` / `TYRD_BIN`. Cargo builds a package's own binaries before its
//! integration tests; a test of one package that runs the other's binary needs it built
//! (`cargo test --workspace` does).

pub mod daemon;
pub mod grpc;
pub mod server;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use daemon::TestDaemon;
pub use server::{Admin, Db, TestServer};

/// Reports that a test cannot run here (`skipping: <reason>` on stderr) so the caller can
/// return. Under CI (`CI` set and not `false`), which provides root, BPF, QEMU and
/// PostgreSQL, a skip would hide a broken set-up: it panics instead.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("CI must run this test, but: {reason}");
    }
    eprintln!("skipping: {reason}");
}

/// How often [`wait_for`] re-checks.
const POLL: Duration = Duration::from_millis(20);

/// The path of binary `name` (see the crate documentation).
pub fn bin(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {name}) or set {env_override}",
        path.display()
    );
    path
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Polls `check` until it returns `Some` or `timeout` passes (then panics naming `what`).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Writes `n` events as JSON lines (the format of `tyrd run --events-from`): file reads of
/// `/data/f<i>` by a `claude-code` agent, alternating deny and allow, so that every line is
/// distinct (nothing is aggregated) and passes the default `events.allow: agents`. They are
/// timestamped now, so that the server's retention job keeps them.
pub fn write_events(path: &Path, n: usize) {
    use std::io::Write;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let now_ns = u64::try_from(now_ns).expect("time fits u64");
    let file = std::fs::File::create(path).expect("events file");
    let mut w = std::io::BufWriter::new(file);
    for i in 0..n {
        let verdict = if i % 2 == 0 { "DENY" } else { "ALLOW" };
        writeln!(
            w,
            r#"{{"kind":"FILE_READ","resource":"/data/f{i}","verdict":"{verdict}","pid":{},"timestamp_ns":{},"agent_type":"claude-code","policy_version":"builtin-audit"}}"#,
            1000 + i,
            now_ns + i as u64,
        )
        .expect("write event");
    }
    w.flush().expect("flush events");
}
