//! The real `tyrd` against the real `tyr-server`, separate processes over real mTLS:
//! enrollment, event streaming stored exactly once (also across `kill -9` of either side),
//! every event accounted for when the spool overflows, policy pushes reaching the daemon.
//! Against a fake server: pings answered, configuration updates applied.
//!
//! Needs the `tyr-server` binary built (`cargo test --workspace` does; otherwise
//! `cargo build -p tyr-server` first).

use std::os::unix::fs::PermissionsExt;

use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tyr_proto::agent::agent_message::Msg;
use tyr_proto::agent::{ConfigUpdate, EventsAllow, Heartbeat, Ping, server_message};
use tyr_testkit::grpc::{FakePlane, FakeSession};
use tyr_testkit::{Admin, Db, TestDaemon, TestServer, wait_for, write_events};

const EVENTS: usize = 20_000;
const WAIT: Duration = Duration::from_secs(120);

fn daemon(server: &TestServer, events: Option<&Path>) -> TestDaemon {
    TestDaemon::start_bin(env!("CARGO_BIN_EXE_tyrd"), server, events)
}

/// Waits until the daemon has spooled at least `at_least` records and the server
/// acknowledged all of them; returns the spool's last seq.
async fn all_acked(d: &TestDaemon, at_least: u64) -> u64 {
    wait_for("every spooled record acknowledged", WAIT, || {
        let (last, acked) = d.spool_state();
        async move { (last >= at_least && acked == last).then_some(last) }
    })
    .await
}

async fn agent_id(d: &TestDaemon) -> String {
    wait_for("enrollment", WAIT, || {
        let id = d.agent_id();
        async move { id }
    })
    .await
}

async fn assert_stored_once(admin: &Admin, agent: &str, n: u64) {
    let seqs = admin.event_seqs(agent).await;
    assert_eq!(seqs.len() as u64, n, "stored events");
    assert!(
        seqs.iter().copied().eq(1..=n),
        "every seq 1..={n} exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_streams_and_stores_every_event_once() {
    let server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    write_events(&events, EVENTS);
    let d = daemon(&server, Some(&events));

    let id = agent_id(&d).await;
    let last = all_acked(&d, EVENTS as u64).await;
    assert_eq!(last, EVENTS as u64);
    assert_stored_once(&admin, &id, last).await;

    // Online, with the reported tier; the token is gone from tyrd.yaml; the key is private.
    let (_, agents) = admin.get("/api/v1/agents").await;
    let me = agents
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id.as_str()))
        .cloned()
        .expect("daemon listed");
    assert_eq!(me["status"], "online", "{me}");
    assert_eq!(me["name"], "test-host", "{me}");
    let yaml = std::fs::read_to_string(d.config_path()).expect("yaml");
    assert!(!yaml.contains("enrollment_token"), "{yaml}");
    let mode = std::fs::metadata(d.state_dir().join("agent.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(d.policy_version().as_deref(), Some("builtin-audit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    write_events(&events, EVENTS);
    let d = daemon(&server, Some(&events));
    let id = agent_id(&d).await;

    // Kill the server once some, but not all, events are stored.
    wait_for("first acknowledgements", WAIT, || {
        let (_, acked) = d.spool_state();
        async move { (acked > 0).then_some(()) }
    })
    .await;
    server.kill();
    let (_, acked_at_kill) = d.spool_state();
    assert!(
        acked_at_kill < EVENTS as u64,
        "killed too late to test anything"
    );
    server.restart().await;

    let last = all_acked(&d, EVENTS as u64).await;
    assert_stored_once(&admin, &id, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_mid_stream_resends_what_was_not_acknowledged() {
    let server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    write_events(&events, EVENTS);
    let mut d = daemon(&server, Some(&events));
    let id = agent_id(&d).await;

    wait_for("first acknowledgements", WAIT, || {
        let (_, acked) = d.spool_state();
        async move { (acked > 0).then_some(()) }
    })
    .await;
    d.kill();
    let (last_at_kill, acked_at_kill) = d.spool_state();
    assert!(
        acked_at_kill < last_at_kill || last_at_kill < EVENTS as u64,
        "killed too late"
    );

    // Restarted without a source: it only sends what its spool still holds.
    d.restart(None);
    let last = all_acked(&d, last_at_kill).await;
    assert_eq!(last, last_at_kill);
    assert_stored_once(&admin, &id, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_command_and_policy_push_to_a_running_daemon() {
    let server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;

    // A bad token: a clear error, exit 1, nothing stored, the token kept in the file.
    let bad = TestDaemon::configure(
        env!("CARGO_BIN_EXE_tyrd"),
        &server,
        "bad",
        Some("tyr_et_00000000000000000000000000000000"),
    );
    let out = bad.command(&["enroll"]).output().expect("tyrd enroll");
    assert!(!out.status.success());
    let err = bad.log();
    assert!(err.contains("unknown enrollment token"), "{err}");
    assert!(bad.agent_id().is_none());
    let yaml = std::fs::read_to_string(bad.config_path()).expect("yaml");
    assert!(yaml.contains("enrollment_token"));

    // `tyrd enroll` with a good token, then `tyrd run` streams with that identity.
    let (_, token) = admin.enrollment_token(1, 1).await;
    let mut d = TestDaemon::configure(env!("CARGO_BIN_EXE_tyrd"), &server, "host-b", Some(&token));
    let out = d.command(&["enroll"]).output().expect("tyrd enroll");
    assert!(out.status.success(), "{}", d.log());
    let id = d.agent_id().expect("enrolled");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    d.restart(None);
    wait_for("first policy", WAIT, || {
        let v = d.policy_version();
        async move { v }
    })
    .await;

    // An assignment reaches the running daemon promptly (SPEC: within 1 s; the bound here is
    // generous for loaded CI machines, the measured figure is in bench/BENCHMARKS.md).
    let yaml = "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: base\nspec:\n  default: allow\n  rules: []\n";
    let (status, body) = admin.post("/api/v1/policies", &json!({"yaml": yaml})).await;
    assert!(status == 200 || status == 201, "{body}");
    let version = body["version"].as_i64().expect("version");
    let started = Instant::now();
    let (status, body) = admin
        .post(
            "/api/v1/policy-assignments",
            &json!({"target_type": "daemon", "target_id": id, "policy": "base", "version": version}),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let want = format!("base=base@{version}");
    wait_for("policy push", WAIT, || {
        let v = d.policy_version();
        let ok = v.as_deref() == Some(want.as_str());
        async move { ok.then_some(()) }
    })
    .await;
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(3), "push took {latency:?}");

    // Revoked: the daemon is cut off and stays refused.
    let (status, _) = admin.delete(&format!("/api/v1/agents/{id}")).await;
    assert_eq!(status, 204);
    wait_for("the daemon to be refused", WAIT, || {
        let log = d.log();
        async move { log.contains("refused this daemon").then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_its_certificate_past_half_life() {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let server = TestServer::start(Db::Sqlite).await;
    let d = TestDaemon::configure(
        env!("CARGO_BIN_EXE_tyrd"),
        &server,
        "renewing",
        Some(&server.bootstrap_token),
    );
    let out = d.command(&["enroll"]).output().expect("tyrd enroll");
    assert!(out.status.success(), "{}", d.log());
    let id = d.agent_id().expect("enrolled");

    // Replace the certificate by one for the same key that is 20 of its 30 days old.
    let state = d.state_dir();
    let key = std::fs::read_to_string(state.join("agent.key")).expect("key");
    let old = tyr_testkit::grpc::issue_client_cert_for(
        &server.ca_pem(),
        &server.ca_key_pem(),
        &id,
        &key,
        (-20, 10),
    );
    std::fs::write(state.join("agent.pem"), &old.cert_pem).expect("write cert");
    // The server only accepts a daemon's current certificate: make this one current.
    server.set_current_cert(&id, &old.cert_pem).await;

    let mut d = d;
    d.restart(None);
    let renewed = wait_for("a renewed certificate", WAIT, || {
        let pem = std::fs::read_to_string(state.join("agent.pem")).unwrap_or_default();
        let fresh = pem != old.cert_pem && pem.contains("END CERTIFICATE");
        async move { fresh.then_some(pem) }
    })
    .await;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(renewed.as_bytes()).expect("pem");
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("der");
    let days_left = (cert.validity().not_after.timestamp()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64)
        / 86_400;
    assert!((29..=30).contains(&days_left), "{days_left} days");
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok()),
        Some(id.as_str())
    );

    // The next session uses the renewed certificate.
    d.restart(None);
    wait_for("a second session", WAIT, || {
        let n = d.log().matches("agent plane connected").count();
        async move { (n >= 2).then_some(()) }
    })
    .await;
}

/// A `tyrd run` enrolled with `plane`'s CA (identity written directly into its state
/// directory), reading no events; killed when dropped.
struct FakeDaemon {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl FakeDaemon {
    fn start(plane: &FakePlane, heartbeat_interval_s: u32) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        let agent_id = "0196a3b2-7d1e-7c00-8000-00000000fa4e";
        let creds = plane.credentials(agent_id);
        for (name, text) in [
            ("agent.key", creds.key_pem.as_str()),
            ("agent.pem", creds.cert_pem.as_str()),
            ("ca.pem", plane.ca_pem.as_str()),
            ("agent_id", agent_id),
        ] {
            std::fs::write(state.join(name), text).expect("identity file");
        }
        std::fs::set_permissions(
            state.join("agent.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("key mode");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &plane.ca_pem).expect("ca file");
        let yaml = format!(
            "server: \"{}\"\nname: fake-host\nca_file: \"{}\"\nstate_dir: \"{}\"\nheartbeat_interval_s: {heartbeat_interval_s}\nlog_level: info\n",
            plane.addr,
            ca_file.display(),
            state.display(),
        );
        let config = dir.path().join("tyrd.yaml");
        std::fs::write(&config, yaml).expect("tyrd.yaml");
        let events = dir.path().join("none.jsonl");
        std::fs::write(&events, "").expect("events file");
        let log = std::fs::File::create(dir.path().join("tyrd.log")).expect("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tyrd"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--events-from"])
            .arg(&events)
            .env("NO_COLOR", "1")
            .env("TYRD_BPF_PIN_DIR", "")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tyrd");
        FakeDaemon { dir, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tyrd.log")).unwrap_or_default()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next heartbeat within `timeout`, skipping other messages; `None` if none came.
async fn next_heartbeat(s: &mut FakeSession, timeout: Duration) -> Option<Heartbeat> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match s.recv(left).await? {
            Msg::Heartbeat(h) => return Some(h),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_pings_and_applies_config_updates() {
    let mut plane = FakePlane::start().await;
    // An hour between heartbeats: any later heartbeat is an answer to the server.
    let d = FakeDaemon::start(&plane, 3600);
    let mut s = plane
        .session(WAIT)
        .await
        .unwrap_or_else(|| panic!("no stream:\n{}", d.log()));
    assert!(
        matches!(s.recv(WAIT).await, Some(Msg::CapabilityReport(_))),
        "the capability report comes first"
    );
    next_heartbeat(&mut s, WAIT)
        .await
        .expect("the first heartbeat, at connect");

    // A Ping is answered by a heartbeat at once.
    let started = Instant::now();
    s.send(server_message::Msg::Ping(Ping { sent_at_ns: 1 }))
        .await;
    let hb = next_heartbeat(&mut s, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no answer to the ping:\n{}", d.log()));
    assert!(hb.sent_at_ns > 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A zero interval leaves it unchanged: no heartbeat follows.
    s.send(server_message::Msg::ConfigUpdate(ConfigUpdate::default()))
        .await;
    assert!(
        next_heartbeat(&mut s, Duration::from_millis(2500))
            .await
            .is_none()
    );

    // heartbeat_interval_s = 1: heartbeats every second from now on.
    s.send(server_message::Msg::ConfigUpdate(ConfigUpdate {
        heartbeat_interval_s: 1,
        ..ConfigUpdate::default()
    }))
    .await;
    let started = Instant::now();
    for _ in 0..3 {
        next_heartbeat(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("heartbeats every second:\n{}", d.log()));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        d.log().contains("heartbeat interval set by the server"),
        "{}",
        d.log()
    );

    // events.allow = all reaches the enforcer.
    s.send(server_message::Msg::ConfigUpdate(ConfigUpdate {
        events_allow: EventsAllow::All.into(),
        ..ConfigUpdate::default()
    }))
    .await;
    let log = tyr_testkit::wait_for("events.allow applied", WAIT, || {
        let log = d.log();
        std::future::ready(
            log.contains("events.allow set by the server")
                .then_some(log),
        )
    })
    .await;
    assert!(!log.contains("not applied"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_reports_exactly_the_lost_events() {
    const N: usize = 10_000;
    let mut server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;
    let mut d = TestDaemon::configure(
        env!("CARGO_BIN_EXE_tyrd"),
        &server,
        "spool-full",
        Some(&server.bootstrap_token),
    );
    // A 1 MB spool holds a few thousand of these events.
    let mut yaml = std::fs::read_to_string(d.config_path()).expect("yaml");
    yaml.push_str("buffer_size_mb: 1\n");
    std::fs::write(d.config_path(), yaml).expect("yaml");
    let out = d.command(&["enroll"]).output().expect("tyrd enroll");
    assert!(out.status.success(), "{}", d.log());
    let id = d.agent_id().expect("enrolled");

    // The server is down while N events arrive: the spool drops the oldest.
    server.kill();
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    write_events(&events, N);
    d.restart(Some(&events));
    wait_for("the event source read", WAIT, || {
        let done = d.log().contains("event source finished");
        async move { done.then_some(()) }
    })
    .await;
    assert!(d.log().contains("spool full"), "{}", d.log());

    // Back up: what is left is sent with its gap records, and the server accounts for
    // every event, stored or lost.
    server.restart().await;
    all_acked(&d, N as u64).await;
    let stored = admin.event_seqs(&id).await.len() as i64;
    let (status, me) = admin.get(&format!("/api/v1/agents/{id}")).await;
    assert_eq!(status, 200, "{me}");
    let lost = me["events_lost"].as_i64().expect("events_lost");
    assert!(lost > 0 && stored > 0, "stored {stored}, lost {lost}");
    assert_eq!(stored + lost, N as i64, "{me}");
    assert!(me["gap_records"].as_i64() >= Some(1), "{me}");
}

/// Why the kernel side cannot run here (the discovered-agents test needs it).
fn no_kernel_side() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let euid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    if euid != 0 {
        return Some("not root".into());
    }
    let report = tyrd::kernel::probe::probe();
    (report.tier == tyrd::kernel::probe::Tier::Observe)
        .then(|| format!("no tracepoint tier: {}", report.reasons.join("; ")))
}

/// `tyrd run`, stopped with SIGTERM (so it removes its cgroups) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The discovered agents of daemon `id` on the server.
async fn discovered(admin: &Admin, id: &str) -> Vec<serde_json::Value> {
    let (_, list) = admin
        .get(&format!("/api/v1/discovered-agents?agent_id={id}"))
        .await;
    list.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_agents_and_their_exit_reach_the_server() {
    if let Some(reason) = no_kernel_side() {
        tyr_testkit::skip(&reason);
        return;
    }
    let server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;
    let d = TestDaemon::configure(
        env!("CARGO_BIN_EXE_tyrd"),
        &server,
        "discovering",
        Some(&server.bootstrap_token),
    );
    let mut yaml = std::fs::read_to_string(d.config_path()).expect("tyrd.yaml");
    yaml.push_str("tier: tracepoint\n");
    std::fs::write(d.config_path(), yaml).expect("tyrd.yaml");
    // The built-in audit policy only: nothing is denied on this host.
    let _daemon = Running(
        d.command(&["run"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn tyrd"),
    );
    let id = agent_id(&d).await;
    wait_for("the first policy", WAIT, || {
        let v = d.policy_version();
        async move { v }
    })
    .await;

    // An agent started with `tyr run` is discovered, with its pid.
    let dir = tempfile::tempdir().expect("tempdir");
    let sleeper = dir.path().join("agent-sleeper");
    std::fs::copy("/bin/sleep", &sleeper).expect("copy sleep");
    let mut agent = std::process::Command::new(tyr_testkit::bin("tyr", "TYR_BIN"))
        .args(["run", "--agent-type", "claude-code", "--"])
        .env("TYR_AGENTS_CGROUP", d.agents_cgroup())
        .arg(&sleeper)
        .arg("60")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("tyr run");
    let pid = agent.id();
    let found = wait_for("the discovered agent on the server", WAIT, || {
        let admin = &admin;
        let id = id.clone();
        async move {
            discovered(admin, &id).await.into_iter().find(|a| {
                a["agent_type"] == "claude-code"
                    && a["pids"]
                        .as_array()
                        .is_some_and(|p| p.contains(&json!(pid)))
            })
        }
    })
    .await;
    let agent_uuid = found["id"].as_str().expect("id").to_owned();

    // An admin's reclassification reaches the daemon, which moves the live process.
    let (status, body) = admin
        .patch(
            &format!("/api/v1/discovered-agents/{agent_uuid}"),
            &json!({"agent_type": "codex"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let log = wait_for("the reclassification applied by the daemon", WAIT, || {
        let log = d.log();
        std::future::ready(
            log.contains("discovered agent reclassified by the server")
                .then_some(log),
        )
    })
    .await;
    assert!(log.contains("processes=1"), "{log}");

    // Its exit is reported at the next heartbeat: no live pids any more.
    let _ = agent.kill();
    let _ = agent.wait();
    wait_for("the agent's exit on the server", WAIT, || {
        let admin = &admin;
        let id = id.clone();
        let agent_uuid = agent_uuid.clone();
        async move {
            discovered(admin, &id).await.into_iter().find(|a| {
                a["id"] == agent_uuid.as_str()
                    && a["pids"]
                        .as_array()
                        .is_some_and(|p| !p.contains(&json!(pid)))
            })
        }
    })
    .await;
}
