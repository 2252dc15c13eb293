#!/usr/bin/env bash
# Installs Tyr from a source checkout on a Debian/Ubuntu host (as root).
#   deploy/install.sh server          build and install tyr-server + tyr, enable tyr-server.service
#   deploy/install.sh agent TOKEN CA  build and install tyrd, write /etc/tyr/tyrd.yaml, enable tyr-agent.service
set -euo pipefail
cd "$(dirname "$0")/.."
role=${1:-}
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

build() { cargo build --release --locked -p "$@"; }

case "$role" in
  server)
    build tyr-server -p tyr-cli
    install -m 0755 target/release/tyr-server target/release/tyr /usr/local/bin/
    id tyr >/dev/null 2>&1 || useradd --system --home /var/lib/tyr --shell /usr/sbin/nologin tyr
    install -d -m 0700 -o tyr -g tyr /var/lib/tyr
    install -d -m 0755 /etc/tyr
    install -m 0644 deploy/tyr-server.service /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable --now tyr-server.service
    echo "tyr-server is running; create the first admin with: curl --cacert /var/lib/tyr/ca.pem -d '{\"username\":\"admin\",\"password\":\"…\"}' -H 'content-type: application/json' https://localhost:7701/api/v1/auth/setup"
    ;;
  agent)
    token=${2:?usage: install.sh agent ENROLLMENT_TOKEN CA_FILE [SERVER:PORT]}
    ca=${3:?usage: install.sh agent ENROLLMENT_TOKEN CA_FILE [SERVER:PORT]}
    server=${4:-localhost:7700}
    build tyrd
    install -m 0755 target/release/tyrd /usr/local/bin/
    install -d -m 0755 /etc/tyr
    install -m 0644 "$ca" /etc/tyr/ca.pem
    if [ ! -f /etc/tyr/tyrd.yaml ]; then
      sed -e "s|^server: .*|server: $server|" -e "s|^name: .*|name: $(hostname)|" \
          -e "s|^enrollment_token: .*|enrollment_token: $token|" deploy/tyrd.yaml >/etc/tyr/tyrd.yaml
      chmod 0600 /etc/tyr/tyrd.yaml
    fi
    install -m 0644 deploy/tyr-agent.service /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable --now tyr-agent.service
    ;;
  *)
    sed -n '2,4p' "$0" >&2
    exit 2
    ;;
esac
