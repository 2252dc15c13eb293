//! `tyr run --agent-type T -- CMD...`: runs CMD as agent type T. `tyrd` keeps one cgroup v2
//! per known agent type (`<cgroup2 root>/tyr-agents/<type>`) and classifies every process that
//! executes in it, so the identity does not depend on the binary's name or path.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::CliError;

/// Directory under the cgroup v2 root holding the agent-type cgroups (as `tyrd` creates it).
const AGENTS_CGROUP: &str = "tyr-agents";
/// Names another directory, as it does for `tyrd` (tests give each daemon its own).
const AGENTS_CGROUP_ENV: &str = "TYR_AGENTS_CGROUP";
/// Where `tyrd` mounts cgroup v2 when the host has no such mount.
const FALLBACK_ROOT: &str = "/run/tyr/cgroup2";

/// Arguments of `tyr run`.
#[derive(Args)]
pub struct RunArgs {
    /// Agent type to run the command as (e.g. claude-code).
    #[arg(long, value_name = "T")]
    agent_type: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Joins the agent type's cgroup, then replaces this process with the command.
pub fn run(args: &RunArgs) -> Result<ExitCode, CliError> {
    let dir = agent_cgroup(&args.agent_type)?;
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, format!("{}\n", std::process::id())).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (joining an agent cgroup needs root or write access to it)"
                    .to_owned()
            }
            _ => e.to_string(),
        };
        CliError::Failed(format!("cannot join {}: {why}", procs.display()))
    })?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| CliError::Usage("no command given after --".into()))?;
    let err = std::process::Command::new(program).args(rest).exec();
    Err(CliError::Failed(format!(
        "cannot run {}: {err}",
        PathBuf::from(program).display()
    )))
}

/// The cgroup of `agent_type`, with a clear error when tyrd is not running or the type is
/// unknown.
fn agent_cgroup(agent_type: &str) -> Result<PathBuf, CliError> {
    if agent_type.is_empty() || agent_type.contains('/') || agent_type.starts_with('.') {
        return Err(CliError::Usage(format!(
            "invalid agent type {agent_type:?}"
        )));
    }
    let name = match std::env::var(AGENTS_CGROUP_ENV) {
        Err(_) => AGENTS_CGROUP.to_owned(),
        Ok(n) if !n.is_empty() && !n.contains('/') && !n.starts_with('.') => n,
        Ok(n) => {
            return Err(CliError::Usage(format!(
                "{AGENTS_CGROUP_ENV}={n:?}: expected one directory name"
            )));
        }
    };
    let agents = cgroup2_root()
        .map(|r| r.join(&name))
        .filter(|d| d.is_dir())
        .ok_or_else(|| {
            CliError::Failed(
                "tyrd is not running (no tyr-agents cgroup): start tyr-agent.service".into(),
            )
        })?;
    let dir = agents.join(agent_type);
    if dir.is_dir() {
        return Ok(dir);
    }
    let mut known: Vec<String> = std::fs::read_dir(&agents)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    Err(CliError::Usage(format!(
        "unknown agent type {agent_type:?}; known: {}",
        known.join(", ")
    )))
}

/// The root of the cgroup v2 hierarchy `tyrd` uses: the host's mount, else its own.
fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let found = info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut fields = pre.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (root == "/" && post.split(' ').next() == Some("cgroup2")).then_some(mount_point)
    });
    Some(PathBuf::from(found.unwrap_or(FALLBACK_ROOT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_like_agent_types() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(
                matches!(agent_cgroup(bad), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
    }
}
