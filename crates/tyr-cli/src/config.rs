//! Client-side state: `config.toml` (server URL, CA path) and `token` (the JWT, mode 0600) in
//! `$TYR_CONFIG_DIR`, or `$HOME/.config/tyr` (directory mode 0700).

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CliError;

/// Persistent settings, as stored in `config.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the server, e.g. `https://tyr.example:7701`.
    pub server: Option<String>,
    /// CA certificate (PEM) the server's TLS certificate must chain to.
    pub ca: Option<PathBuf>,
}

/// The directory holding `config.toml` and `token`.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("cannot {what} {}: {e}", path.display()))
}

impl Store {
    /// `$TYR_CONFIG_DIR` if set, else `$HOME/.config/tyr`.
    pub fn from_env() -> Result<Store, CliError> {
        if let Some(dir) = std::env::var_os("TYR_CONFIG_DIR").filter(|d| !d.is_empty()) {
            return Ok(Store::at(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| CliError::Usage("neither TYR_CONFIG_DIR nor HOME is set".into()))?;
        Ok(Store::at(Path::new(&home).join(".config").join("tyr")))
    }

    /// A store in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// Path of `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Path of the token file.
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The saved configuration; empty when there is no file yet.
    pub fn load_config(&self) -> Result<Config, CliError> {
        let path = self.config_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(failed("read", &path, e)),
        };
        toml::from_str(&text).map_err(|e| {
            CliError::Failed(format!("{}: {}", path.display(), e.message().trim_end()))
        })
    }

    /// Saves the configuration.
    pub fn save_config(&self, config: &Config) -> Result<(), CliError> {
        let text = toml::to_string(config)
            .map_err(|e| CliError::Failed(format!("cannot encode the configuration: {e}")))?;
        self.write_private(&self.config_path(), text.as_bytes())
    }

    /// The saved JWT, if any.
    pub fn load_token(&self) -> Result<Option<String>, CliError> {
        let path = self.token_path();
        match fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", &path, e)),
        }
    }

    /// Saves the JWT with mode 0600.
    pub fn save_token(&self, token: &str) -> Result<(), CliError> {
        self.write_private(&self.token_path(), token.as_bytes())
    }

    /// Deletes the JWT; `false` when there was none.
    pub fn remove_token(&self) -> Result<bool, CliError> {
        let path = self.token_path();
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(failed("remove", &path, e)),
        }
    }

    /// Creates the directory (0700), then writes `path` atomically with mode 0600.
    fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<(), CliError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| failed("create", &self.dir, e))?;
        fs::set_permissions(&self.dir, Permissions::from_mode(0o700))
            .map_err(|e| failed("restrict", &self.dir, e))?;
        let tmp = path.with_extension("tmp");
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(failed("remove", &tmp, e));
            }
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| failed("create", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| failed("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| failed("write", path, e))
    }
}
