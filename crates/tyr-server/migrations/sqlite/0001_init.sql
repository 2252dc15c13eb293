-- Tyr schema v1 (SQLite). Times are BIGINT unix milliseconds (UTC); ids are UUID text.
-- Keep in step with ../postgres/0001_init.sql.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'admin')),
    created_at    BIGINT NOT NULL
);

CREATE TABLE enrollment_tokens (
    id         TEXT PRIMARY KEY,
    prefix     TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    label      TEXT NOT NULL,
    max_uses   BIGINT NOT NULL CHECK (max_uses > 0),
    uses       BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    created_by TEXT
);
CREATE INDEX enrollment_tokens_prefix ON enrollment_tokens (prefix);

CREATE TABLE daemons (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    hostname            TEXT NOT NULL,
    kernel_version      TEXT NOT NULL,
    arch                TEXT NOT NULL,
    tier                TEXT,
    capabilities        TEXT,
    enrollment_token_id TEXT REFERENCES enrollment_tokens (id) ON DELETE SET NULL,
    cert_serial         TEXT NOT NULL,
    cert_fingerprint    TEXT NOT NULL,
    cert_not_after      BIGINT NOT NULL,
    last_seen           BIGINT,
    revoked             BOOLEAN NOT NULL DEFAULT FALSE,
    revoked_at          BIGINT,
    drift_count         BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL
);
CREATE INDEX daemons_cert_fingerprint ON daemons (cert_fingerprint);

CREATE TABLE discovered_agents (
    id                TEXT PRIMARY KEY,
    daemon_id         TEXT NOT NULL REFERENCES daemons (id) ON DELETE CASCADE,
    agent_type        TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    process_signature TEXT NOT NULL,
    pids              TEXT NOT NULL DEFAULT '[]',
    first_seen        BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    archived          BOOLEAN NOT NULL DEFAULT FALSE,
    merged_into       TEXT REFERENCES discovered_agents (id) ON DELETE SET NULL,
    UNIQUE (daemon_id, process_signature)
);
CREATE INDEX discovered_agents_type ON discovered_agents (agent_type);

CREATE TABLE policy_versions (
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    yaml       TEXT NOT NULL,
    compiled   TEXT NOT NULL,
    report     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    PRIMARY KEY (name, version)
);

CREATE TABLE policy_assignments (
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    policy      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT,
    PRIMARY KEY (target_type, target_id),
    FOREIGN KEY (policy, version) REFERENCES policy_versions (name, version)
);
CREATE INDEX policy_assignments_policy ON policy_assignments (policy);

CREATE TABLE events (
    event_id            TEXT PRIMARY KEY,
    daemon_id           TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    discovered_agent_id TEXT,
    agent_type          TEXT,
    kind                TEXT NOT NULL,
    resource            TEXT NOT NULL,
    verdict             TEXT NOT NULL,
    enforced            TEXT NOT NULL,
    severity            TEXT,
    policy_version      TEXT,
    rule                TEXT,
    pid                 BIGINT,
    ppid                BIGINT,
    uid                 BIGINT,
    process_exe         TEXT,
    cmdline             TEXT,
    timestamp_ns        BIGINT NOT NULL,
    ts                  BIGINT NOT NULL,
    count               BIGINT NOT NULL DEFAULT 1,
    metadata            TEXT NOT NULL DEFAULT '{}',
    server_verdict      TEXT,
    drift_detected      BOOLEAN NOT NULL DEFAULT FALSE,
    drift_cause         TEXT,
    UNIQUE (daemon_id, seq)
);
CREATE INDEX events_ts ON events (ts, event_id);
CREATE INDEX events_daemon_ts ON events (daemon_id, ts, event_id);
-- Rows without an agent are never found by these two filters: not indexed.
CREATE INDEX events_discovered_ts ON events (discovered_agent_id, ts, event_id)
    WHERE discovered_agent_id IS NOT NULL;
CREATE INDEX events_agent_type_ts ON events (agent_type, ts, event_id) WHERE agent_type IS NOT NULL;
CREATE INDEX events_kind_ts ON events (kind, ts, event_id);
CREATE INDEX events_verdict_ts ON events (verdict, ts, event_id);
-- Drift is rare: only drifted rows are indexed (queries spell `drift_detected = TRUE` for it;
-- `drift_detected = FALSE` matches most rows and walks events_ts).
CREATE INDEX events_drift_ts ON events (ts, event_id) WHERE drift_detected = TRUE;
