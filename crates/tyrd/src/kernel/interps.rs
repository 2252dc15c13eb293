//! The interpreters and loaders whose read opens are also decided as exec (`sh script`,
//! `python3 script`, `ld.so ./prog`): the kernel sees only the interpreter's exec, then the
//! script's open.

use std::path::{Path, PathBuf};

/// Directories searched for interpreters.
const DIRS: [&str; 5] = ["/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin", "/sbin"];

/// Interpreter names (exact), or name prefixes ending in `*` (`python3.12`).
const NAMES: [&str; 20] = [
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "fish",
    "busybox",
    "python*",
    "perl*",
    "ruby*",
    "node",
    "nodejs",
    "deno",
    "bun",
    "php*",
    "lua*",
    "tclsh*",
    "Rscript",
    "osascript",
];

/// Dynamic loaders (run directly as `ld.so ./prog`).
const LOADERS: [&str; 5] = [
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux.so.2",
    "/lib/ld-musl-x86_64.so.1",
    "/lib/ld-musl-aarch64.so.1",
];

fn is_interpreter(name: &str) -> bool {
    NAMES.iter().any(|n| match n.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *n,
    })
}

/// The canonical paths of the interpreters and loaders installed here, without duplicates.
pub fn installed() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: &Path| {
        if let Ok(real) = p.canonicalize()
            && real.is_file()
            && !out.contains(&real)
        {
            out.push(real);
        }
    };
    for dir in DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(is_interpreter) {
                add(&entry.path());
            }
        }
    }
    for loader in LOADERS {
        add(Path::new(loader));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_names_match_exactly_or_by_prefix() {
        for name in ["sh", "bash", "python3", "python3.12", "perl5.36", "node"] {
            assert!(is_interpreter(name), "{name}");
        }
        for name in ["ssh", "shred", "nodemon", "cat", "bashbug2"] {
            assert!(!is_interpreter(name), "{name}");
        }
    }

    #[test]
    fn the_shell_is_found_canonically() {
        let found = installed();
        let sh = Path::new("/bin/sh").canonicalize().expect("/bin/sh");
        assert!(found.contains(&sh), "{found:?}");
        assert!(found.iter().all(|p| p.is_absolute() && p.is_file()));
    }
}
