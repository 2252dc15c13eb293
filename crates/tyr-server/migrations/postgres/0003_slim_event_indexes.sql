-- Fewer and narrower event indexes, for ingest throughput (bench/BENCHMARKS.md, "Server"):
-- every index entry costs an insert a B-tree descent and a WAL record.
-- * The filter indexes key on (column, ts): a page ordered by (ts, event_id) walks one
--   backwards and sorts the few rows sharing a millisecond by event_id (incremental sort);
--   the keyset cursor becomes `ts <= t` on the index plus a filter. Without the 36-byte
--   event_id the entries are less than half as wide, and equal keys are deduplicated.
-- * verdict: only the rare verdicts are indexed. `verdict = 'ALLOW'` (most rows) walks
--   events_ts; queries spell the verdict as a literal so the planner can use this index.
-- events_ts keeps (ts, event_id): the unfiltered listing needs no sort at all.
DROP INDEX events_daemon_ts;
CREATE INDEX events_daemon_ts ON events (daemon_id, ts);
DROP INDEX events_discovered_ts;
CREATE INDEX events_discovered_ts ON events (discovered_agent_id, ts)
    WHERE discovered_agent_id IS NOT NULL;
DROP INDEX events_agent_type_ts;
CREATE INDEX events_agent_type_ts ON events (agent_type, ts) WHERE agent_type IS NOT NULL;
DROP INDEX events_kind_ts;
CREATE INDEX events_kind_ts ON events (kind, ts);
DROP INDEX events_verdict_ts;
CREATE INDEX events_verdict_ts ON events (verdict, ts) WHERE verdict <> 'ALLOW';
DROP INDEX events_drift_ts;
CREATE INDEX events_drift_ts ON events (ts) WHERE drift_detected = TRUE;
