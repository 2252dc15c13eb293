#!/usr/bin/env bash
# The Tyr quickstart on a fresh machine of this kind: builds everything, then shows the policy
# engine deciding requests offline with the example policies.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

echo "==> building"
cargo build --workspace --locked --quiet
tyr=target/debug/tyr

echo "==> validating the example policies"
for f in examples/policies/*.yaml; do "$tyr" policy validate -f "$f" | head -1; done

echo "==> deciding requests with strict-base + the claude-code overlay"
for req in "file_read /home/alice/.ssh/id_rsa" "file_read /home/alice/src/app/main.rs" \
           "exec /usr/bin/sudo" "file_write /srv/app/.env.local"; do
  set -- $req
  printf '%-11s %-38s -> ' "$1" "$2"
  "$tyr" policy eval -f examples/policies/strict-base.yaml \
    --overlay examples/policies/claude-code.yaml --agent-type claude-code \
    --action "$1" --resource "$2"
done
