//! Events: idempotent batch insert, filtered keyset queries, dashboard counts, retention.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::time::rfc3339;
use super::{Backend, RowExt, Store, StoreError, StoreResult, on_pool};

/// Optional column access for both backends (complements [`RowExt`]).
pub(crate) trait RowOptExt {
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
}

macro_rules! impl_row_opt_ext {
    ($row:ty) => {
        impl RowOptExt for $row {
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
impl_row_opt_ext!(SqliteRow);
impl_row_opt_ext!(PgRow);

/// A value bound to a dynamically built statement.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
}

/// Binds `$binds` in order to `$q` (a `sqlx::query`), for either backend.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Text(v) => q.bind(v.clone()),
                Bind::OptText(v) => q.bind(v.clone()),
                Bind::Int(v) => q.bind(*v),
                Bind::OptInt(v) => q.bind(*v),
                Bind::Bool(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// One stored event, as the API returns it (SPEC §9).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub event_id: String,
    pub daemon_id: String,
    pub seq: i64,
    pub discovered_agent_id: Option<String>,
    pub agent_type: Option<String>,
    /// `FILE_READ`, `FILE_WRITE`, `EXEC`, `NET_CONNECT` or `TLS`.
    pub kind: String,
    pub resource: String,
    /// `ALLOW`, `DENY` or `ALERT`: the daemon's verdict.
    pub verdict: String,
    /// `blocked`, `killed` or `none`.
    pub enforced: String,
    pub severity: Option<String>,
    pub policy_version: Option<String>,
    pub rule: Option<String>,
    pub pid: Option<i64>,
    pub ppid: Option<i64>,
    pub uid: Option<i64>,
    pub process_exe: Option<String>,
    pub cmdline: Option<String>,
    pub timestamp_ns: i64,
    /// RFC 3339 rendering of `timestamp_ns` (millisecond precision).
    pub timestamp: String,
    /// Identical events aggregated into this one.
    pub count: i64,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The server's re-evaluation (`None` when the event could not be re-evaluated).
    pub server_verdict: Option<String>,
    pub drift_detected: bool,
    /// `stale_policy`, `tier_limit` or `mismatch` when drift was detected.
    pub drift_cause: Option<String>,
    /// Sort key: event time in unix milliseconds.
    #[serde(skip)]
    pub ts: i64,
}

const EVENT_COLS: [&str; 24] = [
    "event_id",
    "daemon_id",
    "seq",
    "discovered_agent_id",
    "agent_type",
    "kind",
    "resource",
    "verdict",
    "enforced",
    "severity",
    "policy_version",
    "rule",
    "pid",
    "ppid",
    "uid",
    "process_exe",
    "cmdline",
    "timestamp_ns",
    "ts",
    "count",
    "metadata",
    "server_verdict",
    "drift_detected",
    "drift_cause",
];

/// Rows per INSERT statement (24 parameters each, below both backends' limits).
const INSERT_CHUNK: usize = 500;

impl EventRecord {
    fn binds(&self) -> [Bind; 24] {
        [
            Bind::Text(self.event_id.clone()),
            Bind::Text(self.daemon_id.clone()),
            Bind::Int(self.seq),
            Bind::OptText(self.discovered_agent_id.clone()),
            Bind::OptText(self.agent_type.clone()),
            Bind::Text(self.kind.clone()),
            Bind::Text(self.resource.clone()),
            Bind::Text(self.verdict.clone()),
            Bind::Text(self.enforced.clone()),
            Bind::OptText(self.severity.clone()),
            Bind::OptText(self.policy_version.clone()),
            Bind::OptText(self.rule.clone()),
            Bind::OptInt(self.pid),
            Bind::OptInt(self.ppid),
            Bind::OptInt(self.uid),
            Bind::OptText(self.process_exe.clone()),
            Bind::OptText(self.cmdline.clone()),
            Bind::Int(self.timestamp_ns),
            Bind::Int(self.ts),
            Bind::Int(self.count),
            Bind::Text(serde_json::Value::Object(self.metadata.clone()).to_string()),
            Bind::OptText(self.server_verdict.clone()),
            Bind::Bool(self.drift_detected),
            Bind::OptText(self.drift_cause.clone()),
        ]
    }
}

fn event_from<R: RowExt + RowOptExt>(r: &R) -> Result<EventRecord, sqlx::Error> {
    let ts = r.int("ts")?;
    let metadata = serde_json::from_str(&r.text("metadata")?).unwrap_or_default();
    Ok(EventRecord {
        event_id: r.text("event_id")?,
        daemon_id: r.text("daemon_id")?,
        seq: r.int("seq")?,
        discovered_agent_id: r.opt_text("discovered_agent_id")?,
        agent_type: r.opt_text("agent_type")?,
        kind: r.text("kind")?,
        resource: r.text("resource")?,
        verdict: r.text("verdict")?,
        enforced: r.text("enforced")?,
        severity: r.opt_text("severity")?,
        policy_version: r.opt_text("policy_version")?,
        rule: r.opt_text("rule")?,
        pid: r.opt_int("pid")?,
        ppid: r.opt_int("ppid")?,
        uid: r.opt_int("uid")?,
        process_exe: r.opt_text("process_exe")?,
        cmdline: r.opt_text("cmdline")?,
        timestamp_ns: r.int("timestamp_ns")?,
        timestamp: rfc3339(ts),
        count: r.int("count")?,
        metadata,
        server_verdict: r.opt_text("server_verdict")?,
        drift_detected: r.flag("drift_detected")?,
        drift_cause: r.opt_text("drift_cause")?,
        ts,
    })
}

/// Filters of `GET /events` and `GET /events/stream` (SPEC §10). Values are normalised:
/// `kind` and `verdict` upper case, `q` any case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub agent_id: Option<String>,
    pub discovered_agent_id: Option<String>,
    pub agent_type: Option<String>,
    pub kind: Option<String>,
    pub verdict: Option<String>,
    pub drift_detected: Option<bool>,
    /// Inclusive lower bound, unix ms.
    pub since: Option<i64>,
    /// Exclusive upper bound, unix ms.
    pub until: Option<i64>,
    /// Case-insensitive substring of `resource`, `process_exe` or `cmdline`.
    pub q: Option<String>,
}

impl EventFilter {
    /// Whether `e` passes the filter (the SQL of [`Store::query_events`], in memory).
    pub fn matches(&self, e: &EventRecord) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        let q_hit = |q: &str| {
            let q = q.to_lowercase();
            [
                Some(&e.resource),
                e.process_exe.as_ref(),
                e.cmdline.as_ref(),
            ]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(&q))
        };
        eq(&self.agent_id, Some(&e.daemon_id))
            && eq(&self.discovered_agent_id, e.discovered_agent_id.as_deref())
            && eq(&self.agent_type, e.agent_type.as_deref())
            && eq(&self.kind, Some(&e.kind))
            && eq(&self.verdict, Some(&e.verdict))
            && self.drift_detected.is_none_or(|d| d == e.drift_detected)
            && self.since.is_none_or(|s| e.ts >= s)
            && self.until.is_none_or(|u| e.ts < u)
            && self.q.as_deref().is_none_or(q_hit)
    }

    /// `WHERE` conditions (joined by `AND`) and their binds, numbered from `$1`.
    fn sql(&self) -> (Vec<String>, Vec<Bind>) {
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        let mut push = |cond: &str, b: Bind| {
            binds.push(b);
            conds.push(cond.replace('?', &format!("${}", binds.len())));
        };
        let text = [
            ("daemon_id = ?", &self.agent_id),
            ("discovered_agent_id = ?", &self.discovered_agent_id),
            ("agent_type = ?", &self.agent_type),
            ("kind = ?", &self.kind),
            ("verdict = ?", &self.verdict),
        ];
        for (cond, v) in text {
            if let Some(v) = v {
                push(cond, Bind::Text(v.clone()));
            }
        }
        if let Some(d) = self.drift_detected {
            push("drift_detected = ?", Bind::Bool(d));
        }
        if let Some(s) = self.since {
            push("ts >= ?", Bind::Int(s));
        }
        if let Some(u) = self.until {
            push("ts < ?", Bind::Int(u));
        }
        if let Some(q) = &self.q {
            let like = format!("%{}%", escape_like(&q.to_lowercase()));
            let n = binds.len();
            binds.extend([
                Bind::Text(like.clone()),
                Bind::Text(like.clone()),
                Bind::Text(like),
            ]);
            conds.push(format!(
                "(LOWER(resource) LIKE ${} ESCAPE '\\' OR LOWER(COALESCE(process_exe, '')) LIKE ${} ESCAPE '\\' OR LOWER(COALESCE(cmdline, '')) LIKE ${} ESCAPE '\\')",
                n + 1,
                n + 2,
                n + 3
            ));
        }
        (conds, binds)
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A position in the `(ts DESC, event_id DESC)` order: the last event of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub ts: i64,
    pub event_id: String,
}

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}:{}", self.ts, self.event_id))
    }

    /// Parses [`Cursor::encode`]; `None` for anything else.
    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = String::from_utf8(hex::decode(s).ok()?).ok()?;
        let (ts, id) = raw.split_once(':')?;
        Some(Cursor {
            ts: ts.parse().ok()?,
            event_id: id.to_owned(),
        })
    }
}

/// Counts for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub by_verdict: Vec<(String, i64)>,
    pub by_kind: Vec<(String, i64)>,
    pub drift_by_cause: Vec<(String, i64)>,
}

impl Store {
    /// Inserts `events` in one transaction, skipping those whose `(daemon_id, seq)` or
    /// `event_id` is already stored, and adds the newly stored drifted events to the daemon's
    /// drift count. Returns the `seq` of the newly stored events.
    pub async fn insert_events(
        &self,
        daemon_id: &str,
        events: &[EventRecord],
    ) -> StoreResult<Vec<i64>> {
        let mut inserted = Vec::new();
        let backend = self.backend();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in events.chunks(INSERT_CHUNK) {
                let sql = insert_sql(chunk.len(), backend);
                let binds: Vec<Bind> = chunk.iter().flat_map(EventRecord::binds).collect();
                let q = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), &binds);
                for row in q.fetch_all(&mut *tx).await? {
                    inserted.push(row.int("seq")?);
                }
            }
            let fresh: HashSet<i64> = inserted.iter().copied().collect();
            let drifted = events
                .iter()
                .filter(|e| e.drift_detected && fresh.contains(&e.seq))
                .count();
            if drifted > 0 {
                sqlx::query("UPDATE daemons SET drift_count = drift_count + $1 WHERE id = $2")
                    .bind(i64::try_from(drifted).unwrap_or(i64::MAX))
                    .bind(daemon_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(inserted)
    }

    /// One page of events matching `filter`, newest first, after `cursor`; `limit + 1` rows
    /// are fetched so the caller knows whether another page exists.
    pub async fn query_events(
        &self,
        filter: &EventFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Vec<EventRecord>> {
        let (mut conds, mut binds) = filter.sql();
        if let Some(c) = cursor {
            let n = binds.len();
            conds.push(format!("(ts, event_id) < (${}, ${})", n + 1, n + 2));
            binds.extend([Bind::Int(c.ts), Bind::Text(c.event_id.clone())]);
        }
        let where_ = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT {} FROM events {where_} ORDER BY ts DESC, event_id DESC LIMIT {}",
            EVENT_COLS.join(", "),
            limit + 1
        );
        on_pool!(self, p => {
            let q = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), &binds);
            q.fetch_all(p).await?.iter().map(event_from).collect::<Result<_, _>>()
                .map_err(StoreError::from)
        })
    }

    /// Events since `since_ms` by verdict and kind, and drifted ones by cause.
    pub async fn event_counts(&self, since_ms: i64) -> StoreResult<EventCounts> {
        let group = |col: &str, extra: &str| {
            sqlx::AssertSqlSafe(format!(
                "SELECT {col} AS k, COUNT(*) AS n FROM events WHERE ts >= $1{extra} GROUP BY {col} ORDER BY {col}"
            ))
        };
        let mut out = EventCounts::default();
        for (col, extra, slot) in [
            ("verdict", "", &mut out.by_verdict),
            ("kind", "", &mut out.by_kind),
            (
                "drift_cause",
                " AND drift_detected = TRUE AND drift_cause IS NOT NULL",
                &mut out.drift_by_cause,
            ),
        ] {
            *slot = on_pool!(self, p => sqlx::query(group(col, extra)).bind(since_ms).fetch_all(p).await?
                .iter().map(|r| Ok((r.text("k")?, r.int("n")?))).collect::<Result<_, sqlx::Error>>()?);
        }
        Ok(out)
    }

    /// Deletes up to `batch` events older than `before_ms`; returns how many.
    pub async fn delete_events_before(&self, before_ms: i64, batch: i64) -> StoreResult<u64> {
        let n = on_pool!(self, p => sqlx::query(
            "DELETE FROM events WHERE event_id IN (SELECT event_id FROM events WHERE ts < $1 LIMIT $2)",
        )
        .bind(before_ms)
        .bind(batch)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n)
    }

    /// Whether [`Store::close`] was called.
    pub fn is_closed(&self) -> bool {
        on_pool!(self, p => p.is_closed())
    }
}

/// The multi-row INSERT of `rows` events. SQLite gets anonymous `?` placeholders: looking
/// up thousands of numbered ones is quadratic there.
fn insert_sql(rows: usize, backend: Backend) -> String {
    let cols = EVENT_COLS.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let ps: Vec<String> = (1..=cols)
                .map(|c| match backend {
                    Backend::Sqlite => "?".to_owned(),
                    Backend::Postgres => format!("${}", r * cols + c),
                })
                .collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO events ({}) VALUES {} ON CONFLICT DO NOTHING RETURNING seq",
        EVENT_COLS.join(", "),
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            ts: 1_700_000_000_000,
            event_id: "0190-abc".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode(&hex::encode("x:y")), None);
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("a%b_c\\"), "a\\%b\\_c\\\\");
    }
}
