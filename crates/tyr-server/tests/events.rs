//! Event ingest (idempotence, drift), the filtered keyset-paginated query, SSE (delivery and
//! the `dropped` notice for a slow reader) and retention, on SQLite and PostgreSQL.

mod common;
mod support;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, TestServer, expect_error};
use reqwest::StatusCode;
use serde_json::Value;
use support::{apply, assign, audit_event, daemon, event, policy};
use tyr_proto::events::{Enforced, Verdict};
use tyr_server::drift::Tier;
use tyr_server::ingest::ingest;
use tyr_server::store::time::now_ms;

on_both_backends! {
    ingest_is_idempotent => ingest_is_idempotent;
    drift_causes => drift_causes;
    concurrent_batches_are_stored_once => concurrent_batches_are_stored_once;
    filters_and_keyset_pagination => filters_and_keyset_pagination;
    sse_delivers_and_reports_drops => sse_delivers_and_reports_drops;
    retention_deletes_old_events => retention_deletes_old_events;
    future_dated_events_are_clamped => future_dated_events_are_clamped;
    corrupt_metadata_is_shown_not_hidden => corrupt_metadata_is_shown_not_hidden;
}

fn now() -> u64 {
    u64::try_from(now_ms()).expect("positive time")
}

async fn get_json(s: &TestServer, token: &str, path: &str) -> Value {
    let r = s.get(path).bearer_auth(token).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

async fn ingest_is_idempotent(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let d = daemon(&store, "host-a", Tier::Lsm).await;
    let t = now();
    let batch: Vec<_> = (1..=5)
        .map(|seq| audit_event(seq, &format!("/tmp/f{seq}"), t))
        .collect();
    assert_eq!(
        ingest(&store, &fleet, &d, batch.clone())
            .await
            .expect("ingest"),
        5
    );
    assert_eq!(
        ingest(&store, &fleet, &d, batch.clone())
            .await
            .expect("again"),
        5
    );
    // An overlapping resend with new events stores only the new ones.
    let mut more = batch[3..].to_vec();
    more.push(audit_event(6, "/tmp/f6", t));
    assert_eq!(ingest(&store, &fleet, &d, more).await.expect("overlap"), 6);
    let page = get_json(&s, &admin, "/api/v1/events?limit=1000").await;
    let seqs: Vec<i64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 2, 3, 4, 5, 6], "each event stored once");
    assert_eq!(page["next_cursor"], Value::Null);
    let e = &page["events"][0];
    assert_eq!(e["kind"], "FILE_READ");
    assert_eq!(e["verdict"], "ALLOW");
    assert_eq!(e["enforced"], "none");
    assert_eq!(e["server_verdict"], "ALLOW");
    assert_eq!(e["drift_detected"], false);
    assert!(e["timestamp"].as_str().expect("ts").ends_with('Z'));

    // Refused: unknown daemon. Invalid events are acknowledged but not stored.
    assert!(ingest(&store, &fleet, "nope", batch.clone()).await.is_err());
    let mut invalid = audit_event(7, "/tmp/x", t);
    invalid.kind = 0;
    assert_eq!(
        ingest(&store, &fleet, &d, vec![invalid])
            .await
            .expect("invalid"),
        7
    );
    let page = get_json(&s, &admin, "/api/v1/events").await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(6));

    // Within one batch, a repeated seq and a repeated event_id are stored once: the first
    // event holding a key claims it (on PostgreSQL the plain insert fails on the unique
    // index, and the batch is stored again skipping them).
    let first = audit_event(8, "/tmp/f8", t);
    let same_seq = audit_event(8, "/tmp/f8-twin", t);
    let mut same_id = audit_event(9, "/tmp/f9", t);
    same_id.event_id = first.event_id.clone();
    let fresh = audit_event(10, "/tmp/f10", t);
    assert_eq!(
        ingest(&store, &fleet, &d, vec![first, same_seq, same_id, fresh])
            .await
            .expect("duplicates within a batch"),
        10
    );
    let page = get_json(&s, &admin, "/api/v1/events?limit=1000").await;
    let mut stored: Vec<(i64, String)> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().expect("seq"),
                e["resource"].as_str().expect("resource").to_owned(),
            )
        })
        .collect();
    stored.sort();
    let stored: Vec<(i64, &str)> = stored.iter().map(|(s, r)| (*s, r.as_str())).collect();
    assert_eq!(
        stored[6..],
        [(8, "/tmp/f8"), (10, "/tmp/f10")],
        "first claim of each key wins"
    );
    s.stop().await;
}

async fn drift_causes(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let lsm = daemon(&store, "lsm-host", Tier::Lsm).await;
    let observe = daemon(&store, "observe-host", Tier::Observe).await;
    apply(&s, &admin, &policy("laptops", "deny")).await;
    apply(&s, &admin, &policy("laptops", "deny")).await;
    assign(&s, &admin, "daemon", &lsm, "laptops", 2).await;
    assign(&s, &admin, "daemon", &observe, "laptops", 2).await;
    let cur = "base=laptops@2";
    let t = now();
    let lsm_batch = vec![
        // Agrees with the server.
        event(1, "/secret/a", Verdict::Deny, Enforced::Blocked, cur, t),
        event(2, "/tmp/ok", Verdict::Allow, Enforced::None, cur, t),
        // Same version, different verdict, a tier that can block: mismatch.
        event(3, "/secret/b", Verdict::Allow, Enforced::None, cur, t),
        // Decided with an older version: stale policy.
        event(
            4,
            "/secret/c",
            Verdict::Allow,
            Enforced::None,
            "base=laptops@1",
            t,
        ),
    ];
    ingest(&store, &fleet, &lsm, lsm_batch)
        .await
        .expect("ingest lsm");
    let observe_batch = vec![event(
        1,
        "/secret/d",
        Verdict::Allow,
        Enforced::None,
        cur,
        t,
    )];
    ingest(&store, &fleet, &observe, observe_batch.clone())
        .await
        .expect("ingest observe");
    ingest(&store, &fleet, &observe, observe_batch)
        .await
        .expect("resend");

    let page = get_json(&s, &admin, "/api/v1/events?limit=1000").await;
    let by_resource = |r: &str| -> Value {
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["resource"] == r)
            .cloned()
            .unwrap_or_else(|| panic!("no event for {r}"))
    };
    for (resource, server, drift, cause) in [
        ("/secret/a", "DENY", false, Value::Null),
        ("/tmp/ok", "ALLOW", false, Value::Null),
        ("/secret/b", "DENY", true, "mismatch".into()),
        ("/secret/c", "DENY", true, "stale_policy".into()),
        ("/secret/d", "DENY", true, "tier_limit".into()),
    ] {
        let e = by_resource(resource);
        assert_eq!(e["server_verdict"], server, "{resource}");
        assert_eq!(e["drift_detected"], drift, "{resource}");
        assert_eq!(e["drift_cause"], cause, "{resource}");
    }
    let agent = get_json(&s, &admin, &format!("/api/v1/agents/{lsm}")).await;
    assert_eq!(agent["drift_count"], 2);
    let agent = get_json(&s, &admin, &format!("/api/v1/agents/{observe}")).await;
    assert_eq!(
        agent["drift_count"], 1,
        "a resent drifted event counts once"
    );
    let drifted = get_json(&s, &admin, "/api/v1/events?drift_detected=true").await;
    assert_eq!(drifted["events"].as_array().map(Vec::len), Some(3));
    s.stop().await;
}

/// Batches of several daemons arriving at once (committed together), each also resent at
/// the same time: every event is stored once, under its daemon, with its own drift count.
async fn concurrent_batches_are_stored_once(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    apply(&s, &admin, &policy("laptops", "deny")).await;
    let mut daemons = Vec::new();
    for i in 0..4 {
        let d = daemon(&store, &format!("host-{i}"), Tier::Lsm).await;
        assign(&s, &admin, "daemon", &d, "laptops", 1).await;
        daemons.push(d);
    }
    let t = now();
    let mut tasks = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        for b in 0..5u64 {
            // Daemon i drifts on i + 1 events of each batch of 10 (the server denies /secret).
            let batch: Vec<_> = (1..=10u64)
                .map(|n| {
                    let resource = if n <= i as u64 + 1 {
                        "/secret/x"
                    } else {
                        "/tmp/ok"
                    };
                    let cur = "base=laptops@1";
                    event(b * 10 + n, resource, Verdict::Allow, Enforced::None, cur, t)
                })
                .collect();
            for copy in [batch.clone(), batch] {
                let (store, fleet, d) = (store.clone(), fleet.clone(), d.clone());
                tasks.push(tokio::spawn(async move {
                    ingest(&store, &fleet, &d, copy).await.expect("ingest")
                }));
            }
        }
    }
    for task in tasks {
        assert_eq!(
            task.await.expect("task") % 10,
            0,
            "acks the batch's last seq"
        );
    }
    for (i, d) in daemons.iter().enumerate() {
        let page = get_json(
            &s,
            &admin,
            &format!("/api/v1/events?agent_id={d}&limit=1000"),
        )
        .await;
        let seqs: HashSet<i64> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_i64().expect("seq"))
            .collect();
        assert_eq!(page["events"].as_array().map(Vec::len), Some(50), "{d}");
        assert_eq!(seqs, (1..=50).collect(), "{d}");
        let agent = get_json(&s, &admin, &format!("/api/v1/agents/{d}")).await;
        assert_eq!(agent["drift_count"], 5 * (i + 1), "{d}");
    }
    s.stop().await;
}

async fn filters_and_keyset_pagination(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let a = daemon(&store, "host-a", Tier::Lsm).await;
    let b = daemon(&store, "host-b", Tier::Lsm).await;
    let base = now() - 3_600_000;
    let verdicts = [Verdict::Allow, Verdict::Deny, Verdict::Alert];
    // 320 events; several share a timestamp so the event_id tie-break matters.
    for (d, offset) in [(&a, 0u64), (&b, 1)] {
        let batch: Vec<_> = (0..160u64)
            .map(|i| {
                let mut e = event(
                    i + 1,
                    &format!(
                        "/data/{}/file-{i}",
                        if i % 4 == 0 { "Needle" } else { "hay" }
                    ),
                    verdicts[usize::try_from(i % 3).expect("small")],
                    Enforced::None,
                    "builtin-audit",
                    base + (i / 3) * 1000 + offset,
                );
                if i % 5 == 0 {
                    e.agent_type = "claude-code".into();
                    e.discovered_agent_id = format!("agent-{offset}");
                }
                e
            })
            .collect();
        ingest(&store, &fleet, d, batch).await.expect("ingest");
    }

    // Walk every page of the unfiltered listing.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=37&cursor={c}"),
            None => "/api/v1/events?limit=37".to_owned(),
        };
        let page = get_json(&s, &admin, &path).await;
        for e in page["events"].as_array().expect("events") {
            seen.push((
                e["timestamp_ns"].as_i64().expect("ts"),
                e["event_id"].as_str().expect("id").to_owned(),
            ));
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 9);
    assert_eq!(seen.len(), 320, "no omissions");
    let unique: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(unique.len(), 320, "no duplicates");
    assert!(
        seen.windows(2)
            .all(|w| (w[0].0 / 1_000_000, &w[0].1) > (w[1].0 / 1_000_000, &w[1].1)),
        "newest first, ties by event_id"
    );

    let count = |page: &Value| page["events"].as_array().map_or(0, Vec::len);
    let expect = |pred: &dyn Fn(u64) -> bool| (0..160u64).filter(|i| pred(*i)).count();
    let deny_a = get_json(
        &s,
        &admin,
        &format!("/api/v1/events?limit=1000&verdict=deny&agent_id={a}"),
    )
    .await;
    assert_eq!(count(&deny_a), expect(&|i| i % 3 == 1));
    assert!(
        deny_a["events"]
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["daemon_id"] == a.as_str() && e["verdict"] == "DENY")
    );
    let needle = get_json(
        &s,
        &admin,
        "/api/v1/events?limit=1000&q=needle&kind=FILE_READ",
    )
    .await;
    assert_eq!(count(&needle), 2 * expect(&|i| i % 4 == 0));
    let typed = get_json(
        &s,
        &admin,
        "/api/v1/events?limit=1000&agent_type=claude-code&discovered_agent_id=agent-1",
    )
    .await;
    assert_eq!(count(&typed), expect(&|i| i % 5 == 0));
    let since = tyr_server::store::time::rfc3339(i64::try_from(base + 10_000).expect("ms"));
    let until = tyr_server::store::time::rfc3339(i64::try_from(base + 20_000).expect("ms"));
    let window = get_json(
        &s,
        &admin,
        &format!("/api/v1/events?limit=1000&agent_id={a}&since={since}&until={until}"),
    )
    .await;
    assert_eq!(count(&window), 30);
    let none = get_json(&s, &admin, "/api/v1/events?kind=EXEC").await;
    assert_eq!(count(&none), 0);
    // A page limit with a filter keeps paginating correctly.
    let p1 = get_json(&s, &admin, "/api/v1/events?limit=50&verdict=ALERT").await;
    let c = p1["next_cursor"].as_str().expect("more pages");
    let p2 = get_json(
        &s,
        &admin,
        &format!("/api/v1/events?limit=1000&verdict=ALERT&cursor={c}"),
    )
    .await;
    assert_eq!(count(&p1) + count(&p2), 2 * expect(&|i| i % 3 == 2));

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "kind=FOO",
        "verdict=maybe",
        "drift_detected=yes",
        "since=yesterday",
        "cursor=zz",
    ] {
        let r = s
            .get(&format!("/api/v1/events?{bad}"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("get");
        expect_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    s.stop().await;
}

/// Reads `resp` until `needle` appears (or the stream ends or 30 s pass); returns the text.
async fn read_until(resp: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !text.contains(needle) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    text
}

async fn sse_delivers_and_reports_drops(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let d = daemon(&store, "host-a", Tier::Lsm).await;
    let mut live = s
        .get("/api/v1/events/stream?verdict=DENY")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stream");
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let mut slow = s
        .get("/api/v1/events/stream")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("slow stream");
    let t = now();
    let batch = vec![
        audit_event(1, "/tmp/allowed", t),
        event(
            2,
            "/tmp/denied",
            Verdict::Deny,
            Enforced::Blocked,
            "builtin-audit",
            t,
        ),
    ];
    ingest(&store, &fleet, &d, batch).await.expect("ingest");
    let text = read_until(&mut live, "/tmp/denied").await;
    assert!(text.contains("\"resource\":\"/tmp/denied\""), "{text}");
    assert!(!text.contains("/tmp/allowed"), "filtered out: {text}");

    // The slow subscriber never reads while far more than its buffer (and the socket
    // buffers) is ingested; ingest completes regardless.
    let filler = "x".repeat(48 * 1024);
    let mut seq = 3;
    let ingest_all = async {
        for _ in 0..12 {
            let batch: Vec<_> = (0..100)
                .map(|_| {
                    let mut e = audit_event(seq, "/tmp/bulk", t);
                    e.cmdline = filler.clone();
                    seq += 1;
                    e
                })
                .collect();
            ingest(&store, &fleet, &d, batch)
                .await
                .expect("bulk ingest");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), ingest_all)
        .await
        .expect("ingest is never blocked by a slow subscriber");
    let text = read_until(&mut slow, "event: dropped").await;
    let after = text
        .split("event: dropped")
        .nth(1)
        .expect("a dropped notice");
    let data = after
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("dropped data");
    let dropped: Value = serde_json::from_str(data).expect("json");
    assert!(dropped["dropped"].as_u64().expect("count") > 0, "{dropped}");
    drop(slow);
    drop(live);
    s.stop().await;
}

async fn retention_deletes_old_events(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let d = daemon(&store, "host-a", Tier::Lsm).await;
    let day = 86_400_000;
    let t = now();
    let batch = vec![
        event(
            1,
            "/old/1",
            Verdict::Allow,
            Enforced::None,
            "builtin-audit",
            t - 40 * day,
        ),
        event(
            2,
            "/old/2",
            Verdict::Allow,
            Enforced::None,
            "builtin-audit",
            t - 31 * day,
        ),
        event(
            3,
            "/new/1",
            Verdict::Allow,
            Enforced::None,
            "builtin-audit",
            t - 29 * day,
        ),
        audit_event(4, "/new/2", t),
    ];
    ingest(&store, &fleet, &d, batch).await.expect("ingest");
    let deleted = tyr_server::retention::purge(&store, 30, now_ms())
        .await
        .expect("purge");
    assert_eq!(deleted, 2);
    let page = get_json(&s, &admin, "/api/v1/events").await;
    let mut left: Vec<_> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["resource"].as_str().expect("resource").to_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["/new/1", "/new/2"]);
    s.stop().await;
}

async fn future_dated_events_are_clamped(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let d = daemon(&store, "host-a", Tier::Lsm).await;
    let day = 86_400_000;
    // A daemon clock ten years ahead: the event must not escape retention.
    let batch = vec![event(
        1,
        "/future",
        Verdict::Allow,
        Enforced::None,
        "builtin-audit",
        now() + 3650 * day,
    )];
    ingest(&store, &fleet, &d, batch).await.expect("ingest");
    let in_31_days = now_ms() + 31 * i64::try_from(day).expect("day");
    let deleted = tyr_server::retention::purge(&store, 30, in_31_days)
        .await
        .expect("purge");
    assert_eq!(deleted, 1, "a future-dated event outlived retention");
    s.stop().await;
}

/// Stored metadata that is not a JSON object (damaged in the database) is returned whole under
/// `tyr.corrupt_metadata` instead of becoming `{}`; the other events of the page are intact.
async fn corrupt_metadata_is_shown_not_hidden(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let d = daemon(&store, "host-a", Tier::Lsm).await;
    let t = now();
    let batch: Vec<_> = (1..=2)
        .map(|seq| {
            let mut e = audit_event(seq, "/tmp/m", t);
            e.metadata.insert("policy".into(), "base".into());
            e
        })
        .collect();
    ingest(&store, &fleet, &d, batch).await.expect("ingest");
    const DAMAGE: &str = "UPDATE events SET metadata = '{\"policy\": \"ba' WHERE seq = 1";
    s.db.as_ref().expect("db").execute(DAMAGE).await;
    let page = get_json(&s, &admin, "/api/v1/events").await;
    let by_seq = |seq: i64| {
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["seq"] == seq)
            .expect("listed")
            .clone()
    };
    assert_eq!(
        by_seq(1)["metadata"],
        serde_json::json!({"tyr.corrupt_metadata": "{\"policy\": \"ba"})
    );
    assert_eq!(by_seq(2)["metadata"], serde_json::json!({"policy": "base"}));
    s.stop().await;
}
