//! `Register` against the real `tyr-server` process over real TLS: a good token enrolls; each
//! bad token is refused with UNAUTHENTICATED and its reason, and nothing is stored; a
//! single-use token admits exactly one of many concurrent registrations; the token is
//! checked before the CSR is parsed; repeated failures from one address are rate limited
//! (in-process, with a one-second window).

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tyr_proto::agent::agent_plane_client::AgentPlaneClient;
use tyr_testkit::grpc::{self, register_request};
use tyr_testkit::{Db, TestServer};

mod common;
use common::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_tyr-server");

async fn server() -> TestServer {
    TestServer::start_bin(BIN, Db::Sqlite).await
}

async fn agents(admin: &tyr_testkit::Admin) -> Vec<Value> {
    let (status, body) = admin.get("/api/v1/agents?include_revoked=true").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

async fn token_uses(admin: &tyr_testkit::Admin, id: &str) -> i64 {
    let (_, body) = admin.get("/api/v1/enrollment-tokens").await;
    body.as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id))
        .and_then(|t| t["uses"].as_i64())
        .expect("token listed")
}

async fn refused(server: &TestServer, token: &str, reason: &str) {
    let err = grpc::register(server, token)
        .await
        .expect_err("registration must be refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains(reason), "{reason}: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_token_enrolls_and_bad_tokens_store_nothing_sqlite() {
    good_token_enrolls_and_bad_tokens_store_nothing(server().await, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_token_enrolls_and_bad_tokens_store_nothing_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres, &std::env::temp_dir()).await else {
        return;
    };
    let server = TestServer::start_bin(BIN, Db::Postgres(db.url.clone())).await;
    good_token_enrolls_and_bad_tokens_store_nothing(server, Some(&db.url)).await;
    db.drop().await;
}

/// `pg_url`: the server's PostgreSQL database, `None` for its SQLite one.
async fn good_token_enrolls_and_bad_tokens_store_nothing(server: TestServer, pg_url: Option<&str>) {
    let admin = server.admin().await;

    // A good token: a CA-signed certificate naming a new agent id, and a daemon record.
    let creds = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect("register");
    assert!(uuid_like(&creds.agent_id), "{}", creds.agent_id);
    assert!(creds.cert_pem.contains("BEGIN CERTIFICATE"));
    let listed = agents(&admin).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], creds.agent_id.as_str());
    assert_eq!(listed[0]["name"], "test-agent");

    // A CSR that is not PEM is refused before the token is looked at; one that is PEM but
    // not a CSR is refused after, and the token's use is given back.
    let (fresh_id, fresh) = admin.enrollment_token(1, 1).await;
    for csr in [
        "not a csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let (mut req, _) = register_request(&fresh);
        req.csr_pem = csr.into();
        let mut c = grpc::client(&server, None).await.expect("client");
        let err = c.register(req).await.expect_err("bad csr");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(token_uses(&admin, &fresh_id).await, 0);
    }
    // With a bad token, the same CSR is never parsed: the token decides.
    let (mut req, _) = register_request("tyr_et_1111111111111111111111111111111111111111");
    req.csr_pem =
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
    let mut c = grpc::client(&server, None).await.expect("client");
    let err = c.register(req).await.expect_err("bad token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    refused(
        &server,
        "tyr_et_0000000000000000000000000000000000000000",
        "unknown",
    )
    .await;
    // (From another address: this one may fail five times before it is limited.)
    let err = grpc::register_from(&server, "", "127.0.0.2".parse().ok())
        .await
        .expect_err("empty token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("unknown"), "{err:?}");

    let (revoked_id, revoked) = admin.enrollment_token(5, 1).await;
    let (status, _) = admin
        .delete(&format!("/api/v1/enrollment-tokens/{revoked_id}"))
        .await;
    assert_eq!(status, 204);
    refused(&server, &revoked, "revoked").await;
    assert_eq!(token_uses(&admin, &revoked_id).await, 0);

    let (once_id, once) = admin.enrollment_token(1, 1).await;
    grpc::register(&server, &once).await.expect("first use");
    refused(&server, &once, "exhausted").await;
    assert_eq!(token_uses(&admin, &once_id).await, 1);

    let (expired_id, expired) = admin.enrollment_token(5, 1).await;
    expire_token(&server, pg_url, &expired_id).await;
    refused(&server, &expired, "expired").await;
    assert_eq!(token_uses(&admin, &expired_id).await, 0);

    // Five failures from this address: the next attempt is limited, even with a good token.
    let err = grpc::register(&server, &server.bootstrap_token)
        .await
        .expect_err("rate limited");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Only the two good registrations were stored.
    assert_eq!(agents(&admin).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_token_admits_one_of_many_concurrent_registrations() {
    let server = server().await;
    let admin = server.admin().await;
    let (_, token) = admin.enrollment_token(1, 1).await;
    let attempts = (0..8).map(|_| grpc::register(&server, &token));
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::Unauthenticated, "{r:?}");
    }
    assert_eq!(agents(&admin).await.len(), 1);
}

/// Registers with `token` from the local address `from` at an in-process server; returns
/// the new agent id.
async fn register_in_process(
    s: &common::TestServer,
    token: &str,
    from: IpAddr,
) -> Result<String, tonic::Status> {
    let ca = std::fs::read_to_string(s.data_dir.path().join("ca.pem")).expect("ca.pem");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    let channel = Channel::from_shared(format!("https://{}", s.grpc_addr()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .local_address(Some(from))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (req, _) = register_request(token);
    let r = AgentPlaneClient::new(channel).register(req).await?;
    Ok(r.into_inner().agent_id)
}

/// An in-process server whose failure limit has a one-second window (`Config::failure_window`),
/// so the test sees the limit end without waiting a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_registrations_are_rate_limited_per_address_until_the_window_passes() {
    const BOOTSTRAP: &str = "tyr_et_3333333333333333333333333333333333333333";
    let Some(server) = common::TestServer::start_with(Backend::Sqlite, |c| {
        c.failure_window = Duration::from_secs(1);
        c.bootstrap_enrollment_token = Some(BOOTSTRAP.to_owned());
    })
    .await
    else {
        return;
    };
    let admin = server.setup_admin().await;
    let attacker: IpAddr = "127.0.0.3".parse().expect("ip");
    let neighbour: IpAddr = "127.0.0.4".parse().expect("ip");
    let bad = "tyr_et_2222222222222222222222222222222222222222";
    for _ in 0..5 {
        let err = register_in_process(&server, bad, attacker)
            .await
            .expect_err("bad token");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }

    // Limited now, bad and good tokens alike, with a retry hint; nothing is used or stored.
    let err = register_in_process(&server, bad, attacker)
        .await
        .expect_err("limited");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = register_in_process(&server, BOOTSTRAP, attacker)
        .await
        .expect_err("limited even with a good token");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let retry_after: u64 = err
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after hint");
    assert_eq!(retry_after, 1, "the window is one second");
    assert!(err.message().contains("retry in 1 s"), "{err:?}");
    let listed = |admin: String| {
        let req = server
            .get("/api/v1/agents?include_revoked=true")
            .bearer_auth(admin);
        async move {
            let body: Value = req
                .send()
                .await
                .expect("agents")
                .json()
                .await
                .expect("json");
            body.as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(listed(admin.clone()).await, 0);

    // Another address is not affected.
    register_in_process(&server, BOOTSTRAP, neighbour)
        .await
        .expect("another address registers");

    // Once the hinted time has passed, the same address registers with a good token.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let agent_id = register_in_process(&server, BOOTSTRAP, attacker)
        .await
        .expect("registers after the window");
    assert!(uuid_like(&agent_id));
    assert_eq!(listed(admin).await, 2);
    server.stop().await;
}

/// Moves a token's expiry into the past, in the server's database (the API cannot create an
/// expired token).
async fn expire_token(server: &TestServer, pg_url: Option<&str>, id: &str) {
    const SQL: &str = "UPDATE enrollment_tokens SET expires_at = 1 WHERE id = $1";
    match pg_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.expect("open db");
            sqlx::query(SQL)
                .bind(id)
                .execute(&pool)
                .await
                .expect("expire");
            pool.close().await;
        }
        None => {
            let url = format!(
                "sqlite://{}",
                server.data_dir.path().join("tyr.db").display()
            );
            let pool = sqlx::SqlitePool::connect(&url).await.expect("open db");
            sqlx::query(SQL)
                .bind(id)
                .execute(&pool)
                .await
                .expect("expire");
            pool.close().await;
        }
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|&c| c == '-').count() == 4
}
