//! One entry of `spec.rules`, including the `cidr_allow`/`cidr_deny` expansion.

use ipnet::IpNet;

use super::doc::{VERDICTS, actions, raw_name};
use super::node::{Node, Value};
use super::{Ctx, Fields, net};
use crate::model::{Action, PortRange, Rule, Severity, Verdict};
use crate::{condition, glob, sni};

const FIELDS: &[&str] = &[
    "name",
    "action",
    "resource_pattern",
    "cidrs",
    "ports",
    "domains",
    "sni_pattern",
    "verdict",
    "severity",
    "binaries",
    "agent_types",
    "condition",
    "cidr_allow",
    "cidr_deny",
];

/// Fields that only `net_connect` accepts.
const NET_ONLY: &[&str] = &["cidrs", "ports", "domains", "cidr_allow", "cidr_deny"];

/// Fields that `cidr_allow`/`cidr_deny` replace.
const COMPAT_EXCLUSIVE: &[&str] = &["verdict", "cidrs", "resource_pattern", "domains"];

const SEVERITIES: &[(&str, Severity)] = &[
    ("low", Severity::Low),
    ("medium", Severity::Medium),
    ("high", Severity::High),
    ("critical", Severity::Critical),
];

/// Validates one rule; `Some` holds the rule, or the two rules of a `cidr_allow`/`cidr_deny`
/// expansion (either may be absent). Errors carry the rule's name.
pub(super) fn rule(ctx: &mut Ctx, node: &Node) -> Option<Vec<Rule>> {
    ctx.rule = raw_name(node);
    let f = ctx.fields(node, "a rule", FIELDS)?;
    let before = ctx.errors.len();

    let name = ctx
        .required(&f, "name", None)
        .and_then(|n| rule_name(ctx, n));
    let action_names = actions().map(|(n, _)| n);
    let action = ctx
        .required(
            &f,
            "action",
            Some(format!("one of {}", super::suggest::list(&action_names))),
        )
        .and_then(|a| ctx.one_of(a, "action", &actions()));
    let severity = match f.get("severity") {
        Some(s) => ctx.one_of(s, "severity", SEVERITIES),
        None => Some(Severity::Low),
    };
    let compat = f.get("cidr_allow").is_some() || f.get("cidr_deny").is_some();
    let verdict = if compat {
        for field in COMPAT_EXCLUSIVE {
            if let Some((k, _)) = f.entry(field) {
                ctx.error(
                    k.loc,
                    format!("`{field}` cannot be combined with `cidr_allow`/`cidr_deny`"),
                    Some("they expand to an allow rule and a deny rule over their CIDRs; write separate rules instead".into()),
                );
            }
        }
        None
    } else {
        ctx.required(
            &f,
            "verdict",
            Some("one of `allow`, `deny`, `alert`".into()),
        )
        .and_then(|v| ctx.one_of(v, "verdict", VERDICTS))
    };

    let mut r = Rule {
        name: name.unwrap_or_default(),
        action: action.unwrap_or_default(),
        verdict: verdict.unwrap_or_default(),
        severity: severity.unwrap_or_default(),
        location: node.loc,
        ..Rule::default()
    };
    let mut allow = None;
    let mut deny = None;
    if let Some(action) = action {
        resources(ctx, &f, action, &mut r);
        if action == Action::NetConnect {
            allow = f
                .get("cidr_allow")
                .and_then(|n| cidr_list(ctx, n, "cidr_allow"));
            deny = f
                .get("cidr_deny")
                .and_then(|n| cidr_list(ctx, n, "cidr_deny"));
        }
    }
    if let Some(b) = f.get("binaries") {
        r.binaries = binaries(ctx, b);
    }
    if let Some(a) = f.get("agent_types") {
        r.agent_types = agent_types(ctx, a);
    }
    if let Some((k, c)) = f.entry("condition") {
        r.condition = condition_field(ctx, k, c, verdict, compat);
    }
    if ctx.errors.len() > before {
        return None;
    }
    if !compat {
        return Some(vec![r]);
    }
    let expand = |suffix: &str, verdict: Verdict, cidrs: Vec<IpNet>| Rule {
        name: format!("{}/{suffix}", r.name),
        verdict,
        cidrs,
        ..r.clone()
    };
    let mut out = Vec::with_capacity(2);
    out.extend(allow.map(|c| expand("allow", Verdict::Allow, c)));
    out.extend(deny.map(|c| expand("deny", Verdict::Deny, c)));
    Some(out)
}

fn rule_name(ctx: &mut Ctx, node: &Node) -> Option<String> {
    let s = ctx.string(node, "name")?;
    if s.trim().is_empty() {
        ctx.error(node.loc, "rule name is empty", None);
        return None;
    }
    Some(s.to_owned())
}

/// The resource fields, checked against the action.
fn resources(ctx: &mut Ctx, f: &Fields, action: Action, r: &mut Rule) {
    for field in NET_ONLY {
        if action != Action::NetConnect
            && let Some((k, _)) = f.entry(field)
        {
            ctx.error(
                k.loc,
                format!("`{field}` applies only to net_connect"),
                None,
            );
        }
    }
    if action != Action::TlsConnect
        && let Some((k, _)) = f.entry("sni_pattern")
    {
        ctx.error(k.loc, "`sni_pattern` applies only to tls_connect", None);
    }
    // `cidrs` first: a net_connect `resource_pattern` is appended to them.
    if action == Action::NetConnect
        && let Some(c) = f.get("cidrs").and_then(|n| cidr_list(ctx, n, "cidrs"))
    {
        r.cidrs = c;
    }
    if let Some((k, p)) = f.entry("resource_pattern") {
        match action {
            Action::TlsConnect => ctx.error(
                k.loc,
                "`resource_pattern` does not apply to tls_connect",
                Some("use `sni_pattern` for TLS server names".into()),
            ),
            Action::NetConnect => {
                if let Some(net) = cidr(ctx, p, "resource_pattern") {
                    r.cidrs.push(net);
                }
            }
            _ => r.resource_pattern = path_glob(ctx, p, "resource_pattern"),
        }
    }
    match action {
        Action::NetConnect => {
            if let Some(p) = f.get("ports") {
                r.ports = ports(ctx, p);
            }
            if let Some(d) = f.get("domains") {
                r.domains = domains(ctx, d);
            }
        }
        Action::TlsConnect => {
            if let Some(p) = f.get("sni_pattern") {
                r.sni_pattern = sni_pattern(ctx, p);
            }
        }
        _ => {}
    }
}

/// A path glob, with the error pointed at the offending byte where possible.
fn path_glob(ctx: &mut Ctx, node: &Node, field: &str) -> Option<String> {
    let s = ctx.string(node, field)?;
    if let Err(e) = glob::validate(s) {
        let loc = ctx.point_into(node, s, e.offset);
        ctx.error(loc, format!("invalid glob `{s}`: {}", e.message), None);
        return None;
    }
    Some(s.to_owned())
}

fn cidr(ctx: &mut Ctx, node: &Node, field: &str) -> Option<IpNet> {
    let s = ctx.string(node, field)?;
    net::cidr(s)
        .map_err(|(msg, hint)| ctx.error(node.loc, msg, hint))
        .ok()
}

/// A list of CIDRs; `None` when the list or any entry is invalid.
fn cidr_list(ctx: &mut Ctx, node: &Node, field: &str) -> Option<Vec<IpNet>> {
    let items = ctx.list(node, field)?;
    let nets: Vec<Option<IpNet>> = items.iter().map(|i| cidr(ctx, i, field)).collect();
    nets.into_iter().collect()
}

fn ports(ctx: &mut Ctx, node: &Node) -> Vec<PortRange> {
    let Some(items) = ctx.list(node, "ports") else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let parsed = match &item.value {
            Value::Int(n) => net::port_number(*n),
            Value::Str(s) => net::port_range(s),
            other => Err((
                format!(
                    "a port must be an integer or an \"A-B\" range, found {}",
                    other.kind()
                ),
                None,
            )),
        };
        match parsed {
            Ok(p) => out.push(p),
            Err((msg, hint)) => ctx.error(item.loc, msg, hint),
        }
    }
    out
}

/// Strings of a list, each checked by `check`; entries failing are reported and dropped.
fn strings(
    ctx: &mut Ctx,
    node: &Node,
    field: &str,
    mut check: impl FnMut(&mut Ctx, &Node, &str) -> Option<String>,
) -> Vec<String> {
    let Some(items) = ctx.list(node, field) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(s) = ctx.string(item, field)
            && let Some(v) = check(ctx, item, s)
        {
            out.push(v);
        }
    }
    out
}

fn domains(ctx: &mut Ctx, node: &Node) -> Vec<String> {
    strings(ctx, node, "domains", |ctx, item, s| {
        let lower = s.to_ascii_lowercase();
        match sni::validate_domain(&lower) {
            Ok(()) => Some(lower),
            Err(msg) => {
                ctx.error(
                    item.loc,
                    msg,
                    Some("e.g. `api.example.com` or `*.example.com`".into()),
                );
                None
            }
        }
    })
}

fn sni_pattern(ctx: &mut Ctx, node: &Node) -> Option<String> {
    let s = ctx.string(node, "sni_pattern")?;
    match sni::validate_sni_pattern(s) {
        Ok(()) => Some(s.to_owned()),
        Err(msg) => {
            ctx.error(
                node.loc,
                msg,
                Some("e.g. `api.example.com|*.example.org`".into()),
            );
            None
        }
    }
}

fn binaries(ctx: &mut Ctx, node: &Node) -> Vec<String> {
    strings(ctx, node, "binaries", |ctx, item, s| {
        if !s.starts_with('/') {
            ctx.error(
                item.loc,
                format!("binary `{s}` is not an absolute path glob"),
                Some("write it from `/`, e.g. `/usr/bin/git` or `/**/node`".into()),
            );
            return None;
        }
        path_glob(ctx, item, "binaries")
    })
}

fn agent_types(ctx: &mut Ctx, node: &Node) -> Vec<String> {
    strings(ctx, node, "agent_types", |ctx, item, s| {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            ctx.error(
                item.loc,
                format!("invalid agent type `{s}`"),
                Some("use a-z, 0-9, `_` and `-`, e.g. `claude-code`".into()),
            );
            return None;
        }
        Some(s.to_owned())
    })
}

fn condition_field(
    ctx: &mut Ctx,
    key: &Node,
    node: &Node,
    verdict: Option<Verdict>,
    compat: bool,
) -> Option<String> {
    let s = ctx.string(node, "condition")?;
    if verdict == Some(Verdict::Allow) || compat {
        ctx.error(
            key.loc,
            "a condition can only raise an alert or record a deny",
            Some("use verdict `alert` or `deny` on a rule with a condition".into()),
        );
        return None;
    }
    match condition::validate(s) {
        Ok(()) => Some(s.to_owned()),
        Err(msg) => {
            ctx.error(node.loc, format!("invalid condition: {msg}"), None);
            None
        }
    }
}
