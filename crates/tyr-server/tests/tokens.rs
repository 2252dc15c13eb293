//! Enrollment tokens: atomic consumption under concurrency, expiry, revocation, bootstrap
//! seeding and the REST endpoints, on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestDb, TestServer, expect_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tyr_server::store::Store;
use tyr_server::store::time::now_ms;
use tyr_server::store::tokens::{ConsumeError, NewToken};

on_both_backends! {
    concurrent_consumption_is_atomic => concurrent_consumption_is_atomic;
    expired_revoked_exhausted_never_succeed => expired_revoked_exhausted_never_succeed;
    rest_create_list_revoke => rest_create_list_revoke;
    bootstrap_token_seeded_idempotently => bootstrap_token_seeded_idempotently;
}

fn new_token(max_uses: i64, expires_in_ms: i64) -> NewToken<'static> {
    NewToken {
        label: "test",
        max_uses,
        expires_at: now_ms() + expires_in_ms,
        created_by: None,
    }
}

async fn store(backend: Backend) -> Option<(tempfile::TempDir, TestDb, Store)> {
    let dir = tempfile::tempdir().expect("tmp");
    let db = TestDb::new(backend, dir.path()).await?;
    let store = Store::connect(&db.url).await.expect("connect");
    Some((dir, db, store))
}

async fn concurrent_consumption_is_atomic(backend: Backend) {
    let Some((_dir, db, store)) = store(backend).await else {
        return;
    };
    let (record, plaintext) = store
        .create_enrollment_token(new_token(1, 3_600_000))
        .await
        .expect("create");
    assert!(
        plaintext.starts_with("tyr_et_") && plaintext.len() >= 7 + 32,
        "{plaintext}"
    );
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, plaintext) = (store.clone(), plaintext.clone());
            tokio::spawn(async move { store.consume_enrollment_token(&plaintext).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(id) => {
                assert_eq!(id, record.id);
                ok += 1;
            }
            Err(ConsumeError::Exhausted) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1, "exactly one registration succeeds");
    let after = store
        .enrollment_token(&record.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.uses, 1);

    // max_uses = 3 under the same race: exactly three.
    let (_, plaintext) = store
        .create_enrollment_token(new_token(3, 3_600_000))
        .await
        .expect("create");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (store, plaintext) = (store.clone(), plaintext.clone());
            tokio::spawn(async move { store.consume_enrollment_token(&plaintext).await.is_ok() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.expect("join"));
    }
    assert_eq!(ok, 3);
    store.close().await;
    db.drop().await;
}

async fn expired_revoked_exhausted_never_succeed(backend: Backend) {
    let Some((_dir, db, store)) = store(backend).await else {
        return;
    };
    let (_, expired) = store
        .create_enrollment_token(new_token(5, -1))
        .await
        .expect("create");
    assert!(matches!(
        store.consume_enrollment_token(&expired).await,
        Err(ConsumeError::Expired)
    ));

    let (rec, revoked) = store
        .create_enrollment_token(new_token(5, 3_600_000))
        .await
        .expect("create");
    assert!(
        store
            .revoke_enrollment_token(&rec.id)
            .await
            .expect("revoke")
    );
    assert!(matches!(
        store.consume_enrollment_token(&revoked).await,
        Err(ConsumeError::Revoked)
    ));

    let (_, once) = store
        .create_enrollment_token(new_token(1, 3_600_000))
        .await
        .expect("create");
    store
        .consume_enrollment_token(&once)
        .await
        .expect("first use");
    assert!(matches!(
        store.consume_enrollment_token(&once).await,
        Err(ConsumeError::Exhausted)
    ));

    // Same lookup prefix, wrong secret.
    let forged = format!("{}{}", &once[..15], "0".repeat(once.len() - 15));
    assert!(matches!(
        store.consume_enrollment_token(&forged).await,
        Err(ConsumeError::Unknown)
    ));
    assert!(matches!(
        store.consume_enrollment_token("tyr_et_nope").await,
        Err(ConsumeError::Unknown)
    ));
    store.close().await;
    db.drop().await;
}

async fn rest_create_list_revoke(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let r = s
        .post("/api/v1/enrollment-tokens")
        .bearer_auth(&admin)
        .json(&json!({"label": "lab hosts", "max_uses": 2, "expires_hours": 48}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.expect("json");
    let token = created["token"]
        .as_str()
        .expect("plaintext once")
        .to_owned();
    assert!(token.starts_with("tyr_et_"));
    assert_eq!(
        (
            created["label"].as_str(),
            created["max_uses"].as_i64(),
            created["uses"].as_i64()
        ),
        (Some("lab hosts"), Some(2), Some(0))
    );
    assert_eq!(created["revoked"], false);
    let id = created["id"].as_str().expect("id").to_owned();

    let list = s
        .get("/api/v1/enrollment-tokens")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list");
    let text = list.text().await.expect("text");
    assert!(!text.contains(&token[7..]), "the secret is never listed");
    let list: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(list[0].get("token").is_none());

    for bad in [
        json!({"max_uses": 0}),
        json!({"expires_hours": 0}),
        json!({"max_uses": "two"}),
        json!({"bogus": 1}),
    ] {
        let r = s
            .post("/api/v1/enrollment-tokens")
            .bearer_auth(&admin)
            .json(&bad)
            .send()
            .await
            .expect("create");
        expect_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }

    let r = s
        .delete(&format!("/api/v1/enrollment-tokens/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let list: Value = s
        .get("/api/v1/enrollment-tokens")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["revoked"], true);
    let store = s.running_store();
    assert!(matches!(
        store.consume_enrollment_token(&token).await,
        Err(ConsumeError::Revoked)
    ));
    let r = s
        .delete("/api/v1/enrollment-tokens/nope")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    s.stop().await;
}

async fn bootstrap_token_seeded_idempotently(backend: Backend) {
    let secret = "tyr_et_quickstart-bootstrap-0001";
    let Some(mut s) = TestServer::start_with(backend, |c| {
        c.bootstrap_enrollment_token = Some(secret.to_owned())
    })
    .await
    else {
        return;
    };
    s.restart().await;
    let admin = s.setup_admin().await;
    let list: Value = s
        .get("/api/v1/enrollment-tokens")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "seeded once across restarts: {list}"
    );
    assert_eq!(list[0]["label"], "bootstrap");
    s.running_store()
        .consume_enrollment_token(secret)
        .await
        .expect("bootstrap token works");
    s.stop().await;
}
