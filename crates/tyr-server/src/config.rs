//! Server configuration (SPEC §3): environment variables, optionally a TOML file with the
//! same keys in lower case (`tyr_data_dir = "/srv/tyr"`). The environment wins over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every recognised key (environment spelling).
pub const KEYS: [&str; 10] = [
    "TYR_DATA_DIR",
    "DATABASE_URL",
    "TYR_REST_BIND",
    "TYR_GRPC_BIND",
    "TYR_REST_NO_TLS",
    "TYR_SERVER_NAMES",
    "TYR_BOOTSTRAP_ENROLLMENT_TOKEN",
    "TYR_EVENT_RETENTION_DAYS",
    "TYR_WEB_DIR",
    "RUST_LOG",
];

/// Minimum length of `TYR_BOOTSTRAP_ENROLLMENT_TOKEN`.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 16;

/// Resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Keys, CA, SQLite database.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// REST + UI listener.
    pub rest_bind: SocketAddr,
    /// gRPC listener (agent plane).
    pub grpc_bind: SocketAddr,
    /// Plain HTTP on REST.
    pub rest_no_tls: bool,
    /// SANs of the server certificate.
    pub server_names: Vec<String>,
    /// Pre-seeded enrollment token.
    pub bootstrap_enrollment_token: Option<String>,
    /// Event retention in days; 0 keeps everything.
    pub event_retention_days: u32,
    /// UI assets directory overriding the embedded ones.
    pub web_dir: Option<PathBuf>,
    /// `tracing` filter.
    pub rust_log: String,
    /// Sliding window of the failed-login and failed-registration limits
    /// ([`crate::ratelimit::WINDOW`]). Not read from the environment or the file: only code
    /// embedding the server (tests) sets another.
    pub failure_window: std::time::Duration,
}

/// Invalid configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value does not parse.
    #[error("{key}={value:?}: {message}")]
    Value {
        /// The key (environment spelling).
        key: &'static str,
        /// The offending value.
        value: String,
        /// What is expected.
        message: &'static str,
    },
}

/// Reads the TOML file into environment-spelled keys.
fn file_values(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file_err = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let key = k.to_ascii_uppercase();
        if !KEYS.contains(&key.as_str()) {
            return Err(file_err(format!("unknown key `{k}`")));
        }
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| file_err(format!("`{k}`: expected strings")))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => return Err(file_err(format!("`{k}`: unsupported value type"))),
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn default_server_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_owned());
        }
    }
    names.push("localhost".to_owned());
    names.push("127.0.0.1".to_owned());
    names
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Value {
            key,
            value: v.to_owned(),
            message: "expected true or false",
        }),
    }
}

fn parse_addr(key: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError::Value {
        key,
        value: v.to_owned(),
        message: "expected host:port, e.g. 0.0.0.0:7701",
    })
}

impl Config {
    /// Resolves the configuration from `env` (a lookup such as `std::env::var`) over the
    /// optional TOML file.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut values = match file {
            Some(path) => file_values(path)?,
            None => BTreeMap::new(),
        };
        for key in KEYS {
            if let Some(v) = env(key) {
                values.insert(key.to_owned(), v);
            }
        }
        let get = |k: &str| values.get(k).map(String::as_str).filter(|v| !v.is_empty());

        let data_dir = PathBuf::from(get("TYR_DATA_DIR").unwrap_or("/var/lib/tyr"));
        let database_url = match get("DATABASE_URL") {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", data_dir.join("tyr.db").display()),
        };
        let server_names = match get("TYR_SERVER_NAMES") {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => default_server_names(),
        };
        if server_names.is_empty() {
            return Err(ConfigError::Value {
                key: "TYR_SERVER_NAMES",
                value: String::new(),
                message: "expected at least one name",
            });
        }
        let bootstrap = get("TYR_BOOTSTRAP_ENROLLMENT_TOKEN").map(str::to_owned);
        if let Some(t) = &bootstrap
            && (t.len() < MIN_BOOTSTRAP_TOKEN_LEN
                || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ConfigError::Value {
                key: "TYR_BOOTSTRAP_ENROLLMENT_TOKEN",
                value: "<redacted>".into(),
                message: "expected at least 16 characters without whitespace",
            });
        }
        let retention = get("TYR_EVENT_RETENTION_DAYS").unwrap_or("30");
        Ok(Config {
            database_url,
            rest_bind: parse_addr(
                "TYR_REST_BIND",
                get("TYR_REST_BIND").unwrap_or("0.0.0.0:7701"),
            )?,
            grpc_bind: parse_addr(
                "TYR_GRPC_BIND",
                get("TYR_GRPC_BIND").unwrap_or("0.0.0.0:7700"),
            )?,
            rest_no_tls: parse_bool("TYR_REST_NO_TLS", get("TYR_REST_NO_TLS").unwrap_or("false"))?,
            server_names,
            bootstrap_enrollment_token: bootstrap,
            event_retention_days: retention.trim().parse().map_err(|_| ConfigError::Value {
                key: "TYR_EVENT_RETENTION_DAYS",
                value: retention.to_owned(),
                message: "expected a whole number of days (0 keeps all)",
            })?,
            web_dir: get("TYR_WEB_DIR").map(PathBuf::from),
            rust_log: get("RUST_LOG").unwrap_or("info").to_owned(),
            failure_window: crate::ratelimit::WINDOW,
            data_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, env(&[])).expect("config");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/tyr"));
        assert_eq!(c.database_url, "sqlite:///var/lib/tyr/tyr.db");
        assert_eq!(c.rest_bind.to_string(), "0.0.0.0:7701");
        assert_eq!(c.grpc_bind.to_string(), "0.0.0.0:7700");
        assert!(!c.rest_no_tls);
        assert!(
            c.server_names
                .ends_with(&["localhost".to_owned(), "127.0.0.1".to_owned()])
        );
        assert_eq!(c.event_retention_days, 30);
        assert_eq!(c.rust_log, "info");
        assert_eq!(c.bootstrap_enrollment_token, None);
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tyr.toml");
        std::fs::write(
            &path,
            "tyr_data_dir = \"/srv/tyr\"\ntyr_rest_no_tls = true\ntyr_server_names = [\"a.example\", \"10.0.0.1\"]\ntyr_event_retention_days = 0\n",
        )
        .expect("write");
        let c = Config::load(Some(&path), env(&[("TYR_DATA_DIR", "/env/tyr")])).expect("config");
        assert_eq!(c.data_dir, PathBuf::from("/env/tyr"));
        assert!(c.rest_no_tls);
        assert_eq!(
            c.server_names,
            vec!["a.example".to_owned(), "10.0.0.1".into()]
        );
        assert_eq!(c.event_retention_days, 0);

        std::fs::write(&path, "tyr_bogus = 1\n").expect("write");
        assert!(matches!(
            Config::load(Some(&path), env(&[])),
            Err(ConfigError::File { .. })
        ));
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("TYR_REST_BIND", "nowhere"),
            ("TYR_REST_NO_TLS", "maybe"),
            ("TYR_EVENT_RETENTION_DAYS", "-1"),
            ("TYR_BOOTSTRAP_ENROLLMENT_TOKEN", "short"),
            ("TYR_SERVER_NAMES", " , "),
        ] {
            assert!(Config::load(None, env(&[(k, v)])).is_err(), "{k}={v}");
        }
    }
}
