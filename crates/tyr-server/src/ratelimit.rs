//! In-memory sliding-window limiter of failures: logins (per username and per source address)
//! and agent-plane registrations (per source address).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per key within the window.
pub const MAX_FAILURES: usize = 5;
/// The sliding window of the server's limiters.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked keys, idle ones are pruned on the next failure.
const PRUNE_ABOVE: usize = 10_000;

/// Tracks recent failures per key (`user:<name>`, `addr:<ip>`).
#[derive(Debug)]
pub struct LoginLimiter {
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// A limiter allowing [`MAX_FAILURES`] per key within the sliding `window`.
    pub fn new(window: Duration) -> Self {
        LoginLimiter {
            window,
            failures: Mutex::default(),
        }
    }

    /// `Err(retry_after)` if any key has reached [`MAX_FAILURES`] within the window.
    pub fn check(&self, keys: &[String]) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| map.get(k))
            .filter_map(|q| {
                let recent: Vec<&Instant> = q
                    .iter()
                    .filter(|t| now.duration_since(**t) < self.window)
                    .collect();
                (recent.len() >= MAX_FAILURES).then(|| {
                    self.window
                        .saturating_sub(now.duration_since(*recent[recent.len() - MAX_FAILURES]))
                })
            })
            .max();
        match wait {
            Some(w) => Err(w.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Records one failure for every key.
    pub fn record_failure(&self, keys: &[String]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        for k in keys {
            let q = map.entry(k.clone()).or_default();
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                q.pop_front();
            }
            q.push_back(now);
            if q.len() > MAX_FAILURES {
                q.pop_front();
            }
        }
    }

    /// Forgets the failures of one key (a successful login clears its username).
    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_per_key() {
        let l = LoginLimiter::new(WINDOW);
        let a = vec!["user:a".to_owned(), "addr:1".to_owned()];
        for _ in 0..MAX_FAILURES {
            assert!(l.check(&a).is_ok());
            l.record_failure(&a);
        }
        let wait = l.check(&a).expect_err("blocked");
        assert!(
            wait <= WINDOW && wait >= Duration::from_secs(59),
            "{wait:?}"
        );
        // Same address, other user: still blocked by the address key.
        assert!(
            l.check(&["user:b".to_owned(), "addr:1".to_owned()])
                .is_err()
        );
        assert!(l.check(&["user:b".to_owned(), "addr:2".to_owned()]).is_ok());
        l.clear("user:a");
        assert!(l.check(&["user:a".to_owned()]).is_ok());
    }

    #[test]
    fn the_window_is_the_limiters() {
        let l = LoginLimiter::new(Duration::from_millis(300));
        let a = vec!["addr:1".to_owned()];
        for _ in 0..MAX_FAILURES {
            l.record_failure(&a);
        }
        // Retry hints are whole seconds, at least one.
        assert_eq!(l.check(&a), Err(Duration::from_secs(1)));
        // Once the window has passed, the failures no longer count.
        std::thread::sleep(Duration::from_millis(300));
        assert!(l.check(&a).is_ok());
    }
}
