//! Setup, login, rate limiting, JWT attacks and role enforcement, on SQLite and PostgreSQL.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{ADMIN, ADMIN_PASSWORD, Backend, TestServer, expect_error};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tyr_server::rest::{Access, routes};

on_both_backends! {
    setup_login_and_users => setup_login_and_users;
    login_rate_limited => login_rate_limited;
    jwt_attacks_rejected => jwt_attacks_rejected;
    every_admin_route_enforced => every_admin_route_enforced;
}

async fn setup_login_and_users(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let status: Value = s
        .get("/api/v1/auth/status")
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status, json!({"configured": false}));

    let short = s
        .post("/api/v1/auth/setup")
        .json(&json!({"username": ADMIN, "password": "short"}))
        .send()
        .await
        .expect("setup");
    expect_error(short, StatusCode::BAD_REQUEST, "invalid_request").await;

    let admin = s.setup_admin().await;
    let status: Value = s
        .get("/api/v1/auth/status")
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status, json!({"configured": true}));
    let again = s
        .post("/api/v1/auth/setup")
        .json(&json!({"username": "other", "password": "another long password"}))
        .send()
        .await
        .expect("setup");
    expect_error(again, StatusCode::CONFLICT, "conflict").await;

    let login: Value = s
        .post("/api/v1/auth/login")
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    assert_eq!(login["role"], "admin");
    assert!(
        login["expires_at"]
            .as_str()
            .expect("expires_at")
            .ends_with('Z')
    );
    let bad = s
        .post("/api/v1/auth/login")
        .json(&json!({"username": ADMIN, "password": "wrong password!!"}))
        .send()
        .await
        .expect("login");
    expect_error(bad, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let unknown = s
        .post("/api/v1/auth/login")
        .json(&json!({"username": "nobody", "password": "wrong password!!"}))
        .send()
        .await
        .expect("login");
    expect_error(unknown, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    let (viewer_id, viewer) = s.user(&admin, "vera", "viewer").await;
    let me: Value = s
        .get("/api/v1/auth/me")
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (me["username"].as_str(), me["role"].as_str()),
        (Some("vera"), Some("viewer"))
    );
    let dup = s
        .post("/api/v1/users")
        .bearer_auth(&admin)
        .json(&json!({"username": "vera", "password": "yet another password", "role": "admin"}))
        .send()
        .await
        .expect("dup");
    expect_error(dup, StatusCode::CONFLICT, "conflict").await;
    let users: Value = s
        .get("/api/v1/users")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = users
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, vec!["admin", "vera"]);
    assert!(
        users.to_string().find("argon2").is_none(),
        "no hashes in the listing"
    );

    let admin_id = s
        .get("/api/v1/auth/me")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("me")
        .json::<Value>()
        .await
        .expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let last = s
        .delete(&format!("/api/v1/users/{admin_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    expect_error(last, StatusCode::CONFLICT, "conflict").await;
    let gone = s
        .delete("/api/v1/users/00000000-0000-0000-0000-000000000000")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    expect_error(gone, StatusCode::NOT_FOUND, "not_found").await;
    let del = s
        .delete(&format!("/api/v1/users/{viewer_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    s.stop().await;
}

/// With a one-second window (`Config::failure_window`; a minute in production), so the
/// test also sees the limit end.
async fn login_rate_limited(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| {
        c.failure_window = std::time::Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    s.setup_admin().await;
    let attempt = |user: &'static str| {
        s.post("/api/v1/auth/login")
            .json(&json!({"username": user, "password": "wrong password!!"}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            attempt(ADMIN).await.expect("login").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = attempt(ADMIN).await.expect("login");
    let retry: u64 = limited
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert_eq!(retry, 1, "the window is one second");
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Even the right password is refused while limited.
    let right = s
        .post("/api/v1/auth/login")
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    // The source address is limited too: other usernames from the same address.
    let other = attempt("someone-else").await.expect("login");
    assert_eq!(other.status(), StatusCode::TOO_MANY_REQUESTS);
    // Once the hinted time has passed, the right password logs in again.
    tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
    s.login(ADMIN, ADMIN_PASSWORD).await;
    s.stop().await;
}

fn b64_json(v: &Value) -> String {
    B64.encode(v.to_string())
}

fn claims(sub: &str, role: &str, exp_offset: i64) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({"sub": sub, "role": role, "iat": now, "exp": now + exp_offset, "jti": "x"})
}

/// `header.payload` signed with HMAC-SHA256 under `key`, whatever the header says.
fn hs256_raw(header: &Value, payload: &Value, key: &[u8]) -> String {
    let msg = format!("{}.{}", b64_json(header), b64_json(payload));
    let sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(key),
        Algorithm::HS256,
    )
    .expect("sign");
    format!("{msg}.{sig}")
}

async fn jwt_attacks_rejected(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (viewer_id, viewer) = s.user(&admin, "vera", "viewer").await;
    let key = std::fs::read(s.data_dir.path().join("jwt.key")).expect("jwt.key");
    let ca_pem = std::fs::read(s.data_dir.path().join("ca.pem")).expect("ca.pem");
    let me = |t: String| s.get("/api/v1/auth/me").bearer_auth(t).send();
    assert_eq!(
        me(viewer.clone()).await.expect("me").status(),
        StatusCode::OK
    );

    // A correctly signed HS256 token of the viewer is accepted (control for the cases below).
    let good = hs256_raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(&viewer_id, "viewer", 600),
        &key,
    );
    assert_eq!(me(good).await.expect("me").status(), StatusCode::OK);

    let none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "typ": "JWT"})),
        b64_json(&claims(&viewer_id, "admin", 600))
    );
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(&viewer_id, "admin", 600),
        &EncodingKey::from_secret(&key),
    )
    .expect("hs384");
    let rs256_confusion = hs256_raw(
        &json!({"alg": "RS256", "typ": "JWT"}),
        &claims(&viewer_id, "admin", 600),
        &ca_pem,
    );
    let rs256_real_key = hs256_raw(
        &json!({"alg": "RS256", "typ": "JWT"}),
        &claims(&viewer_id, "admin", 600),
        &key,
    );
    let mut parts: Vec<String> = viewer.split('.').map(str::to_owned).collect();
    parts[1] = b64_json(&claims(&viewer_id, "admin", 3600));
    let tampered = parts.join(".");
    let expired = hs256_raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(&viewer_id, "viewer", -10),
        &key,
    );
    let foreign = hs256_raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(&viewer_id, "viewer", 600),
        &[9u8; 64],
    );
    for (name, token) in [
        ("alg none", none),
        ("HS384", hs384),
        ("RS256 confusion", rs256_confusion),
        ("RS256 header", rs256_real_key),
        ("tampered payload", tampered),
        ("expired", expired),
        ("foreign key", foreign),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        let r = me(token).await.expect("me");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }

    let del = s
        .delete(&format!("/api/v1/users/{viewer_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let r = me(viewer).await.expect("me");
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    s.stop().await;
}

/// Concrete path for a route template.
fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-0000-0000-000000000000")
        .replace("{name}", "some-policy")
        .replace("{v}", "1")
}

async fn every_admin_route_enforced(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (_, viewer) = s.user(&admin, "vera", "viewer").await;
    let table = routes();
    let admin_routes: Vec<_> = table.iter().filter(|r| r.access == Access::Admin).collect();
    assert!(
        admin_routes.len() >= 6,
        "route table lists the admin routes"
    );
    for r in &table {
        let url = s.url(&concrete(r.path));
        let req = |token: Option<&str>| {
            let b = s.client.request(r.method.clone(), &url);
            let b = if r.method == Method::GET || r.method == Method::DELETE {
                b
            } else {
                b.json(&json!({}))
            };
            match token {
                Some(t) => b.bearer_auth(t),
                None => b,
            }
        };
        let anon = req(None).send().await.expect("anon");
        match r.access {
            Access::Public => assert_ne!(
                anon.status(),
                StatusCode::UNAUTHORIZED,
                "{} {}",
                r.method,
                r.path
            ),
            Access::Viewer | Access::Admin => {
                expect_error(anon, StatusCode::UNAUTHORIZED, "unauthenticated").await;
                let as_viewer = req(Some(&viewer)).send().await.expect("viewer");
                if r.access == Access::Admin {
                    expect_error(as_viewer, StatusCode::FORBIDDEN, "forbidden").await;
                } else {
                    assert_ne!(
                        as_viewer.status(),
                        StatusCode::FORBIDDEN,
                        "{} {}",
                        r.method,
                        r.path
                    );
                }
                let as_admin = req(Some(&admin)).send().await.expect("admin");
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&as_admin.status()),
                    "{} {}",
                    r.method,
                    r.path
                );
            }
        }
    }
    s.stop().await;
}
