//! Events: idempotent batch insert, filtered keyset queries, dashboard counts, retention.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::time::rfc3339;
use super::{Db, RowExt, Store, StoreError, StoreResult, on_pool};
use crate::metrics::VERDICTS;

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
    Int(i64),
}

/// Binds `$binds` in order to `$q` (a `sqlx::query`), for either backend.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Text(v) => q.bind(v.clone()),
                Bind::Int(v) => q.bind(*v),
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

/// Rows per SQLite INSERT statement, largest first: a batch is cut into chunks of these sizes
/// so only a few distinct statements (each prepared once and cached per connection) exist,
/// and the usual batches (multiples of 100) take few statements.
const SQLITE_CHUNKS: [usize; 5] = [500, 100, 20, 5, 1];

/// The PostgreSQL insert: the batch as one array per column, unnested into rows. Used as
/// is when every row is new (the usual case), and with [`PG_SKIP_STORED`] appended otherwise.
const PG_INSERT: &str = "INSERT INTO events (event_id, daemon_id, seq, discovered_agent_id, \
    agent_type, kind, resource, verdict, enforced, severity, policy_version, rule, pid, ppid, \
    uid, process_exe, cmdline, timestamp_ns, ts, count, metadata, server_verdict, \
    drift_detected, drift_cause) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
    $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], $17::text[], $18::bigint[], \
    $19::bigint[], $20::bigint[], $21::text[], $22::text[], $23::boolean[], $24::text[])";

/// Skips rows already stored and returns the keys of the new ones. `ON CONFLICT` makes
/// PostgreSQL probe both unique indexes and insert each row speculatively (an extra WAL
/// record per row): a quarter to a third of an insert's cost (bench/BENCHMARKS.md), so it is
/// paid only for batches holding a row already stored.
const PG_SKIP_STORED: &str = " ON CONFLICT DO NOTHING RETURNING daemon_id, seq";

impl EventRecord {
    /// The `metadata` column: the map as a JSON object.
    fn metadata_json(&self) -> String {
        if self.metadata.is_empty() {
            return "{}".to_owned();
        }
        serde_json::to_string(&self.metadata).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Binds the columns of `e` in [`EVENT_COLS`] order.
fn bind_sqlite<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    e: &'q EventRecord,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(e.event_id.as_str())
        .bind(e.daemon_id.as_str())
        .bind(e.seq)
        .bind(e.discovered_agent_id.as_deref())
        .bind(e.agent_type.as_deref())
        .bind(e.kind.as_str())
        .bind(e.resource.as_str())
        .bind(e.verdict.as_str())
        .bind(e.enforced.as_str())
        .bind(e.severity.as_deref())
        .bind(e.policy_version.as_deref())
        .bind(e.rule.as_deref())
        .bind(e.pid)
        .bind(e.ppid)
        .bind(e.uid)
        .bind(e.process_exe.as_deref())
        .bind(e.cmdline.as_deref())
        .bind(e.timestamp_ns)
        .bind(e.ts)
        .bind(e.count)
        .bind(e.metadata_json())
        .bind(e.server_verdict.as_deref())
        .bind(e.drift_detected)
        .bind(e.drift_cause.as_deref())
}

/// Inserts `events` on SQLite with multi-row statements, skipping rows already stored;
/// returns whether each was newly stored.
async fn insert_sqlite(
    tx: &mut sqlx::SqliteConnection,
    events: &[EventRecord],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut inserted = Vec::with_capacity(events.len());
    let mut rest = events;
    while let Some(&size) = SQLITE_CHUNKS.iter().find(|&&n| n <= rest.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = sqlx::AssertSqlSafe(insert_sql(size));
        let q = chunk.iter().fold(sqlx::query(sql), bind_sqlite);
        for row in q.fetch_all(&mut *tx).await? {
            inserted.push((row.text("daemon_id")?, row.int("seq")?));
        }
    }
    Ok(fresh_flags(events, &inserted))
}

/// Inserts `events` on PostgreSQL in one statement; returns whether each was newly stored.
/// Without `skip_stored`, a row already stored (or twice in `events`) fails the statement
/// with a unique violation.
async fn insert_postgres(
    tx: &mut sqlx::PgConnection,
    events: &[EventRecord],
    skip_stored: bool,
) -> Result<Vec<bool>, sqlx::Error> {
    let text = |f: fn(&EventRecord) -> &str| events.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&EventRecord) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&EventRecord) -> i64| events.iter().map(f).collect::<Vec<_>>();
    let opt_int = |f: fn(&EventRecord) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
    let metadata: Vec<String> = events.iter().map(EventRecord::metadata_json).collect();
    let drifted: Vec<bool> = events.iter().map(|e| e.drift_detected).collect();
    let sql = if skip_stored {
        sqlx::AssertSqlSafe(format!("{PG_INSERT}{PG_SKIP_STORED}"))
    } else {
        sqlx::AssertSqlSafe(PG_INSERT.to_owned())
    };
    let rows = sqlx::query(sql)
        .bind(text(|e| &e.event_id))
        .bind(text(|e| &e.daemon_id))
        .bind(int(|e| e.seq))
        .bind(opt(|e| e.discovered_agent_id.as_deref()))
        .bind(opt(|e| e.agent_type.as_deref()))
        .bind(text(|e| &e.kind))
        .bind(text(|e| &e.resource))
        .bind(text(|e| &e.verdict))
        .bind(text(|e| &e.enforced))
        .bind(opt(|e| e.severity.as_deref()))
        .bind(opt(|e| e.policy_version.as_deref()))
        .bind(opt(|e| e.rule.as_deref()))
        .bind(opt_int(|e| e.pid))
        .bind(opt_int(|e| e.ppid))
        .bind(opt_int(|e| e.uid))
        .bind(opt(|e| e.process_exe.as_deref()))
        .bind(opt(|e| e.cmdline.as_deref()))
        .bind(int(|e| e.timestamp_ns))
        .bind(int(|e| e.ts))
        .bind(int(|e| e.count))
        .bind(metadata)
        .bind(opt(|e| e.server_verdict.as_deref()))
        .bind(drifted)
        .bind(opt(|e| e.drift_cause.as_deref()))
        .fetch_all(&mut *tx)
        .await?;
    if !skip_stored {
        return Ok(vec![true; events.len()]);
    }
    let inserted = rows
        .iter()
        .map(|r| Ok((r.text("daemon_id")?, r.int("seq")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(fresh_flags(events, &inserted))
}

/// The key under which [`metadata_from`] returns stored metadata that is not a JSON object.
pub const CORRUPT_METADATA_KEY: &str = "tyr.corrupt_metadata";

/// The stored `metadata` text of event `event_id` as a map. Text that is not a JSON object (a
/// damaged row, or one written by something else) is neither dropped nor fatal to the page:
/// it is logged as an error and returned whole under [`CORRUPT_METADATA_KEY`], so the event
/// still lists and an operator sees both that its metadata is damaged and what is left of it.
fn metadata_from(event_id: &str, raw: String) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(&raw) {
        Ok(map) => map,
        Err(error) => {
            tracing::error!(
                event_id,
                %error,
                "stored event metadata is not a JSON object: returned as text under {CORRUPT_METADATA_KEY}"
            );
            serde_json::Map::from_iter([(
                CORRUPT_METADATA_KEY.to_owned(),
                serde_json::Value::String(raw),
            )])
        }
    }
}

fn event_from<R: RowExt + RowOptExt>(r: &R) -> Result<EventRecord, sqlx::Error> {
    let ts = r.int("ts")?;
    let event_id = r.text("event_id")?;
    let metadata = metadata_from(&event_id, r.text("metadata")?);
    Ok(EventRecord {
        event_id,
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
    /// The filter prepared for matching many events in memory (an SSE subscription): `q` is
    /// lowercased once, here, instead of once per event.
    pub fn matcher(self) -> EventMatcher {
        let q = self.q.as_deref().map(str::to_lowercase);
        EventMatcher { filter: self, q }
    }

    /// `WHERE` conditions (joined by `AND`) and their binds, numbered from `$1`.
    fn sql(&self) -> (Vec<String>, Vec<Bind>) {
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        let mut push = |cond: &str, b: Bind| {
            binds.push(b);
            conds.push(cond.replace('?', &format!("${}", binds.len())));
        };
        // A known verdict is spelled as a literal (from VERDICTS, never from the request):
        // PostgreSQL's index holds the rare verdicts only, and the planner must see the value
        // to use it.
        let known_verdict = self
            .verdict
            .as_deref()
            .and_then(|v| VERDICTS.iter().find(|known| **known == v));
        let bound_verdict = self.verdict.as_ref().filter(|_| known_verdict.is_none());
        let text = [
            ("daemon_id = ?", &self.agent_id),
            ("discovered_agent_id = ?", &self.discovered_agent_id),
            ("agent_type = ?", &self.agent_type),
            ("kind = ?", &self.kind),
            ("verdict = ?", &bound_verdict.cloned()),
        ];
        for (cond, v) in text {
            if let Some(v) = v {
                push(cond, Bind::Text(v.clone()));
            }
        }
        if let Some(s) = self.since {
            push("ts >= ?", Bind::Int(s));
        }
        if let Some(u) = self.until {
            push("ts < ?", Bind::Int(u));
        }
        if let Some(v) = known_verdict {
            conds.push(format!("verdict = '{v}'"));
        }
        if let Some(d) = self.drift_detected {
            // A literal, not a bind: the planner must see it to use the partial index.
            conds.push(format!(
                "drift_detected = {}",
                if d { "TRUE" } else { "FALSE" }
            ));
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

/// An [`EventFilter`] prepared by [`EventFilter::matcher`]: the SQL of
/// [`Store::query_events`], in memory.
#[derive(Debug, Clone)]
pub struct EventMatcher {
    filter: EventFilter,
    /// `filter.q`, lowercased.
    q: Option<String>,
}

impl EventMatcher {
    /// Whether `e` passes the filter.
    pub fn matches(&self, e: &EventRecord) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        let q_hit = |q: &str| {
            [
                Some(&e.resource),
                e.process_exe.as_ref(),
                e.cmdline.as_ref(),
            ]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(q))
        };
        let f = &self.filter;
        eq(&f.agent_id, Some(&e.daemon_id))
            && eq(&f.discovered_agent_id, e.discovered_agent_id.as_deref())
            && eq(&f.agent_type, e.agent_type.as_deref())
            && eq(&f.kind, Some(&e.kind))
            && eq(&f.verdict, Some(&e.verdict))
            && f.drift_detected.is_none_or(|d| d == e.drift_detected)
            && f.since.is_none_or(|s| e.ts >= s)
            && f.until.is_none_or(|u| e.ts < u)
            && self.q.as_deref().is_none_or(q_hit)
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
    /// Inserts `events` (of one daemon or several) in one transaction, skipping those whose
    /// `(daemon_id, seq)` or `event_id` is already stored (or earlier in `events`), and adds
    /// the newly stored drifted events to their daemon's drift count. Returns, for each event,
    /// whether it was newly stored.
    pub async fn insert_events(&self, events: &[EventRecord]) -> StoreResult<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        /// One transaction: the rows with `$insert` (whether each is new), then the drift
        /// counts; evaluates to the transaction's `Result<Vec<bool>, sqlx::Error>`.
        macro_rules! in_tx {
            ($pool:expr, |$tx:ident| $insert:expr) => {
                async {
                    let mut $tx = $pool.begin().await?;
                    let fresh = $insert.await?;
                    for (daemon_id, drifted) in drift_counts(events, &fresh) {
                        sqlx::query(
                            "UPDATE daemons SET drift_count = drift_count + $1 WHERE id = $2",
                        )
                        .bind(drifted)
                        .bind(daemon_id)
                        .execute(&mut *$tx)
                        .await?;
                    }
                    $tx.commit().await?;
                    Ok::<_, sqlx::Error>(fresh)
                }
            };
        }
        Ok(match &self.db {
            Db::Sqlite(p) => in_tx!(p, |tx| insert_sqlite(&mut tx, events)).await?,
            // Plain inserts first; a batch holding an already stored row (a daemon resending
            // after a reconnect) fails on the unique index and is stored again skipping them.
            Db::Postgres(p) => {
                match in_tx!(p, |tx| insert_postgres(&mut tx, events, false)).await {
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        tracing::debug!(
                            events = events.len(),
                            constraint = e.constraint(),
                            "event batch holds stored events: inserting it again, skipping them"
                        );
                        in_tx!(p, |tx| insert_postgres(&mut tx, events, true)).await?
                    }
                    r => r?,
                }
            }
        })
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

/// For each of `events`, whether its key is among `inserted` (the first event with a key
/// claims it).
fn fresh_flags(events: &[EventRecord], inserted: &[(String, i64)]) -> Vec<bool> {
    let mut first: HashMap<(&str, i64), usize> = HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        first.entry((e.daemon_id.as_str(), e.seq)).or_insert(i);
    }
    let mut fresh = vec![false; events.len()];
    for (daemon_id, seq) in inserted {
        if let Some(&i) = first.get(&(daemon_id.as_str(), *seq)) {
            fresh[i] = true;
        }
    }
    fresh
}

/// Newly stored drifted events per daemon (daemons without any left out), in id order so
/// that concurrent transactions update `daemons` rows in one order (no deadlock).
fn drift_counts<'e>(events: &'e [EventRecord], fresh: &[bool]) -> BTreeMap<&'e str, i64> {
    let mut counts = BTreeMap::new();
    for (e, _) in events
        .iter()
        .zip(fresh)
        .filter(|(e, f)| **f && e.drift_detected)
    {
        *counts.entry(e.daemon_id.as_str()).or_insert(0) += 1;
    }
    counts
}

/// The SQLite multi-row INSERT of `rows` events, with anonymous `?` placeholders: looking up
/// thousands of numbered ones is quadratic there.
fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; EVENT_COLS.len()].join(", "));
    format!(
        "INSERT INTO events ({}) VALUES {} ON CONFLICT DO NOTHING RETURNING daemon_id, seq",
        EVENT_COLS.join(", "),
        vec![row; rows].join(", ")
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

    fn record() -> EventRecord {
        EventRecord {
            event_id: "0190a8b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b".into(),
            daemon_id: "d".into(),
            seq: 1,
            discovered_agent_id: None,
            agent_type: None,
            kind: "EXEC".into(),
            resource: "/Opt/NeedleTool".into(),
            verdict: "DENY".into(),
            enforced: "blocked".into(),
            severity: None,
            policy_version: None,
            rule: None,
            pid: None,
            ppid: None,
            uid: None,
            process_exe: None,
            cmdline: Some("run --FAST".into()),
            timestamp_ns: 0,
            timestamp: String::new(),
            count: 1,
            metadata: serde_json::Map::new(),
            server_verdict: None,
            drift_detected: false,
            drift_cause: None,
            ts: 5,
        }
    }

    #[test]
    fn matcher_compares_q_in_any_case() {
        let e = record();
        let with_q = |q: &str| EventFilter {
            q: Some(q.into()),
            ..EventFilter::default()
        };
        for hit in ["nEEDLEtool", "needle", "--fast", "OPT/"] {
            assert!(with_q(hit).matcher().matches(&e), "{hit}");
        }
        assert!(!with_q("haystack").matcher().matches(&e));
        let other = EventFilter {
            verdict: Some("ALLOW".into()),
            ..with_q("needle")
        };
        assert!(!other.matcher().matches(&e));
    }

    #[test]
    fn corrupt_metadata_is_returned_whole_under_its_key() {
        let ok = metadata_from("e", r#"{"policy":"p"}"#.into());
        assert_eq!(ok.get("policy"), Some(&serde_json::json!("p")));
        for raw in ["{\"policy\": tru", "[1, 2]", "not json"] {
            let m = metadata_from("e", raw.into());
            assert_eq!(m.len(), 1, "{raw}");
            assert_eq!(m.get(CORRUPT_METADATA_KEY), Some(&serde_json::json!(raw)));
        }
    }

    #[test]
    fn known_verdicts_are_literals_others_binds() {
        let (conds, binds) = EventFilter {
            verdict: Some("DENY".into()),
            ..EventFilter::default()
        }
        .sql();
        assert_eq!(conds, ["verdict = 'DENY'"]);
        assert!(binds.is_empty());
        let (conds, binds) = EventFilter {
            verdict: Some("x' OR '1'='1".into()),
            ..EventFilter::default()
        }
        .sql();
        assert_eq!(conds, ["verdict = $1"]);
        assert!(matches!(&binds[..], [Bind::Text(v)] if v == "x' OR '1'='1"));
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("a%b_c\\"), "a\\%b\\_c\\\\");
    }
}
