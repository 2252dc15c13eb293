#!/usr/bin/env bash
# PostgreSQL settings for an ingest-heavy Tyr server (docs/operations.md), applied to the
# local cluster with ALTER SYSTEM (postgresql.auto.conf) and a restart; `reset` removes them
# again (back to the Debian defaults CI uses); `show` prints what is in effect.
#
#   bench/pg-tune.sh apply|reset|show        # as root; cluster 15/main unless PG_CLUSTER="16 main"
#
# Durability is untouched: fsync, synchronous_commit and full_page_writes stay on, so an
# acknowledged event batch survives a crash.
set -euo pipefail
read -r ver name <<<"${PG_CLUSTER:-15 main}"
# shared_buffers ≈ 1/4 of the 24 GB of RAM; WAL sized so checkpoints come from the timer
# (every 15 min) or every 8 GB of WAL instead of every ~1 GB: far fewer full-page images.
# (WAL may use up to max_wal_size of disk, plus the database itself.)
SETTINGS=(
  "shared_buffers = '6GB'"
  "wal_buffers = '64MB'"
  "max_wal_size = '8GB'"
  "min_wal_size = '1GB'"
  "checkpoint_timeout = '15min'"
  "checkpoint_completion_target = 0.9"
  "wal_compression = 'lz4'"
  "effective_cache_size = '16GB'"
  "maintenance_work_mem = '1GB'"
)
KEYS=("${SETTINGS[@]%% = *}")
port=$(pg_conftool -s "$ver" "$name" show port)
sql() { su postgres -c "psql -X -qAt -p $port -c \"$1\""; }

case "${1:-}" in
apply)
  for s in "${SETTINGS[@]}"; do sql "ALTER SYSTEM SET $s"; done
  pg_ctlcluster "$ver" "$name" restart ;;
reset)
  for k in "${KEYS[@]}"; do sql "ALTER SYSTEM RESET $k"; done
  pg_ctlcluster "$ver" "$name" restart ;;
show) ;;
*) echo "usage: $0 apply|reset|show" >&2; exit 2 ;;
esac
for k in "${KEYS[@]}" fsync synchronous_commit full_page_writes; do
  echo "$k = $(sql "SHOW $k")"
done
