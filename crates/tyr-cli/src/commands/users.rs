//! `tyr user create|list|delete` (admin).

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::{Ctx, read_password};
use crate::CliError;
use crate::output::{Table, field, print_json};

/// `tyr user …`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (password from --password-stdin, $TYR_PASSWORD or a prompt).
    Create {
        /// User name.
        #[arg(long, short = 'u')]
        username: String,
        /// Role.
        #[arg(long, value_enum)]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Delete a user (their sessions end at once).
    Delete {
        /// User id.
        id: String,
    },
}

/// A user's role.
#[derive(Clone, Copy, ValueEnum)]
pub enum Role {
    Viewer,
    Admin,
}

/// Runs a `tyr user` command.
pub fn run(ctx: &Ctx, cmd: UserCommand) -> Result<ExitCode, CliError> {
    let api = ctx.api()?;
    match cmd {
        UserCommand::Create {
            username,
            role,
            password_stdin,
        } => {
            let password = read_password(password_stdin, true)?;
            let role = match role {
                Role::Viewer => "viewer",
                Role::Admin => "admin",
            };
            let body = json!({"username": username, "password": password, "role": role});
            let user = api.post(&["users"], &body)?;
            if ctx.json() {
                print_json(&user);
            } else {
                outln!(
                    "created user {} ({}) with id {}",
                    field(&user, &["username"]),
                    field(&user, &["role"]),
                    field(&user, &["id"])
                );
            }
        }
        UserCommand::List => {
            let users = api.get(&["users"], &[])?;
            if ctx.json() {
                print_json(&users);
            } else {
                let mut t = Table::new(&["ID", "USERNAME", "ROLE", "CREATED_AT"]);
                for u in users.as_array().into_iter().flatten() {
                    t.row(vec![
                        field(u, &["id"]),
                        field(u, &["username"]),
                        field(u, &["role"]),
                        field(u, &["created_at"]),
                    ]);
                }
                out!("{}", t.render());
            }
        }
        UserCommand::Delete { id } => {
            api.delete(&["users", &id])?;
            if ctx.json() {
                print_json(&json!({"deleted": id}));
            } else {
                outln!("deleted user {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
