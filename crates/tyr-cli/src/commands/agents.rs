//! `tyr agent …` (host daemons) and `tyr discovered …` (AI agents found on them).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::Ctx;
use crate::CliError;
use crate::output::{Table, field, fields, items, print_json, text};

/// `tyr agent …`.
#[derive(Subcommand)]
pub enum AgentCommand {
    /// List daemons: ID NAME STATUS TIER LAST_SEEN DRIFT.
    List,
    /// Show one daemon.
    Show {
        /// Daemon id.
        id: String,
    },
    /// Revoke a daemon's identity and forget it.
    Delete {
        /// Daemon id.
        id: String,
    },
}

/// `tyr discovered …`.
#[derive(Subcommand)]
pub enum DiscoveredCommand {
    /// List discovered agents.
    List,
    /// Show one discovered agent.
    Show {
        /// Discovered agent id.
        id: String,
    },
    /// Set the display name.
    Rename {
        /// Discovered agent id.
        id: String,
        /// New display name.
        name: String,
    },
    /// Set the agent type.
    Reclassify {
        /// Discovered agent id.
        id: String,
        /// Agent type, e.g. claude-code.
        agent_type: String,
    },
    /// Merge this agent into another one.
    Merge {
        /// Discovered agent id to merge away.
        id: String,
        /// Discovered agent id that remains.
        into_id: String,
    },
    /// Archive (hide) a discovered agent.
    Archive {
        /// Discovered agent id.
        id: String,
    },
}

/// Runs a `tyr agent` command.
pub fn run_agent(ctx: &Ctx, cmd: AgentCommand) -> Result<ExitCode, CliError> {
    let api = ctx.api()?;
    match cmd {
        AgentCommand::List => {
            let list = api.get(&["agents"], &[])?;
            if ctx.json() {
                print_json(&list);
            } else {
                out!("{}", agent_table(items(&list, "agents")).render());
            }
        }
        AgentCommand::Show { id } => show(ctx, &api.get(&["agents", &id], &[])?),
        AgentCommand::Delete { id } => {
            api.delete(&["agents", &id])?;
            done(ctx, json!({"deleted": id}), &format!("revoked agent {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `tyr agent list` table.
pub fn agent_table(agents: &[Value]) -> Table {
    let mut t = Table::new(&["ID", "NAME", "STATUS", "TIER", "LAST_SEEN", "DRIFT"]);
    for a in agents {
        t.row(vec![
            field(a, &["id"]),
            field(a, &["name", "hostname"]),
            field(a, &["status"]),
            field(a, &["tier"]),
            field(a, &["last_seen"]),
            field(a, &["drift_count", "drift"]),
        ]);
    }
    t
}

/// Runs a `tyr discovered` command.
pub fn run_discovered(ctx: &Ctx, cmd: DiscoveredCommand) -> Result<ExitCode, CliError> {
    let api = ctx.api()?;
    let path = "discovered-agents";
    match cmd {
        DiscoveredCommand::List => {
            let list = api.get(&[path], &[])?;
            if ctx.json() {
                print_json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(&[
                "ID",
                "TYPE",
                "NAME",
                "DAEMON",
                "PIDS",
                "LAST_SEEN",
                "ARCHIVED",
            ]);
            for d in items(&list, "discovered_agents") {
                let pids = d.get("pids").and_then(Value::as_array).map_or_else(
                    || field(d, &["pids"]),
                    |p| {
                        p.iter()
                            .map(|x| text(Some(x)))
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                );
                t.row(vec![
                    field(d, &["id"]),
                    field(d, &["agent_type"]),
                    field(d, &["display_name"]),
                    field(d, &["daemon_id"]),
                    pids,
                    field(d, &["last_seen"]),
                    field(d, &["archived"]),
                ]);
            }
            out!("{}", t.render());
        }
        DiscoveredCommand::Show { id } => show(ctx, &api.get(&[path, &id], &[])?),
        DiscoveredCommand::Rename { id, name } => {
            let v = api.patch(&[path, &id], &json!({"display_name": name}))?;
            done(ctx, v, &format!("renamed {id} to {name:?}"));
        }
        DiscoveredCommand::Reclassify { id, agent_type } => {
            let v = api.patch(&[path, &id], &json!({"agent_type": agent_type}))?;
            done(ctx, v, &format!("reclassified {id} as {agent_type}"));
        }
        DiscoveredCommand::Merge { id, into_id } => {
            let v = api.post(&[path, &id, "merge"], &json!({"into": into_id}))?;
            done(ctx, v, &format!("merged {id} into {into_id}"));
        }
        DiscoveredCommand::Archive { id } => {
            let v = api.post(&[path, &id, "archive"], &json!({}))?;
            done(ctx, v, &format!("archived {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one object as `key: value` lines, or as JSON.
fn show(ctx: &Ctx, v: &Value) {
    if ctx.json() {
        print_json(v);
    } else {
        out!("{}", fields(v));
    }
}

/// Prints the server's answer as JSON, or a one-line confirmation.
fn done(ctx: &Ctx, v: Value, message: &str) {
    if ctx.json() {
        print_json(&v);
    } else {
        outln!("{}", crate::output::clean(message));
    }
}
