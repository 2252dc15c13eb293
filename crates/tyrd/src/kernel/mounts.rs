//! The pseudo file systems the kernel side needs: bpffs (pins) and a cgroup v2 hierarchy
//! (`sock_addr` hooks, `tyr run`), mounted when missing.

use super::KernelError;

/// Whether a file system of type `fstype` is mounted at `path`.
fn mounted(fstype: &str, path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines().any(|l| {
                let (pre, post) = l.split_once(" - ").unwrap_or((l, ""));
                pre.split(' ').nth(4) == Some(path) && post.split(' ').next() == Some(fstype)
            })
        })
        .unwrap_or(false)
}

fn mount(fstype: &str, path: &str) -> Result<(), KernelError> {
    let status = std::process::Command::new("mount")
        .args(["-t", fstype, fstype, path])
        .status()
        .map_err(|e| KernelError::Mount(format!("cannot run mount: {e}")))?;
    match status.success() {
        true => Ok(()),
        false => Err(KernelError::Mount(format!(
            "mount -t {fstype} {fstype} {path} failed ({status})"
        ))),
    }
}

/// Mounts bpffs at `/sys/fs/bpf` when it is not mounted there.
pub(super) fn ensure_bpffs() -> Result<(), KernelError> {
    if mounted("bpf", "/sys/fs/bpf") {
        return Ok(());
    }
    mount("bpf", "/sys/fs/bpf")
}

/// The root of a cgroup v2 hierarchy: an existing mount, else one mounted at
/// `/run/tyr/cgroup2`.
pub fn cgroup2_root() -> Result<std::path::PathBuf, KernelError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let found = info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut fields = pre.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (root == "/" && post.split(' ').next() == Some("cgroup2")).then_some(mount_point)
    });
    if let Some(dir) = found {
        return Ok(dir.into());
    }
    let dir = "/run/tyr/cgroup2";
    std::fs::create_dir_all(dir)?;
    mount("cgroup2", dir)?;
    Ok(dir.into())
}
