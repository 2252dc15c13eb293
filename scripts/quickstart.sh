#!/usr/bin/env bash
# The Tyr quickstart on a fresh machine of this kind (as root): builds everything, starts
# tyr-server on https://127.0.0.1:7701 with its own CA, creates the first admin, logs the `tyr`
# CLI in, applies the example policies and shows the policy engine deciding requests.
# The server keeps running in the background; `kill $(cat $TYR_DATA_DIR/server.pid)` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

export TYR_DATA_DIR=${TYR_DATA_DIR:-/var/lib/tyr-quickstart}
export TYR_REST_BIND=${TYR_REST_BIND:-127.0.0.1:7701}
export TYR_GRPC_BIND=${TYR_GRPC_BIND:-127.0.0.1:7700}
server_url="https://$TYR_REST_BIND"
export TYR_CONFIG_DIR=${TYR_CONFIG_DIR:-$HOME/.config/tyr}

need_packages curl ca-certificates

echo "==> building"
cargo build --workspace --locked --quiet
tyr=$PWD/target/debug/tyr

echo "==> starting tyr-server ($server_url, data in $TYR_DATA_DIR)"
if [ -f "$TYR_DATA_DIR/server.pid" ] && kill -0 "$(cat "$TYR_DATA_DIR/server.pid")" 2>/dev/null; then
  kill "$(cat "$TYR_DATA_DIR/server.pid")"
  while kill -0 "$(cat "$TYR_DATA_DIR/server.pid")" 2>/dev/null; do sleep 0.2; done
fi
mkdir -p "$TYR_DATA_DIR" && chmod 700 "$TYR_DATA_DIR"
nohup target/debug/tyr-server >"$TYR_DATA_DIR/server.log" 2>&1 &
echo $! >"$TYR_DATA_DIR/server.pid"
for _ in $(seq 1 150); do
  [ -f "$TYR_DATA_DIR/ca.pem" ] &&
    curl -fsS --cacert "$TYR_DATA_DIR/ca.pem" "$server_url/health" >/dev/null 2>&1 && break
  kill -0 "$(cat "$TYR_DATA_DIR/server.pid")" 2>/dev/null || { cat "$TYR_DATA_DIR/server.log"; exit 1; }
  sleep 0.2
done
curl -fsS --cacert "$TYR_DATA_DIR/ca.pem" "$server_url/health"; echo

password_file="$TYR_DATA_DIR/admin-password"
if [ ! -f "$password_file" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 >"$password_file")
fi
password=$(cat "$password_file")
if curl -fsS --cacert "$TYR_DATA_DIR/ca.pem" "$server_url/api/v1/auth/status" | grep -q '"configured":false'; then
  echo "==> creating the first admin (password in $password_file)"
  curl -fsS --cacert "$TYR_DATA_DIR/ca.pem" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$password\"}" "$server_url/api/v1/auth/setup" >/dev/null
fi

echo "==> logging the CLI in"
printf '%s' "$password" | "$tyr" --server "$server_url" --ca "$TYR_DATA_DIR/ca.pem" \
  login --username admin --password-stdin
"$tyr" user list

echo "==> validating the example policies"
for f in examples/policies/*.yaml; do "$tyr" policy validate -f "$f" | head -1; done

echo "==> deciding requests offline with strict-base + the claude-code overlay"
for req in "file_read /home/alice/.ssh/id_rsa" "file_read /home/alice/src/app/main.rs" \
           "exec /usr/bin/sudo" "file_write /srv/app/.env.local" "exec /usr/bin/curl"; do
  set -- $req
  printf '%-11s %-38s -> ' "$1" "$2"
  "$tyr" policy eval -f examples/policies/strict-base.yaml \
    --overlay examples/policies/claude-code.yaml --agent-type claude-code \
    --action "$1" --resource "$2"
done

echo
echo "tyr-server is running (pid $(cat "$TYR_DATA_DIR/server.pid"), log $TYR_DATA_DIR/server.log)."
echo "The CLI is logged in as admin: try \`$tyr agent list\` or \`$tyr enrollment-token list\`."
