//! In-process state shared by the REST API and the agent plane: the live event feed (SSE),
//! notices for the agent plane (assignment changes to push, revocations to cut off), the
//! cache of effective policy sets, and the metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tyr_policy::{EffectiveSet, Overlay, Policy};

use crate::drift::effective_version;
use crate::ingest::Committer;
use crate::metrics::{DbOp, Metrics};
use crate::store::events::EventRecord;
use crate::store::policies::Assignment;
use crate::store::{Store, StoreError, StoreResult};

/// Events buffered per SSE subscriber before it is told how many it missed.
pub const EVENT_BUFFER: usize = 256;
/// Notices buffered per agent-plane subscriber.
const NOTICE_BUFFER: usize = 1024;
/// Parsed policy versions kept in memory.
const POLICY_CACHE: usize = 1024;

/// Something the agent plane must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// An assignment was created, replaced or deleted: push the new effective policy to the
    /// daemon `target_id` (`target_type == "daemon"`) or to every daemon (`agent_type`).
    AssignmentChanged {
        target_type: String,
        target_id: String,
    },
    /// The daemon was revoked: close its stream and refuse it from now on.
    DaemonRevoked { daemon_id: String },
    /// An admin reclassified one of the daemon's discovered agents.
    Reclassified {
        daemon_id: String,
        discovered_agent_id: String,
        agent_type: String,
    },
}

/// One layer of an effective set: a policy version, and the agent type of an overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerRef {
    pub policy: String,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
}

/// A daemon's effective policy: its base, every overlay, and the version id of the set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    /// [`effective_version`] of the set: what `PolicyPush.policy_version` carries.
    pub version: String,
    /// `None`: the built-in audit policy.
    pub base: Option<LayerRef>,
    /// Sorted by agent type.
    pub overlays: Vec<LayerRef>,
    #[serde(rename = "effective_set")]
    pub set: EffectiveSet,
}

#[derive(Debug, Default)]
struct Cache {
    /// Bumped at every assignment change; a load started under an older generation is not
    /// cached.
    generation: u64,
    by_daemon: HashMap<String, Arc<Effective>>,
}

/// See the module documentation. One per server, shared through `AppState`.
#[derive(Debug)]
pub struct Fleet {
    events: broadcast::Sender<Arc<EventRecord>>,
    notices: broadcast::Sender<Notice>,
    cache: Mutex<Cache>,
    /// Parsed policy versions (immutable, so never stale).
    policies: Mutex<HashMap<(String, i64), Arc<Policy>>>,
    closing: watch::Sender<bool>,
    /// Group commit of ingested events.
    pub(crate) committer: Committer,
    /// Process metrics.
    pub metrics: Metrics,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            events: broadcast::channel(EVENT_BUFFER).0,
            notices: broadcast::channel(NOTICE_BUFFER).0,
            cache: Mutex::default(),
            policies: Mutex::default(),
            closing: watch::channel(false).0,
            committer: Committer::default(),
            metrics: Metrics::default(),
        }
    }
}

/// The parsed policy stored in a version's `compiled` document.
#[derive(serde::Deserialize)]
struct Compiled {
    policy: Policy,
}

fn layer(a: &Assignment) -> LayerRef {
    LayerRef {
        policy: a.policy.clone(),
        version: a.version,
        agent_type: (a.target_type == "agent_type").then(|| a.target_id.clone()),
    }
}

impl Fleet {
    /// Subscribes to newly stored events. A receiver that falls more than [`EVENT_BUFFER`]
    /// events behind gets `Lagged(n)`; publishing never waits for it.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.events.subscribe()
    }

    /// Subscribes to [`Notice`]s.
    pub fn subscribe_notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Ends every live stream (graceful shutdown).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes `true` at [`Fleet::close_streams`].
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub(crate) fn publish_event(&self, e: Arc<EventRecord>) {
        // Err only means nobody listens.
        let _ = self.events.send(e);
    }

    /// Call after every assignment change: forgets cached effective sets and notifies the
    /// agent plane.
    pub fn assignment_changed(&self, target_type: &str, target_id: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.generation += 1;
            c.by_daemon.clear();
        }
        let _ = self.notices.send(Notice::AssignmentChanged {
            target_type: target_type.to_owned(),
            target_id: target_id.to_owned(),
        });
    }

    /// Call after a daemon is revoked.
    pub fn daemon_revoked(&self, daemon_id: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.by_daemon.remove(daemon_id);
        }
        let _ = self.notices.send(Notice::DaemonRevoked {
            daemon_id: daemon_id.to_owned(),
        });
    }

    /// Call after a discovered agent's type changed: its daemon governs it as the new type.
    pub fn reclassified(&self, daemon_id: &str, discovered_agent_id: &str, agent_type: &str) {
        let _ = self.notices.send(Notice::Reclassified {
            daemon_id: daemon_id.to_owned(),
            discovered_agent_id: discovered_agent_id.to_owned(),
            agent_type: agent_type.to_owned(),
        });
    }

    /// The effective policy of `daemon_id` (cached until the next assignment change).
    pub async fn effective(&self, store: &Store, daemon_id: &str) -> StoreResult<Arc<Effective>> {
        let generation = match self.cache.lock() {
            Ok(c) => {
                if let Some(e) = c.by_daemon.get(daemon_id) {
                    return Ok(e.clone());
                }
                c.generation
            }
            Err(_) => return Err(StoreError::Internal("effective cache poisoned".into())),
        };
        let started = Instant::now();
        let effective = Arc::new(self.load_effective(store, daemon_id).await?);
        self.metrics
            .observe_db(DbOp::LoadEffective, started.elapsed());
        if let Ok(mut c) = self.cache.lock()
            && c.generation == generation
        {
            c.by_daemon.insert(daemon_id.to_owned(), effective.clone());
        }
        Ok(effective)
    }
}

impl Fleet {
    /// A stored policy version, parsed once.
    async fn policy(&self, store: &Store, a: &Assignment) -> StoreResult<Arc<Policy>> {
        let key = (a.policy.clone(), a.version);
        if let Some(p) = self.policies.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(p);
        }
        let v = store
            .policy_version(&a.policy, a.version)
            .await?
            .ok_or_else(|| {
                StoreError::Internal(format!("assigned {}@{} is missing", a.policy, a.version))
            })?;
        let policy = serde_json::from_str::<Compiled>(&v.compiled)
            .map(|c| Arc::new(c.policy))
            .map_err(|e| StoreError::Internal(format!("stored {}@{}: {e}", a.policy, a.version)))?;
        if let Ok(mut m) = self.policies.lock() {
            if m.len() >= POLICY_CACHE {
                m.clear();
            }
            m.insert(key, policy.clone());
        }
        Ok(policy)
    }

    /// Base = the daemon's assignment (else built-in audit); overlays = every agent-type
    /// assignment, sorted by agent type.
    async fn load_effective(&self, store: &Store, daemon_id: &str) -> StoreResult<Effective> {
        let (base, overlays) = store.assignments_for_daemon(daemon_id).await?;
        let mut set = EffectiveSet::default();
        if let Some(b) = &base {
            set.base = Some(Policy::clone(&*self.policy(store, b).await?));
        }
        for o in &overlays {
            set.overlays.push(Overlay {
                agent_type: o.target_id.clone(),
                policy: Policy::clone(&*self.policy(store, o).await?),
            });
        }
        Ok(effective_of(base.as_ref(), &overlays, set))
    }
}

/// The [`Effective`] of `set`, made of these assignments.
fn effective_of(
    base: Option<&Assignment>,
    overlays: &[Assignment],
    set: EffectiveSet,
) -> Effective {
    let v32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    let overlay_ids: Vec<(&str, &str, u32)> = overlays
        .iter()
        .map(|o| (o.target_id.as_str(), o.policy.as_str(), v32(o.version)))
        .collect();
    let version = effective_version(
        base.map(|b| (b.policy.as_str(), v32(b.version))),
        &overlay_ids,
    );
    Effective {
        version,
        base: base.map(layer),
        overlays: overlays.iter().map(layer).collect(),
        set,
    }
}
