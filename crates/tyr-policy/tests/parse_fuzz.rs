//! Property tests: `parse` never panics, and an accepted policy has unique rule names.

use std::collections::HashSet;

use proptest::prelude::*;
use tyr_policy::parse;

/// Field names of every mapping of the language, so that generated documents get deep.
const KEYS: &[&str] = &[
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
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "labels",
    "description",
    "mode",
    "default",
    "rules",
    "file_read",
    "exec",
    "net_connect",
];

/// Scalars the validator gives meaning to, written as YAML.
const SCALARS: &[&str] = &[
    "allow",
    "deny",
    "alert",
    "file_read",
    "file_write",
    "exec",
    "net_connect",
    "tls_connect",
    "enforce",
    "monitor",
    "low",
    "critical",
    "tyr.dev/v1",
    "Policy",
    "r",
    "r/allow",
    "r/deny",
    "10.0.0.0/8",
    "10.1.2.3/8",
    "'::1'",
    "'::ffff:10.0.0.0/104'",
    "443",
    "0",
    "70000",
    "'8000-8100'",
    "'9-8'",
    "/usr/bin/*",
    "'~/.ssh/**'",
    "'/a/[b'",
    "api.example.com",
    "'*.example.com'",
    "'a.com|*.b.org'",
    "'context.uid == 1000'",
    "'context.uid =='",
    "true",
    "null",
    "1.5",
    "[]",
    "{}",
    "claude-code",
];

#[derive(Clone, Debug)]
enum Tree {
    Scalar(String),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

impl Tree {
    /// Flow-style YAML.
    fn render(&self, out: &mut String) {
        match self {
            Tree::Scalar(s) => out.push_str(s),
            Tree::Seq(items) => {
                out.push('[');
                for (i, t) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    t.render(out);
                }
                out.push(']');
            }
            Tree::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push_str(": ");
                    v.render(out);
                }
                out.push('}');
            }
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ]
}

fn scalar() -> impl Strategy<Value = Tree> {
    prop_oneof![
        9 => prop::sample::select(SCALARS).prop_map(|s| Tree::Scalar(s.to_owned())),
        1 => any::<String>().prop_map(|s| Tree::Scalar(format!("{s:?}"))),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Tree::Seq),
            prop::collection::vec((key(), inner), 0..6).prop_map(Tree::Map),
        ]
    })
}

/// A rule: usually a plausible `name`, `action` and `verdict`, then random fields.
fn rule() -> impl Strategy<Value = Tree> {
    let field = |k: &'static str, values: &'static [&'static str]| {
        prop::option::weighted(
            0.9,
            prop::sample::select(values).prop_map(move |v| (k.to_owned(), Tree::Scalar(v.into()))),
        )
    };
    (
        field("name", &["r", "s", "r/allow", "r/deny", "t"]),
        field(
            "action",
            &["file_read", "exec", "net_connect", "tls_connect"],
        ),
        field("verdict", &["allow", "deny", "alert"]),
        prop::collection::vec((key(), prop_oneof![3 => scalar(), 1 => tree()]), 0..3),
    )
        .prop_map(|(name, action, verdict, extra)| {
            Tree::Map(
                name.into_iter()
                    .chain(action)
                    .chain(verdict)
                    .chain(extra)
                    .collect(),
            )
        })
}

/// A document with a valid envelope (usually) and generated rules.
fn document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(rule(), 0..6),
        prop::option::weighted(0.2, tree()),
    )
        .prop_map(|(rules, extra)| {
            let mut s = String::from(
                "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules: ",
            );
            Tree::Seq(rules).render(&mut s);
            s.push('\n');
            if let Some(extra) = extra {
                s.push_str("  default: ");
                extra.render(&mut s);
                s.push('\n');
            }
            s
        })
}

/// Asserts unique rule names when `yaml` parses; returns whether it did.
fn assert_unique_names(yaml: &str) -> bool {
    let parsed = parse(yaml);
    if let Ok(p) = &parsed {
        let mut seen = HashSet::new();
        for r in &p.spec.rules {
            assert!(
                seen.insert(r.name.clone()),
                "duplicate rule {} in {yaml}",
                r.name
            );
        }
    }
    parsed.is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn yaml_like_text_never_panics(s in "[-a-z:{}\\[\\],'\"&*!|>#\n ]{0,200}") {
        let _ = parse(&s);
    }

    #[test]
    fn generated_documents_never_panic_and_have_unique_names(doc in document()) {
        assert_unique_names(&doc);
    }

    #[test]
    fn generated_trees_never_panic(t in tree()) {
        let mut s = String::new();
        t.render(&mut s);
        assert_unique_names(&s);
    }
}

#[test]
fn generated_documents_are_sometimes_valid() {
    // Guards the generator: a valid rule in its vocabulary parses.
    let yaml = "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules: [{name: r, action: exec, verdict: deny}, {name: r/allow, action: net_connect, cidrs: [10.0.0.0/8], verdict: allow}]\n";
    let p = parse(yaml).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(p.spec.rules.len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn generated_document_sets_include_valid_ones(docs in prop::collection::vec(document(), 64)) {
        // Guards the generator: it must reach the "accepted" branch, not only errors.
        let ok = docs.iter().filter(|d| assert_unique_names(d)).count();
        prop_assert!(ok > 0, "no valid document among {}", docs.len());
    }
}
