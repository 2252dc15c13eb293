//! Cedar `condition`s: syntax check and evaluation against a request's context.
//!
//! A condition is one Cedar *expression* (e.g. `context.uid == 1000`), used as the `when`
//! clause of `permit(principal, action, resource) when { <condition> };`.
//!
//! Evaluation sees:
//! - `principal`: `Tyr::Process::"<pid>"` (`"unknown"` without a pid),
//! - `action`: `Tyr::Action::"<action>"` (e.g. `"file_read"`),
//! - `resource`: `Tyr::Resource::"<resource>"`,
//! - `context`: a record `{ uid: Long, pid: Long, action: String, resource: String,
//!   binary: String, agent_type: String }`; fields the request does not know are absent
//!   (so `context has binary` tests for them).
//!
//! The resource string is the path, `ip:port` (`[ip]:port` for IPv6), or the SNI.
//! There are no entities and no schema.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicySet,
    Request as CedarRequest, RestrictedExpression,
};

use crate::request::{Request, Resource};

/// Wraps a condition into the one policy it stands for.
fn wrap(src: &str) -> String {
    format!("permit(principal, action, resource) when {{ {src} }};")
}

/// Longest accepted condition, in bytes.
pub const MAX_CONDITION_LEN: usize = 1024;

/// Deepest accepted nesting of `(`, `[` and `{`.
const MAX_NESTING: usize = 16;

/// Refuses conditions big or deep enough to exhaust the stack of Cedar's recursive parser
/// and evaluator.
fn check_size(src: &str) -> Result<(), String> {
    if src.len() > MAX_CONDITION_LEN {
        return Err(format!("condition longer than {MAX_CONDITION_LEN} bytes"));
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in src.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!("condition nested deeper than {MAX_NESTING} levels"));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses `src` into a policy set of exactly one static policy.
fn policy_set(src: &str) -> Result<PolicySet, String> {
    check_size(src)?;
    let set = PolicySet::from_str(&wrap(src)).map_err(|e| format!("Cedar syntax error: {e}"))?;
    if set.policies().count() != 1 || set.templates().count() != 0 {
        return Err("a condition must be a single Cedar expression".into());
    }
    Ok(set)
}

/// Checks that `src` is one Cedar expression usable as a `when` clause (syntax only; a
/// condition that smuggles in a second policy, like `true }; forbid(…`, is rejected).
pub fn validate(src: &str) -> Result<(), String> {
    policy_set(src).map(|_| ())
}

/// Whether the condition `src` holds for `req`: the wrapped policy must authorize the
/// request. An invalid condition, or an evaluation error (a missing context field, a type
/// error, an overflow…), means the condition does **not** hold.
pub fn holds(src: &str, req: &Request) -> bool {
    let Ok(set) = policy_set(src) else {
        return false;
    };
    let Some(request) = cedar_request(req) else {
        return false;
    };
    let response = Authorizer::new().is_authorized(&request, &set, &Entities::empty());
    response.decision() == Decision::Allow
}

fn uid(type_name: &str, id: &str) -> Option<EntityUid> {
    let ty = EntityTypeName::from_str(type_name).ok()?;
    Some(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

fn resource_string(resource: &Resource) -> String {
    match resource {
        Resource::Path(p) | Resource::Sni(p) => p.clone(),
        Resource::Addr { ip, port } => std::net::SocketAddr::new(*ip, *port).to_string(),
    }
}

fn cedar_request(req: &Request) -> Option<CedarRequest> {
    let resource = resource_string(&req.resource);
    let mut pairs = vec![
        (
            "action".to_string(),
            RestrictedExpression::new_string(req.action.as_str().into()),
        ),
        (
            "resource".to_string(),
            RestrictedExpression::new_string(resource.clone()),
        ),
    ];
    let numbers = [("uid", req.context.uid), ("pid", req.context.pid)];
    for (key, value) in numbers {
        if let Some(v) = value {
            pairs.push((key.into(), RestrictedExpression::new_long(i64::from(v))));
        }
    }
    let strings = [("binary", &req.binary), ("agent_type", &req.agent_type)];
    for (key, value) in strings {
        if let Some(v) = value {
            pairs.push((key.into(), RestrictedExpression::new_string(v.clone())));
        }
    }
    let pid = req
        .context
        .pid
        .map_or_else(|| "unknown".to_string(), |p| p.to_string());
    CedarRequest::new(
        uid("Tyr::Process", &pid)?,
        uid("Tyr::Action", req.action.as_str())?,
        uid("Tyr::Resource", &resource)?,
        Context::from_pairs(pairs).ok()?,
        None,
    )
    .ok()
}
