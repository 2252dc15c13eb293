#!/usr/bin/env bash
# Runs every Tyr test on a fresh machine of this kind: installs what the tests need, starts
# PostgreSQL, checks formatting and lints, then runs all test suites in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

start_postgres
export CARGO_TERM_COLOR=never

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi
