//! Store queries only the agent plane needs (certificate renewal).

use super::{Store, StoreResult, on_pool};

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
}
