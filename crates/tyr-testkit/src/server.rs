//! A real `tyr-server` process on a temporary data directory and free ports.

use std::fs::OpenOptions;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{bin, free_port, wait_for};

/// Admin credentials set up by [`TestServer::admin`].
pub const ADMIN: &str = "admin";
/// Password of [`ADMIN`].
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// Time allowed for the server to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many port pairs [`TestServer::start`] tries before giving up.
const START_ATTEMPTS: usize = 5;

/// The database of a test server.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite in the data directory.
    Sqlite,
    /// This PostgreSQL URL (the database must exist and be empty).
    Postgres(String),
}

/// A running `tyr-server`; killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// `TYR_DATA_DIR` (keys, CA, SQLite database, `server.log`).
    pub data_dir: TempDir,
    /// REST port on 127.0.0.1.
    pub rest_port: u16,
    /// gRPC port on 127.0.0.1.
    pub grpc_port: u16,
    /// `TYR_BOOTSTRAP_ENROLLMENT_TOKEN`.
    pub bootstrap_token: String,
    /// HTTPS client trusting only the server's CA.
    pub http: Client,
    db: Db,
    bin: PathBuf,
    child: Option<Child>,
}

fn random_hex() -> String {
    let s = RandomState::new();
    format!("{:016x}{:016x}", s.hash_one(1u8), s.hash_one(2u8))
}

/// An HTTPS client trusting only `ca_pem`.
pub fn client_trusting(ca_pem: &str) -> Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client")
}

impl TestServer {
    /// Starts the `tyr-server` found by [`bin`] on `db` and waits for `/health`.
    pub async fn start(db: Db) -> TestServer {
        Self::start_bin(bin("tyr-server", "TYR_SERVER_BIN"), db).await
    }

    /// Starts the binary `bin` (e.g. `env!("CARGO_BIN_EXE_tyr-server")`).
    pub async fn start_bin(bin: impl Into<PathBuf>, db: Db) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut s = TestServer {
            data_dir: tempfile::tempdir().expect("tempdir"),
            rest_port: free_port(),
            grpc_port: free_port(),
            bootstrap_token: format!("tyr_et_{}", random_hex()),
            http: Client::new(),
            db,
            bin: bin.into(),
            child: None,
        };
        // A port found free can be taken by a parallel test before the server binds it:
        // then start again on other ports.
        for _ in 0..START_ATTEMPTS {
            match s.try_spawn().await {
                Ok(()) => return s,
                Err(log) if log.contains("Address already in use") => {
                    s.rest_port = free_port();
                    s.grpc_port = free_port();
                }
                Err(log) => panic!("tyr-server exited:\n{log}"),
            }
        }
        panic!(
            "tyr-server found no free port in {START_ATTEMPTS} attempts:\n{}",
            s.log()
        );
    }

    /// Starts the server process on its ports and waits for `/health`; panics if it exits.
    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("tyr-server exited:\n{log}");
        }
    }

    /// Like [`Self::spawn`], but an early exit returns the log instead of panicking.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        let mut cmd = Command::new(&self.bin);
        cmd.env("TYR_DATA_DIR", self.data_dir.path())
            .env("TYR_REST_BIND", format!("127.0.0.1:{}", self.rest_port))
            .env("TYR_GRPC_BIND", format!("127.0.0.1:{}", self.grpc_port))
            .env("TYR_SERVER_NAMES", "localhost,127.0.0.1")
            .env("TYR_BOOTSTRAP_ENROLLMENT_TOKEN", &self.bootstrap_token)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Db::Postgres(url) = &self.db {
            cmd.env("DATABASE_URL", url);
        }
        self.child = Some(cmd.spawn().expect("spawn tyr-server"));
        let ca = self.data_dir.path().join("ca.pem");
        let health = self.url("/health");
        let mut client: Option<Client> = None;
        let log = self.log_path();
        let child = self.child.as_mut().expect("child");
        let started = wait_for("tyr-server /health", START_TIMEOUT, || {
            let exited = match child.try_wait() {
                Ok(Some(status)) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    Some(format!("exit {status}:\n{text}"))
                }
                _ => None,
            };
            if client.is_none() && ca.exists() {
                client = std::fs::read_to_string(&ca)
                    .ok()
                    .filter(|pem| pem.contains("END CERTIFICATE"))
                    .map(|pem| client_trusting(&pem));
            }
            let c = client.clone();
            let health = health.clone();
            async move {
                if let Some(log) = exited {
                    return Some(Err(log));
                }
                let c = c?;
                let ok = c.get(&health).send().await.ok()?.status().is_success();
                ok.then_some(Ok(c))
            }
        })
        .await;
        self.child.take_if(|_| started.is_err());
        self.http = started?;
        Ok(())
    }

    /// Records `cert_pem` as the current certificate of daemon `agent_id`, as a renewal does,
    /// so that a certificate a test issued itself opens streams (SQLite servers only).
    pub async fn set_current_cert(&self, agent_id: &str, cert_pem: &str) {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        use sha2::Digest;
        assert!(
            matches!(self.db, Db::Sqlite),
            "set_current_cert needs SQLite"
        );
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate pem");
        let fingerprint = hex::encode(sha2::Sha256::digest(der.as_ref()));
        let url = format!("sqlite://{}", self.data_dir.path().join("tyr.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.expect("open tyr.db");
        let done = sqlx::query("UPDATE daemons SET cert_fingerprint = $1 WHERE id = $2")
            .bind(fingerprint)
            .bind(agent_id)
            .execute(&pool)
            .await
            .expect("update daemon");
        assert_eq!(done.rows_affected(), 1, "no daemon {agent_id}");
        pool.close().await;
    }

    /// The server's log (stderr), appended across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("server.log")
    }

    /// The log as text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `https://127.0.0.1:<rest_port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.rest_port)
    }

    /// `127.0.0.1:<grpc_port>`, as in `tyrd.yaml`'s `server`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// Path of the CA certificate (`ca_file` for daemons).
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.path().join("ca.pem")
    }

    /// PEM of the CA certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_file()).expect("ca.pem")
    }

    /// PEM of the CA key (to issue certificates in tests).
    pub fn ca_key_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("ca.key")).expect("ca.key")
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns whether it exited with
    /// success.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM failed");
        wait_for("tyr-server to exit", timeout, || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await
        .success()
    }

    /// Starts the server again on the same data directory, database and ports.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Sets up the first admin and logs in.
    pub async fn admin(&self) -> Admin {
        let r = self
            .http
            .post(self.url("/api/v1/auth/setup"))
            .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("setup");
        assert!(
            r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT,
            "setup: {}",
            r.status()
        );
        let r = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("login");
        let body: Value = r.json().await.expect("login json");
        Admin {
            http: self.http.clone(),
            base: self.url(""),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An admin's REST session.
#[derive(Debug, Clone)]
pub struct Admin {
    http: Client,
    base: String,
    /// The JWT.
    pub token: String,
}

impl Admin {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.bearer_auth(&self.token).send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET path` → (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// Every stored event `seq` of daemon `agent_id` (all pages), sorted, duplicates kept.
    pub async fn event_seqs(&self, agent_id: &str) -> Vec<u64> {
        let mut seqs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/events?agent_id={agent_id}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "{body}");
            let events = body["events"].as_array().cloned().unwrap_or_default();
            seqs.extend(events.iter().filter_map(|e| e["seq"].as_u64()));
            match body["next_cursor"].as_str() {
                Some(c) if !events.is_empty() => cursor = Some(c.to_owned()),
                _ => break,
            }
        }
        seqs.sort_unstable();
        seqs
    }

    /// Creates an enrollment token; returns `(id, plaintext)`.
    pub async fn enrollment_token(&self, max_uses: u32, expires_hours: u32) -> (String, String) {
        let (status, body) = self
            .post(
                "/api/v1/enrollment-tokens",
                &json!({"label": "test", "max_uses": max_uses, "expires_hours": expires_hours}),
            )
            .await;
        assert!(
            status == 200 || status == 201,
            "create token: {status} {body}"
        );
        (
            body["id"].as_str().expect("token id").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }
}
