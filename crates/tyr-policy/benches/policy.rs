//! Policy engine benchmarks: reference evaluator vs. emulated kernel walk on a realistic
//! 200-rule policy, and compile time of a 1,000-rule policy. See bench/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tyr_policy::compile::{Limits, compile, emulate, kernel_request};
use tyr_policy::glob::Homes;
use tyr_policy::request::Context;
use tyr_policy::{
    Action, Defaults, EffectiveSet, Metadata, Mode, Policy, PortRange, Request, Resource, Rule,
    Spec, Verdict,
};

const DOTFILES: [&str; 20] = [
    "~/.ssh/**",
    "~/.aws/**",
    "~/.gnupg/**",
    "~/.kube/config",
    "~/.docker/config.json",
    "~/.netrc",
    "~/.npmrc",
    "~/.pypirc",
    "~/.git-credentials",
    "~/.config/gcloud/**",
    "~/.config/gh/hosts.yml",
    "~/.azure/**",
    "~/.terraform.d/credentials.tfrc.json",
    "~/.cargo/credentials.toml",
    "~/.vault-token",
    "~/.bash_history",
    "~/.zsh_history",
    "~/.mozilla/**",
    "~/.config/google-chrome/**",
    "~/.password-store/**",
];

const SYSTEM: [&str; 12] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d/**",
    "/etc/ssh/ssh_host_*",
    "/proc/*/mem",
    "/proc/*/environ",
    "/sys/kernel/security/**",
    "/boot/**",
    "/var/lib/docker/**",
    "/root/**",
    "/etc/kubernetes/pki/**",
];

const UNANCHORED: [&str; 4] = ["/**/.env*", "/**/*.pem", "/**/id_rsa*", "/**/.git/config"];

fn rule(name: String, action: Action, pattern: &str, verdict: Verdict) -> Rule {
    Rule {
        name,
        action,
        resource_pattern: Some(pattern.into()),
        verdict,
        ..Rule::default()
    }
}

/// A realistic policy of about `n` rules: dotfiles, system paths, unanchored secrets, exec and
/// network rules, and per-project rules to reach the size.
fn policy(n: usize) -> Policy {
    let mut rules = Vec::new();
    let push = |rules: &mut Vec<Rule>, action, pattern: &str, verdict| {
        let name = format!("r{}", rules.len());
        rules.push(rule(name, action, pattern, verdict));
    };
    let mut git = rule(
        "git-keys".into(),
        Action::FileRead,
        "~/.ssh/**",
        Verdict::Allow,
    );
    git.binaries = vec!["/usr/bin/git".into(), "/usr/bin/ssh".into()];
    for p in DOTFILES.iter().chain(&SYSTEM).chain(&UNANCHORED) {
        push(&mut rules, Action::FileRead, p, Verdict::Deny);
        push(&mut rules, Action::FileWrite, p, Verdict::Deny);
    }
    for p in [
        "~/.bashrc",
        "~/.profile",
        "~/.claude/**",
        "/etc/**",
        "/usr/**",
    ] {
        push(&mut rules, Action::FileWrite, p, Verdict::Alert);
    }
    for p in [
        "/usr/bin/nc",
        "/usr/bin/ncat",
        "/usr/bin/socat",
        "/tmp/**",
        "/dev/shm/**",
    ] {
        push(&mut rules, Action::Exec, p, Verdict::Deny);
    }
    push(&mut rules, Action::Exec, "/usr/bin/curl", Verdict::Alert);
    let mut i = 0;
    while rules.len() + 4 < n {
        let (action, pattern, verdict) = match i % 4 {
            0 => (
                Action::FileRead,
                format!("/srv/app{i}/secrets/**"),
                Verdict::Deny,
            ),
            1 => (
                Action::FileWrite,
                format!("/opt/vendor{i}/**/*.key"),
                Verdict::Deny,
            ),
            2 => (
                Action::FileRead,
                format!("~/work/p{i}/.env"),
                Verdict::Alert,
            ),
            _ => (Action::Exec, format!("/opt/tools{i}/bin/*"), Verdict::Alert),
        };
        push(&mut rules, action, &pattern, verdict);
        i += 1;
    }
    rules.insert(0, git);
    let net = |name: &str, cidr: &str, ports: Vec<PortRange>, verdict| Rule {
        name: name.into(),
        action: Action::NetConnect,
        cidrs: vec![cidr.parse().expect("cidr")],
        ports,
        verdict,
        ..Rule::default()
    };
    let https = vec![PortRange {
        start: 443,
        end: 443,
    }];
    rules.push(net("metadata", "169.254.169.254/32", vec![], Verdict::Deny));
    rules.push(net("corp", "10.0.0.0/8", https.clone(), Verdict::Allow));
    rules.push(net("corp-other", "10.0.0.0/8", vec![], Verdict::Deny));
    rules.push(net("v6-ula", "fc00::/7", https, Verdict::Alert));
    Policy {
        api_version: "tyr.dev/v1".into(),
        kind: "Policy".into(),
        metadata: Metadata {
            name: format!("bench-{n}"),
            ..Metadata::default()
        },
        spec: Spec {
            mode: Mode::Enforce,
            default: Defaults::All(Verdict::Allow),
            rules,
        },
    }
}

/// 1,000 paths as an agent touches them: project sources, toolchain and system files, and
/// some secrets.
fn paths() -> Vec<String> {
    let users = ["alice", "bob", "carol"];
    let files = [
        "src/main.rs",
        "src/lib/mod.rs",
        "Cargo.toml",
        "node_modules/react/index.js",
        "node_modules/.bin/tsc",
        ".git/HEAD",
        ".git/config",
        ".env",
        ".env.local",
        "README.md",
        "target/debug/build/x-1234/out/gen.rs",
        "certs/server.pem",
    ];
    let system = [
        "/etc/hosts",
        "/etc/passwd",
        "/etc/shadow",
        "/etc/ssl/certs/ca-certificates.crt",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/python3.12/os.py",
        "/usr/bin/git",
        "/proc/self/status",
        "/proc/1234/environ",
        "/sys/fs/cgroup/cpu.max",
        "/tmp/tmp.XYZ123/build.log",
        "/var/lib/docker/overlay2/abc/merged/etc/hosts",
        "/srv/app7/secrets/db.yaml",
        "/opt/vendor9/keys/a/b.key",
    ];
    let dot = [
        ".ssh/id_ed25519",
        ".ssh/known_hosts",
        ".aws/credentials",
        ".bashrc",
        ".cache/pip/http/a/b/c/d",
        ".config/gh/hosts.yml",
        ".claude/settings.json",
        ".local/share/nvim/site/x.lua",
    ];
    let mut out = Vec::with_capacity(1000);
    let mut i = 0usize;
    while out.len() < 1000 {
        let user = users[i % users.len()];
        out.push(match i % 4 {
            0 | 1 => format!(
                "/home/{user}/projects/app{}/{}",
                i % 17,
                files[i % files.len()]
            ),
            2 => system[i % system.len()].to_owned(),
            _ => format!("/home/{user}/{}", dot[i % dot.len()]),
        });
        i += 1;
    }
    out
}

fn requests() -> Vec<Request> {
    let binaries = [
        "/usr/bin/git",
        "/usr/bin/cat",
        "/usr/bin/python3",
        "/usr/bin/node",
    ];
    paths()
        .into_iter()
        .enumerate()
        .map(|(i, p)| Request {
            action: if i % 5 == 0 {
                Action::FileWrite
            } else {
                Action::FileRead
            },
            resource: Resource::Path(p),
            domains: Vec::new(),
            binary: Some(binaries[i % binaries.len()].into()),
            agent_type: None,
            context: Context::default(),
        })
        .collect()
}

fn decisions(c: &mut Criterion) {
    let homes = Homes::default();
    let set = EffectiveSet {
        base: Some(policy(200)),
        overlays: Vec::new(),
    };
    let tables = compile(&set, &homes, &Limits::default()).expect("compiles");
    for (layer, action, states) in tables.dfa_states() {
        eprintln!("200-rule policy: layer {layer} {action}: {states} DFA states");
    }
    let reqs = requests();
    let kreqs: Vec<_> = reqs.iter().map(|r| kernel_request(&tables, r)).collect();
    let mut g = c.benchmark_group("path decisions (1,000 paths, 200 rules)");
    g.throughput(Throughput::Elements(reqs.len() as u64));
    g.sample_size(10);
    g.bench_function("reference evaluator, one-off (evaluate)", |b| {
        b.iter(|| {
            for r in &reqs {
                black_box(tyr_policy::evaluate(&set, r, &homes));
            }
        })
    });
    let evaluator = tyr_policy::Evaluator::new(&set, &homes);
    g.bench_function("reference evaluator, prepared (Evaluator)", |b| {
        b.iter(|| {
            for r in &reqs {
                black_box(evaluator.evaluate(r));
            }
        })
    });
    g.bench_function("kernel emulator", |b| {
        b.iter(|| {
            for r in &kreqs {
                black_box(emulate(&tables, r));
            }
        })
    });
    g.finish();
}

fn compile_time(c: &mut Criterion) {
    let homes = Homes::default();
    let set = EffectiveSet {
        base: Some(policy(1000)),
        overlays: Vec::new(),
    };
    let tables = compile(&set, &homes, &Limits::default()).expect("compiles");
    for (layer, action, states) in tables.dfa_states() {
        eprintln!("1,000-rule policy: layer {layer} {action}: {states} DFA states");
    }
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("1,000-rule policy", |b| {
        b.iter(|| compile(black_box(&set), &homes, &Limits::default()))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decisions, compile_time
}
criterion_main!(benches);
