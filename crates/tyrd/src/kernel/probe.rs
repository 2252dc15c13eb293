//! The enforcement tier of this kernel (SPEC §8), decided by loading programs for real.
//!
//! The LSM programs are loaded, attached (on empty tables) and detached; then every
//! tracepoint-tier program is loaded (verified) but not attached. `lsm` needs both and `bpf`
//! in the active LSM list (the LSM tier runs over the tracepoint tier's identity programs).

use std::io::ErrorKind;

use aya::Btf;
use aya::programs::ProgramError;
use serde::Serialize;

use super::{KernelError, PROGRAMS, load_object, load_program};

/// Where BTF for CO-RE is read.
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
/// The active LSM list.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Enforcement tier (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Lsm,
    Tracepoint,
    Observe,
}

/// One program and whether this kernel accepted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookStatus {
    /// e.g. `lsm/file_open`, `tp_btf/sched_process_exec`, `tp_btf/sys_exit`.
    pub hook: String,
    pub loaded: bool,
    /// Instructions processed by the verifier, when the kernel reports it.
    pub verified_instructions: Option<u32>,
    /// Why it did not load.
    pub error: Option<String>,
}

/// The probe's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    pub tier: Tier,
    /// Why the tier is below `lsm` (empty when it is `lsm`).
    pub reasons: Vec<String>,
    pub btf: bool,
    /// Whether `bpf` is in the active LSM list (`None` when it cannot be read).
    pub bpf_lsm_active: Option<bool>,
    pub hooks: Vec<HookStatus>,
}

/// Probes this kernel.
pub fn probe() -> ProbeReport {
    let mut report = ProbeReport {
        tier: Tier::Observe,
        reasons: Vec::new(),
        btf: std::path::Path::new(BTF_PATH).exists(),
        bpf_lsm_active: std::fs::read_to_string(LSM_LIST)
            .ok()
            .map(|l| l.trim().split(',').any(|m| m == "bpf")),
        hooks: Vec::new(),
    };
    if !report.btf {
        report
            .reasons
            .push(format!("no kernel BTF at {BTF_PATH}: observe only"));
        return report;
    }
    let btf = match Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            report.reasons.push(format!("cannot read kernel BTF: {e}"));
            return report;
        }
    };
    let lsm = super::lsm::probe_programs(&btf, describe);
    let lsm_ok = lsm.iter().all(|h| h.loaded);
    report.hooks.extend(lsm);
    let lsm_reason = match (lsm_ok, report.bpf_lsm_active) {
        (true, Some(true)) => None,
        (true, _) => Some(format!(
            "LSM programs load but `bpf` is not in {LSM_LIST}: they would never run"
        )),
        (false, _) => Some("the kernel refuses BPF LSM programs (see lsm/*)".into()),
    };
    let tracepoints = probe_tracepoints(&btf, &mut report.hooks);
    match tracepoints {
        Ok(true) => match lsm_reason {
            None => report.tier = Tier::Lsm,
            Some(reason) => {
                report.tier = Tier::Tracepoint;
                report.reasons.push(reason);
            }
        },
        Ok(false) => report
            .reasons
            .push("a tracepoint-tier program did not load: observe only".into()),
        Err(e) => report.reasons.push(format!(
            "the tracepoint object did not load ({e}): observe only"
        )),
    }
    report
}

/// A load error in words: EPERM with an empty verifier log means the kernel refuses the
/// program type; a verifier log means the program was rejected.
fn describe(e: &KernelError) -> String {
    if let KernelError::Program {
        source: ProgramError::LoadError {
            io_error,
            verifier_log,
        },
        ..
    } = e
    {
        let log = verifier_log.to_string();
        if io_error.kind() == ErrorKind::PermissionDenied && log.trim().is_empty() {
            return format!("{io_error}: this kernel refuses the program type (or not root)");
        }
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        return format!("{io_error}; verifier: {}", tail.join(" | "));
    }
    e.to_string()
}

/// Loads every tracepoint-tier program; `Ok(false)` when one was refused.
fn probe_tracepoints(btf: &Btf, hooks: &mut Vec<HookStatus>) -> Result<bool, KernelError> {
    let mut ebpf = load_object(btf)?;
    let mut all = true;
    for (name, hook) in PROGRAMS {
        let label = match hook {
            super::Hook::Btf(tp) => format!("tp_btf/{tp}"),
            super::Hook::Cgroup(hook) => format!("cgroup/{hook}"),
        };
        let result = load_program(&mut ebpf, name, hook, btf);
        let verified = ebpf
            .program(name)
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count());
        all &= result.is_ok();
        hooks.push(HookStatus {
            hook: label,
            loaded: result.is_ok(),
            verified_instructions: verified.filter(|_| result.is_ok()),
            error: result.err().map(|e| describe(&e)),
        });
    }
    Ok(all)
}

impl ProbeReport {
    /// The report for people: tier, reasons, one line per hook.
    pub fn human(&self) -> String {
        let tier = match self.tier {
            Tier::Lsm => "lsm",
            Tier::Tracepoint => "tracepoint",
            Tier::Observe => "observe",
        };
        let mut out = format!("tier: {tier}\n");
        for r in &self.reasons {
            out.push_str(&format!("  because: {r}\n"));
        }
        for h in &self.hooks {
            let state = match (&h.error, h.verified_instructions) {
                (Some(e), _) => format!("refused: {e}"),
                (None, Some(n)) => format!("ok ({n} instructions verified)"),
                (None, None) => "ok".into(),
            };
            out.push_str(&format!("  {:<32} {state}\n", h.hook));
        }
        out
    }
}
