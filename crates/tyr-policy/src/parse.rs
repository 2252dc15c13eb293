//! YAML → validated [`Policy`].
//!
//! The document is loaded into a span-aware tree ([`node`]), then every mapping is checked
//! by hand so that all problems (unknown fields, bad values, …) are collected in one pass,
//! each with its line, column, rule and a hint.

mod doc;
mod net;
mod node;
mod rule;
mod suggest;

use crate::error::PolicyError;
use crate::model::{Location, Policy};
use node::{Node, Value};

/// Largest accepted document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Most rules in one policy.
pub const MAX_RULES: usize = 10_000;

/// Parses and validates a policy document. On error, every problem found is returned and
/// nothing is produced.
pub fn parse(yaml: &str) -> Result<Policy, Vec<PolicyError>> {
    let start = Location { line: 1, column: 1 };
    if yaml.len() > MAX_DOCUMENT_BYTES {
        return Err(vec![PolicyError {
            location: start,
            rule: None,
            message: format!(
                "document is {} bytes, larger than the 1 MiB limit",
                yaml.len()
            ),
            hint: Some("split it into several policies".into()),
        }]);
    }
    let root = node::load(yaml).map_err(|e| vec![syntax_error(&e)])?;
    let mut ctx = Ctx {
        src: yaml,
        errors: Vec::new(),
        rule: None,
    };
    let policy = doc::policy(&mut ctx, &root);
    match policy {
        Some(p) if ctx.errors.is_empty() => Ok(p),
        _ => {
            let mut errors = ctx.errors;
            if errors.is_empty() {
                errors.push(PolicyError {
                    location: start,
                    rule: None,
                    message: "invalid policy".into(),
                    hint: None,
                });
            }
            errors.sort_by_key(|e| (e.location.line, e.location.column));
            Err(errors)
        }
    }
}

/// A YAML syntax (or structural) error reported by the YAML parser.
fn syntax_error(e: &serde_saphyr::Error) -> PolicyError {
    let e = e.without_snippet();
    let location = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| Location {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            column: u32::try_from(l.column()).unwrap_or(u32::MAX),
        })
        .unwrap_or(Location { line: 1, column: 1 });
    let text = e.to_string();
    // The message repeats the location as a "line L column C: " prefix; drop it.
    let message = match text.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") && prefix.contains(" column ") => rest,
        _ => &text,
    };
    let message = message
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(message);
    PolicyError {
        location,
        rule: None,
        message: format!("YAML: {}", message.trim()),
        hint: None,
    }
}

/// Validation state: the source, the errors so far and the rule being checked.
struct Ctx<'s> {
    src: &'s str,
    errors: Vec<PolicyError>,
    rule: Option<String>,
}

impl Ctx<'_> {
    fn error(&mut self, location: Location, message: impl Into<String>, hint: Option<String>) {
        self.errors.push(PolicyError {
            location,
            rule: self.rule.clone(),
            message: message.into(),
            hint,
        });
    }

    /// The location of byte `offset` inside the string scalar `node` (whose value is
    /// `value`), when the source text lets us map it back; else the scalar's own location.
    fn point_into(&self, node: &Node, value: &str, offset: usize) -> Location {
        let raw = node.offset.and_then(|o| self.src.get(o..));
        let (Some(raw), Some(prefix)) = (raw, value.get(..offset)) else {
            return node.loc;
        };
        let (skip, raw) = match raw.strip_prefix(['"', '\'']) {
            Some(rest) => (1, rest),
            None => (0, raw),
        };
        if !raw.starts_with(prefix) {
            return node.loc;
        }
        let chars = u32::try_from(prefix.chars().count()).unwrap_or(0);
        Location {
            line: node.loc.line,
            column: node.loc.column.saturating_add(skip + chars),
        }
    }

    /// Checks that `node` is a mapping whose keys are all in `valid`; unknown keys are
    /// reported with a suggestion. `what` names the mapping in messages.
    fn fields<'a>(&mut self, node: &'a Node, what: &str, valid: &[&str]) -> Option<Fields<'a>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.loc,
                format!("{what} must be a mapping, found {}", node.value.kind()),
                None,
            );
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match &k.value {
                Value::Str(name) if valid.contains(&name.as_str()) => {
                    out.push((name.as_str(), k, v))
                }
                Value::Str(name) => self.error(
                    k.loc,
                    format!("unknown field `{name}` in {what}"),
                    Some(suggest::hint(name, valid, "fields")),
                ),
                other => self.error(
                    k.loc,
                    format!("field names must be strings, found {}", other.kind()),
                    Some(format!("valid fields: {}", suggest::list(valid))),
                ),
            }
        }
        Some(Fields {
            loc: node.loc,
            entries: out,
        })
    }

    /// A required field: reports it missing at the mapping's location.
    fn required<'a>(
        &mut self,
        f: &Fields<'a>,
        name: &str,
        hint: Option<String>,
    ) -> Option<&'a Node> {
        let v = f.get(name);
        if v.is_none() {
            self.error(f.loc, format!("missing field `{name}`"), hint);
        }
        v
    }

    /// A string scalar.
    fn string<'a>(&mut self, node: &'a Node, field: &str) -> Option<&'a str> {
        match &node.value {
            Value::Str(s) => Some(s),
            other => {
                self.error(
                    node.loc,
                    format!("`{field}` must be a string, found {}", other.kind()),
                    None,
                );
                None
            }
        }
    }

    /// A non-empty list.
    fn list<'a>(&mut self, node: &'a Node, field: &str) -> Option<&'a [Node]> {
        match &node.value {
            Value::Seq(items) if items.is_empty() => {
                self.error(
                    node.loc,
                    format!("`{field}`: empty list: omit the field for a catch-all"),
                    None,
                );
                None
            }
            Value::Seq(items) => Some(items),
            other => {
                self.error(
                    node.loc,
                    format!("`{field}` must be a list, found {}", other.kind()),
                    None,
                );
                None
            }
        }
    }

    /// One of a fixed set of names, reported with the valid values and a suggestion.
    fn one_of<T: Copy>(&mut self, node: &Node, field: &str, values: &[(&str, T)]) -> Option<T> {
        let s = self.string(node, field)?;
        if let Some((_, v)) = values.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        let hint = suggest::closest(s, &names).map(|c| format!("did you mean `{c}`?"));
        self.error(
            node.loc,
            format!(
                "invalid {field} `{s}`: expected one of {}",
                suggest::list(&names)
            ),
            hint,
        );
        None
    }
}

/// The known fields of one mapping, in document order.
struct Fields<'a> {
    loc: Location,
    /// Field name, key node, value node.
    entries: Vec<(&'a str, &'a Node, &'a Node)>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Node> {
        self.entry(name).map(|(_, v)| v)
    }

    /// The key and value nodes of `name`.
    fn entry(&self, name: &str) -> Option<(&'a Node, &'a Node)> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, k, v)| (*k, *v))
    }
}
