//! Event retention: every hour, delete events older than `TYR_EVENT_RETENTION_DAYS`.

use std::time::Duration;

use crate::store::time::now_ms;
use crate::store::{Store, StoreResult};

/// How often the job runs.
pub const PERIOD: Duration = Duration::from_secs(3600);
/// Events deleted per statement, so that a large purge never holds a long lock.
const CHUNK: i64 = 10_000;

/// Deletes events older than `days` days before `now_ms`; returns how many.
pub async fn purge(store: &Store, days: u32, now_ms: i64) -> StoreResult<u64> {
    let cutoff = now_ms - i64::from(days) * 86_400_000;
    let mut total = 0;
    loop {
        let n = store.delete_events_before(cutoff, CHUNK).await?;
        total += n;
        if n < CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// Starts the hourly job (first run at once); none when `days == 0` (keep everything). The
/// job ends when the store is closed.
pub fn spawn(store: Store, days: u32) {
    if days == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tick.tick().await;
            if store.is_closed() {
                return;
            }
            match purge(&store, days, now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, days, "event retention"),
                Err(e) => tracing::warn!(error = %e, "event retention failed"),
            }
        }
    });
}
