#!/usr/bin/env bash
# The Tyr quickstart on a fresh machine of this kind (as root): builds everything, starts
# tyr-server on https://127.0.0.1:7701 with its own CA, creates the first admin, logs the `tyr`
# CLI in, enrolls a tyrd on this host (kernel enforcement), assigns the Claude Code overlay,
# and shows a stand-in agent killed when it reads ~/.ssh, with the DENY in `tyr audit tail`.
# Server and daemon keep running; `kill $(cat $TYR_DATA_DIR/*.pid)` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

export TYR_DATA_DIR=${TYR_DATA_DIR:-/var/lib/tyr-quickstart}
export TYR_REST_BIND=${TYR_REST_BIND:-127.0.0.1:7701}
export TYR_GRPC_BIND=${TYR_GRPC_BIND:-127.0.0.1:7700}
server_url="https://$TYR_REST_BIND"
export TYR_CONFIG_DIR=${TYR_CONFIG_DIR:-$HOME/.config/tyr}

need_packages curl ca-certificates clang llvm libbpf-dev

echo "==> building"
cargo build --workspace --locked --quiet
tyr=$PWD/target/debug/tyr

echo "==> starting tyr-server ($server_url, data in $TYR_DATA_DIR)"
if [ -f "$TYR_DATA_DIR/server.pid" ] && kill -0 "$(cat "$TYR_DATA_DIR/server.pid")" 2>/dev/null; then
  kill "$(cat "$TYR_DATA_DIR/server.pid")"
  while kill -0 "$(cat "$TYR_DATA_DIR/server.pid")" 2>/dev/null; do sleep 0.2; done
fi
mkdir -p "$TYR_DATA_DIR" && chmod 700 "$TYR_DATA_DIR"
for pidfile in "$TYR_DATA_DIR/tyrd.pid"; do
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"
    while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.2; done
  fi
done
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

echo "==> enrolling tyrd on this host"
state_dir="$TYR_DATA_DIR/tyrd"
if [ ! -f "$state_dir/agent_id" ]; then
  token=$("$tyr" enrollment-token create --label quickstart --max-uses 1 --expires-hours 1 2>/dev/null)
  mkdir -p "$state_dir" && chmod 700 "$state_dir"
  cat >"$TYR_DATA_DIR/tyrd.yaml" <<YAML
server: $TYR_GRPC_BIND
name: $(hostname)-quickstart
ca_file: $TYR_DATA_DIR/ca.pem
enrollment_token: $token
state_dir: $state_dir
YAML
  chmod 600 "$TYR_DATA_DIR/tyrd.yaml"
fi
nohup target/debug/tyrd --config "$TYR_DATA_DIR/tyrd.yaml" run >"$TYR_DATA_DIR/tyrd.log" 2>&1 &
echo $! >"$TYR_DATA_DIR/tyrd.pid"
for _ in $(seq 1 150); do
  "$tyr" agent list 2>/dev/null | grep -q "$(hostname)-quickstart.*online" && break
  kill -0 "$(cat "$TYR_DATA_DIR/tyrd.pid")" 2>/dev/null || { cat "$TYR_DATA_DIR/tyrd.log"; exit 1; }
  sleep 0.2
done
"$tyr" agent list

echo "==> assigning the claude-code overlay (denies reading ~/.ssh)"
version=$("$tyr" -o json policy apply -f examples/policies/claude-code.yaml | grep -o '"version": *[0-9]*' | grep -o '[0-9]*$')
"$tyr" policy assign --target-type agent_type --target-id claude-code --policy claude-code --version "$version"

echo "==> a stand-in agent (a renamed cat, launched as claude-code) reads ~/.ssh"
canary="$HOME/.ssh/tyr-quickstart-canary"
mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"
echo "a harmless file the quickstart protects" >"$canary"
cp /bin/cat "$TYR_DATA_DIR/stand-in-agent"
"$tyr" audit tail --verdict DENY >"$TYR_DATA_DIR/tail.log" 2>&1 &
tail_pid=$!
# The daemon applies the pushed overlay asynchronously: retry until the read is refused.
status=
for _ in $(seq 1 50); do
  # (in a command substitution, so bash prints no "Killed" job notice of its own)
  status=$( { "$tyr" run --agent-type claude-code -- "$TYR_DATA_DIR/stand-in-agent" "$canary" \
    >/dev/null 2>&1; } 2>/dev/null; echo $? )
  [ "$status" = 137 ] && break
  sleep 0.2
done
echo "stand-in agent exit status: $status (137 = killed by the kernel)"
for _ in $(seq 1 100); do grep -q "tyr-quickstart-canary" "$TYR_DATA_DIR/tail.log" && break; sleep 0.1; done
kill "$tail_pid" 2>/dev/null || true
echo "tyr audit tail --verdict DENY:"
grep "tyr-quickstart-canary" "$TYR_DATA_DIR/tail.log" | head -3
[ "$status" = 137 ] || { echo "quickstart: the stand-in agent was not stopped" >&2; exit 1; }

echo
echo "tyr-server (pid $(cat "$TYR_DATA_DIR/server.pid")) and tyrd (pid $(cat "$TYR_DATA_DIR/tyrd.pid")) are running; logs in $TYR_DATA_DIR."
echo "The CLI is logged in as admin: try \`$tyr agent list\` or \`$tyr enrollment-token list\`."
