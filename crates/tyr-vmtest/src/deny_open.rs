//! The `deny_open` BPF LSM program: `file_open` returns `-EPERM` for the files in its map.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aya::maps::HashMap;
use aya::programs::lsm::LsmLinkId;
use aya::programs::{Lsm, ProgramError};
use aya::{Btf, Ebpf};

/// The clang-built CO-RE object of tests/vm/selftest/deny_open.bpf.c.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/deny_open.bpf.o"));

/// `EPERM`, the errno the program returns and the host kernel refuses LSM programs with.
pub const EPERM: i32 = 1;

/// The loaded (not yet attached) program and its map.
pub struct DenyOpen {
    ebpf: Ebpf,
}

impl DenyOpen {
    /// Parses the object, creates the map and loads the program against the running kernel's BTF.
    pub fn load() -> Result<Self, String> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| format!("cannot load the object: {e}"))?;
        let btf = Btf::from_sys_fs().map_err(|e| format!("cannot read the kernel BTF: {e}"))?;
        program(&mut ebpf)?
            .load("file_open", &btf)
            .map_err(|e| format!("cannot load lsm/file_open: {e}"))?;
        Ok(Self { ebpf })
    }

    /// Loads the program and returns the load error the kernel gave, if any.
    pub fn load_error() -> Result<Option<ProgramError>, String> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| format!("cannot load the object: {e}"))?;
        let btf = Btf::from_sys_fs().map_err(|e| format!("cannot read the kernel BTF: {e}"))?;
        Ok(program(&mut ebpf)?.load("file_open", &btf).err())
    }

    /// Denies opening `path` (identified by its filesystem and inode).
    pub fn deny(&mut self, path: &Path) -> Result<(), String> {
        let meta = fs::metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
        let key = [kernel_dev(meta.dev()), meta.ino()];
        let map = self
            .ebpf
            .map_mut("denied_files")
            .ok_or("the object has no map denied_files")?;
        let mut map: HashMap<_, [u64; 2], u8> =
            HashMap::try_from(map).map_err(|e| format!("denied_files: {e}"))?;
        map.insert(key, 1, 0)
            .map_err(|e| format!("cannot insert into denied_files: {e}"))
    }

    /// Attaches the program to the `file_open` hook.
    pub fn attach(&mut self) -> Result<LsmLinkId, String> {
        program(&mut self.ebpf)?
            .attach()
            .map_err(|e| format!("cannot attach lsm/file_open: {e}"))
    }

    /// Detaches the link `attach` returned.
    pub fn detach(&mut self, link: LsmLinkId) -> Result<(), String> {
        program(&mut self.ebpf)?
            .detach(link)
            .map_err(|e| format!("cannot detach lsm/file_open: {e}"))
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Lsm, String> {
    ebpf.program_mut("deny_open")
        .ok_or("the object has no program deny_open")?
        .try_into()
        .map_err(|e| format!("deny_open is not an LSM program: {e}"))
}

/// Converts a userspace `st_dev` to the kernel's internal `dev_t` (`MKDEV`: major << 20 | minor),
/// the form `super_block.s_dev` has.
fn kernel_dev(st_dev: u64) -> u64 {
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    (major << 20) | minor
}

#[cfg(test)]
mod tests {
    use super::kernel_dev;

    #[test]
    fn kernel_dev_uses_the_mkdev_layout() {
        // makedev(8, 1) and makedev(0, 300) as glibc encodes them.
        assert_eq!(kernel_dev(0x801), (8 << 20) | 1);
        assert_eq!(kernel_dev((300 & 0xff) | ((300 & !0xff) << 12)), 300);
        assert_eq!(kernel_dev(0x102c), (16 << 20) | 44);
    }
}
