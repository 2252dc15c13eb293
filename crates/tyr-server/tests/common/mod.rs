//! Test harness: a real server on 127.0.0.1 with a free port and a temp data dir, over real
//! TLS trusting the generated CA, on SQLite or on a fresh PostgreSQL database.
#![allow(dead_code)] // each test binary uses a different subset

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tyr_server::app::{self, Running};
use tyr_server::config::Config;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `<name>_sqlite` and `<name>_postgres` tests running `body(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident => $body:ident;)+) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$body($crate::common::Backend::Sqlite).await;
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$body($crate::common::Backend::Postgres).await;
            })+
        }
    };
}

/// A database for one test; PostgreSQL ones are created fresh and dropped by [`TestDb::drop`].
pub struct TestDb {
    pub url: String,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// `None` (after printing why) when PostgreSQL is requested but not configured.
    pub async fn new(backend: Backend, data_dir: &std::path::Path) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb {
                url: format!("sqlite://{}", data_dir.join("tyr.db").display()),
                pg: None,
            }),
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var("TYR_TEST_DATABASE_URL") else {
                    tyr_testkit::skip("TYR_TEST_DATABASE_URL unset");
                    return None;
                };
                let mut rnd = [0u8; 8];
                getrandom::fill(&mut rnd).expect("random");
                let name = format!("tyr_test_{}", hex::encode(rnd));
                let pool = sqlx::PgPool::connect(&admin_url)
                    .await
                    .expect("connect TYR_TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(b, _)| b);
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    pg: Some((admin_url, name)),
                })
            }
        }
    }

    /// Runs `sql` on the database directly, behind the server's back (to damage a row, or
    /// `ANALYZE`).
    pub async fn execute(&self, sql: &'static str) {
        if self.pg.is_some() {
            let pool = sqlx::PgPool::connect(&self.url).await.expect("open db");
            sqlx::query(sql).execute(&pool).await.expect(sql);
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&self.url).await.expect("open db");
            sqlx::query(sql).execute(&pool).await.expect(sql);
            pool.close().await;
        }
    }

    /// Drops the PostgreSQL database. Clean-up only: a failure is reported, not fatal (FORCE
    /// cannot terminate a backend of another role, such as an autovacuum worker, and then
    /// PostgreSQL refuses the drop; the database is left behind as `tyr_test_*`).
    pub async fn drop(self) {
        if let Some((admin_url, name)) = self.pg {
            let pool = sqlx::PgPool::connect(&admin_url).await.expect("connect");
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&pool)
            .await;
            if let Err(e) = dropped {
                eprintln!("warning: test database {name} not dropped: {e}");
            }
            pool.close().await;
        }
    }
}

pub fn test_config(data_dir: &std::path::Path, database_url: &str) -> Config {
    let env = |k: &str| match k {
        "TYR_DATA_DIR" => Some(data_dir.display().to_string()),
        "DATABASE_URL" => Some(database_url.to_owned()),
        "TYR_REST_BIND" => Some("127.0.0.1:0".to_owned()),
        "TYR_GRPC_BIND" => Some("127.0.0.1:0".to_owned()),
        "TYR_SERVER_NAMES" => Some("localhost,127.0.0.1".to_owned()),
        _ => None,
    };
    Config::load(None, env).expect("test config")
}

pub use tyr_testkit::server::client_trusting;

pub struct TestServer {
    pub config: Config,
    pub client: Client,
    pub base: String,
    pub data_dir: TempDir,
    pub db: Option<TestDb>,
    running: Option<Running>,
}

impl TestServer {
    /// Starts a server, or `None` when the backend is unavailable (PostgreSQL without env).
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        app::install_crypto_provider();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::new(backend, data_dir.path()).await?;
        let mut config = test_config(data_dir.path(), &db.url);
        tweak(&mut config);
        let mut s = TestServer {
            config,
            client: Client::new(),
            base: String::new(),
            data_dir,
            db: Some(db),
            running: None,
        };
        s.boot().await;
        Some(s)
    }

    async fn boot(&mut self) {
        let running = app::start(&self.config).await.expect("server starts");
        let ca = std::fs::read_to_string(self.data_dir.path().join("ca.pem")).expect("ca.pem");
        self.client = client_trusting(&ca);
        let scheme = if self.config.rest_no_tls {
            "http"
        } else {
            "https"
        };
        self.base = format!("{scheme}://localhost:{}", running.rest_addr.port());
        self.running = Some(running);
    }

    /// Stops and starts again on the same data dir and database.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.config.rest_bind = "127.0.0.1:0".parse().expect("addr");
        self.boot().await;
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        if let Some(db) = self.db.take() {
            db.drop().await;
        }
    }

    /// The running server's store.
    pub fn running_store(&self) -> tyr_server::store::Store {
        self.running.as_ref().expect("running").store.clone()
    }

    /// The agent plane's (gRPC) address.
    pub fn grpc_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").grpc_addr
    }

    /// The running server's live state (event feed, notices, metrics).
    pub fn running_fleet(&self) -> std::sync::Arc<tyr_server::fleet::Fleet> {
        self.running.as_ref().expect("running").fleet.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(self.url(path))
    }

    /// Runs setup with [`ADMIN`] and returns an admin token.
    pub async fn setup_admin(&self) -> String {
        let r = self
            .post("/api/v1/auth/setup")
            .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("setup");
        assert_eq!(r.status(), StatusCode::CREATED);
        self.login(ADMIN, ADMIN_PASSWORD).await
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .post("/api/v1/auth/login")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), StatusCode::OK, "login {username}");
        let body: Value = r.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Creates a user (as `admin_token`) and returns `(id, token)`.
    pub async fn user(&self, admin_token: &str, username: &str, role: &str) -> (String, String) {
        let password = "viewer password 123";
        let r = self
            .post("/api/v1/users")
            .bearer_auth(admin_token)
            .json(&json!({"username": username, "password": password, "role": role}))
            .send()
            .await
            .expect("create user");
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        let id = body["id"].as_str().expect("id").to_owned();
        (id, self.login(username, password).await)
    }
}

/// Asserts an oversized body was refused: a `413 payload_too_large`, or, when the server
/// answered and closed before the client finished sending, a connection closed mid-body
/// (refusing without reading the body is the point of the limit).
pub async fn expect_too_large(sent: reqwest::Result<Response>) {
    match sent {
        Ok(r) => {
            expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        }
        Err(e) => {
            let chain = format!("{e:?}");
            assert!(
                e.is_request()
                    && (chain.contains("BrokenPipe") || chain.contains("ConnectionReset")),
                "neither a 413 nor a refused body: {chain}"
            );
        }
    }
}

/// Asserts the API error shape and code; returns the body.
pub async fn expect_error(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "status");
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"].get("details").is_some(), "{body}");
    body
}
