//! Rendering: aligned tables, single values, event lines and JSON.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A table with a header row; columns are separated by two spaces and padded to their widest
/// cell (the last column is not padded).
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells render empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending with a newline.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let cell = |row: &[String], i: usize| row.get(i).map_or(String::new(), |c| clean(c));
        let all: Vec<Vec<String>> = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|r| (0..n).map(|i| cell(r, i)).collect())
            .collect();
        let widths: Vec<usize> = (0..n)
            .map(|i| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &all {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                if i + 1 == n {
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Escapes control characters, so that data from hosts cannot drive the terminal.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as a table cell: strings verbatim, `null`/absent as `-`, others as JSON.
pub fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => clean(s),
        Some(other) => clean(&other.to_string()),
    }
}

/// The first of `keys` present (and not null) in `obj`, as a cell.
pub fn field(obj: &Value, keys: &[&str]) -> String {
    text(
        keys.iter()
            .find_map(|k| obj.get(*k).filter(|v| !v.is_null())),
    )
}

/// `key: value` lines for every field of an object (nested values as JSON).
pub fn fields(obj: &Value) -> String {
    match obj {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{}: {}\n", clean(k), text(Some(v))))
            .collect(),
        other => format!("{}\n", text(Some(other))),
    }
}

/// An event's time: its `timestamp_ns` as RFC 3339 UTC, or its `timestamp` field.
pub fn event_time(event: &Value) -> String {
    let ns = event.get("timestamp_ns").and_then(|v| {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    ns.and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| field(event, &["timestamp", "time"]))
}

/// `<RFC3339> <verdict> <kind> <resource> pid=<pid> <exe> [agent_type]` (SPEC §11).
pub fn event_line(event: &Value) -> String {
    let mut line = format!(
        "{} {} {} {} pid={} {}",
        event_time(event),
        field(event, &["verdict"]),
        field(event, &["kind"]),
        field(event, &["resource"]),
        field(event, &["pid"]),
        field(event, &["process_exe"]),
    );
    if let Some(t) = event
        .get("agent_type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        line.push(' ');
        line.push_str(&clean(t));
    }
    line
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// The elements of a list response: the array itself, or the array under `key`.
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.as_array()
        .or_else(|| v.get(key).and_then(Value::as_array))
        .map_or(&[], Vec::as_slice)
}
