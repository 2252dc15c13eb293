//! Policy versions (immutable, numbered per name from 1) and assignments.

use super::events::RowOptExt;
use super::{RowExt, Store, StoreError, StoreResult, on_pool, time::now_ms};

/// Attempts at numbering a new version when concurrent applies race for the same number.
const VERSION_RETRIES: usize = 16;

/// One stored version of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub name: String,
    pub version: i64,
    pub yaml: String,
    /// JSON: `{"policy": <parsed Policy>, "tables": <kernel tables or null>}`.
    pub compiled: String,
    /// JSON: the per-rule enforcement report.
    pub report: String,
    pub created_at: i64,
    pub created_by: Option<String>,
}

/// A version without its documents (listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub name: String,
    pub version: i64,
    pub created_at: i64,
    pub created_by: Option<String>,
    /// Number of versions of this policy (listing of latest versions only; else 0).
    pub versions: i64,
}

/// What a new version stores.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub name: &'a str,
    pub yaml: &'a str,
    pub compiled: &'a str,
    pub report: &'a str,
    pub created_by: Option<&'a str>,
}

/// A policy version bound to a daemon (base) or an agent type (overlay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// `daemon` or `agent_type`.
    pub target_type: String,
    pub target_id: String,
    pub policy: String,
    pub version: i64,
    pub created_at: i64,
    pub created_by: Option<String>,
}

fn info_from<R: RowExt + RowOptExt>(r: &R, with_count: bool) -> Result<VersionInfo, sqlx::Error> {
    Ok(VersionInfo {
        name: r.text("name")?,
        version: r.int("version")?,
        created_at: r.int("created_at")?,
        created_by: r.opt_text("created_by")?,
        versions: if with_count { r.int("versions")? } else { 0 },
    })
}

fn assignment_from<R: RowExt + RowOptExt>(r: &R) -> Result<Assignment, sqlx::Error> {
    Ok(Assignment {
        target_type: r.text("target_type")?,
        target_id: r.text("target_id")?,
        policy: r.text("policy")?,
        version: r.int("version")?,
        created_at: r.int("created_at")?,
        created_by: r.opt_text("created_by")?,
    })
}

const ASSIGNMENT_COLS: &str = "target_type, target_id, policy, version, created_at, created_by";

impl Store {
    /// Stores the next version of `v.name` and returns its number. Concurrent applies of the
    /// same name get distinct, consecutive numbers (the primary key refuses a duplicate and
    /// the loser renumbers).
    pub async fn insert_policy_version(&self, v: NewVersion<'_>) -> StoreResult<i64> {
        for _ in 0..VERSION_RETRIES {
            let res = on_pool!(self, p => sqlx::query(
                "INSERT INTO policy_versions (name, version, yaml, compiled, report, created_at, created_by) \
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6 FROM policy_versions WHERE name = $7 \
                 RETURNING version",
            )
            .bind(v.name).bind(v.yaml).bind(v.compiled).bind(v.report).bind(now_ms())
            .bind(v.created_by).bind(v.name)
            .fetch_one(p)
            .await
            .and_then(|r| r.int("version")));
            match res {
                Ok(version) => return Ok(version),
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => continue,
                Err(e) => return Err(StoreError::Db(e)),
            }
        }
        Err(StoreError::Conflict)
    }

    /// One version with its documents.
    pub async fn policy_version(
        &self,
        name: &str,
        version: i64,
    ) -> StoreResult<Option<PolicyVersion>> {
        on_pool!(self, p => sqlx::query(
            "SELECT name, version, yaml, compiled, report, created_at, created_by FROM policy_versions WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(p)
        .await?
        .map(|r| Ok::<_, sqlx::Error>(PolicyVersion {
            name: r.text("name")?,
            version: r.int("version")?,
            yaml: r.text("yaml")?,
            compiled: r.text("compiled")?,
            report: r.text("report")?,
            created_at: r.int("created_at")?,
            created_by: r.opt_text("created_by")?,
        }))
        .transpose()
        .map_err(StoreError::from))
    }

    /// The versions of `name`, oldest first (empty when there is no such policy).
    pub async fn policy_versions(&self, name: &str) -> StoreResult<Vec<VersionInfo>> {
        on_pool!(self, p => sqlx::query(
            "SELECT name, version, created_at, created_by FROM policy_versions WHERE name = $1 ORDER BY version",
        )
        .bind(name)
        .fetch_all(p)
        .await?
        .iter()
        .map(|r| info_from(r, false))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from))
    }

    /// The latest version of every policy, by name.
    pub async fn latest_policies(&self) -> StoreResult<Vec<VersionInfo>> {
        on_pool!(self, p => sqlx::query(
            "SELECT v.name, v.version, v.created_at, v.created_by, m.versions FROM policy_versions v \
             JOIN (SELECT name, MAX(version) AS latest, COUNT(*) AS versions FROM policy_versions GROUP BY name) m \
             ON v.name = m.name AND v.version = m.latest ORDER BY v.name",
        )
        .fetch_all(p)
        .await?
        .iter()
        .map(|r| info_from(r, true))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from))
    }

    /// Binds `target` to a version, replacing its previous assignment.
    pub async fn assign_policy(
        &self,
        target_type: &str,
        target_id: &str,
        policy: &str,
        version: i64,
        created_by: Option<&str>,
    ) -> StoreResult<Assignment> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO policy_assignments ({ASSIGNMENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (target_type, target_id) DO UPDATE SET policy = excluded.policy, version = excluded.version, \
             created_at = excluded.created_at, created_by = excluded.created_by RETURNING {ASSIGNMENT_COLS}"
        ));
        on_pool!(self, p => {
            let row = sqlx::query(sql)
                .bind(target_type).bind(target_id).bind(policy).bind(version).bind(now_ms()).bind(created_by)
                .fetch_one(p).await?;
            assignment_from(&row).map_err(StoreError::from)
        })
    }

    /// Every assignment, by target.
    pub async fn list_assignments(&self) -> StoreResult<Vec<Assignment>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLS} FROM policy_assignments ORDER BY target_type, target_id"
        ));
        on_pool!(self, p => sqlx::query(sql).fetch_all(p).await?
            .iter().map(assignment_from).collect::<Result<_, _>>().map_err(StoreError::from))
    }

    /// The assignment of one daemon (its base) and every agent-type assignment (overlays,
    /// sorted by agent type).
    pub async fn assignments_for_daemon(
        &self,
        daemon_id: &str,
    ) -> StoreResult<(Option<Assignment>, Vec<Assignment>)> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLS} FROM policy_assignments \
             WHERE (target_type = 'daemon' AND target_id = $1) OR target_type = 'agent_type' ORDER BY target_type, target_id"
        ));
        let all: Vec<Assignment> = on_pool!(self, p => sqlx::query(sql).bind(daemon_id).fetch_all(p).await?
            .iter().map(assignment_from).collect::<Result<_, _>>()?);
        let (bases, overlays): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|a| a.target_type == "daemon");
        Ok((bases.into_iter().next(), overlays))
    }

    /// Removes the assignment of a target; `false` when there was none.
    pub async fn delete_assignment(&self, target_type: &str, target_id: &str) -> StoreResult<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "DELETE FROM policy_assignments WHERE target_type = $1 AND target_id = $2",
        )
        .bind(target_type)
        .bind(target_id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n > 0)
    }
}
