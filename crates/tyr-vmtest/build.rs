//! Compiles the self-test BPF program (tests/vm/selftest) with clang into `OUT_DIR`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let src = root.join("tests/vm/selftest/deny_open.bpf.c");
    let include = root.join("crates/tyrd/bpf");
    let obj = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("deny_open.bpf.o");
    let clang = std::env::var("TYR_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=TYR_CLANG");
    println!("cargo:rerun-if-changed={}", src.display());
    println!(
        "cargo:rerun-if-changed={}",
        include.join("vmlinux.h").display()
    );
    let output = Command::new(&clang)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-I",
        ])
        .arg(&include)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{clang}` ({e}): install the Debian packages `clang llvm libbpf-dev`"
            )
        });
    assert!(
        output.status.success(),
        "clang failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
