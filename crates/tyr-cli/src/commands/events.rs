//! `tyr audit tail|query` and `tyr drift`: the audit trail.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use reqwest::header::ACCEPT;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Ctx;
use crate::CliError;
use crate::duration::resolve_time;
use crate::output::{Table, clean, event_line, event_time, field, items, print_json};

/// Largest page the server serves.
const MAX_PAGE: u64 = 1000;
/// Most drift events `tyr drift` reads.
const DRIFT_SCAN_LIMIT: u64 = 20_000;

/// `tyr audit …`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Follow events live (until interrupted).
    Tail(TailArgs),
    /// Query stored events (follows the server's pages up to --limit).
    Query(QueryArgs),
}

/// Event filters, as the server's query parameters.
#[derive(Args, Default)]
pub struct Filters {
    /// Daemon id.
    #[arg(long)]
    pub agent_id: Option<String>,
    /// Discovered agent id.
    #[arg(long)]
    pub discovered_agent_id: Option<String>,
    /// Agent type, e.g. claude-code.
    #[arg(long)]
    pub agent_type: Option<String>,
    /// FILE_READ | FILE_WRITE | EXEC | NET_CONNECT | TLS
    #[arg(long)]
    pub kind: Option<String>,
    /// ALLOW | DENY | ALERT
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only events whose verdict drifted from the server's.
    #[arg(long)]
    pub drift: bool,
    /// Oldest event: a duration back from now (24h, 15m, 7d) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Newest event: a duration back from now or an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Free-text search.
    #[arg(long)]
    pub q: Option<String>,
}

impl Filters {
    /// The query parameters of these filters, times resolved against `now`.
    pub fn query(&self, now: OffsetDateTime) -> Result<Vec<(&'static str, String)>, CliError> {
        let mut q = Vec::new();
        let mut put = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        };
        put("agent_id", &self.agent_id);
        put("discovered_agent_id", &self.discovered_agent_id);
        put("agent_type", &self.agent_type);
        put("kind", &self.kind.as_ref().map(|k| k.to_ascii_uppercase()));
        put(
            "verdict",
            &self.verdict.as_ref().map(|v| v.to_ascii_uppercase()),
        );
        put("q", &self.q);
        if self.drift {
            q.push(("drift_detected", "true".into()));
        }
        for (k, v) in [("since", &self.since), ("until", &self.until)] {
            if let Some(v) = v {
                let at =
                    resolve_time(v, now).map_err(|e| CliError::Usage(format!("--{k}: {e}")))?;
                q.push((k, at));
            }
        }
        Ok(q)
    }
}

/// Arguments of `tyr audit tail`.
#[derive(Args)]
pub struct TailArgs {
    /// Only events of this daemon (name or id).
    #[arg(long, conflicts_with = "agent_id")]
    agent: Option<String>,
    #[command(flatten)]
    filters: Filters,
}

/// Arguments of `tyr audit query`.
#[derive(Args)]
pub struct QueryArgs {
    /// Most events to print (pages of up to 1000 are followed).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Continue from this cursor (printed by an earlier query).
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    filters: Filters,
}

/// Arguments of `tyr drift`.
#[derive(Args)]
pub struct DriftArgs {
    /// Window: a duration back from now or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
}

/// Runs a `tyr audit` command.
pub fn run(ctx: &Ctx, cmd: AuditCommand) -> Result<ExitCode, CliError> {
    match cmd {
        AuditCommand::Tail(args) => tail(ctx, args),
        AuditCommand::Query(args) => query(ctx, &args),
    }
}

/// A stdout write error ends the command quietly (e.g. `| head`).
fn out(line: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").is_ok()
}

fn query(ctx: &Ctx, args: &QueryArgs) -> Result<ExitCode, CliError> {
    let api = ctx.api()?;
    let filters = args.filters.query(OffsetDateTime::now_utc())?;
    let (events, cursor) = fetch_events(&api, &filters, args.limit, args.cursor.clone())?;
    if ctx.json() {
        print_json(&json!({"events": events, "next_cursor": cursor}));
        return Ok(ExitCode::SUCCESS);
    }
    for e in &events {
        if !out(&event_line(e)) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if let Some(c) = cursor {
        eprintln!("more events: --cursor {}", clean(&c));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads up to `limit` events, following `next_cursor`; returns them and the cursor of the
/// rest, if any.
fn fetch_events(
    api: &crate::client::Api,
    filters: &[(&'static str, String)],
    limit: u64,
    mut cursor: Option<String>,
) -> Result<(Vec<Value>, Option<String>), CliError> {
    let mut events: Vec<Value> = Vec::new();
    loop {
        let remaining = limit.saturating_sub(events.len() as u64);
        if remaining == 0 {
            return Ok((events, cursor));
        }
        let mut q = filters.to_vec();
        q.push(("limit", remaining.min(MAX_PAGE).to_string()));
        if let Some(c) = cursor.take() {
            q.push(("cursor", c));
        }
        let page = api.get(&["events"], &q)?;
        let batch = items(&page, "events");
        events.extend(batch.iter().cloned());
        cursor = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if cursor.is_none() || batch.is_empty() {
            return Ok((events, None));
        }
    }
}

/// Looks a daemon up by id or name.
fn resolve_agent(api: &crate::client::Api, name: &str) -> Result<String, CliError> {
    let list = api.get(&["agents"], &[])?;
    items(&list, "agents")
        .iter()
        .find(|a| {
            a.get("id").and_then(Value::as_str) == Some(name)
                || a.get("name").and_then(Value::as_str) == Some(name)
        })
        .and_then(|a| a.get("id").and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| CliError::Failed(format!("no agent named `{}`", clean(name))))
}

fn tail(ctx: &Ctx, mut args: TailArgs) -> Result<ExitCode, CliError> {
    let api = ctx.api_with_timeout(None)?;
    if let Some(name) = &args.agent {
        args.filters.agent_id = Some(resolve_agent(&api, name)?);
    }
    let query = args.filters.query(OffsetDateTime::now_utc())?;
    let req = api
        .request(Method::GET, api.url(&["events", "stream"], &query))
        .header(ACCEPT, "text/event-stream");
    let resp = api.send(req)?;
    let mut parser = SseParser::default();
    for line in BufReader::new(resp).lines() {
        let line = line.map_err(|e| CliError::Failed(format!("the event stream broke: {e}")))?;
        let Some(msg) = parser.feed(&line) else {
            continue;
        };
        match classify(&msg) {
            Some(Message::Event(e)) => {
                let text = if ctx.json() {
                    e.to_string()
                } else {
                    event_line(&e)
                };
                if !out(&text) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Some(Message::Dropped(n)) => {
                eprintln!("tyr: {n} events dropped by the server: this client fell behind");
            }
            None => {}
        }
    }
    Err(CliError::Failed(
        "the server closed the event stream".into(),
    ))
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// `event:` field (empty when absent).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// A line-by-line Server-Sent Events parser.
#[derive(Debug, Default)]
pub struct SseParser {
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// Feeds one line (without its newline); returns a message at a blank line ending one.
    pub fn feed(&mut self, line: &str) -> Option<SseMessage> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            return self.data.take().map(|data| SseMessage { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// What a stream message means.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// An event.
    Event(Value),
    /// The server dropped this many events for this client.
    Dropped(u64),
}

/// Interprets a message: `event: dropped` (data `N` or `{"dropped": N}`), or an event (no
/// event name, `message` or `event`) whose data is a JSON object. Others are ignored.
pub fn classify(msg: &SseMessage) -> Option<Message> {
    let data: Option<Value> = serde_json::from_str(&msg.data).ok();
    let dropped = data.as_ref().and_then(|d| {
        d.as_u64()
            .or_else(|| d.get("dropped").and_then(Value::as_u64))
    });
    match msg.event.as_str() {
        "dropped" => dropped.map(Message::Dropped),
        "" | "message" | "event" => match data {
            Some(d) if d.get("dropped").is_some() && d.get("kind").is_none() => {
                dropped.map(Message::Dropped)
            }
            Some(d) if d.is_object() => Some(Message::Event(d)),
            _ => None,
        },
        _ => None,
    }
}

/// `tyr drift`: drifted events since `--since`, counted per daemon and cause.
pub fn drift(ctx: &Ctx, args: &DriftArgs) -> Result<ExitCode, CliError> {
    let api = ctx.api()?;
    let filters = Filters {
        drift: true,
        since: Some(args.since.clone()),
        ..Filters::default()
    };
    let query = filters.query(OffsetDateTime::now_utc())?;
    let (events, more) = fetch_events(&api, &query, DRIFT_SCAN_LIMIT, None)?;
    let names: BTreeMap<String, String> = api
        .get(&["agents"], &[])
        .map(|list| {
            items(&list, "agents")
                .iter()
                .map(|a| (field(a, &["id"]), field(a, &["name", "hostname"])))
                .collect()
        })
        .unwrap_or_default();
    let rows = summarise(&events);
    if ctx.json() {
        let by: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({"daemon_id": r.daemon_id, "name": names.get(&r.daemon_id),
                    "drift_cause": r.cause, "count": r.count, "last": r.last})
            })
            .collect();
        print_json(&json!({"since": args.since, "total": events.len(),
            "truncated": more.is_some(), "by_daemon": by}));
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["DAEMON", "NAME", "CAUSE", "COUNT", "LAST"]);
    for r in &rows {
        let name = names
            .get(&r.daemon_id)
            .cloned()
            .unwrap_or_else(|| "-".into());
        t.row(vec![
            r.daemon_id.clone(),
            name,
            r.cause.clone(),
            r.count.to_string(),
            r.last.clone(),
        ]);
    }
    out!("{}", t.render());
    outln!(
        "{} drifted events since {}",
        events.len(),
        clean(&args.since)
    );
    if more.is_some() {
        eprintln!("tyr: only the newest {DRIFT_SCAN_LIMIT} drifted events were counted");
    }
    Ok(ExitCode::SUCCESS)
}

/// Drift counted per daemon and cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRow {
    /// Daemon id.
    pub daemon_id: String,
    /// `drift_cause`.
    pub cause: String,
    /// Number of events.
    pub count: u64,
    /// Time of the newest one.
    pub last: String,
}

/// Groups events by daemon and cause, most frequent first.
pub fn summarise(events: &[Value]) -> Vec<DriftRow> {
    let mut groups: BTreeMap<(String, String), DriftRow> = BTreeMap::new();
    for e in events {
        let key = (field(e, &["daemon_id"]), field(e, &["drift_cause"]));
        let time = event_time(e);
        let row = groups.entry(key.clone()).or_insert_with(|| DriftRow {
            daemon_id: key.0,
            cause: key.1,
            count: 0,
            last: time.clone(),
        });
        row.count += 1;
        if time > row.last {
            row.last = time;
        }
    }
    let mut rows: Vec<DriftRow> = groups.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.count));
    rows
}
