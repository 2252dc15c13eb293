//! The online `tyr policy` commands: apply, list, show, diff, rollback, assign, effective.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Ctx;
use crate::CliError;
use crate::client::CallError;
use crate::output::{Table, clean, field, fields, items, print_json};

/// Online `tyr policy …` commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Store a policy file as a new version; errors print as FILE:LINE:COLUMN: message.
    Apply {
        /// Policy file (YAML).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List policies.
    List,
    /// Show a policy version's YAML and per-rule enforcement report (default: latest).
    Show {
        /// Policy name.
        name: String,
        /// Version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Diff two versions of a policy.
    Diff {
        /// Policy name.
        name: String,
        /// From version.
        from: u64,
        /// To version.
        to: u64,
    },
    /// Create a new version with the YAML of version V.
    Rollback {
        /// Policy name.
        name: String,
        /// Version whose YAML becomes the new version.
        version: u64,
    },
    /// Bind a policy version to a daemon (base) or an agent type (overlay).
    Assign {
        /// daemon | agent_type
        #[arg(long, value_enum)]
        target_type: TargetType,
        /// Daemon id or agent type.
        #[arg(long)]
        target_id: String,
        /// Policy name.
        #[arg(long)]
        policy: String,
        /// Policy version.
        #[arg(long)]
        version: u64,
    },
    /// Show the effective policy of a daemon (base and overlays).
    Effective {
        /// Daemon id.
        agent_id: String,
    },
}

/// What a policy is assigned to.
#[derive(Clone, Copy, ValueEnum)]
pub enum TargetType {
    /// A daemon: the policy is its base.
    Daemon,
    /// An agent type: the policy is an overlay.
    #[value(name = "agent_type")]
    AgentType,
}

/// Runs an online `tyr policy` command.
pub fn run(ctx: &Ctx, cmd: PolicyCommand) -> Result<ExitCode, CliError> {
    let api = ctx.api()?;
    match cmd {
        PolicyCommand::Apply { file } => {
            let yaml = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let body = json!({"yaml": yaml});
            match api.call(Method::POST, &["policies"], &[], Some(&body)) {
                Ok(v) => {
                    if ctx.json() {
                        print_json(&v);
                    } else {
                        outln!(
                            "applied policy `{}` version {}",
                            field(&v, &["name"]),
                            field(&v, &["version"])
                        );
                        out!("{}", report_lines(&v));
                    }
                }
                Err(CallError::Api(e)) if e.status == StatusCode::BAD_REQUEST => {
                    let lines = error_lines(&file.display().to_string(), &e.details);
                    if lines.is_empty() {
                        return Err((*e).into_cli());
                    }
                    if ctx.json() {
                        print_json(&json!({"error": {
                            "code": e.code, "message": e.message, "details": e.details}}));
                    }
                    for l in lines {
                        eprintln!("{l}");
                    }
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
        PolicyCommand::List => {
            let list = api.get(&["policies"], &[])?;
            if ctx.json() {
                print_json(&list);
            } else {
                let mut t = Table::new(&["NAME", "LATEST_VERSION", "UPDATED_AT", "DESCRIPTION"]);
                for p in items(&list, "policies") {
                    t.row(vec![
                        field(p, &["name"]),
                        field(p, &["latest_version", "version"]),
                        field(p, &["updated_at", "created_at"]),
                        field(p, &["description"]),
                    ]);
                }
                out!("{}", t.render());
            }
        }
        PolicyCommand::Show { name, version } => {
            let version = match version {
                Some(v) => v,
                None => latest_version(&api.get(&["policies", &name, "versions"], &[])?)
                    .ok_or_else(|| CliError::Failed(format!("policy `{name}` has no versions")))?,
            };
            let v = api.get(&["policies", &name, "versions", &version.to_string()], &[])?;
            if ctx.json() {
                print_json(&v);
            } else {
                outln!(
                    "# policy `{}` version {} ({})",
                    clean(&name),
                    version,
                    field(&v, &["created_at"])
                );
                let yaml = v.get("yaml").and_then(Value::as_str).unwrap_or_default();
                out!("{}", clean_block(yaml));
                if !yaml.ends_with('\n') {
                    outln!();
                }
                outln!("# enforcement per rule:");
                out!("{}", report_lines(&v));
            }
        }
        PolicyCommand::Diff { name, from, to } => {
            let query = [("from", from.to_string()), ("to", to.to_string())];
            let v = api.get(&["policies", &name, "diff"], &query)?;
            if ctx.json() {
                print_json(&v);
            } else {
                match v.as_str().or_else(|| v.get("diff").and_then(Value::as_str)) {
                    Some(d) => out!("{}", clean_block(d)),
                    None => out!("{}", fields(&v)),
                }
            }
        }
        PolicyCommand::Rollback { name, version } => {
            let v = api.post(
                &["policies", &name, "rollback"],
                &json!({"version": version}),
            )?;
            if ctx.json() {
                print_json(&v);
            } else {
                outln!(
                    "rolled back policy `{}` to the YAML of version {version}: new version {}",
                    clean(&name),
                    field(&v, &["version"])
                );
            }
        }
        PolicyCommand::Assign {
            target_type,
            target_id,
            policy,
            version,
        } => {
            let target_type = match target_type {
                TargetType::Daemon => "daemon",
                TargetType::AgentType => "agent_type",
            };
            let body = json!({"target_type": target_type, "target_id": target_id,
                "policy": policy, "version": version});
            let v = api.post(&["policy-assignments"], &body)?;
            if ctx.json() {
                print_json(&v);
            } else {
                outln!(
                    "assigned policy `{}` version {version} to {target_type} {}",
                    clean(&policy),
                    clean(&target_id)
                );
            }
        }
        PolicyCommand::Effective { agent_id } => {
            let v = api.get(&["agents", &agent_id, "effective-policy"], &[])?;
            if ctx.json() {
                print_json(&v);
            } else {
                out!("{}", fields(&v));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The highest `version` of a versions listing (an array, or one under `versions`).
pub fn latest_version(list: &Value) -> Option<u64> {
    items(list, "versions")
        .iter()
        .filter_map(|v| v.get("version").and_then(Value::as_u64))
        .max()
}

/// The per-rule enforcement report of a policy response (`report` or `rules`), one indented
/// line per rule.
pub fn report_lines(v: &Value) -> String {
    let rules = v
        .get("report")
        .or_else(|| v.get("rules"))
        .map_or(&[][..], |r| items(r, "rules"));
    rules
        .iter()
        .map(|r| {
            format!(
                "  {:<32} {:<12} {}: {}\n",
                field(r, &["rule"]),
                field(r, &["action"]),
                field(r, &["enforced_in"]),
                field(r, &["reason"])
            )
        })
        .collect()
}

/// Policy validation errors of a 400 response's `details` (an array, or one under `errors`)
/// as `FILE:LINE:COLUMN: message[ (rule `R`)][; hint]` lines; empty when there are none.
pub fn error_lines(file: &str, details: &Value) -> Vec<String> {
    items(details, "errors")
        .iter()
        .filter_map(|e| {
            let message = e.get("message").and_then(Value::as_str)?;
            let loc = e.get("location").unwrap_or(e);
            let pos = |k: &str| loc.get(k).and_then(Value::as_u64);
            let mut line = match (pos("line"), pos("column")) {
                (Some(l), Some(c)) => format!("{file}:{l}:{c}: {}", clean(message)),
                _ => format!("{file}: {}", clean(message)),
            };
            if let Some(rule) = e.get("rule").and_then(Value::as_str) {
                line.push_str(&format!(" (rule `{}`)", clean(rule)));
            }
            if let Some(hint) = e.get("hint").and_then(Value::as_str) {
                line.push_str("; ");
                line.push_str(&clean(hint));
            }
            Some(line)
        })
        .collect()
}

/// Multi-line text with control characters other than newlines and tabs escaped.
fn clean_block(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| {
            let (body, nl) = l.strip_suffix('\n').map_or((l, ""), |b| (b, "\n"));
            let cells: String = body.split('\t').map(clean).collect::<Vec<_>>().join("\t");
            format!("{cells}{nl}")
        })
        .collect()
}
