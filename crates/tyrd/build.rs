//! Compiles the BPF programs in `bpf/` with clang into `OUT_DIR` (embedded by `kernel`).

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: [&str; 2] = ["tyr", "lsm"];
const INSTALL: &str = "install the Debian/Ubuntu packages `clang llvm libbpf-dev`";

fn main() {
    let bpf = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
        .join("bpf");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let clang = std::env::var("TYR_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=TYR_CLANG");
    for file in ["tyr_maps.h", "vmlinux.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(file).display());
    }
    for name in PROGRAMS {
        compile(
            &clang,
            &bpf,
            &bpf.join(format!("{name}.bpf.c")),
            &out.join(format!("{name}.bpf.o")),
        );
    }
}

fn compile(clang: &str, include: &Path, src: &Path, obj: &Path) {
    println!("cargo:rerun-if-changed={}", src.display());
    let output = Command::new(clang)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
        ])
        .arg("-I")
        .arg(include)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `{clang}` ({e}): the BPF programs of tyrd are compiled with clang; {INSTALL}"
        ),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("bpf/bpf_helpers.h") {
            "the libbpf headers are missing: install `libbpf-dev`"
        } else {
            "fix the BPF C source"
        };
        panic!("clang failed on {} ({hint}):\n{stderr}", src.display());
    }
}
