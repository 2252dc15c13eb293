//! `unregistered_agents` (SPEC §7): the reserved agent types of processes that look like AI
//! agents (LLM credentials in their environment) but match no known type, and the built-in
//! overlays compiled into the kernel tables for them.
//!
//! - `audit`: agent type [`UNREGISTERED`], no built-in overlay (the base policy, and any
//!   overlay an admin assigns to `unregistered`); events are flagged.
//! - `quarantine`: agent type [`QUARANTINE`] under [`quarantine_overlay`].
//! - `deny`: agent type [`UNREGISTERED`] under [`deny_overlay`]: every governed syscall is
//!   denied.

use tyr_policy::eval::{BUILTIN_DENY_UNREGISTERED, BUILTIN_QUARANTINE};
use tyr_policy::model::{EffectiveSet, Overlay, Policy};

use crate::config::UnregisteredAgents;

/// Agent type of unregistered agents under `audit` and `deny`.
pub const UNREGISTERED: &str = "unregistered";
/// Agent type of unregistered agents under `quarantine`.
pub const QUARANTINE: &str = "quarantine";

/// The agent type an unregistered agent is given under `mode`.
pub fn agent_type(mode: UnregisteredAgents) -> &'static str {
    match mode {
        UnregisteredAgents::Quarantine => QUARANTINE,
        UnregisteredAgents::Audit | UnregisteredAgents::Deny => UNREGISTERED,
    }
}

/// Secrets a quarantined agent may not read.
const SECRETS: [&str; 16] = [
    "~/.ssh/**",
    "~/.aws/**",
    "~/.gnupg/**",
    "~/.kube/**",
    "~/.docker/config.json",
    "~/.netrc",
    "~/.git-credentials",
    "~/.config/gcloud/**",
    "~/.config/gh/**",
    "~/.azure/**",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/ssl/private/**",
    "/etc/tyr/**",
    "/**/.env",
    "/**/.env.*",
];

/// Where a quarantined agent may write besides its working directories.
const SCRATCH: [&str; 6] = [
    "/tmp/**",
    "/var/tmp/**",
    "/dev/shm/**",
    "/dev/null",
    "/dev/tty",
    "/dev/pts/**",
];

/// Network tools a quarantined agent may not run.
const NET_TOOLS: [&str; 13] = [
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "rsync", "telnet",
    "ftp", "nmap",
];

/// Top-level directories never writable as a quarantined agent's working directory.
const SYSTEM_DIRS: [&str; 13] = [
    "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "run", "sbin", "sys", "usr",
    "var",
];

/// Whether `cwd` may become writable for a quarantined agent: an absolute, normalised
/// directory strictly inside a home directory, or at least two levels deep outside the
/// system directories (`/etc`, `/usr`, `/var`…) and not a home or an ancestor of one.
pub fn workdir_allowed(cwd: &str, homes: &[String]) -> bool {
    let segments: Vec<&str> = cwd.split('/').skip(1).collect();
    let normal = cwd.starts_with('/')
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..");
    if !normal {
        return false;
    }
    let inside = |h: &String| {
        cwd.strip_prefix(h.as_str())
            .is_some_and(|r| r.starts_with('/'))
    };
    if homes.iter().any(inside) {
        return true;
    }
    let home_or_above = homes
        .iter()
        .any(|h| h == cwd || h.strip_prefix(cwd).is_some_and(|r| r.starts_with('/')));
    segments.len() >= 2 && !SYSTEM_DIRS.contains(&segments[0]) && !home_or_above
}

/// `\`-escapes the glob metacharacters of a literal path.
fn literal(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn rule(out: &mut String, name: &str, action: &str, pattern: Option<&str>, verdict: &str) {
    let pattern = pattern.map_or(String::new(), |p| {
        format!(", resource_pattern: {}", serde_json::Value::from(p))
    });
    out.push_str(&format!(
        "    - {{name: {name}, action: {action}{pattern}, verdict: {verdict}, severity: high}}\n"
    ));
}

fn policy(yaml: &str) -> Result<Policy, String> {
    tyr_policy::parse(yaml).map_err(|e| format!("built-in overlay: {e:?}"))
}

/// The built-in quarantine overlay: no secrets read, no write outside `workdirs` (absolute,
/// canonical) and the temporary directories, no exec of network tools, no egress.
pub fn quarantine_overlay(workdirs: &[String]) -> Result<Policy, String> {
    let mut y = format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: {BUILTIN_QUARANTINE}\n  \
         description: unregistered agents under quarantine (unregistered_agents)\nspec:\n  \
         default: allow\n  rules:\n",
    );
    for (i, p) in SECRETS.iter().enumerate() {
        rule(
            &mut y,
            &format!("no-secrets-{i}"),
            "file_read",
            Some(p),
            "deny",
        );
    }
    for (i, p) in SCRATCH.iter().enumerate() {
        rule(
            &mut y,
            &format!("scratch-{i}"),
            "file_write",
            Some(p),
            "allow",
        );
    }
    for (i, dir) in workdirs.iter().enumerate() {
        let pattern = format!("{}/**", literal(dir.trim_end_matches('/')));
        rule(
            &mut y,
            &format!("workdir-{i}"),
            "file_write",
            Some(&pattern),
            "allow",
        );
    }
    rule(&mut y, "no-other-writes", "file_write", None, "deny");
    for tool in NET_TOOLS {
        let pattern = format!("/**/{tool}");
        rule(
            &mut y,
            &format!("no-{tool}"),
            "exec",
            Some(&pattern),
            "deny",
        );
    }
    rule(&mut y, "no-egress", "net_connect", None, "deny");
    policy(&y)
}

/// The built-in overlay of `unregistered_agents: deny`: every governed action is denied.
pub fn deny_overlay() -> Result<Policy, String> {
    let mut y = format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: {BUILTIN_DENY_UNREGISTERED}\n\
         spec:\n  default: allow\n  rules:\n",
    );
    for action in tyr_policy::model::Action::ALL.map(tyr_policy::model::Action::as_str) {
        rule(&mut y, &format!("deny-{action}"), action, None, "deny");
    }
    policy(&y)
}

/// `set` with the built-in overlay of `mode` appended (none for `audit`).
pub fn with_builtin(
    mut set: EffectiveSet,
    mode: UnregisteredAgents,
    workdirs: &[String],
) -> Result<EffectiveSet, String> {
    let policy = match mode {
        UnregisteredAgents::Audit => return Ok(set),
        UnregisteredAgents::Quarantine => quarantine_overlay(workdirs)?,
        UnregisteredAgents::Deny => deny_overlay()?,
    };
    set.overlays.push(Overlay {
        agent_type: agent_type(mode).to_owned(),
        policy,
    });
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tyr_policy::eval::evaluate;
    use tyr_policy::glob::Homes;
    use tyr_policy::model::{Action, Verdict};
    use tyr_policy::request::Request;

    fn verdict(set: &EffectiveSet, agent: &str, action: Action, resource: &str) -> Verdict {
        let mut req = Request::new(action, resource).expect("request");
        req.agent_type = Some(agent.to_owned());
        let homes = Homes(vec!["/root".into(), "/home/alice".into()]);
        evaluate(set, &req, &homes).verdict
    }

    #[test]
    fn quarantine_confines_writes_secrets_tools_and_egress() {
        let dirs = ["/home/alice/proj [1]".to_owned()];
        let set = with_builtin(
            EffectiveSet::default(),
            UnregisteredAgents::Quarantine,
            &dirs,
        )
        .expect("set");
        let q = QUARANTINE;
        let cases = [
            (Action::FileWrite, "/tmp/x", Verdict::Allow),
            (
                Action::FileWrite,
                "/home/alice/proj [1]/src/a.rs",
                Verdict::Allow,
            ),
            (Action::FileWrite, "/home/alice/.bashrc", Verdict::Deny),
            (Action::FileWrite, "/etc/passwd", Verdict::Deny),
            (Action::FileRead, "/home/alice/.ssh/id_rsa", Verdict::Deny),
            (Action::FileRead, "/home/alice/proj [1]/.env", Verdict::Deny),
            (Action::FileRead, "/etc/hosts", Verdict::Allow),
            (Action::Exec, "/usr/bin/curl", Verdict::Deny),
            (Action::Exec, "/usr/bin/ls", Verdict::Allow),
            (Action::NetConnect, "127.0.0.1:80", Verdict::Deny),
        ];
        for (action, resource, want) in cases {
            assert_eq!(verdict(&set, q, action, resource), want, "{resource}");
        }
        // Other processes keep the base policy.
        assert_eq!(
            verdict(&set, "claude-code", Action::FileWrite, "/etc/passwd"),
            Verdict::Allow
        );
    }

    #[test]
    fn only_project_like_working_dirs_become_writable() {
        let homes = ["/root".to_owned(), "/home/alice".to_owned()];
        for ok in [
            "/home/alice/proj",
            "/root/x",
            "/srv/build/app",
            "/opt/work/a",
        ] {
            assert!(workdir_allowed(ok, &homes), "{ok}");
        }
        for no in [
            "/",
            "/home",
            "/home/alice",
            "/root",
            "/srv",
            "/etc/ssh",
            "/usr/local",
            "/var/lib/x",
            "relative/dir",
            "/home/alice/../bob",
            "/home//alice/x",
        ] {
            assert!(!workdir_allowed(no, &homes), "{no}");
        }
    }

    #[test]
    fn deny_denies_every_governed_action_and_audit_adds_nothing() {
        let set =
            with_builtin(EffectiveSet::default(), UnregisteredAgents::Deny, &[]).expect("set");
        for (action, r) in [
            (Action::FileRead, "/etc/hosts"),
            (Action::FileWrite, "/tmp/x"),
            (Action::Exec, "/bin/true"),
            (Action::NetConnect, "127.0.0.1:1"),
        ] {
            assert_eq!(verdict(&set, UNREGISTERED, action, r), Verdict::Deny, "{r}");
        }
        let audit =
            with_builtin(EffectiveSet::default(), UnregisteredAgents::Audit, &[]).expect("set");
        assert!(audit.overlays.is_empty());
    }
}
