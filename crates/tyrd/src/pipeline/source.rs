//! Synthetic event source: JSON lines of [`Event`]s (`tyrd run --events-from FILE`), for tests
//! and for running the pipeline without the kernel. Blank lines are skipped.

use std::io::{self, BufRead, Read};

use crate::event::Event;

/// Longest accepted line, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A line that is not a valid event.
#[derive(Debug, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

/// Reads events from JSON lines.
pub struct JsonLines<R> {
    reader: R,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> JsonLines<R> {
    /// Reads from `reader`.
    pub fn new(reader: R) -> Self {
        JsonLines {
            reader,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The next event, a bad line, or `None` at the end of input. I/O errors are fatal.
    pub fn next_event(&mut self) -> io::Result<Option<Result<Event, LineError>>> {
        loop {
            self.buf.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.buf.len() > MAX_LINE_BYTES && !self.buf.ends_with(b"\n") {
                self.skip_rest_of_line()?;
                return Ok(Some(Err(
                    self.error(1, format!("line longer than {MAX_LINE_BYTES} bytes"))
                )));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(
                serde_json::from_slice(&self.buf).map_err(|e| self.json_error(&e)),
            ));
        }
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(64 * 1024)
                .read_until(b'\n', &mut self.buf)?;
            if n == 0 || self.buf.ends_with(b"\n") {
                return Ok(());
            }
        }
    }

    fn json_error(&self, e: &serde_json::Error) -> LineError {
        let text = e.to_string();
        // serde_json appends " at line L column C"; the line is always 1 here.
        let message = text.rsplit_once(" at line ").map_or(&*text, |(m, _)| m);
        self.error(e.column().max(1) as u64, message.to_owned())
    }

    fn error(&self, column: u64, message: String) -> LineError {
        LineError {
            line: self.line,
            column,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Verdict};
    use std::io::Cursor;

    fn all(input: &[u8]) -> Vec<Result<Event, LineError>> {
        let mut lines = JsonLines::new(Cursor::new(input));
        let mut out = Vec::new();
        while let Some(item) = lines.next_event().expect("no I/O error") {
            out.push(item);
        }
        out
    }

    const GOOD: &str = r#"{"kind":"FILE_READ","resource":"/home/u/.ssh/id_rsa","verdict":"DENY","enforced":"blocked","severity":"critical","policy_version":"base@2","rule":"deny-ssh-keys","pid":10,"ppid":9,"uid":1000,"process_exe":"/usr/bin/cat","cmdline":"cat /home/u/.ssh/id_rsa","agent_type":"claude-code","discovered_agent_id":"da-7","timestamp_ns":5,"metadata":{"flags":"O_RDONLY"}}"#;

    #[test]
    fn reads_full_and_minimal_events_and_skips_blank_lines() {
        let input = format!(
            "{GOOD}\n\n   \n{}\n",
            r#"{"kind":"EXEC","resource":"/bin/sh","verdict":"ALLOW","pid":3,"timestamp_ns":9}"#
        );
        let events: Vec<Event> = all(input.as_bytes())
            .into_iter()
            .map(|r| r.expect("valid"))
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, Kind::FileRead);
        assert_eq!(events[0].rule.as_deref(), Some("deny-ssh-keys"));
        assert_eq!(events[0].metadata["flags"], "O_RDONLY");
        assert_eq!(events[0].count, 1);
        assert_eq!(events[1].verdict, Verdict::Allow);
        assert_eq!(events[1].agent_type, None);
    }

    #[test]
    fn bad_lines_are_errors_with_their_line_number_and_reading_goes_on() {
        let mut input = Vec::new();
        input.extend_from_slice(b"not json\n{\"kind\":\"READ\"}\n");
        input.extend_from_slice(
            br#"{"kind":"EXEC","resource":"/bin/sh","verdict":"ALLOW","pid":3,"timestamp_ns":9,"extra":1}"#,
        );
        input.extend_from_slice(b"\n\xff\xfe\n");
        input.extend_from_slice(GOOD.as_bytes());
        let results = all(&input);
        assert_eq!(results.len(), 5);
        for (i, r) in results[..4].iter().enumerate() {
            let err = r.as_ref().expect_err("bad line");
            assert_eq!(err.line, i as u64 + 1);
        }
        let unknown = results[2].as_ref().unwrap_err();
        assert!(unknown.message.contains("extra"), "{unknown}");
        assert!(!unknown.message.contains("at line"), "{unknown}");
        assert_eq!(unknown.to_string().split(':').next(), Some("3"));
        assert!(
            results[4].is_ok(),
            "a good last line without newline is read"
        );
    }

    #[test]
    fn overlong_line_is_rejected_without_losing_the_next_one() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.push(b'\n');
        input.extend_from_slice(GOOD.as_bytes());
        let results = all(&input);
        assert_eq!(results.len(), 2);
        let err = results[0].as_ref().expect_err("too long");
        assert_eq!(err.line, 1);
        assert!(err.message.contains("longer than"));
        assert!(results[1].is_ok());
    }
}
