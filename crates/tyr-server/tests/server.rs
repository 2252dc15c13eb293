//! REST infrastructure (error shapes, health, CA, TLS) and startup behaviour (key file
//! permissions, JWT rotation, certificate re-issue, database unreachable, SIGTERM).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{Backend, TestServer, client_trusting, expect_error};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tyr_server::app::{self, StartError};
use tyr_server::keys::KeyError;
use tyr_server::pki::inspect_cert;

on_both_backends! {
    error_shapes => error_shapes;
    health_and_ca => health_and_ca;
}

async fn error_shapes(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let login = "/api/v1/auth/login";
    let malformed = s
        .post(login)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .expect("send");
    expect_error(malformed, StatusCode::BAD_REQUEST, "invalid_request").await;
    let wrong_type = s
        .post(login)
        .json(&json!({"username": 5, "password": []}))
        .send()
        .await
        .expect("send");
    expect_error(wrong_type, StatusCode::BAD_REQUEST, "invalid_request").await;
    let missing = s.post(login).json(&json!({})).send().await.expect("send");
    expect_error(missing, StatusCode::BAD_REQUEST, "invalid_request").await;
    let not_json = s.post(login).body("username=a").send().await.expect("send");
    expect_error(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    // A fresh client: the server may close the connection after refusing the body.
    let huge = json!({"label": "x".repeat(1024 * 1024 + 1)});
    let ca = std::fs::read_to_string(s.data_dir.path().join("ca.pem")).expect("ca.pem");
    let sent = client_trusting(&ca)
        .post(s.url("/api/v1/enrollment-tokens"))
        .bearer_auth(&admin)
        .json(&huge)
        .send()
        .await;
    common::expect_too_large(sent).await;

    let r = s.get("/api/v1/nothing-here").send().await.expect("send");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s
        .client
        .put(s.url("/api/v1/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    s.stop().await;
}

async fn health_and_ca(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let health: Value = s
        .get("/health")
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["db"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let ca = s
        .get("/api/v1/ca.pem")
        .send()
        .await
        .expect("ca")
        .text()
        .await
        .expect("text");
    assert_eq!(
        ca,
        std::fs::read_to_string(s.data_dir.path().join("ca.pem")).expect("ca.pem")
    );
    // A client trusting only another CA refuses the server.
    let other = tyr_server::pki::Ca::generate().expect("ca");
    assert!(
        client_trusting(other.cert_pem())
            .get(s.url("/health"))
            .send()
            .await
            .is_err()
    );
    s.stop().await;
}

#[tokio::test]
async fn plain_http_when_no_tls() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.rest_no_tls = true)
        .await
        .expect("server");
    assert!(s.base.starts_with("http://"));
    let r = reqwest::get(s.url("/api/v1/auth/status"))
        .await
        .expect("plain http");
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn refuses_readable_key_files() {
    let mut s = TestServer::start(Backend::Sqlite).await.expect("server");
    let key = s.data_dir.path().join("ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    s.config.rest_bind = "127.0.0.1:0".parse().expect("addr");
    let err = app::start(&s.config).await.expect_err("must refuse");
    assert!(
        matches!(err, StartError::Keys(KeyError::Permissions { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("ca.key"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    s.stop().await;
}

#[tokio::test]
async fn deleting_jwt_key_invalidates_tokens() {
    let mut s = TestServer::start(Backend::Sqlite).await.expect("server");
    let admin = s.setup_admin().await;
    s.restart().await;
    let r = s
        .get("/api/v1/users")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a restart alone keeps tokens valid"
    );
    std::fs::remove_file(s.data_dir.path().join("jwt.key")).expect("rm");
    s.restart().await;
    let r = s
        .get("/api/v1/users")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    s.stop().await;
}

#[tokio::test]
async fn server_cert_reissued_when_names_change() {
    let mut s = TestServer::start(Backend::Sqlite).await.expect("server");
    let pem =
        |s: &TestServer, f: &str| std::fs::read_to_string(s.data_dir.path().join(f)).expect("pem");
    let before = pem(&s, "server.pem");
    s.restart().await;
    assert_eq!(
        pem(&s, "server.pem"),
        before,
        "unchanged names keep the certificate"
    );
    s.config.server_names = vec!["tyr.example".into(), "localhost".into()];
    s.restart().await;
    let after = pem(&s, "server.pem");
    assert_ne!(after, before);
    let facts = inspect_cert(&after, &pem(&s, "ca.pem")).expect("inspect");
    assert_eq!(
        facts.names,
        vec!["tyr.example".to_owned(), "localhost".into()]
    );
    assert!(facts.signed_by_ca);
    // The new certificate is the one served.
    let r = s
        .get("/health")
        .send()
        .await
        .expect("TLS with the re-issued certificate");
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[test]
fn database_unreachable_exits_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_tyr-server"))
        .env_clear()
        .env("TYR_DATA_DIR", dir.path())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
        .env("TYR_REST_BIND", "127.0.0.1:0")
        .output()
        .expect("run tyr-server");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the database"), "{stderr}");
    assert!(stderr.contains("refused"), "the reason is shown: {stderr}");
}

#[test]
fn sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tyr-server"))
        .env_clear()
        .env("TYR_DATA_DIR", dir.path())
        .env("TYR_REST_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    // Wait for the listener (the log line), not for a fixed time.
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("REST API listening")),
        "server never listened"
    );
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}
