//! The LSM tier (SPEC §8): `lsm/file_open`, `lsm/bprm_check_security`, `lsm/path_link`,
//! `lsm/path_rename` and `lsm/socket_connect` return `EPERM` on deny, on top of the
//! tracepoint tier.
//!
//! The LSM programs share every map of the tracepoint tier (through the pins of
//! [`Tracepoints::load_pinned`]): identity stays with the `tp_btf` programs, tables and events
//! are the same. An LSM program only acts on deny (blocked before the operation, reported as
//! `blocked`); allowed and alerted operations are reported by the tracepoint programs, which
//! see only operations that succeeded, so nothing is reported twice.

use std::path::Path;

use aya::programs::Lsm;
use aya::programs::links::FdLink;
use aya::{Btf, Ebpf, EbpfLoader};

use super::probe::{HookStatus, LSM_LIST};
use super::{KernelError, MAPS, Tracepoints, prog_err};

/// The LSM object: the tracepoint object plus the LSM programs (`bpf/lsm.bpf.c`).
pub static LSM_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lsm.bpf.o"));

/// The LSM programs and their hooks.
pub const LSM_PROGRAMS: [(&str, &str); 5] = [
    ("tyr_lsm_file_open", "file_open"),
    ("tyr_lsm_bprm_check", "bprm_check_security"),
    ("tyr_lsm_path_link", "path_link"),
    ("tyr_lsm_path_rename", "path_rename"),
    ("tyr_lsm_socket_connect", "socket_connect"),
];

/// Whether `bpf` is an active LSM (programs attached otherwise are never called).
pub fn bpf_lsm_active() -> Option<bool> {
    std::fs::read_to_string(LSM_LIST)
        .ok()
        .map(|l| l.trim().split(',').any(|m| m == "bpf"))
}

/// The loaded tier: LSM programs over the tracepoint tier, or the tracepoint tier alone.
pub enum Enforcement {
    Lsm(LsmTier),
    Tracepoint(Tracepoints),
}

impl Enforcement {
    /// Loads the tracepoint tier pinned under `dir` (see [`Tracepoints::load_pinned`]), then
    /// tries to add the LSM programs. Falls back to the tracepoint tier alone, with the reason
    /// (`None` when the LSM tier is active).
    pub fn load_pinned(dir: &Path) -> Result<(Self, Option<String>), KernelError> {
        let mut tp = Tracepoints::load_pinned(dir)?;
        Ok(match attach_lsm(dir) {
            Ok(ebpf) => {
                tp.lsm_refuses_at_entry()?;
                (Enforcement::Lsm(LsmTier { _ebpf: ebpf, tp }), None)
            }
            Err(reason) => (Enforcement::Tracepoint(tp), Some(reason)),
        })
    }

    /// The tier in force.
    pub fn tier(&self) -> super::probe::Tier {
        match self {
            Enforcement::Lsm(_) => super::probe::Tier::Lsm,
            Enforcement::Tracepoint(_) => super::probe::Tier::Tracepoint,
        }
    }

    /// Tables, identities, counters and events (shared by both tiers).
    pub fn tracepoints(&mut self) -> &mut Tracepoints {
        match self {
            Enforcement::Lsm(lsm) => &mut lsm.tp,
            Enforcement::Tracepoint(tp) => tp,
        }
    }
}

/// The LSM programs attached over a pinned tracepoint tier.
pub struct LsmTier {
    /// Dropped first: the LSM object (its attachments are pinned).
    _ebpf: Ebpf,
    tp: Tracepoints,
}

/// Loads the LSM programs on the maps pinned under `dir/maps`, attaches them and pins the
/// attachments under `dir/links` (replacing earlier ones); else why not, with no LSM
/// attachment left pinned (not even one of a previous daemon).
fn attach_lsm(dir: &Path) -> Result<Ebpf, String> {
    let result = match bpf_lsm_active() {
        Some(true) => load_lsm(dir).map_err(|e| format!("the LSM programs did not load: {e}")),
        _ => Err(format!(
            "`bpf` is not in {LSM_LIST}: LSM programs would never run"
        )),
    };
    if result.is_err() {
        for (name, _) in LSM_PROGRAMS {
            // Absent is the usual case; a pin that cannot be removed is reported by the
            // next load.
            let _ = std::fs::remove_file(dir.join("links").join(name));
        }
    }
    result
}

fn load_lsm(dir: &Path) -> Result<Ebpf, KernelError> {
    let btf = Btf::from_sys_fs()?;
    let maps = dir.join("maps");
    let mut loader = EbpfLoader::new();
    loader.btf(Some(&btf));
    for name in MAPS {
        loader.map_pin_path(name, maps.join(name));
    }
    let mut ebpf = loader.load(LSM_OBJ)?;
    let links = dir.join("links");
    for (name, hook) in LSM_PROGRAMS {
        let prog = lsm_program(&mut ebpf, name)?;
        prog.load(hook, &btf).map_err(prog_err(name))?;
        let id = prog.attach().map_err(prog_err(name))?;
        let link = FdLink::from(prog.take_link(id).map_err(prog_err(name))?);
        let path = links.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        link.pin(path)?;
    }
    Ok(ebpf)
}

fn lsm_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Lsm, KernelError> {
    let prog = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?;
    prog.try_into().map_err(prog_err(name))
}

/// Loads and attaches each LSM program on fresh maps (empty tables: they decide nothing),
/// then detaches it; one status per hook, `lsm/HOOK`. `describe` words a failure.
pub(super) fn probe_programs(
    btf: &Btf,
    describe: impl Fn(&KernelError) -> String,
) -> Vec<HookStatus> {
    let mut ebpf = match EbpfLoader::new().btf(Some(btf)).load(LSM_OBJ) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let e = describe(&e.into());
            return LSM_PROGRAMS
                .iter()
                .map(|(_, hook)| status(hook, Err(e.clone())))
                .collect();
        }
    };
    let mut out = Vec::with_capacity(LSM_PROGRAMS.len());
    for (name, hook) in LSM_PROGRAMS {
        let result = (|| {
            let prog = lsm_program(&mut ebpf, name)?;
            prog.load(hook, btf).map_err(prog_err(name))?;
            let id = prog.attach().map_err(prog_err(name))?;
            prog.detach(id).map_err(prog_err(name))?;
            Ok::<_, KernelError>(verified(prog))
        })();
        out.push(status(hook, result.map_err(|e| describe(&e))));
    }
    out
}

fn verified(prog: &Lsm) -> Option<u32> {
    prog.info()
        .ok()
        .and_then(|i| i.verified_instruction_count())
}

fn status(hook: &str, result: Result<Option<u32>, String>) -> HookStatus {
    HookStatus {
        hook: format!("lsm/{hook}"),
        loaded: result.is_ok(),
        verified_instructions: result.as_ref().ok().copied().flatten(),
        error: result.err(),
    }
}
