//! `tyr login`, `tyr logout`.

use std::process::ExitCode;

use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, read_password};
use crate::CliError;
use crate::client::{CallError, REQUEST_TIMEOUT};
use crate::output::{print_json, text};

/// Arguments of `tyr login`.
#[derive(Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(long, short = 'u')]
    username: String,
    /// Read the password from the first line of standard input (else $TYR_PASSWORD, else a
    /// prompt).
    #[arg(long)]
    password_stdin: bool,
}

/// `POST /auth/login`; saves the token.
pub fn login(ctx: &Ctx, args: &LoginArgs) -> Result<ExitCode, CliError> {
    let api = ctx.anonymous(Some(REQUEST_TIMEOUT), true)?;
    let password = read_password(args.password_stdin, false)?;
    let body = json!({"username": args.username, "password": password});
    let mut resp = match api.call(Method::POST, &["auth", "login"], &[], Some(&body)) {
        Ok(v) => v,
        Err(CallError::Api(e)) if e.status == StatusCode::UNAUTHORIZED => {
            return Err(CliError::Failed(format!(
                "login failed: {} (HTTP 401)",
                e.message
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let token = match resp.as_object_mut().and_then(|o| o.remove("token")) {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => {
            return Err(CliError::Failed(
                "the server's login response has no token".into(),
            ));
        }
    };
    ctx.store()?.save_token(&token)?;
    if ctx.json() {
        print_json(&resp);
    } else {
        outln!(
            "logged in as {} (role {}), session valid until {}",
            args.username,
            text(resp.get("role")),
            text(resp.get("expires_at"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes the saved token (JWTs cannot be revoked one by one; it expires on its own).
pub fn logout(ctx: &Ctx) -> Result<ExitCode, CliError> {
    let removed = ctx.store()?.remove_token()?;
    if ctx.json() {
        print_json(&json!({"logged_out": removed}));
    } else if removed {
        outln!("logged out");
    } else {
        outln!("not logged in");
    }
    Ok(ExitCode::SUCCESS)
}
