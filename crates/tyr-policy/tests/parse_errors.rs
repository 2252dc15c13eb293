//! `parse`: one test per validation error (message, line, column, rule) and a full valid
//! document round-trip.

use std::collections::BTreeMap;

use tyr_policy::{
    Action, Defaults, Location, Mode, PolicyError, PortRange, Severity, Verdict, parse,
};

/// Lines 1-6; the first rule starts on line 7.
const HEAD: &str = "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: p\nspec:\n  rules:\n";

fn errors(yaml: &str) -> Vec<PolicyError> {
    match parse(yaml) {
        Ok(p) => panic!("expected errors, got {p:#?}"),
        Err(e) => e,
    }
}

/// The only error of `yaml`.
fn only(yaml: &str) -> PolicyError {
    let mut e = errors(yaml);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.remove(0)
}

/// The rules of `body` (indented by four spaces) under [`HEAD`].
fn rules(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[track_caller]
fn check(e: &PolicyError, line: u32, column: u32, rule: Option<&str>, message: &str) {
    assert_eq!(e.location, Location { line, column }, "{e:#?}");
    assert_eq!(e.rule.as_deref(), rule, "{e:#?}");
    assert!(e.message.contains(message), "{e:#?} lacks {message:?}");
}

#[track_caller]
fn hint(e: &PolicyError, text: &str) {
    let h = e.hint.as_deref().unwrap_or_default();
    assert!(h.contains(text), "{e:#?}: hint lacks {text:?}");
}

// --- document ------------------------------------------------------------------------

#[test]
fn too_large_input_is_rejected_without_parsing() {
    // Invalid YAML past the limit: only the size error is reported.
    let yaml = format!("{}\n[", "#".repeat(1024 * 1024));
    let e = only(&yaml);
    check(&e, 1, 1, None, "1 MiB");
}

#[test]
fn yaml_syntax_error_has_the_parser_location() {
    let e = only("apiVersion: tyr.dev/v1\nkind: [Policy\n");
    assert_eq!(e.location.line, 2, "{e:#?}");
    assert!(e.message.starts_with("YAML:"), "{e:#?}");
}

#[test]
fn duplicate_yaml_key_is_a_syntax_error() {
    let e = only(&format!("{HEAD}    - name: a\n      name: b\n"));
    check(&e, 8, 7, None, "duplicate mapping key");
}

#[test]
fn empty_document() {
    check(&only(""), 1, 1, None, "empty document");
}

#[test]
fn wrong_api_version_and_kind() {
    let e = errors("apiVersion: tyr.dev/v2\nkind: Polcy\nmetadata: {name: p}\nspec: {}\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    check(&e[0], 1, 13, None, "unsupported apiVersion `tyr.dev/v2`");
    hint(&e[0], "tyr.dev/v1");
    check(&e[1], 2, 7, None, "unsupported kind `Polcy`");
}

#[test]
fn missing_required_top_level_fields() {
    let e = errors("kind: Policy\n");
    let msgs: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "missing field `apiVersion`",
            "missing field `metadata`",
            "missing field `spec`"
        ]
    );
    check(&e[0], 1, 1, None, "apiVersion");
}

#[test]
fn metadata_name_is_required_and_checked() {
    let e = only("apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {}\nspec: {}\n");
    check(&e, 3, 11, None, "missing field `name`");
    for bad in ["Upper", "-dash", "a b", &"a".repeat(64)] {
        let e = only(&format!(
            "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: \"{bad}\"\nspec: {{}}\n"
        ));
        check(&e, 4, 9, None, "invalid policy name");
        hint(&e, "1-63");
    }
}

#[test]
fn labels_are_string_to_string() {
    let e = only(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: p\n  labels: {team: 1}\nspec: {}\n",
    );
    check(&e, 5, 18, None, "label values must be strings");
}

#[test]
fn unknown_top_level_field_suggests_the_close_name() {
    let e =
        only("apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {}\nspecs: {}\n");
    check(&e, 5, 1, None, "unknown field `specs`");
    hint(&e, "did you mean `spec`?");
}

#[test]
fn unknown_metadata_and_spec_fields() {
    let e = errors(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p, labls: {}}\nspec:\n  moed: enforce\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    check(&e[0], 3, 21, None, "unknown field `labls`");
    hint(&e[0], "did you mean `labels`?");
    check(&e[1], 5, 3, None, "unknown field `moed`");
    hint(&e[1], "did you mean `mode`?");
}

#[test]
fn bad_mode_lists_values() {
    let e =
        only("apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {mode: monitr}\n");
    check(
        &e,
        4,
        14,
        None,
        "invalid mode `monitr`: expected one of `enforce`, `monitor`",
    );
    hint(&e, "did you mean `monitor`?");
}

#[test]
fn default_map_rejects_unknown_actions_and_verdicts() {
    let e = errors(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  default:\n    file_reed: deny\n    exec: block\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    check(&e[0], 6, 5, None, "unknown action `file_reed`");
    hint(&e[0], "did you mean `file_read`?");
    check(&e[1], 7, 11, None, "invalid verdict `block`");
    assert!(e[1].message.contains("`allow`, `deny`, `alert`"), "{e:#?}");
}

#[test]
fn too_many_rules() {
    let body: String = (0..10_001)
        .map(|i| format!("{{name: r{i}, action: exec, verdict: allow}},"))
        .collect();
    let e = only(&format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  rules: [{body}]\n"
    ));
    check(&e, 5, 10, None, "too many rules: 10001");
}

// --- rules -----------------------------------------------------------------------------

#[test]
fn unknown_rule_field_suggests_the_close_name() {
    let e = errors(&rules(
        "    - name: r1\n      action: exec\n      verdcit: deny\n",
    ));
    let unknown = e
        .iter()
        .find(|e| e.message.contains("unknown"))
        .expect("unknown field");
    check(unknown, 9, 7, Some("r1"), "unknown field `verdcit`");
    hint(unknown, "did you mean `verdict`?");
    let missing = e
        .iter()
        .find(|e| e.message.contains("missing"))
        .expect("missing verdict");
    check(missing, 7, 7, Some("r1"), "missing field `verdict`");
}

#[test]
fn unknown_rule_field_without_close_name_lists_fields() {
    let e = only(&rules(
        "    - name: r1\n      action: exec\n      verdict: deny\n      colour: red\n",
    ));
    check(&e, 10, 7, Some("r1"), "unknown field `colour`");
    hint(&e, "valid fields: `name`, `action`");
}

#[test]
fn bad_enums_in_rules() {
    let e = errors(&rules(
        "    - name: r1\n      action: file_raed\n      verdict: deny\n    - name: r2\n      action: exec\n      verdict: alow\n      severity: urgent\n",
    ));
    assert_eq!(e.len(), 3, "{e:#?}");
    check(
        &e[0],
        8,
        15,
        Some("r1"),
        "invalid action `file_raed`: expected one of `file_read`",
    );
    hint(&e[0], "did you mean `file_read`?");
    check(&e[1], 12, 16, Some("r2"), "invalid verdict `alow`");
    hint(&e[1], "did you mean `allow`?");
    check(
        &e[2],
        13,
        17,
        Some("r2"),
        "invalid severity `urgent`: expected one of `low`, `medium`, `high`, `critical`",
    );
}

#[test]
fn missing_rule_name_and_action() {
    let e = errors(&rules("    - verdict: deny\n"));
    let msgs: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["missing field `name`", "missing field `action`"]);
    check(&e[0], 7, 7, None, "name");
}

#[test]
fn duplicate_rule_names_point_at_the_first() {
    let e = only(&rules(
        "    - name: same\n      action: exec\n      verdict: deny\n    - name: same\n      action: file_read\n      verdict: deny\n",
    ));
    check(&e, 10, 7, Some("same"), "duplicate rule name `same`");
    hint(&e, "first defined at line 7");
}

#[test]
fn expanded_names_must_be_unique_too() {
    let e = only(&rules(
        "    - name: n\n      action: net_connect\n      cidr_allow: [10.0.0.0/8]\n    - name: n/allow\n      action: exec\n      verdict: deny\n",
    ));
    check(&e, 10, 7, Some("n/allow"), "duplicate rule name `n/allow`");
}

#[test]
fn invalid_glob_points_into_the_pattern() {
    let e = only(&rules(
        "    - name: g\n      action: file_read\n      resource_pattern: \"/etc/[ab\"\n      verdict: deny\n",
    ));
    // The quote is at column 25, `[` at column 31.
    check(&e, 9, 31, Some("g"), "unclosed `[`");
    let e = only(&rules(
        "    - name: g\n      action: exec\n      resource_pattern: /usr//bin\n      verdict: deny\n",
    ));
    check(&e, 9, 30, Some("g"), "empty path segment");
}

#[test]
fn resource_pattern_on_tls_connect_suggests_sni_pattern() {
    let e = only(&rules(
        "    - name: t\n      action: tls_connect\n      resource_pattern: example.com\n      verdict: deny\n",
    ));
    check(
        &e,
        9,
        7,
        Some("t"),
        "`resource_pattern` does not apply to tls_connect",
    );
    hint(&e, "sni_pattern");
}

#[test]
fn fields_on_the_wrong_action() {
    let e = errors(&rules(
        "    - name: w\n      action: file_read\n      cidrs: [10.0.0.0/8]\n      ports: [22]\n      sni_pattern: a.com\n      verdict: deny\n",
    ));
    assert_eq!(e.len(), 3, "{e:#?}");
    check(
        &e[0],
        9,
        7,
        Some("w"),
        "`cidrs` applies only to net_connect",
    );
    check(
        &e[1],
        10,
        7,
        Some("w"),
        "`ports` applies only to net_connect",
    );
    check(
        &e[2],
        11,
        7,
        Some("w"),
        "`sni_pattern` applies only to tls_connect",
    );
}

#[test]
fn cidr_with_host_bits_shows_the_network() {
    let e = only(&rules(
        "    - name: c\n      action: net_connect\n      cidrs: [10.1.2.3/8]\n      verdict: deny\n",
    ));
    check(&e, 9, 15, Some("c"), "CIDR `10.1.2.3/8` has host bits set");
    hint(&e, "did you mean `10.0.0.0/8`?");
}

#[test]
fn invalid_cidrs() {
    let e = errors(&rules(
        "    - name: c\n      action: net_connect\n      cidrs: [10.0.0.0/33, example.com, 7]\n      verdict: deny\n",
    ));
    assert_eq!(e.len(), 3, "{e:#?}");
    check(&e[0], 9, 15, Some("c"), "invalid CIDR `10.0.0.0/33`");
    check(
        &e[1],
        9,
        28,
        Some("c"),
        "invalid IP address or CIDR `example.com`",
    );
    check(&e[2], 9, 41, Some("c"), "must be a string");
    let e = only(&rules(
        "    - name: c\n      action: net_connect\n      resource_pattern: 300.1.1.1\n      verdict: deny\n",
    ));
    check(
        &e,
        9,
        25,
        Some("c"),
        "invalid IP address or CIDR `300.1.1.1`",
    );
}

#[test]
fn invalid_ports() {
    let e = errors(&rules(
        "    - name: p\n      action: net_connect\n      ports: [0, 65536, \"9-8\", abc, true]\n      verdict: deny\n",
    ));
    assert_eq!(e.len(), 5, "{e:#?}");
    check(&e[0], 9, 15, Some("p"), "port 0 is out of range");
    check(&e[1], 9, 18, Some("p"), "port 65536 is out of range");
    check(&e[2], 9, 25, Some("p"), "port range `9-8` is reversed");
    hint(&e[2], "\"8-9\"");
    check(&e[3], 9, 32, Some("p"), "invalid port range `abc`");
    check(
        &e[4],
        9,
        37,
        Some("p"),
        "a port must be an integer or an \"A-B\" range",
    );
}

#[test]
fn invalid_domain_and_sni_pattern() {
    let e = only(&rules(
        "    - name: d\n      action: net_connect\n      domains: [\"api.*.com\"]\n      verdict: allow\n",
    ));
    check(&e, 9, 17, Some("d"), "`*` is only allowed");
    let e = only(&rules(
        "    - name: s\n      action: tls_connect\n      sni_pattern: \"a.com||b.com\"\n      verdict: allow\n",
    ));
    check(&e, 9, 20, Some("s"), "empty alternative");
}

#[test]
fn invalid_condition() {
    let e = only(&rules(
        "    - name: k\n      action: exec\n      verdict: alert\n      condition: 'context.uid =='\n",
    ));
    check(
        &e,
        10,
        18,
        Some("k"),
        "invalid condition: Cedar syntax error",
    );
}

#[test]
fn condition_on_allow_is_rejected() {
    let e = only(&rules(
        "    - name: k\n      action: exec\n      verdict: allow\n      condition: 'context.uid == 0'\n",
    ));
    check(
        &e,
        10,
        7,
        Some("k"),
        "a condition can only raise an alert or record a deny",
    );
}

#[test]
fn binaries_must_be_absolute_globs() {
    let e = errors(&rules(
        "    - name: b\n      action: exec\n      verdict: deny\n      binaries: [git, \"/usr/[bin\"]\n",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    check(
        &e[0],
        10,
        18,
        Some("b"),
        "binary `git` is not an absolute path glob",
    );
    check(&e[1], 10, 29, Some("b"), "unclosed `[`");
}

#[test]
fn agent_types_are_lowercase_names() {
    let e = errors(&rules(
        "    - name: a\n      action: exec\n      verdict: deny\n      agent_types: [Claude, \"\"]\n",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    check(&e[0], 10, 21, Some("a"), "invalid agent type `Claude`");
    check(&e[1], 10, 29, Some("a"), "invalid agent type ``");
}

#[test]
fn cidr_allow_cannot_be_combined() {
    let e = errors(&rules(
        "    - name: x\n      action: net_connect\n      cidr_allow: [10.0.0.0/8]\n      verdict: deny\n      domains: [a.com]\n",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    check(
        &e[0],
        10,
        7,
        Some("x"),
        "`verdict` cannot be combined with `cidr_allow`/`cidr_deny`",
    );
    check(&e[1], 11, 7, Some("x"), "`domains` cannot be combined");
    let e = only(&rules(
        "    - name: y\n      action: exec\n      cidr_deny: [10.0.0.0/8]\n",
    ));
    check(
        &e,
        9,
        7,
        Some("y"),
        "`cidr_deny` applies only to net_connect",
    );
}

#[test]
fn empty_lists_are_rejected() {
    let e = only(&rules(
        "    - name: e\n      action: net_connect\n      cidrs: []\n      verdict: deny\n",
    ));
    check(
        &e,
        9,
        14,
        Some("e"),
        "empty list: omit the field for a catch-all",
    );
}

#[test]
fn wrong_types() {
    let e = errors(&rules(
        "    - just-a-string\n    - name: [x]\n      action: exec\n      verdict: deny\n",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    check(
        &e[0],
        7,
        7,
        None,
        "a rule must be a mapping, found a string",
    );
    check(&e[1], 8, 13, None, "`name` must be a string, found a list");
}

#[test]
fn errors_of_all_rules_are_collected() {
    let e = errors(&rules(
        "    - name: one\n      action: exek\n      verdict: deny\n    - name: two\n      action: exec\n      verdict: deny\n      severity: hi\n",
    ));
    let rules: Vec<_> = e.iter().map(|e| e.rule.as_deref()).collect();
    assert_eq!(rules, [Some("one"), Some("two")]);
}

#[test]
fn display_format() {
    let e = only(&rules(
        "    - name: r1\n      action: exec\n      verdict: deny\n      verdcit: deny\n",
    ));
    assert_eq!(
        e.to_string(),
        "10:7: unknown field `verdcit` in a rule (rule `r1`); did you mean `verdict`?"
    );
    let e: Box<dyn std::error::Error> = Box::new(only(""));
    assert_eq!(
        e.to_string(),
        "1:1: empty document; a policy starts with `apiVersion: tyr.dev/v1`"
    );
}

// --- a valid document --------------------------------------------------------------------

const FULL: &str = r#"apiVersion: tyr.dev/v1
kind: Policy
metadata:
  name: laptops-base
  labels: {team: platform}
  description: free text
spec:
  mode: monitor
  default:
    exec: alert
    net_connect: deny
  rules:
    - name: deny-ssh-keys
      action: file_read
      resource_pattern: "~/.ssh/**"
      verdict: deny
      severity: critical
      binaries: ["/usr/bin/git"]
      agent_types: [claude-code]
      condition: 'context.uid == 1000'
    - name: legacy
      action: net_connect
      cidr_allow: [10.0.0.0/8, "::ffff:192.168.0.0/112"]
      cidr_deny: ["0.0.0.0/0", "::/0"]
      ports: [443, "8000-8100"]
      severity: high
    - {name: api, action: net_connect, resource_pattern: "::ffff:1.2.3.4", domains: [API.Anthropic.com, "*.OpenAI.com"], verdict: allow}
    - name: tls
      action: tls_connect
      sni_pattern: "api.anthropic.com|*.openai.com"
      verdict: allow
    - name: all-exec
      action: exec
      verdict: alert
"#;

#[test]
fn full_document_round_trip() {
    let p = parse(FULL).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(p.api_version, "tyr.dev/v1");
    assert_eq!(p.kind, "Policy");
    assert_eq!(p.metadata.name, "laptops-base");
    assert_eq!(
        p.metadata.labels,
        BTreeMap::from([("team".to_owned(), "platform".to_owned())])
    );
    assert_eq!(p.metadata.description.as_deref(), Some("free text"));
    assert_eq!(p.spec.mode, Mode::Monitor);
    assert_eq!(
        p.spec.default,
        Defaults::PerAction(BTreeMap::from([
            (Action::Exec, Verdict::Alert),
            (Action::NetConnect, Verdict::Deny)
        ]))
    );
    assert_eq!(p.spec.default.verdict_for(Action::FileRead), Verdict::Allow);

    let names: Vec<&str> = p.spec.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "deny-ssh-keys",
            "legacy/allow",
            "legacy/deny",
            "api",
            "tls",
            "all-exec"
        ]
    );
    let loc = |line, column| Location { line, column };
    let locs: Vec<Location> = p.spec.rules.iter().map(|r| r.location).collect();
    assert_eq!(
        locs,
        [
            loc(13, 7),
            loc(21, 7),
            loc(21, 7),
            loc(27, 7),
            loc(28, 7),
            loc(32, 7)
        ]
    );

    let r = &p.spec.rules[0];
    assert_eq!(r.action, Action::FileRead);
    assert_eq!(r.resource_pattern.as_deref(), Some("~/.ssh/**"));
    assert_eq!(r.verdict, Verdict::Deny);
    assert_eq!(r.severity, Severity::Critical);
    assert_eq!(r.binaries, ["/usr/bin/git"]);
    assert_eq!(r.agent_types, ["claude-code"]);
    assert_eq!(r.condition.as_deref(), Some("context.uid == 1000"));
    assert!(r.cidrs.is_empty() && r.ports.is_empty() && r.domains.is_empty());

    let (allow, deny) = (&p.spec.rules[1], &p.spec.rules[2]);
    assert_eq!(allow.verdict, Verdict::Allow);
    assert_eq!(deny.verdict, Verdict::Deny);
    let strs = |r: &tyr_policy::Rule| r.cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(strs(allow), ["10.0.0.0/8", "192.168.0.0/16"]);
    assert_eq!(strs(deny), ["0.0.0.0/0", "::/0"]);
    let ports = [
        PortRange {
            start: 443,
            end: 443,
        },
        PortRange {
            start: 8000,
            end: 8100,
        },
    ];
    for r in [allow, deny] {
        assert_eq!(r.ports, ports);
        assert_eq!(r.severity, Severity::High);
        assert_eq!(r.action, Action::NetConnect);
    }

    let api = &p.spec.rules[3];
    assert_eq!(strs(api), ["1.2.3.4/32"]);
    assert_eq!(api.domains, ["api.anthropic.com", "*.openai.com"]);
    assert_eq!(api.resource_pattern, None);
    assert_eq!(api.severity, Severity::Low);

    let tls = &p.spec.rules[4];
    assert_eq!(
        tls.sni_pattern.as_deref(),
        Some("api.anthropic.com|*.openai.com")
    );

    let all = &p.spec.rules[5];
    assert!(all.is_catch_all());
    assert_eq!(all.verdict, Verdict::Alert);
}

#[test]
fn defaults_apply() {
    let p = parse("apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {}\n")
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(p.spec.mode, Mode::Enforce);
    assert_eq!(p.spec.default, Defaults::All(Verdict::Allow));
    assert!(p.spec.rules.is_empty());
    assert!(p.metadata.labels.is_empty());
    assert_eq!(p.metadata.description, None);
    let p = parse("apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {default: deny, rules: []}\n")
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(p.spec.default, Defaults::All(Verdict::Deny));
}

#[test]
fn only_true_and_false_are_booleans() {
    let p = parse(&rules(
        "    - name: y\n      action: exec\n      verdict: deny\n    - name: on\n      action: exec\n      verdict: deny\n",
    ))
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let names: Vec<&str> = p.spec.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["y", "on"]);
    let e = only(&rules(
        "    - name: true\n      action: exec\n      verdict: deny\n",
    ));
    check(&e, 7, 13, None, "`name` must be a string, found a boolean");
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let p = parse(&rules(
        "    - name: a\n      action: exec\n      binaries: &tools [/usr/bin/git]\n      verdict: deny\n    - name: b\n      action: file_read\n      binaries: *tools\n      verdict: deny\n",
    ))
    .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(p.spec.rules[1].binaries, ["/usr/bin/git"]);
}

#[test]
fn net_resource_pattern_is_appended_to_cidrs() {
    let p = parse(&rules(
        "    - name: n\n      action: net_connect\n      resource_pattern: 192.0.2.1\n      cidrs: [10.0.0.0/8]\n      verdict: deny\n",
    ))
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let r = &p.spec.rules[0];
    let cidrs: Vec<String> = r.cidrs.iter().map(|c| c.to_string()).collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "192.0.2.1/32"]);
    assert_eq!(r.resource_pattern, None);
}
