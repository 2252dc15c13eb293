//! Commands that need no server: `tyr policy validate` and `tyr policy eval`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use tyr_policy::compile::report;
use tyr_policy::glob::Homes;
use tyr_policy::{Action, EffectiveSet, Overlay, Policy, Request, Resource, evaluate};

use crate::{CliError, Output};

/// Agent type the `--overlay` files are bound to when `--agent-type` is not given, so that
/// they apply to the request as documented. It can never name a real type (those are
/// `[a-z0-9_-]+`).
const CLI_OVERLAY_TYPE: &str = "(overlay)";

#[derive(Args)]
pub struct ValidateArgs {
    /// Policy file (YAML).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Base policy file (YAML).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Overlay policy file, applied to the request; repeatable.
    #[arg(long = "overlay")]
    overlays: Vec<PathBuf>,
    /// file_read | file_write | exec | net_connect | tls_connect
    #[arg(long)]
    action: String,
    /// Path, IP address or TLS server name, by action.
    #[arg(long)]
    resource: String,
    /// Classified agent type of the calling process.
    #[arg(long = "agent-type")]
    agent_type: Option<String>,
    /// Absolute path of the calling binary.
    #[arg(long)]
    binary: Option<String>,
    /// Destination port (net_connect).
    #[arg(long)]
    port: Option<u16>,
    /// Name the destination address was learned from in DNS (net_connect); repeatable.
    #[arg(long = "domain")]
    domains: Vec<String>,
}

/// Reads and parses a policy file; errors are `FILE:LINE:COLUMN: message` lines.
fn load(path: &Path) -> Result<Policy, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    tyr_policy::parse(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{}:{e}", path.display()))
            .collect();
        CliError::Invalid(lines.join("\n"))
    })
}

pub fn validate(args: &ValidateArgs, output: Output) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let policy = match tyr_policy::parse(&text) {
        Ok(p) => p,
        Err(errors) => {
            let file = args.file.display();
            if output == Output::Json {
                outln!("{}", json!({"valid": false, "errors": errors}));
            }
            for e in &errors {
                eprintln!("{file}:{e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let rules = report(&policy);
    match output {
        Output::Json => outln!(
            "{}",
            json!({"valid": true, "name": policy.metadata.name, "rules": rules})
        ),
        Output::Table => {
            outln!(
                "{}: valid policy `{}` ({} rules)",
                args.file.display(),
                policy.metadata.name,
                rules.len()
            );
            for r in &rules {
                outln!(
                    "  {:<32} {:<12} {:?}: {}",
                    r.rule,
                    r.action,
                    r.enforced_in,
                    r.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn eval(args: &EvalArgs, output: Output) -> Result<ExitCode, CliError> {
    let action = Action::from_name(&args.action).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown action `{}` (expected file_read, file_write, exec, net_connect or tls_connect)",
            args.action
        ))
    })?;
    let mut req = Request::new(action, &args.resource)
        .map_err(|e| CliError::Usage(format!("bad --resource: {e}")))?;
    if let (Resource::Addr { port, .. }, Some(p)) = (&mut req.resource, args.port) {
        *port = p;
    }
    req.binary = args.binary.clone();
    req.domains = args
        .domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let overlay_type = args
        .agent_type
        .clone()
        .unwrap_or_else(|| CLI_OVERLAY_TYPE.into());
    req.agent_type = match (&args.agent_type, args.overlays.is_empty()) {
        (Some(t), _) => Some(t.clone()),
        (None, false) => Some(overlay_type.clone()),
        (None, true) => None,
    };
    let set = EffectiveSet {
        base: Some(load(&args.file)?),
        overlays: args
            .overlays
            .iter()
            .map(|f| {
                Ok(Overlay {
                    agent_type: overlay_type.clone(),
                    policy: load(f)?,
                })
            })
            .collect::<Result<_, CliError>>()?,
    };
    let decision = evaluate(&set, &req, &Homes::default());
    match output {
        Output::Json => outln!(
            "{}",
            serde_json::to_string(&decision).map_err(|e| CliError::Usage(e.to_string()))?
        ),
        Output::Table => outln!(
            "{}  layer={} rule={} enforced_in={}",
            decision.verdict,
            decision.layer,
            decision.rule.as_deref().unwrap_or("(default)"),
            match decision.enforced_in {
                tyr_policy::EnforcedIn::Kernel => "kernel",
                tyr_policy::EnforcedIn::Userspace => "userspace",
            }
        ),
    }
    Ok(ExitCode::SUCCESS)
}
