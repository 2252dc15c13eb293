//! Daemon configuration, `/etc/tyr/tyrd.yaml` (SPEC §12), and the post-enrollment edit that
//! removes `enrollment_token` from it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the daemon looks for its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/tyr/tyrd.yaml";

/// Largest accepted `buffer_size_mb` (1 TiB).
const MAX_BUFFER_MB: u64 = 1 << 20;

/// The parsed, validated daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` of the server's gRPC listener.
    pub server: String,
    /// This daemon's name, sent at enrollment.
    pub name: String,
    /// The server CA (as served at `/api/v1/ca.pem`); the daemon trusts nothing else.
    pub ca_file: PathBuf,
    /// One-time enrollment token; removed from the file after enrollment.
    #[serde(default)]
    pub enrollment_token: Option<String>,
    /// Key, certificate, CA copy and spool.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_s: u32,
    /// Bound of the on-disk event spool, in MiB.
    #[serde(default = "default_buffer_mb")]
    pub buffer_size_mb: u64,
    /// What happens to a process that looks like an AI agent of no known type.
    #[serde(default)]
    pub unregistered_agents: UnregisteredAgents,
    /// Event selection.
    #[serde(default)]
    pub events: EventsConfig,
    /// Enforcement tier to use; `auto` takes the best the kernel supports.
    #[serde(default)]
    pub tier: TierSetting,
    /// `tracing` filter (`info`, `debug`, `tyrd=debug,info`…); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

/// `unregistered_agents` (SPEC §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnregisteredAgents {
    /// Base policy, flagged for review.
    #[default]
    Audit,
    /// Built-in strict policy until an admin reclassifies it.
    Quarantine,
    /// Its governed syscalls are denied.
    Deny,
}

/// The `events` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Which allow events are sent.
    #[serde(default)]
    pub allow: AllowEvents,
}

/// `events.allow` (SPEC §9): deny and alert events are always sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowEvents {
    /// Allow events of classified agents only.
    #[default]
    Agents,
    /// Allow events of every process.
    All,
}

/// `tier` (SPEC §8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierSetting {
    /// The best tier the kernel supports.
    #[default]
    Auto,
    /// BPF LSM hooks.
    Lsm,
    /// Tracepoints (kill at syscall entry).
    Tracepoint,
    /// Events only.
    Observe,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/tyrd")
}
fn default_heartbeat() -> u32 {
    30
}
fn default_buffer_mb() -> u64 {
    500
}
fn default_log_level() -> String {
    "info".to_owned()
}

/// An unreadable, malformed or invalid configuration file, or a failed edit of it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// YAML syntax error, unknown key or wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: &'static str,
        /// What is expected.
        message: String,
    },
    /// The edited file could not be written.
    #[error("cannot rewrite {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The token is not written as a top-level `enrollment_token: …` line, so the line edit
    /// cannot remove it.
    #[error("{}: cannot remove enrollment_token: write it as a top-level `enrollment_token: VALUE` line", path.display())]
    TokenNotRemovable {
        /// The file.
        path: PathBuf,
    },
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let options = serde_saphyr::options! { strict_booleans: true };
        let config: Config = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| syntax_error(&e, path))?;
        config.validate(path)?;
        Ok(config)
    }

    /// Spool bound in bytes.
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_size_mb * 1024 * 1024
    }

    /// The spool directory, `state_dir/spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join("spool")
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if let Err(message) = check_host_port(&self.server) {
            return Err(invalid("server", message));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if self.ca_file.as_os_str().is_empty() {
            return Err(invalid("ca_file", "must not be empty"));
        }
        if self
            .enrollment_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(invalid("enrollment_token", "must not be empty"));
        }
        if self.state_dir.as_os_str().is_empty() || !self.state_dir.is_absolute() {
            return Err(invalid("state_dir", "must be an absolute path"));
        }
        if self.heartbeat_interval_s == 0 {
            return Err(invalid("heartbeat_interval_s", "must be at least 1"));
        }
        if self.buffer_size_mb == 0 || self.buffer_size_mb > MAX_BUFFER_MB {
            return Err(invalid(
                "buffer_size_mb",
                &format!("must be between 1 and {MAX_BUFFER_MB}"),
            ));
        }
        if self.log_level.trim().is_empty() {
            return Err(invalid("log_level", "must not be empty"));
        }
        Ok(())
    }
}

/// Checks `host:port` (IPv6 hosts in brackets); the message says what is wrong.
fn check_host_port(s: &str) -> Result<(), &'static str> {
    const EXPECTED: &str = "expected host:port (IPv6 as [addr]:port)";
    let (host, port) = s.rsplit_once(':').ok_or(EXPECTED)?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err("port must be a number between 1 and 65535"),
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let bracketed = bare.len() != host.len();
    if bare.is_empty()
        || bare.chars().any(char::is_whitespace)
        || (bare.contains(':') && !bracketed)
        || host.contains(['[', ']']) && !bracketed
    {
        return Err(EXPECTED);
    }
    Ok(())
}

/// Turns a serde-saphyr error into `FILE:LINE:COLUMN: message`.
fn syntax_error(e: &serde_saphyr::Error, path: &Path) -> ConfigError {
    let e = e.without_snippet();
    let (line, column) = e
        .location()
        .filter(|l| l.line() > 0)
        .map_or((1, 1), |l| (l.line(), l.column().max(1)));
    let text = e.to_string();
    // The message repeats the location as a "line L column C: " prefix; drop it.
    let message = match text.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") && prefix.contains(" column ") => rest,
        _ => &text,
    };
    // …and may repeat it as an " at line L, column C" suffix too.
    let message = match message.rsplit_once(" at line ") {
        Some((head, tail)) if tail.contains(", column ") => head,
        _ => message,
    };
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: message.trim().to_owned(),
    }
}

/// Removes `enrollment_token` from the configuration file at `path`, keeping every other
/// line (comments included) as written. The file is replaced atomically (temp file, fsync,
/// rename, directory fsync) with the original mode and owner; a symlink is followed and its
/// target rewritten. Returns whether a token was present.
pub fn remove_enrollment_token(path: &Path) -> Result<bool, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let target = fs::canonicalize(path).map_err(read_err)?;
    let text = fs::read_to_string(&target).map_err(read_err)?;
    let before = Config::from_yaml(&text, path)?;
    if before.enrollment_token.is_none() {
        return Ok(false);
    }
    let edited = strip_top_level_key(&text, "enrollment_token");
    match Config::from_yaml(&edited, path) {
        Ok(after) if after.enrollment_token.is_none() => {}
        _ => {
            return Err(ConfigError::TokenNotRemovable {
                path: path.to_owned(),
            });
        }
    }
    write_atomically(&target, edited.as_bytes()).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Drops every top-level `key:` line of `text` together with its indented continuation
/// lines (block scalars, nested values). Blank lines after the value are kept.
fn strip_top_level_key(text: &str, key: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < lines.len() {
        if !is_key_line(lines[i], key) {
            out.push_str(lines[i]);
            i += 1;
            continue;
        }
        let mut end = i + 1;
        let mut last_indented = i;
        while end < lines.len() {
            let line = lines[end];
            if line.trim().is_empty() {
                end += 1;
            } else if line.starts_with([' ', '\t']) {
                last_indented = end;
                end += 1;
            } else {
                break;
            }
        }
        i = last_indented + 1;
    }
    out
}

/// Whether `line` starts (at column 0) the mapping key `key`, plain or quoted.
fn is_key_line(line: &str, key: &str) -> bool {
    let rest = [("", ""), ("\"", "\""), ("'", "'")]
        .iter()
        .find_map(|(open, close)| {
            line.strip_prefix(open)?
                .strip_prefix(key)?
                .strip_prefix(close)
        });
    let Some(rest) = rest else { return false };
    let Some(after) = rest.trim_start_matches([' ', '\t']).strip_prefix(':') else {
        return false;
    };
    after.is_empty() || after.starts_with([' ', '\t', '\r', '\n'])
}

/// Replaces `target` with `bytes`: a temp file in the same directory with the same mode and
/// owner, fsynced, renamed over the target, then the directory fsynced.
fn write_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let meta = fs::metadata(target)?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    let file_name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        let created = file.metadata()?;
        if created.uid() != meta.uid() || created.gid() != meta.gid() {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, target)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "server: tyr.example.com:7700\nname: host-1\nca_file: /etc/tyr/ca.pem\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("tyrd.yaml"))
    }

    #[test]
    fn minimal_file_gets_the_spec_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.server, "tyr.example.com:7700");
        assert_eq!(c.name, "host-1");
        assert_eq!(c.ca_file, PathBuf::from("/etc/tyr/ca.pem"));
        assert_eq!(c.enrollment_token, None);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/tyrd"));
        assert_eq!(c.heartbeat_interval_s, 30);
        assert_eq!(c.buffer_size_mb, 500);
        assert_eq!(c.buffer_bytes(), 500 * 1024 * 1024);
        assert_eq!(c.unregistered_agents, UnregisteredAgents::Audit);
        assert_eq!(c.events.allow, AllowEvents::Agents);
        assert_eq!(c.tier, TierSetting::Auto);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.spool_dir(), PathBuf::from("/var/lib/tyrd/spool"));
    }

    #[test]
    fn every_key_is_read() {
        let text = format!(
            "{MINIMAL}enrollment_token: tok-123\nstate_dir: /srv/tyrd\nheartbeat_interval_s: 5\n\
             buffer_size_mb: 2\nunregistered_agents: quarantine\nevents:\n  allow: all\n\
             tier: tracepoint\nlog_level: debug\n"
        );
        let c = parse(&text).expect("valid");
        assert_eq!(c.enrollment_token.as_deref(), Some("tok-123"));
        assert_eq!(c.state_dir, PathBuf::from("/srv/tyrd"));
        assert_eq!(c.heartbeat_interval_s, 5);
        assert_eq!(c.buffer_size_mb, 2);
        assert_eq!(c.unregistered_agents, UnregisteredAgents::Quarantine);
        assert_eq!(c.events.allow, AllowEvents::All);
        assert_eq!(c.tier, TierSetting::Tracepoint);
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = parse(&format!("{MINIMAL}buffer_size: 3\n")).unwrap_err();
        let ConfigError::Syntax { line, message, .. } = &err else {
            panic!("expected a syntax error, got {err:?}");
        };
        assert_eq!(*line, 4);
        assert!(message.contains("buffer_size"), "{message}");
        assert!(
            !message.contains("at line"),
            "location given once: {message}"
        );
        assert!(err.to_string().starts_with("tyrd.yaml:4:"), "{err}");
    }

    #[test]
    fn unknown_nested_key_and_bad_enum_are_errors() {
        let err = parse(&format!("{MINIMAL}events:\n  alow: all\n")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 5, .. }),
            "{err:?}"
        );
        let err = parse(&format!("{MINIMAL}tier: kernel\n")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 4, .. }),
            "{err:?}"
        );
        let err = parse(&format!("{MINIMAL}heartbeat_interval_s: soon\n")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 4, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_yaml_and_missing_keys_are_errors() {
        for text in [
            "server: [a\n",
            "",
            "- a\n- b\n",
            "server: a:1\nname: n\n",
            "\t:\n",
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                matches!(err, ConfigError::Syntax { .. }),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("server: tyr.example.com\nname: n\nca_file: /c\n", "server"),
            ("server: host:0\nname: n\nca_file: /c\n", "server"),
            ("server: ::1:7700\nname: n\nca_file: /c\n", "server"),
            ("server: :7700\nname: n\nca_file: /c\n", "server"),
            ("server: h:1\nname: ' '\nca_file: /c\n", "name"),
            ("server: h:1\nname: n\nca_file: ''\n", "ca_file"),
            (&format!("{MINIMAL}state_dir: relative/dir\n"), "state_dir"),
            (
                &format!("{MINIMAL}heartbeat_interval_s: 0\n"),
                "heartbeat_interval_s",
            ),
            (&format!("{MINIMAL}buffer_size_mb: 0\n"), "buffer_size_mb"),
            (
                &format!("{MINIMAL}buffer_size_mb: 9999999999\n"),
                "buffer_size_mb",
            ),
            (
                &format!("{MINIMAL}enrollment_token: ''\n"),
                "enrollment_token",
            ),
        ];
        for (text, key) in cases {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text:?}"),
                other => panic!("{text:?}: expected invalid {key}, got {other:?}"),
            }
        }
        assert!(parse("server: '[::1]:7700'\nname: n\nca_file: /c\n").is_ok());
    }

    #[test]
    fn load_reports_unreadable_files() {
        let err = Config::load(Path::new("/nonexistent/tyrd.yaml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }

    #[test]
    fn token_removal_keeps_the_rest_of_the_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tyrd.yaml");
        let text = "# Tyr daemon\nserver: tyr.example.com:7700   # gRPC\nname: host-1\n\
                    enrollment_token: >-\n  tok-\n  123\n\n# where keys live\nca_file: /etc/tyr/ca.pem\n\
                    tier: observe\n";
        fs::write(&path, text).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let before = Config::load(&path).expect("valid");
        assert_eq!(before.enrollment_token.as_deref(), Some("tok- 123"));

        assert!(remove_enrollment_token(&path).expect("removed"));
        let after = fs::read_to_string(&path).expect("read");
        assert_eq!(
            after,
            "# Tyr daemon\nserver: tyr.example.com:7700   # gRPC\nname: host-1\n\n\
             # where keys live\nca_file: /etc/tyr/ca.pem\ntier: observe\n"
        );
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let parsed = Config::load(&path).expect("still valid");
        assert_eq!(
            parsed,
            Config {
                enrollment_token: None,
                ..before
            }
        );
        assert!(!remove_enrollment_token(&path).expect("nothing to do"));
        let leftovers = fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(leftovers, 1, "no temp file left behind");
    }

    #[test]
    fn token_removal_handles_quoted_keys_and_a_last_line_without_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tyrd.yaml");
        fs::write(&path, format!("{MINIMAL}\"enrollment_token\": 'abc'")).expect("write");
        assert!(remove_enrollment_token(&path).expect("removed"));
        assert_eq!(fs::read_to_string(&path).expect("read"), MINIMAL);
    }

    #[test]
    fn token_removal_follows_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.yaml");
        let link = dir.path().join("tyrd.yaml");
        fs::write(&real, format!("{MINIMAL}enrollment_token: abc\n")).expect("write");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(remove_enrollment_token(&link).expect("removed"));
        assert!(fs::symlink_metadata(&link).expect("lstat").is_symlink());
        assert_eq!(fs::read_to_string(&real).expect("read"), MINIMAL);
    }

    #[test]
    fn token_in_flow_style_is_refused_and_the_file_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tyrd.yaml");
        let text = "{server: 'h:1', name: n, ca_file: /c, enrollment_token: abc}\n";
        fs::write(&path, text).expect("write");
        let err = remove_enrollment_token(&path).unwrap_err();
        assert!(
            matches!(err, ConfigError::TokenNotRemovable { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
    }

    #[test]
    fn key_line_detection() {
        assert!(is_key_line("enrollment_token: x\n", "enrollment_token"));
        assert!(is_key_line("enrollment_token:\n", "enrollment_token"));
        assert!(!is_key_line("enrollment_token :x", "enrollment_token"));
        assert!(is_key_line("enrollment_token : x", "enrollment_token"));
        assert!(!is_key_line("  enrollment_token: x", "enrollment_token"));
        assert!(!is_key_line("enrollment_tokens: x", "enrollment_token"));
        assert!(!is_key_line("# enrollment_token: x", "enrollment_token"));
    }
}
