//! The kernel tables, walked by the emulator, decide exactly like the reference evaluator.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use proptest::sample::select;
use tyr_policy::compile::{
    CompileError, KernelTables, Limits, Matcher, compile, emulate, kernel_request, report,
};
use tyr_policy::glob::Homes;
use tyr_policy::request::Context;
use tyr_policy::{
    Action, Defaults, EffectiveSet, EnforcedIn, Metadata, Mode, Overlay, Policy, PortRange,
    Request, Resource, Rule, Spec, Verdict, evaluate,
};

const AGENTS: [&str; 3] = ["claude-code", "cursor", "aider"];

fn verdict() -> impl Strategy<Value = Verdict> {
    select(vec![Verdict::Allow, Verdict::Alert, Verdict::Deny])
}

fn action() -> impl Strategy<Value = Action> {
    select(Action::ALL.to_vec())
}

fn path_glob() -> impl Strategy<Value = String> {
    let seg = select(vec![
        "a", "b", ".ssh", "*", "**", "?", "[ab]", "x*", "[!a]b",
    ]);
    prop_oneof![
        1 => select(vec!["*", "**", "/", "~/"]).prop_map(str::to_owned),
        8 => (
            select(vec!["/", "~/", "/home/*/", "/root/"]),
            prop::collection::vec(seg, 1..4),
            any::<bool>()
        )
            .prop_map(|(head, segs, slash)| {
                let mut p = format!("{head}{}", segs.join("/"));
                if slash && !p.ends_with("**") {
                    p.push('/');
                }
                p
            }),
    ]
}

fn rule(index: usize) -> impl Strategy<Value = Rule> {
    // Filters are the exception, as in real policies, so that rules often decide.
    let binaries = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(
            select(vec!["/usr/bin/git", "/usr/bin/*", "~/bin/**", "*", "/opt/**/x?"]),
            1..3,
        ),
    ];
    let agents = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(select(AGENTS.to_vec()), 1..3),
    ];
    let cidrs = prop::collection::vec(
        select(vec![
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3/32",
            "0.0.0.0/0",
            "192.168.0.0/24",
            "::/0",
            "fd00::/8",
            "fd00:1::/32",
            "::1/128",
        ]),
        0..3,
    );
    let ports = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(select(vec![(80, 80), (443, 443), (8000, 8100)]), 1..3),
    ];
    let domains = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(select(vec!["api.x.com", "*.x.com", "y.org"]), 1..3),
    ];
    let sni = prop::option::of(select(vec![
        "api.x.com",
        "*.x.com",
        "*",
        "a.b|*.c.d",
        "x*.com",
    ]));
    let pattern = prop::option::weighted(0.85, path_glob());
    let condition = prop::option::weighted(0.1, Just("context.uid == 0".to_owned()));
    (
        (action(), verdict(), pattern, sni, condition),
        (binaries, agents, cidrs, ports, domains),
    )
        .prop_map(
            move |(
                (action, verdict, pattern, sni, condition),
                (binaries, agents, cidrs, ports, domains),
            )| {
                let mut rule = Rule {
                    name: format!("r{index}"),
                    action,
                    verdict,
                    binaries: binaries.into_iter().map(str::to_owned).collect(),
                    agent_types: agents.into_iter().map(str::to_owned).collect(),
                    ..Rule::default()
                };
                // A conditional rule that allows can never raise a verdict: the reference
                // then decides like the kernel, which skips conditional rules.
                if condition.is_some() {
                    rule.condition = condition;
                    rule.verdict = Verdict::Allow;
                }
                match action {
                    Action::NetConnect => {
                        rule.cidrs = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
                        rule.ports = ports
                            .into_iter()
                            .map(|(start, end)| PortRange { start, end })
                            .collect();
                        rule.domains = domains.into_iter().map(str::to_owned).collect();
                    }
                    Action::TlsConnect => rule.sni_pattern = sni.map(str::to_owned),
                    _ => rule.resource_pattern = pattern,
                }
                rule
            },
        )
}

fn policy(name: &'static str) -> impl Strategy<Value = Policy> {
    let defaults = prop_oneof![
        verdict().prop_map(Defaults::All),
        prop::collection::btree_map(action(), verdict(), 0..5).prop_map(Defaults::PerAction),
    ];
    let rules = (0usize..=8).prop_flat_map(|n| (0..n).map(rule).collect::<Vec<_>>());
    (select(vec![Mode::Enforce, Mode::Monitor]), defaults, rules).prop_map(
        move |(mode, default, rules)| Policy {
            api_version: "tyr.dev/v1".into(),
            kind: "Policy".into(),
            metadata: Metadata {
                name: name.into(),
                labels: BTreeMap::new(),
                description: None,
            },
            spec: Spec {
                mode,
                default,
                rules,
            },
        },
    )
}

fn effective_set() -> impl Strategy<Value = EffectiveSet> {
    let overlay = |name| {
        (select(AGENTS[..2].to_vec()), policy(name)).prop_map(|(t, policy)| Overlay {
            agent_type: t.into(),
            policy,
        })
    };
    (
        prop::option::weighted(0.9, policy("base")),
        prop::collection::vec(prop_oneof![overlay("ov1"), overlay("ov2")], 0..3),
    )
        .prop_map(|(base, overlays)| EffectiveSet { base, overlays })
}

fn resource(action: Action) -> BoxedStrategy<Resource> {
    match action {
        Action::NetConnect => (
            select(vec![
                "10.1.2.3",
                "10.1.9.9",
                "10.200.0.1",
                "192.168.0.7",
                "8.8.8.8",
                "::ffff:10.1.2.3",
                "::ffff:192.168.0.1",
                "fd00:1::5",
                "fd00:2::5",
                "::1",
                "2001:db8::1",
            ]),
            select(vec![22u16, 80, 443, 8050]),
        )
            .prop_map(|(ip, port)| Resource::Addr {
                ip: ip.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                port,
            })
            .boxed(),
        Action::TlsConnect => select(vec![
            "api.x.com",
            "x.com",
            "a.c.d",
            "a.b",
            "xy.com",
            "API.X.COM.",
            "c.d",
        ])
        .prop_map(|s| Resource::Sni(s.into()))
        .boxed(),
        _ => {
            let seg = select(vec!["a", "b", ".ssh", "xy", "ab", "bin"]);
            prop_oneof![
                1 => select(vec!["", "/", "a/b", "/a/", "/a//b"]).prop_map(str::to_owned),
                9 => (
                    select(vec!["", "", "/root", "/home/alice", "/home/bob/x", "/opt"]),
                    prop::collection::vec(seg, 0..4)
                )
                    .prop_map(|(head, segs)| {
                        let p = segs.iter().fold(head.to_owned(), |p, s| format!("{p}/{s}"));
                        if p.is_empty() { "/".into() } else { p }
                    }),
            ]
            .prop_map(Resource::Path)
            .boxed()
        }
    }
}

fn request() -> impl Strategy<Value = Request> {
    let binary = prop::option::of(select(vec![
        "/usr/bin/git",
        "/usr/bin/python3",
        "/home/alice/bin/tool",
        "/opt/a/xy",
        "/opt/x1",
    ]));
    let agent = prop::option::of(select(AGENTS.to_vec()));
    let domains = prop::collection::vec(
        select(vec!["api.x.com", "a.b.x.com", "x.com", "y.org", "Y.ORG."]),
        0..3,
    );
    // Mostly a resource of the action's kind, sometimes of another kind.
    let resource = (action(), action(), 0u8..10)
        .prop_flat_map(|(a, other, r)| (Just(a), resource(if r == 0 { other } else { a })));
    (resource, binary, agent, domains).prop_map(|((action, resource), binary, agent, domains)| {
        Request {
            action,
            resource,
            domains: domains.into_iter().map(str::to_owned).collect(),
            binary: binary.map(str::to_owned),
            agent_type: agent.map(str::to_owned),
            context: Context::default(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn emulator_agrees_with_reference(
        set in effective_set(),
        requests in prop::collection::vec(request(), 1..32),
    ) {
        let homes = Homes::default();
        let tables = compile(&set, &homes, &Limits::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for req in &requests {
            let want = evaluate(&set, req, &homes);
            let kd = emulate(&tables, &kernel_request(&tables, req));
            prop_assert!(!kd.fail_closed);
            let got = tables.decision(&kd);
            prop_assert_eq!(
                (got.verdict, &got.layer, &got.rule),
                (want.verdict, &want.layer, &want.rule),
                "request {:?}", req
            );
        }
    }
}

// ---- fixed cases ----------------------------------------------------------------------

fn base(rules: Vec<Rule>) -> EffectiveSet {
    EffectiveSet {
        base: Some(Policy {
            api_version: "tyr.dev/v1".into(),
            kind: "Policy".into(),
            metadata: Metadata {
                name: "base".into(),
                ..Metadata::default()
            },
            spec: Spec {
                rules,
                ..Spec::default()
            },
        }),
        overlays: Vec::new(),
    }
}

fn path_rule(name: &str, pattern: &str, verdict: Verdict) -> Rule {
    Rule {
        name: name.into(),
        action: Action::FileRead,
        resource_pattern: Some(pattern.into()),
        verdict,
        ..Rule::default()
    }
}

fn read(path: &str, binary: Option<&str>) -> Request {
    Request {
        action: Action::FileRead,
        resource: Resource::Path(path.into()),
        domains: Vec::new(),
        binary: binary.map(str::to_owned),
        agent_type: None,
        context: Context::default(),
    }
}

/// The verdict and deciding rule of the emulated kernel walk.
fn kernel(tables: &KernelTables, req: &Request) -> (Verdict, Option<String>) {
    let d = tables.decision(&emulate(tables, &kernel_request(tables, req)));
    (d.verdict, d.rule)
}

#[test]
fn path_dfa_follows_glob_semantics() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("/a/**", &["/a", "/a/b", "/a/b/c"], &["/ab", "/", "/b/a"]),
        ("/a/**/b", &["/a/b", "/a/x/y/b"], &["/a/xb", "/a/b/c"]),
        (
            "/**/.env*",
            &["/srv/app/.env.local", "/.env"],
            &["/srv/env", "/a/.en"],
        ),
        ("/a/*", &["/a/b", "/a/"], &["/a/b/c", "/a"]),
        ("/a/*.rs", &["/a/.rs", "/a/x.rs"], &["/a/x.rs/y"]),
        ("/a/?", &["/a/x"], &["/a/xy", "/a/"]),
        ("/a/[!a]", &["/a/b"], &["/a/a", "/a//"]),
        ("/a[!x]b", &["/acb"], &["/a/b", "/axb"]),
        (
            "~/.ssh/**",
            &["/home/alice/.ssh/id_rsa", "/root/.ssh"],
            &["/srv/.ssh/id", "/home/a/b/.ssh/k"],
        ),
        (
            "/a/.claude/",
            &["/a/.claude", "/a/.claude/settings.json"],
            &["/a/.claudex"],
        ),
        ("/", &["/"], &["", "/a"]),
        ("**", &["/", "/x/y", "", "relative"], &[]),
    ];
    for (pattern, yes, no) in cases {
        let tables = compile(
            &base(vec![path_rule("r", pattern, Verdict::Deny)]),
            &Homes::default(),
            &Limits::default(),
        )
        .expect("compiles");
        for p in *yes {
            assert_eq!(
                kernel(&tables, &read(p, None)).0,
                Verdict::Deny,
                "{pattern} vs {p}"
            );
        }
        for p in *no {
            assert_eq!(
                kernel(&tables, &read(p, None)),
                (Verdict::Allow, None),
                "{pattern} vs {p}"
            );
        }
    }
}

#[test]
fn first_match_wins_and_binary_filters_apply() {
    let mut git_only = path_rule("git-reads-keys", "~/.ssh/**", Verdict::Allow);
    git_only.binaries = vec!["/usr/bin/git".into()];
    let tables = compile(
        &base(vec![
            git_only,
            path_rule("keys", "~/.ssh/**", Verdict::Deny),
            path_rule("home", "/home/**", Verdict::Alert),
        ]),
        &Homes::default(),
        &Limits::default(),
    )
    .expect("compiles");
    let key = "/home/alice/.ssh/id_rsa";
    let named = |v, r: &str| (v, Some(r.to_owned()));
    assert_eq!(
        kernel(&tables, &read(key, Some("/usr/bin/git"))),
        named(Verdict::Allow, "git-reads-keys")
    );
    assert_eq!(
        kernel(&tables, &read(key, Some("/usr/bin/cat"))),
        named(Verdict::Deny, "keys")
    );
    assert_eq!(
        kernel(&tables, &read(key, None)),
        named(Verdict::Deny, "keys")
    );
    assert_eq!(
        kernel(&tables, &read("/home/alice/x", None)),
        named(Verdict::Alert, "home")
    );
}

#[test]
fn long_paths_fail_closed() {
    let tables = compile(
        &base(vec![path_rule("etc", "/etc/**", Verdict::Deny)]),
        &Homes::default(),
        &Limits::default(),
    )
    .expect("compiles");
    let at_limit = format!("/{}", "a".repeat(4095));
    let d = emulate(&tables, &kernel_request(&tables, &read(&at_limit, None)));
    assert_eq!((d.verdict, d.fail_closed), (Verdict::Allow, false));
    let too_long = format!("/{}", "a".repeat(4096));
    let d = emulate(&tables, &kernel_request(&tables, &read(&too_long, None)));
    assert_eq!((d.verdict, d.fail_closed), (Verdict::Deny, true));
}

#[test]
fn tables_without_rules_are_quick_rejects_and_round_trip_through_json() {
    let tables = compile(
        &base(vec![path_rule("etc", "/etc/**", Verdict::Deny)]),
        &Homes::default(),
        &Limits::default(),
    )
    .expect("compiles");
    let base = &tables.layers[0];
    assert!(matches!(
        base.actions[Action::FileRead.index()].matcher,
        Matcher::Dfa { .. }
    ));
    for a in [
        Action::FileWrite,
        Action::Exec,
        Action::NetConnect,
        Action::TlsConnect,
    ] {
        let table = &base.actions[a.index()];
        assert!(
            table.rules.is_empty() && table.matcher == Matcher::None,
            "{a}"
        );
    }
    let json = serde_json::to_string(&tables).expect("serialises");
    let back: KernelTables = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, tables);
}

#[test]
fn pathological_policy_errors_instead_of_truncating() {
    // `a` followed by 16 more bytes: the DFA must remember the last 17 bytes (2^17 states).
    let pattern = format!("/*a{}", "?".repeat(16));
    let err = compile(
        &base(vec![path_rule("explode", &pattern, Verdict::Deny)]),
        &Homes::default(),
        &Limits::default(),
    )
    .expect_err("too many states");
    assert!(
        matches!(err, CompileError::TooManyStates { limit: 65_536, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("file_read"), "{err}");
}

#[test]
fn limits_are_errors_naming_what_overflowed() {
    let limits = Limits {
        max_rules_per_table: 2,
        ..Limits::default()
    };
    let rules = (0..3)
        .map(|i| path_rule(&format!("r{i}"), "/x", Verdict::Deny))
        .collect();
    let err = compile(&base(rules), &Homes::default(), &limits).expect_err("too many rules");
    assert!(
        matches!(
            err,
            CompileError::TooManyRules {
                count: 3,
                limit: 2,
                ..
            }
        ),
        "{err}"
    );

    let rules = (0..65)
        .map(|i| Rule {
            binaries: vec![format!("/bin/b{i}")],
            ..path_rule(&format!("r{i}"), "/x", Verdict::Deny)
        })
        .collect();
    let err = compile(&base(rules), &Homes::default(), &Limits::default()).expect_err("binaries");
    assert!(
        err.to_string().contains("65 distinct binary globs"),
        "{err}"
    );

    let limits = Limits {
        max_candidates: 2,
        ..Limits::default()
    };
    let rules = (0..3)
        .map(|i| Rule {
            binaries: vec![format!("/bin/b{i}")],
            ..path_rule(&format!("r{i}"), "/x", Verdict::Deny)
        })
        .collect();
    let err = compile(&base(rules), &Homes::default(), &limits).expect_err("candidates");
    assert!(err.to_string().contains("rule `r2`"), "{err}");

    let mut set = base(Vec::new());
    set.overlays = (0..64)
        .map(|i| Overlay {
            agent_type: format!("t{i}"),
            policy: Policy {
                api_version: "tyr.dev/v1".into(),
                kind: "Policy".into(),
                metadata: Metadata::default(),
                spec: Spec::default(),
            },
        })
        .collect();
    let err = compile(&set, &Homes::default(), &Limits::default()).expect_err("overlays");
    assert!(err.to_string().contains("overlays"), "{err}");
}

#[test]
fn report_says_where_each_rule_is_enforced() {
    let mut conditional = path_rule("cond", "/x", Verdict::Deny);
    conditional.condition = Some("context.uid == 0".into());
    let net = Rule {
        name: "net".into(),
        action: Action::NetConnect,
        cidrs: vec!["10.0.0.0/8".parse().expect("cidr")],
        ports: vec![PortRange {
            start: 443,
            end: 443,
        }],
        ..Rule::default()
    };
    let mut git = path_rule("git", "/y", Verdict::Allow);
    git.binaries = vec!["/usr/bin/git".into()];
    let set = base(vec![conditional, net, git]);
    let r = report(set.base.as_ref().expect("base"));
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[0].rule.as_str(), r[0].enforced_in),
        ("cond", EnforcedIn::Userspace)
    );
    assert!(
        r[0].reason.starts_with("userspace only: Cedar condition"),
        "{}",
        r[0].reason
    );
    assert_eq!(
        (r[1].enforced_in, r[1].reason.as_str()),
        (EnforcedIn::Kernel, "kernel: LPM + ports")
    );
    assert_eq!(r[2].reason, "kernel: path DFA + binary mask");
}

/// Every example policy compiles and, as base or overlay, decides like the reference on a
/// sweep of requests (unless a Cedar condition raised the reference verdict in userspace).
#[test]
fn example_policies_decide_like_the_reference() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    let mut policies = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples/policies") {
        let yaml = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        policies.push(tyr_policy::parse(&yaml).expect("example parses"));
    }
    assert!(policies.len() >= 5);
    let homes = Homes::default();
    let paths = [
        "/home/alice/.ssh/id_rsa",
        "/home/alice/.aws/credentials",
        "/home/alice/project/.env",
        "/home/alice/.bashrc",
        "/home/alice/.claude/settings.json",
        "/root/.kube/config",
        "/etc/shadow",
        "/etc/sudoers.d/x",
        "/usr/bin/sudo",
        "/usr/bin/curl",
        "/tmp/x.sh",
        "/usr/lib/libc.so.6",
    ];
    let mut requests = Vec::new();
    for binary in [
        None,
        Some("/usr/bin/ssh"),
        Some("/usr/bin/aws"),
        Some("/usr/bin/bash"),
    ] {
        for agent in [None, Some("claude-code"), Some("codex"), Some("cursor")] {
            let req = |action, resource| Request {
                action,
                resource,
                domains: vec!["api.anthropic.com".into()],
                binary: binary.map(str::to_owned),
                agent_type: agent.map(str::to_owned),
                context: Context {
                    uid: Some(1000),
                    pid: Some(42),
                },
            };
            for p in paths {
                for a in [Action::FileRead, Action::FileWrite, Action::Exec] {
                    requests.push(req(a, Resource::Path(p.into())));
                }
            }
            for ip in [
                "127.0.0.1",
                "::1",
                "160.79.104.10",
                "10.0.0.1",
                "::ffff:8.8.8.8",
            ] {
                for port in [53, 443, 8080] {
                    let ip = ip.parse().expect("ip");
                    requests.push(req(Action::NetConnect, Resource::Addr { ip, port }));
                }
            }
            for sni in ["api.anthropic.com", "x.openai.azure.com", "evil.example"] {
                requests.push(req(Action::TlsConnect, Resource::Sni(sni.into())));
            }
        }
    }
    let overlays = |t: &str| {
        policies
            .iter()
            .map(|p| Overlay {
                agent_type: t.into(),
                policy: p.clone(),
            })
            .collect::<Vec<_>>()
    };
    let mut sets: Vec<EffectiveSet> = policies
        .iter()
        .map(|p| EffectiveSet {
            base: Some(p.clone()),
            overlays: Vec::new(),
        })
        .collect();
    sets.push(EffectiveSet {
        base: policies.first().cloned(),
        overlays: [overlays("claude-code"), overlays("codex")].concat(),
    });
    for set in &sets {
        let tables = compile(set, &homes, &Limits::default()).expect("example compiles");
        for req in &requests {
            let want = evaluate(set, req, &homes);
            if want.enforced_in == EnforcedIn::Userspace {
                continue;
            }
            let got = tables.decision(&emulate(&tables, &kernel_request(&tables, req)));
            assert_eq!(
                (got.verdict, &got.layer, &got.rule),
                (want.verdict, &want.layer, &want.rule),
                "{req:?}"
            );
        }
    }
}
