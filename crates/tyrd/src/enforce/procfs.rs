//! What `/proc` says about a process, and executable digests cached by file identity.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};

/// Longest command line kept (bytes).
const MAX_CMDLINE: usize = 4096;
/// Largest environment read (bytes).
const MAX_ENVIRON: u64 = 256 * 1024;
/// Digests kept before the cache is cleared.
const MAX_DIGESTS: usize = 4096;

/// The process facts userspace classification and events need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proc {
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Canonical executable path (empty for kernel threads or when unreadable).
    pub exe: String,
    /// Arguments joined by single spaces.
    pub cmdline: String,
    /// Working directory.
    pub cwd: String,
}

/// Reads the facts of `tgid`; `None` when it is gone or is a kernel thread.
pub fn read(tgid: u32) -> Option<Proc> {
    let base = format!("/proc/{tgid}");
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let exe = std::fs::read_link(format!("{base}/exe")).ok()?;
    Some(Proc {
        tgid,
        ppid: field("PPid:").unwrap_or(0),
        uid: field("Uid:").unwrap_or(u32::MAX),
        exe: exe.display().to_string(),
        cmdline: cmdline(tgid),
        cwd: std::fs::read_link(format!("{base}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    })
}

/// The command line of `tgid`, arguments joined by spaces, cut at [`MAX_CMDLINE`] bytes.
pub fn cmdline(tgid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{tgid}/cmdline")) else {
        return String::new();
    };
    let raw = &raw[..raw.len().min(MAX_CMDLINE)];
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.join(" ")
}

/// The `NAME=VALUE` entries of `tgid`'s initial environment (empty when unreadable).
pub fn environ(tgid: u32) -> Vec<String> {
    let mut raw = Vec::new();
    let read = std::fs::File::open(format!("/proc/{tgid}/environ"))
        .and_then(|f| f.take(MAX_ENVIRON).read_to_end(&mut raw));
    if read.is_err() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

/// Start time of `tgid` in clock ticks since boot (field 22 of `stat`).
pub fn start_time(tgid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{tgid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Every process id in `/proc`.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// SHA-256 of executables, cached by (device, inode, mtime, size).
#[derive(Debug, Default)]
pub struct Digests {
    cache: HashMap<(u64, u64, i64, i64, u64), [u8; 32]>,
}

impl Digests {
    /// The digest of the executable of `tgid` (read through `/proc/<tgid>/exe`, so a file
    /// replaced since the exec is not confused with the one running).
    pub fn of(&mut self, tgid: u32) -> Option<[u8; 32]> {
        let path = format!("/proc/{tgid}/exe");
        let mut file = std::fs::File::open(&path).ok()?;
        let m = file.metadata().ok()?;
        let key = (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size());
        if let Some(d) = self.cache.get(&key) {
            return Some(*d);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return None,
            }
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if self.cache.len() >= MAX_DIGESTS {
            self.cache.clear();
        }
        self.cache.insert(key, digest);
        Some(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let p = read(me).expect("this process");
        assert_eq!(p.tgid, me);
        assert!(p.ppid > 0);
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(
            p.exe,
            exe.canonicalize().expect("canonical").display().to_string()
        );
        assert!(!p.cmdline.is_empty());
        assert!(start_time(me).is_some());
        assert!(pids().contains(&me));
        assert!(read(u32::MAX).is_none());
    }

    #[test]
    fn digests_are_cached_by_file_identity() {
        let me = std::process::id();
        let mut d = Digests::default();
        let first = d.of(me).expect("digest");
        assert_eq!(d.cache.len(), 1);
        assert_eq!(d.of(me), Some(first));
        assert_eq!(d.cache.len(), 1);
        let bytes = std::fs::read(format!("/proc/{me}/exe")).expect("exe");
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(first, want);
    }
}
