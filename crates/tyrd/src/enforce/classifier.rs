//! The agent classification table (`classifier.yaml`, SPEC §7) and the host facts it is
//! resolved against: local home directories and installed executables.
//!
//! TODO: environment markers, argv and parent lineage are not evaluated yet (userspace
//! refinement at exec); only executables and `tyr run` cgroups classify today.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The table shipped with the daemon.
pub const BUILTIN: &str = include_str!("../../classifier.yaml");
/// Environment variable naming a replacement table.
pub const OVERRIDE_ENV: &str = "TYRD_CLASSIFIER";
/// Where bare executable names are looked up (and `~/.local/bin` of each home).
const BIN_DIRS: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// The classification table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classifier {
    pub agent_types: Vec<AgentType>,
}

/// One agent type and how to recognise it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentType {
    pub name: String,
    /// Absolute paths, or bare names looked up in the usual bin directories.
    #[serde(default)]
    pub executables: Vec<String>,
    /// Environment markers (not evaluated yet).
    #[serde(default)]
    pub env: Vec<String>,
}

impl Classifier {
    /// Parses a table; type names must be unique and non-empty.
    pub fn parse(text: &str) -> Result<Classifier, String> {
        let c: Classifier = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        for (i, t) in c.agent_types.iter().enumerate() {
            if t.name.is_empty() || t.name.contains('/') {
                return Err(format!("invalid agent type name {:?}", t.name));
            }
            if c.agent_types[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("agent type {:?} is listed twice", t.name));
            }
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
}

impl AgentType {
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
        assert!(Classifier::parse("agent_types: [{name: a}, {name: a}]").is_err());
        assert!(Classifier::parse("agent_types: [{name: a, bogus: 1}]").is_err());
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
                "rel/path".into(),
            ],
            env: Vec::new(),
        };
        let found = t.installed(&[]);
        assert_eq!(found, [exe.canonicalize().expect("canonical")]);
    }
}
