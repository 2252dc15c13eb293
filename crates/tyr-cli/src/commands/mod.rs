//! The online commands, each a client of the REST API.

pub mod agents;
pub mod events;
pub mod policies;
pub mod run;
pub mod session;
pub mod tokens;
pub mod users;

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Api, REQUEST_TIMEOUT, http_client, parse_server};
use crate::config::Store;
use crate::{CliError, Output};

/// What every online command gets: the output format and the global flags.
pub struct Ctx {
    /// Output format.
    pub output: Output,
    server: Option<String>,
    ca: Option<PathBuf>,
}

impl Ctx {
    /// A context from the global flags.
    pub fn new(output: Output, server: Option<String>, ca: Option<PathBuf>) -> Ctx {
        Ctx { output, server, ca }
    }

    /// The config store.
    pub fn store(&self) -> Result<Store, CliError> {
        Store::from_env()
    }

    /// A client of the server given by `--server`/`--ca`, else the saved ones, without a
    /// token. With `save`, the flags given are saved for later commands (`tyr login`).
    pub fn anonymous(&self, timeout: Option<Duration>, save: bool) -> Result<Api, CliError> {
        Ok(self.connect(timeout, save)?.0)
    }

    /// The client, and whether it talks to the saved server (the one the token is for).
    fn connect(&self, timeout: Option<Duration>, save: bool) -> Result<(Api, bool), CliError> {
        let store = self.store()?;
        let saved = store.load_config()?;
        let mut config = saved.clone();
        if let Some(s) = &self.server {
            parse_server(s)?;
            config.server = Some(s.trim_end_matches('/').to_owned());
        }
        if let Some(ca) = &self.ca {
            let abs = std::path::absolute(ca)
                .map_err(|e| CliError::Usage(format!("invalid CA path {}: {e}", ca.display())))?;
            config.ca = Some(abs);
        }
        let server = config.server.clone().ok_or_else(|| {
            CliError::Usage("no server configured: pass --server URL (it is remembered)".into())
        })?;
        let base = parse_server(&server)?;
        let http = http_client(config.ca.as_deref(), timeout)?;
        if save && config != saved {
            store.save_config(&config)?;
        }
        Ok((Api::new(http, base, None), config.server == saved.server))
    }

    /// A client with the saved token. The token is only sent to the server it was saved
    /// with: another `--server` is "not logged in".
    pub fn api_with_timeout(&self, timeout: Option<Duration>) -> Result<Api, CliError> {
        let (api, saved_server) = self.connect(timeout, false)?;
        let token = self.store()?.load_token()?.filter(|_| saved_server);
        let token = token.ok_or_else(|| {
            CliError::Failed(match &self.server {
                Some(s) if !saved_server => {
                    format!("not logged in to {s}: run `tyr --server {s} login`")
                }
                _ => "not logged in: run `tyr login`".into(),
            })
        })?;
        Ok(api.with_token(token))
    }

    /// [`Ctx::api_with_timeout`] with the ordinary request timeout.
    pub fn api(&self) -> Result<Api, CliError> {
        self.api_with_timeout(Some(REQUEST_TIMEOUT))
    }

    /// Whether the output is JSON.
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// A password from one line of standard input (`from_stdin`), else `$TYR_PASSWORD`, else an
/// interactive prompt without echo (asked twice when `confirm`).
pub fn read_password(from_stdin: bool, confirm: bool) -> Result<String, CliError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            return Err(CliError::Usage("empty password on stdin".into()));
        }
        return Ok(pw);
    }
    if let Ok(pw) = std::env::var("TYR_PASSWORD")
        && !pw.is_empty()
    {
        return Ok(pw);
    }
    let prompt = |p: &str| {
        rpassword::prompt_password(p).map_err(|e| {
            CliError::Usage(format!(
                "cannot prompt for the password ({e}): use --password-stdin or TYR_PASSWORD"
            ))
        })
    };
    let pw = prompt("Password: ")?;
    if confirm && prompt("Repeat password: ")? != pw {
        return Err(CliError::Usage("the passwords differ".into()));
    }
    Ok(pw)
}
