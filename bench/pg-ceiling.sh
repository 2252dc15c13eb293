#!/usr/bin/env bash
# PostgreSQL's own insert ceiling for the events table, with no Tyr code at all: rows shaped
# like bench_events' (UUIDv7-like ids, rising timestamps, 20 daemons, 5 kinds, 80/15/5 %
# allow/deny/alert, 3 of 4 with a discovered agent) are generated into an UNLOGGED source
# table, then `INSERT INTO events SELECT … ON CONFLICT DO NOTHING` in transactions of ROWS
# rows, after PREFILL rows, ROUNDS times. Prints rows/s per round. Run as root.
#
#   bench/pg-ceiling.sh current|slim|minimal [PREFILL=500000 ROWS=100000 ROUNDS=3]
#
# CONFLICT= (empty) inserts without `ON CONFLICT DO NOTHING`, as tyr-server does for a batch
# of new rows; EVENT_ID=uuid stores event_id as the uuid type (16 bytes) instead of text.
# TS_STEP=259 spreads the rows 259 ms apart (10 M rows over 30 days, as bench_events does);
# with KEEP=1 the database stays for EXPLAIN ANALYZE of the event queries.
# Index sets: `current` = PostgreSQL migrations 0001-0002, `slim` = after 0003, `minimal` =
# the primary key, (daemon_id, seq) and (ts, event_id) only (no SPEC §10 filter indexed).
# Uses a scratch database `tyr_pg_ceiling` (dropped and recreated) as the postgres user.
set -euo pipefail
set_=${1:?usage: pg-ceiling.sh current|slim|minimal}
PREFILL=${PREFILL:-500000}
ROWS=${ROWS:-100000}
ROUNDS=${ROUNDS:-3}
case "${EVENT_ID:-text}" in uuid) ID_TYPE=uuid ;; *) ID_TYPE='TEXT COLLATE "C"' ;; esac
db=tyr_pg_ceiling
psql_() { su postgres -c "psql -X -q -v ON_ERROR_STOP=1 -d $db $*"; }

su postgres -c "dropdb --if-exists $db && createdb $db"

# The events table and its indexes come from the server's own migrations (one home for the
# schema): `current` = 0001's events indexes, `slim` = those then 0003, `minimal` = (ts, event_id).
mig="$(cd "$(dirname "$0")/.." && pwd)/crates/tyr-server/migrations/postgres"
table=$(sed -n '/^CREATE TABLE events (/,/^);/p' "$mig/0001_init.sql" |
  sed "s/^\(    event_id  *\)TEXT COLLATE \"C\" PRIMARY KEY,/\1$ID_TYPE PRIMARY KEY,/")
events_indexes=$(awk '/^CREATE INDEX events_/ { on = 1 } on { print } on && /;$/ { on = 0 }' "$mig/0001_init.sql")
case "$set_" in
current) idx=$events_indexes ;;
slim) idx="$events_indexes
$(cat "$mig/0003_slim_event_indexes.sql")" ;;
minimal) idx="CREATE INDEX events_ts ON events (ts, event_id);" ;;
*) echo "unknown index set: $set_" >&2; exit 2 ;;
esac

COLS="event_id, daemon_id, seq, discovered_agent_id, agent_type, kind, resource, verdict, enforced,
  severity, policy_version, rule, pid, ppid, uid, process_exe, cmdline, timestamp_ns, ts, count, metadata,
  server_verdict, drift_detected, drift_cause"
# Scripts go to psql on its standard input: no file in /tmp for another user to swap.
psql_ <<SQL
$table
$idx
-- Source rows: n-th event, 1 ms apart, ids sorting in time order like UUIDv7.
CREATE UNLOGGED TABLE src AS
SELECT
  substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-8' || substr(r, 4, 3)
    || '-' || substr(r, 7, 12) AS event_id_text,
  'd0000000-0000-4000-8000-0000000000' || lpad((n % 20)::text, 2, '0') AS daemon_id,
  n AS seq,
  CASE WHEN x % 4 = 3 THEN NULL ELSE 'a0000000-0000-4000-8000-0000000000' || lpad((n % 20)::text, 2, '0') || (x % 4) END AS discovered_agent_id,
  (ARRAY['claude-code', 'cursor', 'codex', NULL])[x % 4 + 1] AS agent_type,
  (ARRAY['FILE_READ', 'FILE_WRITE', 'EXEC', 'NET_CONNECT', 'TLS'])[(x / 4) % 5 + 1] AS kind,
  '/home/dev/project' || (x % 40) || '/src/file' || (x / 40 % 5000) || '.rs' AS resource,
  CASE WHEN (x / 20) % 20 < 16 THEN 'ALLOW' WHEN (x / 20) % 20 < 19 THEN 'DENY' ELSE 'ALERT' END AS verdict,
  'none' AS enforced, NULL::text AS severity, 'base=bench@1' AS policy_version, NULL::text AS rule,
  1000 + x % 5000 AS pid, 1::bigint AS ppid, 1000::bigint AS uid,
  '/usr/bin/node' AS process_exe, 'node /opt/agent/cli.js --session 42' AS cmdline,
  ts * 1000000 AS timestamp_ns, ts, 1::bigint AS count, '{}' AS metadata,
  NULL::text AS server_verdict, FALSE AS drift_detected, NULL::text AS drift_cause
FROM (
  SELECT n, ts, lpad(to_hex(ts), 12, '0') AS h, md5(n::text) AS r,
         ((n * 2654435761) % 4294967291) AS x
  FROM (SELECT n, 1700000000000 + n::bigint * ${TS_STEP:-1} AS ts FROM generate_series(1, $PREFILL + $ROWS * $ROUNDS) n) g
) s;
CREATE INDEX ON src (seq);
ALTER TABLE src ADD COLUMN event_id $ID_TYPE;
UPDATE src SET event_id = event_id_text::$ID_TYPE;
VACUUM src;
ALTER TABLE src DROP COLUMN event_id_text;
CREATE VIEW srcv AS SELECT $COLS FROM src;
INSERT INTO events SELECT * FROM srcv WHERE seq <= $PREFILL;
CHECKPOINT;
SQL

nidx=$(psql_ -Atc "\"SELECT count(*) FROM pg_indexes WHERE tablename = 'events'\"")
echo "index set $set_, event_id ${EVENT_ID:-text}: $nidx B-trees; shared_buffers $(psql_ -Atc "'SHOW shared_buffers'"), max_wal_size $(psql_ -Atc "'SHOW max_wal_size'"), wal_compression $(psql_ -Atc "'SHOW wal_compression'"); load $(cut -d' ' -f1-3 /proc/loadavg)"
# Each round in one session: wall time, and the CPU time (user + system) of its server
# process from /proc, which other load on the machine does not inflate.
for i in $(seq 1 "$ROUNDS"); do
  lo=$((PREFILL + (i - 1) * ROWS))
  hi=$((lo + ROWS))
  psql_ <<SQL | awk -v n="$ROWS" -v i="$i" -v hz="$(getconf CLK_TCK)" '
    { v[$1] = $2 }
    END {
      w = v["wall1"] - v["wall0"]; c = (v["cpu1"] - v["cpu0"]) / hz
      printf "round %d: %d rows in %.2f s = %.0f rows/s; server CPU %.2f s = %.1f us/row\n",
        i, n, w, n / w, c, c * 1e6 / n
    }'
SELECT pg_backend_pid() AS pid \gset
\setenv PG_CEILING_PID :pid
\! awk '{ print "cpu0", \$14 + \$15 }' /proc/\$PG_CEILING_PID/stat
\! date +'wall0 %s.%N'
INSERT INTO events SELECT * FROM srcv WHERE seq > $lo AND seq <= $hi${CONFLICT- ON CONFLICT DO NOTHING};
\! date +'wall1 %s.%N'
\! awk '{ print "cpu1", \$14 + \$15 }' /proc/\$PG_CEILING_PID/stat
SQL
done
[ -n "${KEEP:-}" ] || su postgres -c "dropdb $db"
