//! The document envelope: `apiVersion`, `kind`, `metadata` and `spec`.

use std::collections::{BTreeMap, HashMap};

use super::node::{Node, Value};
use super::{Ctx, MAX_RULES, rule, suggest};
use crate::model::{Action, Defaults, Metadata, Mode, Policy, Rule, Spec, Verdict};

const API_VERSION: &str = "tyr.dev/v1";
const KIND: &str = "Policy";
const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA: &[&str] = &["name", "labels", "description"];
const SPEC: &[&str] = &["mode", "default", "rules"];

/// Longest policy name.
const MAX_NAME: usize = 63;

pub(super) const VERDICTS: &[(&str, Verdict)] = &[
    ("allow", Verdict::Allow),
    ("deny", Verdict::Deny),
    ("alert", Verdict::Alert),
];

const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)];

/// `(name, action)` for every action.
pub(super) fn actions() -> [(&'static str, Action); 5] {
    Action::ALL.map(|a| (a.as_str(), a))
}

/// The whole document; `None` when a required part is missing or malformed.
pub(super) fn policy(ctx: &mut Ctx, root: &Node) -> Option<Policy> {
    if matches!(root.value, Value::Null) {
        ctx.error(
            root.loc,
            "empty document",
            Some(format!("a policy starts with `apiVersion: {API_VERSION}`")),
        );
        return None;
    }
    let f = ctx.fields(root, "the policy", TOP)?;
    let node = ctx_required(ctx, &f, "apiVersion", API_VERSION);
    let api_version = fixed(ctx, node, "apiVersion", API_VERSION);
    let node = ctx_required(ctx, &f, "kind", KIND);
    let kind = fixed(ctx, node, "kind", KIND);
    let metadata = ctx
        .required(
            &f,
            "metadata",
            Some("`metadata` needs at least a `name`".into()),
        )
        .and_then(|m| metadata(ctx, m));
    let spec = ctx.required(&f, "spec", None).and_then(|s| spec(ctx, s));
    Some(Policy {
        api_version: api_version?,
        kind: kind?,
        metadata: metadata?,
        spec: spec?,
    })
}

fn ctx_required<'a>(
    ctx: &mut Ctx,
    f: &super::Fields<'a>,
    name: &str,
    value: &str,
) -> Option<&'a Node> {
    ctx.required(f, name, Some(format!("add `{name}: {value}`")))
}

/// A field whose only valid value is `expected`.
fn fixed(ctx: &mut Ctx, node: Option<&Node>, field: &str, expected: &str) -> Option<String> {
    let s = ctx.string(node?, field)?;
    if s != expected {
        ctx.error(
            node?.loc,
            format!("unsupported {field} `{s}`"),
            Some(format!("use `{field}: {expected}`")),
        );
        return None;
    }
    Some(s.to_owned())
}

fn metadata(ctx: &mut Ctx, node: &Node) -> Option<Metadata> {
    let f = ctx.fields(node, "metadata", METADATA)?;
    let name = ctx
        .required(&f, "name", None)
        .and_then(|n| policy_name(ctx, n));
    let labels = match f.get("labels") {
        Some(l) => labels(ctx, l),
        None => Some(BTreeMap::new()),
    };
    let description = match f.get("description") {
        Some(d) => Some(Some(ctx.string(d, "description")?.to_owned())),
        None => Some(None),
    };
    Some(Metadata {
        name: name?,
        labels: labels?,
        description: description?,
    })
}

fn policy_name(ctx: &mut Ctx, node: &Node) -> Option<String> {
    let s = ctx.string(node, "name")?;
    let ok = (1..=MAX_NAME).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok {
        ctx.error(
            node.loc,
            format!("invalid policy name `{s}`"),
            Some(
                "use 1-63 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
                    .into(),
            ),
        );
        return None;
    }
    Some(s.to_owned())
}

fn labels(ctx: &mut Ctx, node: &Node) -> Option<BTreeMap<String, String>> {
    let Value::Map(entries) = &node.value else {
        ctx.error(
            node.loc,
            format!("`labels` must be a mapping, found {}", node.value.kind()),
            None,
        );
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in entries {
        match (&k.value, &v.value) {
            (Value::Str(k), Value::Str(v)) => {
                out.insert(k.clone(), v.clone());
            }
            (Value::Str(_), other) => {
                ok = false;
                ctx.error(
                    v.loc,
                    format!("label values must be strings, found {}", other.kind()),
                    Some("quote the value".into()),
                );
            }
            (other, _) => {
                ok = false;
                ctx.error(
                    k.loc,
                    format!("label names must be strings, found {}", other.kind()),
                    Some("quote the name".into()),
                );
            }
        }
    }
    ok.then_some(out)
}

fn spec(ctx: &mut Ctx, node: &Node) -> Option<Spec> {
    let f = ctx.fields(node, "spec", SPEC)?;
    let mode = match f.get("mode") {
        Some(m) => ctx.one_of(m, "mode", MODES),
        None => Some(Mode::Enforce),
    };
    let default = match f.get("default") {
        Some(d) => defaults(ctx, d),
        None => Some(Defaults::default()),
    };
    let rules = match f.get("rules") {
        Some(r) => rules(ctx, r),
        None => Some(Vec::new()),
    };
    Some(Spec {
        mode: mode?,
        default: default?,
        rules: rules?,
    })
}

/// `spec.default`: a verdict, or a map action → verdict.
fn defaults(ctx: &mut Ctx, node: &Node) -> Option<Defaults> {
    let Value::Map(entries) = &node.value else {
        return ctx.one_of(node, "verdict", VERDICTS).map(Defaults::All);
    };
    let actions = actions();
    let names = actions.map(|(n, _)| n);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in entries {
        let action = match &k.value {
            Value::Str(s) => match Action::from_name(s) {
                Some(a) => Some(a),
                None => {
                    ctx.error(
                        k.loc,
                        format!("unknown action `{s}` in `default`"),
                        Some(suggest::hint(s, &names, "actions")),
                    );
                    None
                }
            },
            other => {
                ctx.error(
                    k.loc,
                    format!("`default` keys must be actions, found {}", other.kind()),
                    Some(format!("valid actions: {}", suggest::list(&names))),
                );
                None
            }
        };
        let verdict = ctx.one_of(v, "verdict", VERDICTS);
        match (action, verdict) {
            (Some(a), Some(v)) => {
                out.insert(a, v);
            }
            _ => ok = false,
        }
    }
    ok.then_some(Defaults::PerAction(out))
}

/// `spec.rules`, expanded, with unique names.
fn rules(ctx: &mut Ctx, node: &Node) -> Option<Vec<Rule>> {
    let Value::Seq(items) = &node.value else {
        ctx.error(
            node.loc,
            format!("`rules` must be a list, found {}", node.value.kind()),
            None,
        );
        return None;
    };
    if items.len() > MAX_RULES {
        ctx.error(
            node.loc,
            format!("too many rules: {} (at most {MAX_RULES})", items.len()),
            Some("split the policy".into()),
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut ok = true;
    for item in items {
        let mut names: Vec<String> = raw_name(item).into_iter().collect();
        match rule::rule(ctx, item) {
            Some(rules) => {
                names.extend(rules.iter().map(|r| r.name.clone()));
                out.extend(rules);
            }
            None => ok = false,
        }
        names.dedup();
        for name in names {
            if let Some(first) = seen.get(&name) {
                ctx.rule = Some(name.clone());
                ctx.error(
                    item.loc,
                    format!("duplicate rule name `{name}`"),
                    Some(format!(
                        "first defined at line {first}; rule names must be unique"
                    )),
                );
            } else {
                seen.insert(name, item.loc.line);
            }
        }
        ctx.rule = None;
    }
    ok.then_some(out)
}

/// The `name` of a rule mapping, if it is a string.
pub(super) fn raw_name(item: &Node) -> Option<String> {
    let Value::Map(entries) = &item.value else {
        return None;
    };
    entries
        .iter()
        .find_map(|(k, v)| match (&k.value, &v.value) {
            (Value::Str(k), Value::Str(v)) if k == "name" => Some(v.clone()),
            _ => None,
        })
}
