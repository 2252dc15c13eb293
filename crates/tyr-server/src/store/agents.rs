//! Daemons (enrolled hosts, "agents" in the API) and the AI agents they discover.

use super::events::RowOptExt;
use super::{RowExt, Store, StoreError, StoreResult, conflict_or, on_pool, time::now_ms};

/// An enrolled daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub kernel_version: String,
    pub arch: String,
    /// `lsm`, `tracepoint` or `observe`, once reported.
    pub tier: Option<String>,
    /// The last capability report, as JSON.
    pub capabilities: Option<String>,
    pub enrollment_token_id: Option<String>,
    pub cert_serial: String,
    pub cert_fingerprint: String,
    pub cert_not_after: i64,
    /// Last heartbeat or message (unix ms).
    pub last_seen: Option<i64>,
    pub revoked: bool,
    pub revoked_at: Option<i64>,
    /// Stored events with drift.
    pub drift_count: i64,
    /// Events the daemon reported lost (gap records, SPEC §9).
    pub events_lost: i64,
    /// Gap records received.
    pub gap_records: i64,
    /// When the last gap record was received (unix ms).
    pub last_gap_at: Option<i64>,
    pub created_at: i64,
}

/// What registration knows about a new daemon.
#[derive(Debug, Clone, Copy)]
pub struct NewDaemon<'a> {
    /// The `agent_id` put in the client certificate.
    pub id: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub kernel_version: &'a str,
    pub arch: &'a str,
    pub enrollment_token_id: Option<&'a str>,
    pub cert_serial: &'a str,
    pub cert_fingerprint: &'a str,
    pub cert_not_after: i64,
}

/// A discovered AI agent (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredAgent {
    pub id: String,
    pub daemon_id: String,
    pub agent_type: String,
    pub display_name: String,
    pub process_signature: String,
    pub pids: Vec<u32>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub archived: bool,
    pub merged_into: Option<String>,
}

/// A daemon's report of one discovered agent.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveredUpdate<'a> {
    /// Assigned by the daemon, stable for the same process signature.
    pub id: &'a str,
    pub agent_type: &'a str,
    pub display_name: &'a str,
    pub process_signature: &'a str,
    pub pids: &'a [u32],
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Outcome of [`Store::merge_discovered_agent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    Merged,
    /// The agent or its target does not exist.
    NotFound,
    /// Merging into itself, or into an agent that was itself merged.
    Invalid,
}

const DAEMON_COLS: &str = "id, name, hostname, kernel_version, arch, tier, capabilities, enrollment_token_id, cert_serial, cert_fingerprint, cert_not_after, last_seen, revoked, revoked_at, drift_count, events_lost, gap_records, last_gap_at, created_at";
const DISCOVERED_COLS: &str = "id, daemon_id, agent_type, display_name, process_signature, pids, first_seen, last_seen, archived, merged_into";

fn daemon_from<R: RowExt + RowOptExt>(r: &R) -> Result<Daemon, sqlx::Error> {
    Ok(Daemon {
        id: r.text("id")?,
        name: r.text("name")?,
        hostname: r.text("hostname")?,
        kernel_version: r.text("kernel_version")?,
        arch: r.text("arch")?,
        tier: r.opt_text("tier")?,
        capabilities: r.opt_text("capabilities")?,
        enrollment_token_id: r.opt_text("enrollment_token_id")?,
        cert_serial: r.text("cert_serial")?,
        cert_fingerprint: r.text("cert_fingerprint")?,
        cert_not_after: r.int("cert_not_after")?,
        last_seen: r.opt_int("last_seen")?,
        revoked: r.flag("revoked")?,
        revoked_at: r.opt_int("revoked_at")?,
        drift_count: r.int("drift_count")?,
        events_lost: r.int("events_lost")?,
        gap_records: r.int("gap_records")?,
        last_gap_at: r.opt_int("last_gap_at")?,
        created_at: r.int("created_at")?,
    })
}

fn discovered_from<R: RowExt + RowOptExt>(r: &R) -> Result<DiscoveredAgent, sqlx::Error> {
    Ok(DiscoveredAgent {
        id: r.text("id")?,
        daemon_id: r.text("daemon_id")?,
        agent_type: r.text("agent_type")?,
        display_name: r.text("display_name")?,
        process_signature: r.text("process_signature")?,
        pids: serde_json::from_str(&r.text("pids")?).unwrap_or_default(),
        first_seen: r.int("first_seen")?,
        last_seen: r.int("last_seen")?,
        archived: r.flag("archived")?,
        merged_into: r.opt_text("merged_into")?,
    })
}

impl Store {
    /// Records a newly registered daemon.
    pub async fn create_daemon(&self, d: NewDaemon<'_>) -> StoreResult<Daemon> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO daemons (id, name, hostname, kernel_version, arch, enrollment_token_id, cert_serial, cert_fingerprint, cert_not_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {DAEMON_COLS}"
        ));
        on_pool!(self, p => {
            let row = sqlx::query(sql)
                .bind(d.id).bind(d.name).bind(d.hostname).bind(d.kernel_version).bind(d.arch)
                .bind(d.enrollment_token_id).bind(d.cert_serial).bind(d.cert_fingerprint)
                .bind(d.cert_not_after).bind(now_ms())
                .fetch_one(p).await.map_err(conflict_or)?;
            daemon_from(&row).map_err(StoreError::from)
        })
    }

    /// A daemon by id (revoked ones included).
    pub async fn daemon(&self, id: &str) -> StoreResult<Option<Daemon>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {DAEMON_COLS} FROM daemons WHERE id = $1"));
        on_pool!(self, p => sqlx::query(sql).bind(id).fetch_optional(p).await?
            .map(|r| daemon_from(&r)).transpose().map_err(StoreError::from))
    }

    /// Daemons by name; revoked ones only when asked.
    pub async fn list_daemons(&self, include_revoked: bool) -> StoreResult<Vec<Daemon>> {
        let filter = if include_revoked {
            ""
        } else {
            "WHERE revoked = FALSE"
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DAEMON_COLS} FROM daemons {filter} ORDER BY name, id"
        ));
        on_pool!(self, p => sqlx::query(sql).fetch_all(p).await?
            .iter().map(daemon_from).collect::<Result<_, _>>().map_err(StoreError::from))
    }

    /// Records a heartbeat (or any message) from a live daemon at `at_ms`. `false` when the
    /// daemon is unknown or revoked.
    pub async fn touch_daemon(&self, id: &str, at_ms: i64) -> StoreResult<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE daemons SET last_seen = $1 WHERE id = $2 AND revoked = FALSE",
        )
        .bind(at_ms)
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n > 0)
    }

    /// Stores a capability report: the tier, the kernel and the report as JSON.
    pub async fn set_daemon_capabilities(
        &self,
        id: &str,
        tier: crate::drift::Tier,
        kernel_version: &str,
        capabilities: &serde_json::Value,
    ) -> StoreResult<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE daemons SET tier = $1, kernel_version = $2, capabilities = $3 WHERE id = $4 AND revoked = FALSE",
        )
        .bind(tier.as_str())
        .bind(kernel_version)
        .bind(capabilities.to_string())
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n > 0)
    }

    /// Marks a daemon revoked. `false` when it does not exist; revoking twice is a no-op.
    pub async fn revoke_daemon(&self, id: &str) -> StoreResult<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE daemons SET revoked = TRUE, revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n > 0)
    }

    /// Inserts or refreshes a discovered agent reported by `daemon_id`. A known id keeps its
    /// (possibly admin-edited) type and name; pids and `last_seen` are updated. An id owned by
    /// another daemon is left alone: [`StoreError::Conflict`].
    pub async fn upsert_discovered_agent(
        &self,
        daemon_id: &str,
        u: DiscoveredUpdate<'_>,
    ) -> StoreResult<DiscoveredAgent> {
        let pids =
            serde_json::to_string(u.pids).map_err(|e| StoreError::Internal(e.to_string()))?;
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO discovered_agents (id, daemon_id, agent_type, display_name, process_signature, pids, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET pids = excluded.pids, \
               last_seen = CASE WHEN excluded.last_seen > discovered_agents.last_seen THEN excluded.last_seen ELSE discovered_agents.last_seen END \
             WHERE discovered_agents.daemon_id = excluded.daemon_id \
             RETURNING {DISCOVERED_COLS}"
        ));
        on_pool!(self, p => {
            let row = sqlx::query(sql)
                .bind(u.id).bind(daemon_id).bind(u.agent_type).bind(u.display_name)
                .bind(u.process_signature).bind(pids).bind(u.first_seen).bind(u.last_seen)
                .fetch_optional(p).await.map_err(conflict_or)?
                .ok_or(StoreError::Conflict)?;
            discovered_from(&row).map_err(StoreError::from)
        })
    }

    /// A discovered agent by id.
    pub async fn discovered_agent(&self, id: &str) -> StoreResult<Option<DiscoveredAgent>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DISCOVERED_COLS} FROM discovered_agents WHERE id = $1"
        ));
        on_pool!(self, p => sqlx::query(sql).bind(id).fetch_optional(p).await?
            .map(|r| discovered_from(&r)).transpose().map_err(StoreError::from))
    }

    /// Discovered agents, most recently seen first; archived ones only when asked, and only
    /// of `daemon_id` when given.
    pub async fn list_discovered_agents(
        &self,
        include_archived: bool,
        daemon_id: Option<&str>,
    ) -> StoreResult<Vec<DiscoveredAgent>> {
        let archived = if include_archived {
            "TRUE"
        } else {
            "archived = FALSE"
        };
        let daemon = if daemon_id.is_some() {
            "AND daemon_id = $1"
        } else {
            ""
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DISCOVERED_COLS} FROM discovered_agents WHERE {archived} {daemon} ORDER BY last_seen DESC, id"
        ));
        on_pool!(self, p => {
            let mut q = sqlx::query(sql);
            if let Some(d) = daemon_id {
                q = q.bind(d);
            }
            q.fetch_all(p).await?
                .iter().map(discovered_from).collect::<Result<_, _>>().map_err(StoreError::from)
        })
    }

    /// Renames and/or reclassifies; `None` when the agent does not exist.
    pub async fn edit_discovered_agent(
        &self,
        id: &str,
        display_name: Option<&str>,
        agent_type: Option<&str>,
    ) -> StoreResult<Option<DiscoveredAgent>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE discovered_agents SET display_name = COALESCE($1, display_name), agent_type = COALESCE($2, agent_type) WHERE id = $3 RETURNING {DISCOVERED_COLS}"
        ));
        on_pool!(self, p => sqlx::query(sql).bind(display_name).bind(agent_type).bind(id)
            .fetch_optional(p).await?
            .map(|r| discovered_from(&r)).transpose().map_err(StoreError::from))
    }

    /// Archives an agent; `false` when it does not exist.
    pub async fn archive_discovered_agent(&self, id: &str) -> StoreResult<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE discovered_agents SET archived = TRUE WHERE id = $1",
        )
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n > 0)
    }

    /// Merges `id` into `into`: `id` is archived and points at `into`; its events stay
    /// recorded under its own id.
    pub async fn merge_discovered_agent(&self, id: &str, into: &str) -> StoreResult<MergeOutcome> {
        if id == into {
            return Ok(MergeOutcome::Invalid);
        }
        let (Some(_), Some(target)) = (
            self.discovered_agent(id).await?,
            self.discovered_agent(into).await?,
        ) else {
            return Ok(MergeOutcome::NotFound);
        };
        if target.merged_into.is_some() {
            return Ok(MergeOutcome::Invalid);
        }
        on_pool!(self, p => sqlx::query(
            "UPDATE discovered_agents SET merged_into = $1, archived = TRUE WHERE id = $2",
        )
        .bind(into)
        .bind(id)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(MergeOutcome::Merged)
    }
}
