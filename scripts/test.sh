#!/usr/bin/env bash
# Runs every Tyr test on a fresh machine of this kind: installs what the tests need, starts
# PostgreSQL, checks formatting and lints, then runs all test suites in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

start_postgres
# BPF programs (clang, libbpf headers) and the LSM-tier guest under QEMU (tests/vm/).
need_packages clang llvm libbpf-dev busybox-static xz-utils qemu-system-x86
tests/vm/fetch-kernel.sh >/dev/null
export CARGO_TERM_COLOR=never

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first: nextest's summary line must close the run.
  cargo test --workspace --locked --doc
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
