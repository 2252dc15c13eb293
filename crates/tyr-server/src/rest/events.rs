//! `GET /events` (filtered, keyset-paginated) and `GET /events/stream` (SSE, same filters).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Json as JsonOut;
use axum::extract::State;
use axum::http::Method;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::{Access, AppState, RouteSpec};
use crate::fleet::Fleet;
use crate::metrics::{DbOp, KINDS, VERDICTS};
use crate::store::events::{Cursor, EventFilter, EventMatcher, EventRecord};
use crate::store::time::{now_ms, parse_rfc3339};

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/api/v1/events", Access::Viewer, list),
        RouteSpec::new(Method::GET, "/api/v1/events/stream", Access::Viewer, stream),
    ]
}

/// Query of both routes; every value is a string so that a bad one gets an API-shaped 400.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    agent_id: Option<String>,
    discovered_agent_id: Option<String>,
    agent_type: Option<String>,
    kind: Option<String>,
    verdict: Option<String>,
    drift_detected: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// RFC 3339, or a duration back from now: `90s`, `15m`, `24h`, `7d`.
pub fn parse_time(what: &str, s: &str, now: i64) -> ApiResult<i64> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    let (idx, unit) = match s.char_indices().last() {
        Some((i, 's')) => (i, 1_000),
        Some((i, 'm')) => (i, 60_000),
        Some((i, 'h')) => (i, 3_600_000),
        Some((i, 'd')) => (i, 86_400_000),
        _ => (0, 0),
    };
    s[..idx]
        .parse::<i64>()
        .ok()
        .filter(|n| unit > 0 && *n >= 0)
        .and_then(|n| n.checked_mul(unit))
        .map(|d| now.saturating_sub(d))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} must be RFC 3339 or a duration like 15m, 24h, 7d"
            ))
        })
}

fn one_of(what: &str, v: &str, allowed: &[&str]) -> ApiResult<String> {
    let up = v.to_ascii_uppercase();
    let up = if up == "TLS_CONNECT" {
        "TLS".to_owned()
    } else {
        up
    };
    if allowed.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(ApiError::bad_request(format!(
            "{what} must be one of {}",
            allowed.join(", ")
        )))
    }
}

fn filter_of(q: &EventsQuery) -> ApiResult<EventFilter> {
    let now = now_ms();
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Ok(EventFilter {
        agent_id: nonempty(&q.agent_id),
        discovered_agent_id: nonempty(&q.discovered_agent_id),
        agent_type: nonempty(&q.agent_type),
        kind: q
            .kind
            .as_deref()
            .map(|k| one_of("kind", k, &KINDS))
            .transpose()?,
        verdict: q
            .verdict
            .as_deref()
            .map(|v| one_of("verdict", v, &VERDICTS))
            .transpose()?,
        drift_detected: q
            .drift_detected
            .as_deref()
            .map(|d| match d {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::bad_request(
                    "drift_detected must be true or false",
                )),
            })
            .transpose()?,
        since: q
            .since
            .as_deref()
            .map(|s| parse_time("since", s, now))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_time("until", s, now))
            .transpose()?,
        q: nonempty(&q.q),
    })
}

/// A page of events, newest first.
#[derive(Debug, Serialize)]
pub struct EventPage {
    events: Vec<EventRecord>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<JsonOut<EventPage>> {
    let filter = filter_of(&q)?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}"))
            })?,
    };
    let cursor = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| Cursor::decode(c).ok_or_else(|| ApiError::bad_request("invalid cursor")))
        .transpose()?;
    let started = Instant::now();
    let mut events = state
        .store
        .query_events(&filter, cursor.as_ref(), limit)
        .await?;
    state
        .fleet
        .metrics
        .observe_db(DbOp::QueryEvents, started.elapsed());
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| {
            Cursor {
                ts: e.ts,
                event_id: e.event_id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(JsonOut(EventPage {
        events,
        next_cursor,
    }))
}

/// The SSE frame of one event (unnamed, so `EventSource.onmessage` gets it).
fn frame(e: &EventRecord) -> Option<SseEvent> {
    SseEvent::default().id(e.event_id.clone()).json_data(e).ok()
}

/// Frames for one subscriber: matching events, a `dropped` event with the number of events
/// it missed when it read too slowly, and the end of the stream at shutdown.
fn frames(
    fleet: Arc<Fleet>,
    filter: EventMatcher,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let rx = fleet.subscribe_events();
    let closing = fleet.closing();
    futures_util::stream::unfold(
        (rx, closing, fleet, filter),
        |(mut rx, mut closing, fleet, filter)| async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = closing.wait_for(|c| *c) => return None,
                };
                let frame = match next {
                    Ok(e) if filter.matches(&e) => frame(&e),
                    Ok(_) => None,
                    Err(RecvError::Lagged(n)) => {
                        fleet.metrics.sse_dropped(n);
                        Some(
                            SseEvent::default()
                                .event("dropped")
                                .data(serde_json::json!({ "dropped": n }).to_string()),
                        )
                    }
                    Err(RecvError::Closed) => return None,
                };
                if let Some(f) = frame {
                    return Some((Ok(f), (rx, closing, fleet, filter)));
                }
            }
        },
    )
}

async fn stream(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let filter = filter_of(&q)?;
    Ok(Sse::new(frames(state.fleet.clone(), filter.matcher())).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_relative() {
        let now = 10 * 86_400_000;
        assert_eq!(parse_time("since", "24h", now).ok(), Some(now - 86_400_000));
        assert_eq!(parse_time("since", "15m", now).ok(), Some(now - 900_000));
        assert_eq!(
            parse_time("since", "1970-01-01T00:00:01Z", now).ok(),
            Some(1000)
        );
        for bad in [
            "",
            "h",
            "-1h",
            "12",
            "yesterday",
            "9999999999999999999d",
            "1é",
        ] {
            assert!(parse_time("since", bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_and_verdicts_are_normalised() {
        assert_eq!(
            one_of("kind", "file_read", &KINDS).ok().as_deref(),
            Some("FILE_READ")
        );
        assert_eq!(
            one_of("kind", "tls_connect", &KINDS).ok().as_deref(),
            Some("TLS")
        );
        assert!(one_of("verdict", "maybe", &VERDICTS).is_err());
    }
}
