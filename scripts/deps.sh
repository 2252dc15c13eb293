# Shared by scripts/test.sh and scripts/quickstart.sh: install what Tyr needs on a fresh
# Debian 12 machine and start the services the tests use. Idempotent; needs root.

need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Starts the Debian PostgreSQL cluster and exports TYR_TEST_DATABASE_URL for a role that may
# create one database per test.
start_postgres() {
  need_packages postgresql
  local ver
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_lsclusters -h | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main start 2>/dev/null || true
  for _ in $(seq 1 50); do
    su postgres -c "pg_isready -q" && break
    sleep 0.2
  done
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='tyr'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE tyr LOGIN PASSWORD 'tyr' CREATEDB\""
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='tyr_test'\"" | grep -q 1 ||
    su postgres -c "createdb -O tyr tyr_test"
  export TYR_TEST_DATABASE_URL="postgres://tyr:tyr@127.0.0.1:5432/tyr_test"
}
