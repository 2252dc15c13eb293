//! `tyr-vm-selftest`: proves that tests/vm runs BPF LSM programs for real.
//!
//! - `guest`: in the VM (`TYR_VM_GUEST=1`), attaches `lsm/file_open` denying /tmp/secret and
//!   checks that it is enforced, and that detaching lifts it.
//! - `host-refused`: on the host, checks that the kernel refuses the program with `EPERM`.
//!
//! Prints one `PASS:`/`FAIL:` line per check; exits 1 on the first failure.

mod deny_open;

use std::fs::{self, File};
use std::path::Path;
use std::process::ExitCode;

use aya::programs::ProgramError;
use deny_open::{DenyOpen, EPERM};

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let outcome = match mode.as_str() {
        "guest" => guest(),
        "host-refused" => host_refused(),
        _ => Err("usage: tyr-vm-selftest guest|host-refused".to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            println!("FAIL: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn pass(what: &str) {
    println!("PASS: {what}");
}

fn guest() -> Result<(), String> {
    if std::env::var_os("TYR_VM_GUEST").is_none() {
        return Err("`guest` runs only inside the VM (TYR_VM_GUEST unset)".into());
    }
    let secret = Path::new("/tmp/secret");
    let ok = Path::new("/tmp/ok");
    for path in [secret, ok] {
        fs::write(path, "x").map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }
    let mut prog = DenyOpen::load()?;
    pass("lsm/file_open loaded against the guest BTF");
    prog.deny(secret)?;
    let link = prog.attach()?;
    pass("lsm/file_open attached");
    match File::open(secret) {
        Err(e) if e.raw_os_error() == Some(EPERM) => pass("opening /tmp/secret fails with EPERM"),
        Err(e) => return Err(format!("opening /tmp/secret failed with {e}, not EPERM")),
        Ok(_) => return Err("opening /tmp/secret succeeded while denied".into()),
    }
    File::open(ok).map_err(|e| format!("opening /tmp/ok failed: {e}"))?;
    pass("opening /tmp/ok succeeds");
    prog.detach(link)?;
    File::open(secret).map_err(|e| format!("opening /tmp/secret after detach failed: {e}"))?;
    pass("opening /tmp/secret succeeds after detach");
    Ok(())
}

fn host_refused() -> Result<(), String> {
    match DenyOpen::load_error()? {
        Some(ProgramError::LoadError { io_error, .. })
            if io_error.raw_os_error() == Some(EPERM) =>
        {
            pass("the host kernel refuses lsm/file_open with EPERM");
            Ok(())
        }
        Some(e) => Err(format!(
            "the host kernel refused lsm/file_open, but not with EPERM: {e}"
        )),
        None => Err("the host kernel loaded lsm/file_open: the LSM tier needs no VM here".into()),
    }
}
