//! The agent classification table (`classifier.yaml`, SPEC §7) and the host facts it is
//! resolved against: local home directories and installed executables.
//!
//! The kernel classifies at exec from installed executables and `tyr run` cgroups; userspace
//! refines it from the same table ([`Classifier::classify`]): executable path and SHA-256,
//! command line, environment markers. Parent lineage is not a table entry: a process inherits
//! the identity of a classified ancestor (in-kernel at fork, and in userspace when the
//! ancestor was classified after the fork). A process of no known type holding one of the
//! table's `credentials` is an unregistered agent (`unregistered_agents` in `tyrd.yaml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The table shipped with the daemon.
pub const BUILTIN: &str = include_str!("../../classifier.yaml");
/// Environment variable naming a replacement table.
pub const OVERRIDE_ENV: &str = "TYRD_CLASSIFIER";
/// Agent-type names the daemon reserves for unregistered agents.
pub const RESERVED: [&str; 2] = [
    super::unregistered::UNREGISTERED,
    super::unregistered::QUARANTINE,
];
/// Where bare executable names are looked up (and `~/.local/bin` of each home).
const BIN_DIRS: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// The classification table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classifier {
    pub agent_types: Vec<AgentType>,
    /// Environment variables holding LLM-provider credentials: a process of no known type with
    /// one of them set (non-empty) looks like an unregistered agent.
    #[serde(default)]
    pub credentials: Vec<String>,
}

/// One agent type and how to recognise it. Any one signal classifies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentType {
    pub name: String,
    /// Absolute paths, or bare names looked up in the usual bin directories (kernel, at
    /// exec) and compared with the executable's file name (userspace).
    #[serde(default)]
    pub executables: Vec<String>,
    /// SHA-256 digests (64 hex digits) of the executable.
    #[serde(default)]
    pub sha256: Vec<String>,
    /// Wildcard patterns (`*` any run of characters, `?` one) over the whole command line,
    /// arguments joined by single spaces.
    #[serde(default)]
    pub argv: Vec<String>,
    /// Environment markers: `NAME` (set, non-empty) or `NAME=VALUE` (exactly).
    #[serde(default)]
    pub env: Vec<String>,
}

/// What userspace knows about a process at exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Canonical executable path.
    pub exe: String,
    /// SHA-256 of the executable, when the table has digests and it could be read.
    pub sha256: Option<[u8; 32]>,
    /// Arguments joined by single spaces.
    pub cmdline: String,
    /// `NAME=VALUE` entries.
    pub environ: Vec<String>,
}

/// How a process was classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// An agent type of the table (its name) and the signal that matched.
    Known(String, Signal),
    /// No known type, but LLM credentials in its environment.
    Unregistered,
}

/// The signal that classified a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Sha256,
    Executable,
    Argv,
    Env,
}

impl Signal {
    /// Its name in event metadata.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Sha256 => "sha256",
            Signal::Executable => "executable",
            Signal::Argv => "argv",
            Signal::Env => "env",
        }
    }
}

impl Classifier {
    /// Parses and checks a table; every error names the agent type and the bad entry.
    pub fn parse(text: &str) -> Result<Classifier, String> {
        let c: Classifier = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        for (i, t) in c.agent_types.iter().enumerate() {
            if t.name.is_empty() || t.name.contains('/') || t.name.contains(char::is_whitespace) {
                return Err(format!("invalid agent type name {:?}", t.name));
            }
            if RESERVED.contains(&t.name.as_str()) {
                return Err(format!("agent type {:?} is reserved by the daemon", t.name));
            }
            if c.agent_types[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("agent type {:?} is listed twice", t.name));
            }
            let bad = |what: &str, v: &str, why: &str| {
                Err(format!("agent type {:?}: {what} {v:?} {why}", t.name))
            };
            for e in &t.executables {
                if e.is_empty() || (e.contains('/') && !e.starts_with('/')) {
                    return bad("executable", e, "is neither absolute nor a bare name");
                }
            }
            for d in &t.sha256 {
                if parse_digest(d).is_none() {
                    return bad("sha256", d, "is not 64 hexadecimal digits");
                }
            }
            for p in &t.argv {
                if p.is_empty() || p.chars().all(|ch| ch == '*') {
                    return bad("argv pattern", p, "matches every command line");
                }
            }
            for m in &t.env {
                let name = m.split_once('=').map_or(m.as_str(), |(n, _)| n);
                if !valid_env_name(name) {
                    return bad("env marker", m, "is not NAME or NAME=VALUE");
                }
            }
        }
        if let Some(bad) = c.credentials.iter().find(|n| !valid_env_name(n)) {
            return Err(format!(
                "credentials: {bad:?} is not an environment variable name"
            ));
        }
        Ok(c)
    }

    /// The table named by `TYRD_CLASSIFIER`, else the built-in one.
    pub fn load() -> Result<Classifier, String> {
        match std::env::var_os(OVERRIDE_ENV) {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", Path::new(&path).display()))?;
                Classifier::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
            None => Classifier::parse(BUILTIN),
        }
    }

    /// Whether any type lists digests (only then are executables hashed).
    pub fn wants_digests(&self) -> bool {
        self.agent_types.iter().any(|t| !t.sha256.is_empty())
    }

    /// The class of a process: the first type (in table order) matched by the strongest
    /// signal (digest, then executable, command line, environment), else unregistered when a
    /// credential is set, else `None`.
    pub fn classify(&self, f: &Facts) -> Option<Class> {
        let order = [
            Signal::Sha256,
            Signal::Executable,
            Signal::Argv,
            Signal::Env,
        ];
        for signal in order {
            if let Some(t) = self.agent_types.iter().find(|t| t.matches(signal, f)) {
                return Some(Class::Known(t.name.clone(), signal));
            }
        }
        let credential = self.credentials.iter().any(|c| has_marker(&f.environ, c));
        credential.then_some(Class::Unregistered)
    }
}

fn valid_env_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 64 hex digits (either case) as bytes.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Whether `environ` (`NAME=VALUE` entries) satisfies the marker `NAME` (set, non-empty) or
/// `NAME=VALUE` (exactly).
fn has_marker(environ: &[String], marker: &str) -> bool {
    match marker.split_once('=') {
        Some(_) => environ.iter().any(|e| e == marker),
        None => environ.iter().any(|e| {
            e.split_once('=')
                .is_some_and(|(n, v)| n == marker && !v.is_empty())
        }),
    }
}

/// Whole-string wildcard match: `*` any run of bytes, `?` any one byte.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

impl AgentType {
    /// Whether `signal` of this type matches `f`.
    fn matches(&self, signal: Signal, f: &Facts) -> bool {
        match signal {
            Signal::Sha256 => f
                .sha256
                .is_some_and(|h| self.sha256.iter().any(|d| parse_digest(d) == Some(h))),
            Signal::Executable => {
                let file_name = f.exe.rsplit('/').next().unwrap_or_default();
                !f.exe.is_empty()
                    && self.executables.iter().any(|e| match e.starts_with('/') {
                        true => *e == f.exe,
                        false => e == file_name,
                    })
            }
            Signal::Argv => self
                .argv
                .iter()
                .any(|p| wildcard(p.as_bytes(), f.cmdline.as_bytes())),
            Signal::Env => self.env.iter().any(|m| has_marker(&f.environ, m)),
        }
    }

    /// The canonical paths of this type's executables that exist on this host.
    pub fn installed(&self, homes: &[String]) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for exe in &self.executables {
            let candidates: Vec<PathBuf> = if exe.starts_with('/') {
                vec![PathBuf::from(exe)]
            } else if exe.contains('/') {
                Vec::new()
            } else {
                let local = homes.iter().map(|h| Path::new(h).join(".local/bin"));
                BIN_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .chain(local)
                    .map(|d| d.join(exe))
                    .collect()
            };
            for c in candidates {
                if let Ok(p) = c.canonicalize()
                    && p.is_file()
                    && !found.contains(&p)
                {
                    found.push(p);
                }
            }
        }
        found
    }
}

/// Home directories of local users in `passwd` text: `/root` and those of uids ≥ 1000
/// (except `nobody`), absolute, without glob characters, each once.
pub fn homes_from_passwd(passwd: &str) -> Vec<String> {
    let mut homes = vec!["/root".to_owned()];
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let (Some(uid), Some(home)) = (fields.get(2), fields.get(5)) else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        let home = home.trim_end_matches('/');
        let plain = home.starts_with('/') && !home.contains(['*', '?', '[', ']', '\\']);
        if (1000..65534).contains(&uid) && plain && !homes.iter().any(|h| h == home) {
            homes.push(home.to_owned());
        }
    }
    homes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> Classifier {
        Classifier::parse(yaml).expect("table")
    }

    fn facts(exe: &str, cmdline: &str, environ: &[&str]) -> Facts {
        Facts {
            exe: exe.into(),
            sha256: None,
            cmdline: cmdline.into(),
            environ: environ.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn known(name: &str, s: Signal) -> Option<Class> {
        Some(Class::Known(name.into(), s))
    }

    #[test]
    fn the_builtin_table_names_the_spec_types() {
        let c = Classifier::parse(BUILTIN).expect("builtin table");
        let names: Vec<&str> = c.agent_types.iter().map(|t| t.name.as_str()).collect();
        for t in [
            "claude-code",
            "cursor",
            "copilot",
            "codex",
            "aider",
            "gemini-cli",
            "cline",
            "continue",
            "autogen",
            "langgraph",
        ] {
            assert!(names.contains(&t), "{t} missing");
        }
        for cred in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"] {
            assert!(c.credentials.iter().any(|n| n == cred), "{cred} missing");
        }
    }

    #[test]
    fn the_schema_fails_loudly() {
        let cases = [
            ("agent_types: [{name: a}, {name: a}]", "listed twice"),
            ("agent_types: [{name: a, bogus: 1}]", "bogus"),
            ("agent_types: [{name: quarantine}]", "reserved"),
            ("agent_types: [{name: unregistered}]", "reserved"),
            ("agent_types: [{name: 'a b'}]", "invalid agent type name"),
            ("agent_types: [{name: a, sha256: [abc]}]", "64 hexadecimal"),
            (
                "agent_types: [{name: a, argv: ['**']}]",
                "every command line",
            ),
            (
                "agent_types: [{name: a, env: ['1X']}]",
                "NAME or NAME=VALUE",
            ),
            (
                "agent_types: [{name: a, executables: [rel/x]}]",
                "neither absolute",
            ),
            ("agent_types: [{name: a, env: X}]", "sequence"),
            ("agent_types: []\ncredentials: ['A-B']", "credentials"),
            ("agent_types: []\ncredentialz: []", "credentialz"),
        ];
        for (yaml, want) in cases {
            let err = Classifier::parse(yaml).expect_err(yaml);
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }

    #[test]
    fn env_markers_need_a_non_empty_value_or_the_exact_pair() {
        let c = table("agent_types: [{name: a, env: [CLAUDECODE]}, {name: b, env: [MODE=agent]}]");
        assert_eq!(
            c.classify(&facts("/x", "x", &["CLAUDECODE=1"])),
            known("a", Signal::Env)
        );
        assert_eq!(c.classify(&facts("/x", "x", &["CLAUDECODE="])), None);
        assert_eq!(c.classify(&facts("/x", "x", &["XCLAUDECODE=1"])), None);
        assert_eq!(
            c.classify(&facts("/x", "x", &["MODE=agent"])),
            known("b", Signal::Env)
        );
        assert_eq!(c.classify(&facts("/x", "x", &["MODE=agents"])), None);
    }

    #[test]
    fn argv_patterns_match_the_whole_command_line() {
        let c =
            table("agent_types: [{name: aider, argv: ['python* -m aider*', '*/aider-chat/*']}]");
        let yes = [
            "python3 -m aider --model x",
            "python -m aider",
            "node /a/aider-chat/b",
        ];
        for cmd in yes {
            assert_eq!(
                c.classify(&facts("/usr/bin/python3", cmd, &[])),
                known("aider", Signal::Argv),
                "{cmd}"
            );
        }
        for cmd in ["xpython -m aider", "python3 -m pip", "python3 -maider"] {
            assert_eq!(
                c.classify(&facts("/usr/bin/python3", cmd, &[])),
                None,
                "{cmd}"
            );
        }
        assert!(wildcard(b"a?c", b"abc") && !wildcard(b"a?c", b"ac"));
        assert!(wildcard(b"*x*", b"axb") && !wildcard(b"*x*", b"ab"));
    }

    #[test]
    fn executables_match_by_path_or_file_name() {
        let c = table("agent_types: [{name: a, executables: [claude, /opt/x/bin/agent]}]");
        for exe in ["/home/u/.local/bin/claude", "/opt/x/bin/agent"] {
            assert_eq!(
                c.classify(&facts(exe, "", &[])),
                known("a", Signal::Executable)
            );
        }
        assert_eq!(c.classify(&facts("/usr/bin/claude-x", "", &[])), None);
        assert_eq!(c.classify(&facts("/tmp/agent", "", &[])), None);
    }

    #[test]
    fn digests_beat_other_signals_and_credentials_flag_the_unknown() {
        let digest = "AB".repeat(32);
        let c = table(&format!(
            "agent_types:\n  - {{name: a, env: [A_MARK]}}\n  - {{name: b, sha256: ['{digest}']}}\ncredentials: [OPENAI_API_KEY]\n"
        ));
        let mut f = facts("/x", "x", &["A_MARK=1"]);
        f.sha256 = Some([0xab; 32]);
        assert_eq!(c.classify(&f), known("b", Signal::Sha256));
        f.sha256 = Some([0xac; 32]);
        assert_eq!(c.classify(&f), known("a", Signal::Env));
        let unknown = facts("/x", "x", &["OPENAI_API_KEY=sk-1"]);
        assert_eq!(c.classify(&unknown), Some(Class::Unregistered));
        assert_eq!(c.classify(&facts("/x", "x", &["OPENAI_API_KEY="])), None);
        assert!(c.wants_digests());
    }

    #[test]
    fn homes_are_root_and_regular_users() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
                      alice:x:1000:1000:Alice:/home/alice/:/bin/bash\n\
                      bob:x:1001:1001::/srv/bob:/bin/sh\n\
                      odd:x:1002:1002::/home/o*d:/bin/sh\n\
                      nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n\
                      broken line\n";
        assert_eq!(
            homes_from_passwd(passwd),
            ["/root", "/home/alice", "/srv/bob"]
        );
    }

    #[test]
    fn installed_finds_existing_absolute_paths_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("agent");
        std::fs::write(&exe, "").expect("write");
        let t = AgentType {
            name: "t".into(),
            executables: vec![
                exe.display().to_string(),
                dir.path().join("absent").display().to_string(),
            ],
            sha256: Vec::new(),
            argv: Vec::new(),
            env: Vec::new(),
        };
        let found = t.installed(&[]);
        assert_eq!(found, [exe.canonicalize().expect("canonical")]);
    }
}
