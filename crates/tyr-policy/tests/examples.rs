//! Every policy in `examples/policies` parses, has the expected shape and decides as
//! documented.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tyr_policy::glob::Homes;
use tyr_policy::request::Context;
use tyr_policy::{
    Action, EffectiveSet, Mode, Overlay, Policy, Request, Resource, Verdict, evaluate, parse,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

fn load(name: &str) -> Policy {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    parse(&text).unwrap_or_else(|e| panic!("{name}: {e:#?}"))
}

fn verdict_of(p: &Policy, rule: &str) -> Verdict {
    p.spec
        .rules
        .iter()
        .find(|r| r.name == rule)
        .unwrap_or_else(|| panic!("no rule {rule} in {}", p.metadata.name))
        .verdict
}

#[test]
fn every_example_parses_and_is_known() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("examples/policies")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "audit.yaml",
            "claude-code.yaml",
            "codex.yaml",
            "cursor.yaml",
            "llm-egress.yaml",
            "strict-base.yaml"
        ]
    );
    for n in &names {
        let p = load(n);
        assert_eq!(format!("{}.yaml", p.metadata.name), *n);
    }
}

#[test]
fn structure() {
    let audit = load("audit.yaml");
    assert_eq!(audit.spec.mode, Mode::Monitor);
    assert!(audit.spec.rules.is_empty());

    let base = load("strict-base.yaml");
    assert_eq!(base.spec.rules.len(), 31);
    assert_eq!(verdict_of(&base, "deny-read-ssh"), Verdict::Deny);
    let last = base.spec.rules.last().expect("rules");
    assert!(last.action == Action::Exec && last.is_catch_all() && last.verdict == Verdict::Alert);

    let egress = load("llm-egress.yaml");
    assert_eq!(egress.spec.rules.len(), 7);
    assert_eq!(verdict_of(&egress, "deny-other-egress"), Verdict::Deny);
    assert_eq!(verdict_of(&egress, "deny-other-sni"), Verdict::Deny);

    for (file, rules) in [
        ("claude-code.yaml", 13),
        ("cursor.yaml", 9),
        ("codex.yaml", 9),
    ] {
        let p = load(file);
        assert_eq!(p.spec.rules.len(), rules, "{file}");
        assert_eq!(verdict_of(&p, "deny-exec-curl"), Verdict::Deny, "{file}");
        assert!(
            p.spec.rules.iter().all(|r| r.agent_types.is_empty()),
            "{file}"
        );
    }
}

fn request(action: Action, resource: Resource, binary: Option<&str>) -> Request {
    Request {
        action,
        resource,
        domains: Vec::new(),
        binary: binary.map(str::to_owned),
        agent_type: None,
        context: Context::default(),
    }
}

fn path(action: Action, p: &str, binary: Option<&str>) -> Request {
    request(action, Resource::Path(p.into()), binary)
}

fn decide(base: &Policy, overlays: &[(&str, &Policy)], req: &Request) -> Verdict {
    let set = EffectiveSet {
        base: Some(base.clone()),
        overlays: overlays
            .iter()
            .map(|(agent, p)| Overlay {
                agent_type: (*agent).into(),
                policy: (*p).clone(),
            })
            .collect(),
    };
    evaluate(&set, req, &Homes::default()).verdict
}

#[test]
fn strict_base_decisions() {
    let base = load("strict-base.yaml");
    let d = |r: Request| decide(&base, &[], &r);
    let cat = Some("/usr/bin/cat");
    assert_eq!(
        d(path(Action::FileRead, "/home/alice/.ssh/id_rsa", cat)),
        Verdict::Deny
    );
    assert_eq!(
        d(path(Action::FileRead, "/home/alice/.ssh/id_rsa", None)),
        Verdict::Deny
    );
    assert_eq!(
        d(path(
            Action::FileRead,
            "/home/alice/.ssh/id_rsa",
            Some("/usr/bin/ssh")
        )),
        Verdict::Allow
    );
    assert_eq!(
        d(path(Action::FileWrite, "/root/.bashrc", cat)),
        Verdict::Deny
    );
    assert_eq!(
        d(path(Action::FileRead, "/root/.bashrc", cat)),
        Verdict::Allow
    );
    assert_eq!(
        d(path(Action::FileRead, "/srv/app/.env.local", cat)),
        Verdict::Deny
    );
    assert_eq!(
        d(path(
            Action::FileWrite,
            "/srv/app/.git/hooks/pre-commit",
            cat
        )),
        Verdict::Deny
    );
    assert_eq!(d(path(Action::Exec, "/usr/bin/sudo", None)), Verdict::Deny);
    assert_eq!(d(path(Action::Exec, "/sbin/su", None)), Verdict::Deny);
    assert_eq!(d(path(Action::Exec, "/bin/nc", None)), Verdict::Deny);
    assert_eq!(d(path(Action::Exec, "/usr/bin/ls", None)), Verdict::Alert);
    assert_eq!(d(path(Action::FileRead, "/etc/hosts", cat)), Verdict::Allow);
}

fn connect(ip: &str, port: u16, domains: &[&str]) -> Request {
    let ip: IpAddr = ip.parse().expect("ip");
    let mut r = request(Action::NetConnect, Resource::Addr { ip, port }, None);
    r.domains = domains.iter().map(|d| (*d).to_owned()).collect();
    r
}

#[test]
fn llm_egress_decisions() {
    let p = load("llm-egress.yaml");
    let d = |r: Request| decide(&p, &[], &r);
    assert_eq!(d(connect("127.0.0.1", 8080, &[])), Verdict::Allow);
    assert_eq!(d(connect("::1", 8080, &[])), Verdict::Allow);
    assert_eq!(d(connect("192.0.2.53", 53, &[])), Verdict::Allow);
    assert_eq!(
        d(connect("203.0.113.7", 443, &["api.anthropic.com"])),
        Verdict::Allow
    );
    assert_eq!(
        d(connect("203.0.113.7", 443, &["x.openai.azure.com"])),
        Verdict::Allow
    );
    assert_eq!(
        d(connect("203.0.113.7", 443, &["evil.example"])),
        Verdict::Deny
    );
    assert_eq!(
        d(connect("203.0.113.7", 80, &["api.anthropic.com"])),
        Verdict::Deny
    );
    let sni = |s: &str| request(Action::TlsConnect, Resource::Sni(s.into()), None);
    assert_eq!(d(sni("pypi.org")), Verdict::Allow);
    assert_eq!(d(sni("evil.example")), Verdict::Deny);
}

#[test]
fn overlays_tighten_for_their_agent_only() {
    let base = load("audit.yaml");
    let claude = load("claude-code.yaml");
    let overlays = [("claude-code", &claude)];
    let mut curl = path(Action::Exec, "/usr/bin/curl", None);
    assert_eq!(decide(&base, &overlays, &curl), Verdict::Allow);
    curl.agent_type = Some("claude-code".into());
    assert_eq!(decide(&base, &overlays, &curl), Verdict::Deny);
}

#[test]
fn claude_code_may_not_use_ssh_keys_even_through_ssh() {
    let base = load("strict-base.yaml");
    let claude = load("claude-code.yaml");
    let overlays = [("claude-code", &claude)];
    let mut ssh = path(
        Action::FileRead,
        "/home/alice/.ssh/id_ed25519",
        Some("/usr/bin/ssh"),
    );
    assert_eq!(decide(&base, &overlays, &ssh), Verdict::Allow);
    ssh.agent_type = Some("claude-code".into());
    assert_eq!(decide(&base, &overlays, &ssh), Verdict::Deny);
}
