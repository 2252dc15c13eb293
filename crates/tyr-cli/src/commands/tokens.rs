//! `tyr enrollment-token create|list|revoke` (admin).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::Ctx;
use crate::CliError;
use crate::output::{Table, field, print_json};

/// `tyr enrollment-token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; the plaintext is printed once, on stdout.
    Create {
        /// Free-text label.
        #[arg(long, default_value = "")]
        label: String,
        /// How many daemons may enroll with it.
        #[arg(long, default_value_t = 1)]
        max_uses: i64,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        expires_hours: i64,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: String,
    },
}

/// Runs a `tyr enrollment-token` command.
pub fn run(ctx: &Ctx, cmd: TokenCommand) -> Result<ExitCode, CliError> {
    let api = ctx.api()?;
    match cmd {
        TokenCommand::Create {
            label,
            max_uses,
            expires_hours,
        } => {
            let body =
                json!({"label": label, "max_uses": max_uses, "expires_hours": expires_hours});
            let t = api.post(&["enrollment-tokens"], &body)?;
            if ctx.json() {
                print_json(&t);
            } else {
                outln!("{}", field(&t, &["token"]));
                eprintln!(
                    "enrollment token {} (label {:?}, max uses {}, expires {}); the token is shown only this once",
                    field(&t, &["id"]),
                    field(&t, &["label"]),
                    field(&t, &["max_uses"]),
                    field(&t, &["expires_at"])
                );
            }
        }
        TokenCommand::List => {
            let list = api.get(&["enrollment-tokens"], &[])?;
            if ctx.json() {
                print_json(&list);
            } else {
                let mut t = Table::new(&["ID", "PREFIX", "LABEL", "USES", "EXPIRES_AT", "REVOKED"]);
                for e in list.as_array().into_iter().flatten() {
                    t.row(vec![
                        field(e, &["id"]),
                        field(e, &["prefix"]),
                        field(e, &["label"]),
                        format!("{}/{}", field(e, &["uses"]), field(e, &["max_uses"])),
                        field(e, &["expires_at"]),
                        field(e, &["revoked"]),
                    ]);
                }
                out!("{}", t.render());
            }
        }
        TokenCommand::Revoke { id } => {
            api.delete(&["enrollment-tokens", &id])?;
            if ctx.json() {
                print_json(&json!({"revoked": id}));
            } else {
                outln!("revoked enrollment token {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
