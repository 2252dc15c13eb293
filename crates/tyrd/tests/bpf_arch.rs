//! The BPF programs compile for every architecture `build.rs` accepts, not only the host's:
//! the aarch64 CO-RE header must keep up with the C (nothing here runs them).

use std::path::Path;
use std::process::Command;

#[test]
fn bpf_programs_compile_for_x86_64_and_aarch64() {
    let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let out = tempfile::tempdir().expect("tempdir");
    let clang = std::env::var("TYR_CLANG").unwrap_or_else(|_| "clang".into());
    for arch in ["x86", "arm64"] {
        for program in ["tyr", "lsm"] {
            let obj = out.path().join(format!("{program}.{arch}.o"));
            let output = Command::new(&clang)
                .args(["-g", "-O2", "-target", "bpf", "-Wall"])
                .arg(format!("-D__TARGET_ARCH_{arch}"))
                .arg("-I")
                .arg(&bpf)
                .arg("-c")
                .arg(bpf.join(format!("{program}.bpf.c")))
                .arg("-o")
                .arg(&obj)
                .output()
                .expect("clang runs (the build needs it too)");
            assert!(
                output.status.success(),
                "{program}.bpf.c for {arch}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(obj.metadata().expect("object").len() > 0);
        }
    }
}
