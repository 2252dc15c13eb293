//! SPEC §6 verdict semantics, asserted against the reference evaluator with policies built
//! directly in Rust (no parser involved).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tyr_policy::condition;
use tyr_policy::eval::{builtin_audit, evaluate, evaluate_policy};
use tyr_policy::glob::Homes;
use tyr_policy::request::{Context, Request, Resource};
use tyr_policy::{
    Action, Decision, Defaults, EffectiveSet, EnforcedIn, Layer, Mode, Overlay, Policy, PortRange,
    Rule, Verdict,
};

use Action::{Exec, FileRead, FileWrite, NetConnect, TlsConnect};
use Verdict::{Alert, Allow, Deny};

fn policy(name: &str, rules: Vec<Rule>) -> Policy {
    let mut p = builtin_audit();
    p.metadata.name = name.into();
    p.spec.rules = rules;
    p
}

fn rule(name: &str, action: Action, pattern: Option<&str>, verdict: Verdict) -> Rule {
    Rule {
        name: name.into(),
        action,
        resource_pattern: pattern.map(str::to_string),
        verdict,
        ..Rule::default()
    }
}

fn conditional(name: &str, action: Action, cond: &str, verdict: Verdict) -> Rule {
    Rule {
        condition: Some(cond.into()),
        ..rule(name, action, None, verdict)
    }
}

fn base(p: Policy) -> EffectiveSet {
    EffectiveSet {
        base: Some(p),
        overlays: Vec::new(),
    }
}

fn overlay(agent_type: &str, p: Policy) -> Overlay {
    Overlay {
        agent_type: agent_type.into(),
        policy: p,
    }
}

fn req(action: Action, resource: &str) -> Request {
    Request::new(action, resource).expect("valid request")
}

fn decide(set: &EffectiveSet, r: &Request) -> Decision {
    evaluate(set, r, &Homes::default())
}

fn verdict(set: &EffectiveSet, action: Action, resource: &str) -> Verdict {
    decide(set, &req(action, resource)).verdict
}

/// A base policy with one deny rule for `pattern` on `file_read`.
fn deny_read(pattern: &str) -> EffectiveSet {
    base(policy("p", vec![rule("r", FileRead, Some(pattern), Deny)]))
}

// --- Globs ---------------------------------------------------------------------------------

#[test]
fn star_matches_within_one_segment() {
    let set = deny_read("/etc/*");
    assert_eq!(verdict(&set, FileRead, "/etc/passwd"), Deny);
    assert_eq!(verdict(&set, FileRead, "/etc/ssl/certs"), Allow);
    assert_eq!(verdict(&set, FileRead, "/etcx"), Allow);
}

#[test]
fn globstar_matches_zero_or_more_segments() {
    let set = deny_read("/a/**");
    assert_eq!(verdict(&set, FileRead, "/a"), Deny);
    assert_eq!(verdict(&set, FileRead, "/a/b"), Deny);
    assert_eq!(verdict(&set, FileRead, "/a/b/c"), Deny);
    assert_eq!(verdict(&set, FileRead, "/ab"), Allow);
    let mid = deny_read("/a/**/key");
    assert_eq!(verdict(&mid, FileRead, "/a/key"), Deny);
    assert_eq!(verdict(&mid, FileRead, "/a/x/y/key"), Deny);
    assert_eq!(verdict(&mid, FileRead, "/a/x/key2"), Allow);
}

#[test]
fn question_mark_matches_one_non_slash_byte() {
    let set = deny_read("/tmp/?.txt");
    assert_eq!(verdict(&set, FileRead, "/tmp/a.txt"), Deny);
    assert_eq!(verdict(&set, FileRead, "/tmp/ab.txt"), Allow);
    assert_eq!(verdict(&set, FileRead, "/tmp/.txt"), Allow);
}

#[test]
fn character_classes_ranges_and_negation() {
    let set = deny_read("/d/[abc]1");
    assert_eq!(verdict(&set, FileRead, "/d/b1"), Deny);
    assert_eq!(verdict(&set, FileRead, "/d/d1"), Allow);
    let range = deny_read("/d/[a-f]2");
    assert_eq!(verdict(&range, FileRead, "/d/e2"), Deny);
    assert_eq!(verdict(&range, FileRead, "/d/g2"), Allow);
    let neg = deny_read("/d/[!a]3");
    assert_eq!(verdict(&neg, FileRead, "/d/z3"), Deny);
    assert_eq!(verdict(&neg, FileRead, "/d/a3"), Allow);
}

#[test]
fn bare_star_matches_every_path() {
    for pattern in ["*", "**"] {
        let set = deny_read(pattern);
        assert_eq!(verdict(&set, FileRead, "/"), Deny, "{pattern}");
        assert_eq!(verdict(&set, FileRead, "/x/y/z"), Deny, "{pattern}");
    }
}

#[test]
fn tilde_means_the_home_of_any_local_user() {
    let set = deny_read("~/.ssh/**");
    assert_eq!(verdict(&set, FileRead, "/home/alice/.ssh/id_rsa"), Deny);
    assert_eq!(verdict(&set, FileRead, "/root/.ssh/authorized_keys"), Deny);
    assert_eq!(verdict(&set, FileRead, "/srv/.ssh/id_rsa"), Allow);
    // The homes come from the caller.
    let homes = Homes(vec!["/users/*".into()]);
    let r = req(FileRead, "/users/bob/.ssh/id_rsa");
    assert_eq!(evaluate(&set, &r, &homes).verdict, Deny);
    let r = req(FileRead, "/home/bob/.ssh/id_rsa");
    assert_eq!(evaluate(&set, &r, &homes).verdict, Allow);
}

// --- One policy ----------------------------------------------------------------------------

#[test]
fn first_match_wins_top_to_bottom() {
    let set = base(policy(
        "p",
        vec![
            rule("public", FileRead, Some("/data/public/**"), Allow),
            rule("data", FileRead, Some("/data/**"), Deny),
            rule("late", FileRead, Some("/data/public/**"), Deny),
        ],
    ));
    let d = decide(&set, &req(FileRead, "/data/public/x"));
    assert_eq!((d.verdict, d.rule.as_deref()), (Allow, Some("public")));
    let d = decide(&set, &req(FileRead, "/data/secret"));
    assert_eq!((d.verdict, d.rule.as_deref()), (Deny, Some("data")));
    assert_eq!((d.layer, d.enforced_in), (Layer::Base, EnforcedIn::Kernel));
}

#[test]
fn rules_of_other_actions_are_ignored() {
    let set = base(policy(
        "p",
        vec![rule("w", FileWrite, Some("/etc/**"), Deny)],
    ));
    assert_eq!(verdict(&set, FileRead, "/etc/passwd"), Allow);
    assert_eq!(verdict(&set, FileWrite, "/etc/passwd"), Deny);
    assert_eq!(verdict(&set, Exec, "/etc/passwd"), Allow);
}

#[test]
fn single_default_applies_to_every_action_without_a_match() {
    let mut p = policy("p", vec![rule("ok", FileRead, Some("/ok"), Allow)]);
    p.spec.default = Defaults::All(Deny);
    let set = base(p);
    let d = decide(&set, &req(FileRead, "/other"));
    assert_eq!((d.verdict, d.rule), (Deny, None));
    assert_eq!(verdict(&set, FileRead, "/ok"), Allow);
    assert_eq!(verdict(&set, TlsConnect, "example.com"), Deny);
}

#[test]
fn per_action_default_map_leaves_missing_actions_at_allow() {
    let mut p = policy("p", Vec::new());
    p.spec.default = Defaults::PerAction(BTreeMap::from([(Exec, Deny), (NetConnect, Alert)]));
    let set = base(p);
    assert_eq!(verdict(&set, Exec, "/bin/sh"), Deny);
    assert_eq!(verdict(&set, NetConnect, "1.2.3.4"), Alert);
    assert_eq!(verdict(&set, FileRead, "/etc/passwd"), Allow);
    assert_eq!(verdict(&set, TlsConnect, "example.com"), Allow);
}

#[test]
fn missing_default_is_allow() {
    assert_eq!(Defaults::default(), Defaults::All(Allow));
    let set = base(policy("p", Vec::new()));
    assert_eq!(verdict(&set, Exec, "/bin/sh"), Allow);
}

#[test]
fn monitor_mode_records_denies_as_alerts() {
    let mut p = policy(
        "p",
        vec![
            rule("d", FileRead, Some("/secret"), Deny),
            rule("a", FileRead, Some("/noisy"), Alert),
            rule("ok", FileRead, Some("/ok"), Allow),
        ],
    );
    p.spec.mode = Mode::Monitor;
    p.spec.default = Defaults::All(Deny);
    let set = base(p);
    let d = decide(&set, &req(FileRead, "/secret"));
    assert_eq!((d.verdict, d.rule.as_deref()), (Alert, Some("d")));
    assert_eq!(verdict(&set, FileRead, "/noisy"), Alert);
    assert_eq!(verdict(&set, FileRead, "/ok"), Allow);
    // The default deny is an alert too.
    assert_eq!(verdict(&set, FileRead, "/elsewhere"), Alert);
}

#[test]
fn catch_all_rule_matches_every_resource_of_its_action() {
    let set = base(policy(
        "p",
        vec![
            rule("all-exec", Exec, None, Deny),
            rule("all-tls", TlsConnect, None, Alert),
            rule("all-net", NetConnect, None, Deny),
        ],
    ));
    assert_eq!(verdict(&set, Exec, "/usr/bin/anything"), Deny);
    assert_eq!(verdict(&set, TlsConnect, "any.example"), Alert);
    assert_eq!(verdict(&set, NetConnect, "2001:db8::1"), Deny);
    assert_eq!(verdict(&set, FileRead, "/usr/bin/anything"), Allow);
}

// --- Layers --------------------------------------------------------------------------------

#[test]
fn no_base_policy_means_builtin_audit_allow_everything() {
    let set = EffectiveSet::default();
    for (action, resource) in [
        (FileRead, "/root/.ssh/id_rsa"),
        (FileWrite, "/etc/shadow"),
        (Exec, "/bin/sh"),
        (NetConnect, "10.0.0.1"),
        (TlsConnect, "evil.example"),
    ] {
        let d = decide(&set, &req(action, resource).with_agent_type("claude-code"));
        assert_eq!((d.verdict, d.layer, d.rule), (Allow, Layer::Base, None));
    }
}

#[test]
fn no_base_policy_still_applies_overlays() {
    let set = EffectiveSet {
        base: None,
        overlays: vec![overlay(
            "claude-code",
            policy("agents", vec![rule("r", FileRead, Some("/secret"), Deny)]),
        )],
    };
    let r = req(FileRead, "/secret").with_agent_type("claude-code");
    let d = decide(&set, &r);
    assert_eq!(d.verdict, Deny);
    assert_eq!(d.layer, Layer::Overlay("agents".into()));
}

#[test]
fn overlay_tightens_the_base() {
    let set = EffectiveSet {
        base: Some(policy("base", Vec::new())),
        overlays: vec![overlay(
            "claude-code",
            policy("cc", vec![rule("env", FileRead, Some("/**/.env"), Deny)]),
        )],
    };
    let d = decide(
        &set,
        &req(FileRead, "/srv/.env").with_agent_type("claude-code"),
    );
    assert_eq!(d.verdict, Deny);
    assert_eq!(d.layer, Layer::Overlay("cc".into()));
    assert_eq!(d.rule.as_deref(), Some("env"));
}

#[test]
fn overlay_cannot_loosen_the_base() {
    let set = EffectiveSet {
        base: Some(policy(
            "base",
            vec![rule("keys", FileRead, Some("~/.ssh/**"), Deny)],
        )),
        overlays: vec![overlay(
            "claude-code",
            policy("cc", vec![rule("open", FileRead, None, Allow)]),
        )],
    };
    let d = decide(
        &set,
        &req(FileRead, "/home/a/.ssh/id_rsa").with_agent_type("claude-code"),
    );
    assert_eq!((d.verdict, d.layer), (Deny, Layer::Base));
    assert_eq!(d.rule.as_deref(), Some("keys"));
}

#[test]
fn overlay_for_another_agent_type_does_not_apply() {
    let set = EffectiveSet {
        base: Some(policy("base", Vec::new())),
        overlays: vec![overlay(
            "cursor",
            policy("cur", vec![rule("r", FileRead, None, Deny)]),
        )],
    };
    assert_eq!(
        decide(&set, &req(FileRead, "/x").with_agent_type("claude-code")).verdict,
        Allow
    );
    assert_eq!(
        decide(&set, &req(FileRead, "/x").with_agent_type("cursor")).verdict,
        Deny
    );
}

#[test]
fn non_agent_process_is_unaffected_by_overlays() {
    let set = EffectiveSet {
        base: Some(policy("base", vec![rule("b", FileRead, Some("/b"), Alert)])),
        overlays: vec![overlay(
            "claude-code",
            policy("cc", vec![rule("r", FileRead, None, Deny)]),
        )],
    };
    let d = decide(&set, &req(FileRead, "/x"));
    assert_eq!((d.verdict, d.layer), (Allow, Layer::Base));
    assert_eq!(verdict(&set, FileRead, "/b"), Alert);
}

#[test]
fn strictest_layer_wins_and_ties_go_to_the_earliest() {
    let set = EffectiveSet {
        base: Some(policy("base", vec![rule("b", FileRead, Some("/x"), Alert)])),
        overlays: vec![
            overlay("cc", policy("o1", vec![rule("o1r", FileRead, None, Alert)])),
            overlay(
                "cc",
                policy("o2", vec![rule("o2r", FileRead, Some("/y"), Deny)]),
            ),
            overlay(
                "cc",
                policy("o3", vec![rule("o3r", FileRead, Some("/y"), Deny)]),
            ),
        ],
    };
    let d = decide(&set, &req(FileRead, "/x").with_agent_type("cc"));
    assert_eq!(
        (d.verdict, d.layer, d.rule.as_deref()),
        (Alert, Layer::Base, Some("b"))
    );
    let d = decide(&set, &req(FileRead, "/z").with_agent_type("cc"));
    assert_eq!((d.verdict, d.layer), (Alert, Layer::Overlay("o1".into())));
    let d = decide(&set, &req(FileRead, "/y").with_agent_type("cc"));
    assert_eq!((d.verdict, d.layer), (Deny, Layer::Overlay("o2".into())));
}

// --- Network -------------------------------------------------------------------------------

fn net_rule(cidrs: &[&str], ports: &[(u16, u16)], domains: &[&str]) -> Rule {
    Rule {
        cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
        ports: ports
            .iter()
            .map(|&(start, end)| PortRange { start, end })
            .collect(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        ..rule("net", NetConnect, None, Deny)
    }
}

fn net(set: &EffectiveSet, ip: &str, port: u16, domains: &[&str]) -> Verdict {
    decide(
        set,
        &req(NetConnect, ip).with_port(port).with_domains(domains),
    )
    .verdict
}

#[test]
fn cidrs_and_ports_must_both_match() {
    let set = base(policy(
        "p",
        vec![net_rule(
            &["10.0.0.0/8", "2001:db8::/32"],
            &[(443, 443), (8000, 8100)],
            &[],
        )],
    ));
    assert_eq!(net(&set, "10.1.2.3", 443, &[]), Deny);
    assert_eq!(net(&set, "10.1.2.3", 8050, &[]), Deny);
    assert_eq!(net(&set, "10.1.2.3", 80, &[]), Allow);
    assert_eq!(net(&set, "11.1.2.3", 443, &[]), Allow);
    assert_eq!(net(&set, "2001:db8::5", 8100, &[]), Deny);
    assert_eq!(net(&set, "2001:db9::5", 8100, &[]), Allow);
}

#[test]
fn ports_alone_match_any_address() {
    let set = base(policy("p", vec![net_rule(&[], &[(22, 22)], &[])]));
    assert_eq!(net(&set, "192.0.2.1", 22, &[]), Deny);
    assert_eq!(net(&set, "::1", 22, &[]), Deny);
    assert_eq!(net(&set, "192.0.2.1", 23, &[]), Allow);
}

#[test]
fn ipv4_mapped_ipv6_is_treated_as_ipv4() {
    let set = base(policy("p", vec![net_rule(&["10.0.0.0/8"], &[], &[])]));
    assert_eq!(net(&set, "::ffff:10.9.9.9", 1, &[]), Deny);
    assert_eq!(net(&set, "::ffff:11.9.9.9", 1, &[]), Allow);
    // Even a request built by hand with the mapped form.
    let mut r = req(NetConnect, "10.9.9.9");
    r.resource = Resource::Addr {
        ip: IpAddr::V6(Ipv4Addr::new(10, 9, 9, 9).to_ipv6_mapped()),
        port: 1,
    };
    assert_eq!(decide(&set, &r).verdict, Deny);
}

#[test]
fn domains_match_the_names_an_address_was_learned_from() {
    let set = base(policy(
        "p",
        vec![net_rule(&[], &[], &["api.anthropic.com", "*.openai.com"])],
    ));
    assert_eq!(net(&set, "192.0.2.1", 443, &["api.anthropic.com"]), Deny);
    assert_eq!(
        net(
            &set,
            "192.0.2.1",
            443,
            &["other.example", "chat.openai.com"]
        ),
        Deny
    );
    assert_eq!(net(&set, "192.0.2.1", 443, &["API.OpenAI.com."]), Deny);
    assert_eq!(net(&set, "192.0.2.1", 443, &["openai.com"]), Allow);
    assert_eq!(net(&set, "192.0.2.1", 443, &["evilopenai.com"]), Allow);
    assert_eq!(net(&set, "192.0.2.1", 443, &[]), Allow);
}

#[test]
fn domains_cidrs_and_ports_are_a_conjunction() {
    let set = base(policy(
        "p",
        vec![net_rule(&["192.0.2.0/24"], &[(443, 443)], &["*.x.com"])],
    ));
    assert_eq!(net(&set, "192.0.2.1", 443, &["a.x.com"]), Deny);
    assert_eq!(net(&set, "198.51.100.1", 443, &["a.x.com"]), Allow);
    assert_eq!(net(&set, "192.0.2.1", 80, &["a.x.com"]), Allow);
    assert_eq!(net(&set, "192.0.2.1", 443, &["a.y.com"]), Allow);
}

// --- TLS -----------------------------------------------------------------------------------

#[test]
fn sni_patterns_with_wildcards_and_alternation() {
    let set = base(policy(
        "p",
        vec![Rule {
            sni_pattern: Some("api.anthropic.com|*.openai.com".into()),
            ..rule("llm", TlsConnect, None, Alert)
        }],
    ));
    assert_eq!(verdict(&set, TlsConnect, "api.anthropic.com"), Alert);
    assert_eq!(verdict(&set, TlsConnect, "API.Anthropic.com."), Alert);
    assert_eq!(verdict(&set, TlsConnect, "a.b.openai.com"), Alert);
    assert_eq!(verdict(&set, TlsConnect, "openai.com"), Allow);
    assert_eq!(verdict(&set, TlsConnect, "anthropic.com"), Allow);
}

// --- Binaries and agent types --------------------------------------------------------------

#[test]
fn binaries_restrict_a_rule_to_matching_callers() {
    let set = base(policy(
        "p",
        vec![
            Rule {
                binaries: vec!["/usr/bin/git".into(), "/opt/*/bin/ssh".into()],
                ..rule("git-keys", FileRead, Some("~/.ssh/**"), Allow)
            },
            rule("keys", FileRead, Some("~/.ssh/**"), Deny),
        ],
    ));
    let key = || req(FileRead, "/home/a/.ssh/id_rsa");
    assert_eq!(
        decide(&set, &key().with_binary("/usr/bin/git")).verdict,
        Allow
    );
    assert_eq!(
        decide(&set, &key().with_binary("/opt/x/bin/ssh")).verdict,
        Allow
    );
    assert_eq!(
        decide(&set, &key().with_binary("/usr/bin/cat")).verdict,
        Deny
    );
    // Unknown binary: a rule with binaries never applies.
    let d = decide(&set, &key());
    assert_eq!((d.verdict, d.rule.as_deref()), (Deny, Some("keys")));
}

#[test]
fn agent_types_restrict_a_rule_to_those_agents() {
    let set = base(policy(
        "p",
        vec![Rule {
            agent_types: vec!["claude-code".into(), "codex".into()],
            ..rule("agents", Exec, Some("/usr/bin/curl"), Deny)
        }],
    ));
    let curl = || req(Exec, "/usr/bin/curl");
    assert_eq!(decide(&set, &curl().with_agent_type("codex")).verdict, Deny);
    assert_eq!(
        decide(&set, &curl().with_agent_type("cursor")).verdict,
        Allow
    );
    assert_eq!(decide(&set, &curl()).verdict, Allow);
}

// --- Conditions ----------------------------------------------------------------------------

fn uid(uid: u32) -> Context {
    Context {
        uid: Some(uid),
        pid: Some(42),
    }
}

#[test]
fn condition_raises_to_alert_in_userspace() {
    let set = base(policy(
        "p",
        vec![conditional("uid", FileRead, "context.uid == 1000", Alert)],
    ));
    let d = decide(&set, &req(FileRead, "/x").with_context(uid(1000)));
    assert_eq!((d.verdict, d.rule.as_deref()), (Alert, Some("uid")));
    assert_eq!(d.enforced_in, EnforcedIn::Userspace);
    let d = decide(&set, &req(FileRead, "/x").with_context(uid(0)));
    assert_eq!(
        (d.verdict, d.rule, d.enforced_in),
        (Allow, None, EnforcedIn::Kernel)
    );
}

#[test]
fn condition_records_a_deny_in_userspace() {
    let set = base(policy(
        "p",
        vec![
            conditional("c", FileWrite, r#"context.agent_type == "codex""#, Deny),
            rule("tmp", FileWrite, Some("/tmp/**"), Alert),
        ],
    ));
    let w = |agent: &str| decide(&set, &req(FileWrite, "/tmp/f").with_agent_type(agent));
    let d = w("codex");
    assert_eq!((d.verdict, d.rule.as_deref()), (Deny, Some("c")));
    assert_eq!(d.enforced_in, EnforcedIn::Userspace);
    let d = w("cursor");
    assert_eq!((d.verdict, d.rule.as_deref()), (Alert, Some("tmp")));
    assert_eq!(d.enforced_in, EnforcedIn::Kernel);
}

#[test]
fn condition_does_not_hide_a_later_unconditional_deny() {
    let set = base(policy(
        "p",
        vec![
            conditional("c", FileRead, "context.uid == 1000", Alert),
            rule("d", FileRead, Some("/secret"), Deny),
        ],
    ));
    for ctx in [uid(1000), uid(0)] {
        let d = decide(&set, &req(FileRead, "/secret").with_context(ctx));
        assert_eq!((d.verdict, d.rule.as_deref()), (Deny, Some("d")));
        assert_eq!(d.enforced_in, EnforcedIn::Kernel);
    }
}

#[test]
fn condition_after_the_deciding_rule_is_ignored() {
    let set = base(policy(
        "p",
        vec![
            rule("ok", FileRead, Some("/x"), Allow),
            conditional("c", FileRead, "true", Deny),
        ],
    ));
    let d = decide(&set, &req(FileRead, "/x"));
    assert_eq!((d.verdict, d.rule.as_deref()), (Allow, Some("ok")));
    // With only the default deciding, every conditional rule counts.
    assert_eq!(verdict(&set, FileRead, "/y"), Deny);
}

#[test]
fn conditional_rule_must_also_apply() {
    let set = base(policy(
        "p",
        vec![Rule {
            condition: Some("true".into()),
            ..rule("c", FileRead, Some("/only"), Deny)
        }],
    ));
    assert_eq!(verdict(&set, FileRead, "/only"), Deny);
    assert_eq!(verdict(&set, FileRead, "/other"), Allow);
}

#[test]
fn later_conditions_raise_further_and_equal_ones_do_not_take_over() {
    let set = base(policy(
        "p",
        vec![
            conditional("a1", FileRead, "true", Alert),
            conditional("a2", FileRead, "true", Alert),
            conditional("d", FileRead, r#"context.resource == "/x""#, Deny),
        ],
    ));
    let d = decide(&set, &req(FileRead, "/x"));
    assert_eq!((d.verdict, d.rule.as_deref()), (Deny, Some("d")));
    let d = decide(&set, &req(FileRead, "/y"));
    assert_eq!((d.verdict, d.rule.as_deref()), (Alert, Some("a1")));
}

#[test]
fn condition_evaluation_error_means_it_does_not_hold() {
    // No binary in the request: `context.binary` is an error, so the rule does not fire.
    let set = base(policy(
        "p",
        vec![conditional(
            "c",
            Exec,
            r#"context.binary == "/bin/sh""#,
            Deny,
        )],
    ));
    assert_eq!(verdict(&set, Exec, "/bin/ls"), Allow);
    let r = req(Exec, "/bin/ls").with_binary("/bin/sh");
    assert_eq!(decide(&set, &r).verdict, Deny);
}

#[test]
fn conditional_deny_in_monitor_mode_is_an_alert() {
    let mut p = policy("p", vec![conditional("c", FileRead, "true", Deny)]);
    p.spec.mode = Mode::Monitor;
    let (v, rule, enforced) = evaluate_policy(&p, &req(FileRead, "/x"), &Homes::default());
    assert_eq!(
        (v, rule.as_deref(), enforced),
        (Alert, Some("c"), EnforcedIn::Userspace)
    );
}

#[test]
fn condition_sees_action_resource_and_principal() {
    let r = req(NetConnect, "192.0.2.7")
        .with_port(443)
        .with_context(uid(5));
    assert!(condition::holds(r#"context.action == "net_connect""#, &r));
    assert!(condition::holds(
        r#"context.resource == "192.0.2.7:443""#,
        &r
    ));
    assert!(condition::holds(
        r#"resource == Tyr::Resource::"192.0.2.7:443""#,
        &r
    ));
    assert!(condition::holds(r#"principal == Tyr::Process::"42""#, &r));
    assert!(condition::holds(
        r#"action == Tyr::Action::"net_connect""#,
        &r
    ));
    assert!(condition::holds(
        "context.pid == 42 && context.uid < 10",
        &r
    ));
    assert!(!condition::holds("context has agent_type", &r));
    assert!(!condition::holds("context.uid == 6", &r));
}

#[test]
fn condition_validation_rejects_syntax_errors_and_injection() {
    assert!(condition::validate("context.uid == 1000").is_ok());
    assert!(condition::validate(r#"context has binary && context.binary like "/usr/*""#).is_ok());
    for bad in [
        "",
        "context.uid ==",
        "true }; forbid(principal, action, resource) when { true",
        "true }; permit(principal, action, resource) when { true",
        "(",
    ] {
        assert!(condition::validate(bad).is_err(), "{bad:?}");
        assert!(!condition::holds(bad, &req(FileRead, "/x")), "{bad:?}");
    }
}

// --- Requests ------------------------------------------------------------------------------

#[test]
fn request_paths_are_normalised_lexically() {
    for (raw, want) in [
        ("/a//b/./c/../d/", "/a/b/d"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/", "/"),
        ("//", "/"),
        ("/a/..", "/"),
        ("/a/b/", "/a/b"),
    ] {
        assert_eq!(
            req(FileRead, raw).resource,
            Resource::Path(want.into()),
            "{raw}"
        );
    }
    // The normalised path is what rules see.
    assert_eq!(
        verdict(&deny_read("/etc/passwd"), FileRead, "/tmp/../etc//passwd"),
        Deny
    );
}

#[test]
fn request_rejects_bad_resources() {
    for (action, raw) in [
        (FileRead, "relative/path"),
        (FileWrite, ""),
        (Exec, "/bin/\0sh"),
        (NetConnect, "not-an-ip"),
        (NetConnect, "10.0.0.256"),
        (TlsConnect, ""),
        (TlsConnect, "."),
    ] {
        assert!(Request::new(action, raw).is_err(), "{action} {raw:?}");
    }
}

#[test]
fn request_addresses_and_server_names() {
    assert_eq!(
        req(NetConnect, "::ffff:192.0.2.1").resource,
        Resource::Addr {
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 0
        }
    );
    assert_eq!(
        req(NetConnect, "2001:db8::1").with_port(443).resource,
        Resource::Addr {
            ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            port: 443
        }
    );
    assert_eq!(
        req(NetConnect, "[::ffff:10.0.0.1]:8080").resource,
        Resource::Addr {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 8080
        }
    );
    assert_eq!(
        req(TlsConnect, "API.Example.COM.").resource,
        Resource::Sni("api.example.com".into())
    );
}

#[test]
fn pathological_conditions_are_rejected_without_crashing() {
    let deep = format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(condition::validate(&deep).is_err());
    assert!(condition::validate(&format!("{}true{}", "(".repeat(17), ")".repeat(17))).is_err());
    assert!(condition::validate(&format!("{}true{}", "(".repeat(16), ")".repeat(16))).is_ok());
    assert!(condition::validate(&format!("{}true", "true && ".repeat(200))).is_err());
    // Within the limits, worst shapes still parse and evaluate without exhausting the stack.
    let fits = |unit: &str, tail: &str| {
        let n = (condition::MAX_CONDITION_LEN - tail.len()) / unit.len();
        format!("{}{tail}", unit.repeat(n))
    };
    let shapes = [
        fits("!", "true"),
        fits("-", "1 == 1"),
        fits("true && ", "true"),
        fits("true || ", "true"),
        fits("1 + ", "1 == 1"),
        fits("1 * ", "1 == 1"),
        fits(".a", "context"),
        fits("if true then ", "true"),
        fits("1 < 2 == ", "true"),
        format!("[{}1] == []", "1,".repeat(500)),
        format!("{}1{} == 1", "[".repeat(16), "]".repeat(16)),
    ];
    for src in &shapes {
        let _ = condition::validate(src);
        let _ = condition::holds(src, &req(FileRead, "/x"));
    }
}

#[test]
fn on_a_tie_the_kernel_enforced_layer_is_reported() {
    // The base records a deny in userspace only; the overlay's deny is what the kernel enforces.
    let set = EffectiveSet {
        base: Some(policy(
            "base",
            vec![conditional("c", FileRead, "context.uid == 1000", Deny)],
        )),
        overlays: vec![overlay(
            "codex",
            policy("ov", vec![rule("d", FileRead, Some("/x"), Deny)]),
        )],
    };
    let d = decide(
        &set,
        &req(FileRead, "/x")
            .with_context(uid(1000))
            .with_agent_type("codex"),
    );
    assert_eq!(d.verdict, Deny);
    assert_eq!(d.layer, tyr_policy::Layer::Overlay("ov".into()));
    assert_eq!(d.rule.as_deref(), Some("d"));
    assert_eq!(d.enforced_in, EnforcedIn::Kernel);
}
