//! Store queries only the agent plane needs: a token use given back, certificate renewal and
//! gap records.

use super::{Store, StoreResult, on_pool, time::now_ms};

/// A gap record of a daemon (SPEC §9): `dropped` events were lost; spool losses had the
/// numbers `first_seq..=last_seq`, other losses are numbered by the gap record itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapRecord<'a> {
    pub first_seq: i64,
    pub last_seq: i64,
    pub dropped: i64,
    /// `spool_full` or `ring_buffer`.
    pub reason: &'a str,
    /// When the daemon noticed the loss (unix ms).
    pub noticed_at: i64,
}

impl Store {
    /// Records the client certificate a live daemon renewed. `false` when the daemon is
    /// unknown or revoked.
    pub async fn update_daemon_cert(
        &self,
        id: &str,
        serial: &str,
        fingerprint: &str,
        not_after_ms: i64,
    ) -> StoreResult<bool> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE daemons SET cert_serial = $1, cert_fingerprint = $2, cert_not_after = $3 WHERE id = $4 AND revoked = FALSE",
        )
        .bind(serial)
        .bind(fingerprint)
        .bind(not_after_ms)
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        Ok(n > 0)
    }

    /// Gives back one use of an enrollment token whose registration failed after the use
    /// was taken (a bad CSR, a failed insert).
    pub async fn release_enrollment_token_use(&self, token_id: &str) -> StoreResult<()> {
        on_pool!(self, p => sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses - 1 WHERE id = $1 AND uses > 0",
        )
        .bind(token_id)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }

    /// Adds a gap record to the daemon's lost-event totals and returns how many events it
    /// newly counts: `None` when this record was already counted (a resend). Gap records
    /// inside its range were taken over by it (the daemon's spool dropped them and added
    /// their counts to this one), so only the difference is added and they are replaced.
    pub async fn record_gap(&self, daemon_id: &str, g: GapRecord<'_>) -> StoreResult<Option<i64>> {
        let now = now_ms();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            // A write first, so SQLite takes its write lock at once.
            let new = sqlx::query(
                "INSERT INTO daemon_gaps (daemon_id, first_seq, last_seq, dropped, reason, noticed_at, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(daemon_id).bind(g.first_seq).bind(g.last_seq).bind(g.dropped)
            .bind(g.reason).bind(g.noticed_at).bind(now)
            .execute(&mut *tx).await?.rows_affected() > 0;
            if !new {
                return Ok(None);
            }
            const INSIDE: &str = "daemon_id = $1 AND first_seq >= $2 AND last_seq <= $3 \
                 AND NOT (first_seq = $2 AND last_seq = $3)";
            let taken_over: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(COALESCE(SUM(dropped), 0) AS BIGINT) FROM daemon_gaps WHERE {INSIDE}"
            )))
            .bind(daemon_id).bind(g.first_seq).bind(g.last_seq)
            .fetch_one(&mut *tx).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM daemon_gaps WHERE {INSIDE}")))
                .bind(daemon_id).bind(g.first_seq).bind(g.last_seq)
                .execute(&mut *tx).await?;
            let added = g.dropped.saturating_sub(taken_over).max(0);
            sqlx::query(
                "UPDATE daemons SET events_lost = events_lost + $1, gap_records = gap_records + 1, \
                 last_gap_at = $2 WHERE id = $3",
            )
            .bind(added).bind(now).bind(daemon_id)
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(added))
        })
    }
}
