-- Events a daemon reported lost (SPEC §9 gap records): running totals on the daemon, and the
-- gap records received, so a resent gap is not counted twice and a spool-full gap that took
-- older gap records with it only adds what they did not already count.
ALTER TABLE daemons ADD COLUMN events_lost BIGINT NOT NULL DEFAULT 0;
ALTER TABLE daemons ADD COLUMN gap_records BIGINT NOT NULL DEFAULT 0;
ALTER TABLE daemons ADD COLUMN last_gap_at BIGINT;

CREATE TABLE daemon_gaps (
    daemon_id   TEXT NOT NULL REFERENCES daemons (id) ON DELETE CASCADE,
    first_seq   BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL,
    dropped     BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    noticed_at  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (daemon_id, first_seq, last_seq)
);
