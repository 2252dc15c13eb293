//! The daemon's session with the server (`AgentPlane.Stream`): capability report, discovered
//! agents (all live ones on connect, changes at every heartbeat), policy pushes (persisted in
//! `state_dir/policy.json` and acknowledged), heartbeats (also in answer to a `Ping`), the
//! server's `ConfigUpdate` overrides, spooled records sent as event batches and dropped from
//! the spool once acknowledged, and certificate renewal. Reconnects with exponential backoff
//! and jitter; unacknowledged records are sent again on the next session.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tyr_proto::agent::agent_plane_client::AgentPlaneClient;
use tyr_proto::agent::{
    AgentMessage, ConfigUpdate, EventsAllow, Heartbeat, PolicyAck, PolicyPush, RenewRequest,
    agent_message::Msg, server_message,
};
use tyr_proto::events::EventBatch;

use crate::agent_plane::identity::{self, Identity};
use crate::agent_plane::link::{SpoolClient, SpoolServer};
use crate::agent_plane::{self, PlaneError, records};
use crate::config::{AllowEvents, Config};
use crate::enforce::Shared;

/// Records per event batch (SPEC §5: flushed at 100 events).
const BATCH: usize = 100;
/// Batches sent and not yet acknowledged, at most.
const WINDOW: usize = 8;
/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Enrolls when needed and starts the stream task, which reports `enforcer`'s capabilities
/// and applies pushed policies to it. `None` (after a warning) when the daemon is not
/// enrolled and has no token: events are then only spooled.
pub async fn start(
    config: &Config,
    config_path: &Path,
    last_seq: u64,
    enforcer: Shared,
) -> Result<Option<SpoolServer>, PlaneError> {
    agent_plane::install_crypto_provider();
    let identity = if Identity::exists(&config.state_dir) {
        Identity::load(&config.state_dir)?
    } else if config.enrollment_token.is_some() {
        crate::enroll::enroll(config, config_path).await?
    } else {
        tracing::warn!("not enrolled and no enrollment_token: events are spooled, not sent");
        return Ok(None);
    };
    let (server, client) = agent_plane::link::pair(last_seq);
    let stream = Stream {
        server: config.server.clone(),
        state_dir: config.state_dir.clone(),
        heartbeat: Duration::from_secs(u64::from(config.heartbeat_interval_s)),
        enforcer,
        agent_uuid: uuid::Uuid::parse_str(&identity.agent_id)
            .map_err(|_| PlaneError::Invalid("state_dir/agent_id is not a UUID".into()))?,
        identity,
        spool: client,
    };
    tokio::spawn(stream.run());
    Ok(Some(server))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `d` scaled by a random factor in [0.5, 1).
fn jitter(d: Duration) -> Duration {
    let r = RandomState::new().hash_one(now_ns());
    d.mul_f64(0.5 + (r % 1000) as f64 / 2000.0)
}

/// Why a session ended.
enum End {
    /// Connecting or the stream failed; try again.
    Failed(String),
    /// The server refused this daemon (revoked).
    Refused(tonic::Status),
}

impl From<PlaneError> for End {
    fn from(e: PlaneError) -> Self {
        match e {
            PlaneError::Refused(s) => End::Refused(s),
            other => End::Failed(other.to_string()),
        }
    }
}

struct Stream {
    server: String,
    state_dir: PathBuf,
    heartbeat: Duration,
    enforcer: Shared,
    agent_uuid: uuid::Uuid,
    identity: Identity,
    spool: SpoolClient,
}

/// One session's sending side and its unacknowledged batches.
struct Session {
    out: mpsc::Sender<AgentMessage>,
    /// Heartbeat timer (reset when the server changes the interval).
    ticker: Interval,
    /// `(last spool seq, highest seq the server will acknowledge)` of each batch in flight.
    in_flight: VecDeque<(u64, u64)>,
    /// Next spool seq to send (0: the oldest unacknowledged).
    next: u64,
    /// A PolicyPush was received (the session works; the backoff is reset).
    healthy: bool,
    renewing: bool,
    /// Highest seq known to be acknowledged (learnt at the first read of the spool).
    acked: Option<u64>,
}

impl Session {
    async fn send(&self, msg: Msg) -> Result<(), End> {
        self.out
            .send(AgentMessage { msg: Some(msg) })
            .await
            .map_err(|_| End::Failed("the stream closed".into()))
    }
}

impl Stream {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let (end, healthy) = self.session().await;
            if healthy {
                backoff = MIN_BACKOFF;
            }
            match end {
                End::Failed(why) => tracing::warn!("agent plane: {why}; reconnecting"),
                End::Refused(s) if s.code() == Code::PermissionDenied => {
                    tracing::error!(
                        "the server refused this daemon ({}): enroll again",
                        s.message()
                    );
                    backoff = MAX_BACKOFF;
                }
                End::Refused(s) => {
                    tracing::warn!("agent plane: {}: {}; reconnecting", s.code(), s.message());
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs one session to its end; also says whether it got as far as a policy push.
    async fn session(&mut self) -> (End, bool) {
        let (out, rx) = mpsc::channel(2 * WINDOW);
        let mut s = Session {
            out,
            ticker: ticker(self.heartbeat, Duration::ZERO),
            in_flight: VecDeque::new(),
            next: 0,
            healthy: false,
            renewing: false,
            acked: None,
        };
        let end = self.drive(&mut s, rx).await;
        (end, s.healthy)
    }

    async fn drive(&mut self, s: &mut Session, rx: mpsc::Receiver<AgentMessage>) -> End {
        let id = &self.identity;
        let channel =
            match agent_plane::connect(&self.server, &id.ca_pem, Some((&id.cert_pem, &id.key_pem)))
                .await
            {
                Ok(c) => c,
                Err(e) => return e.into(),
            };
        let report = lock(&self.enforcer).report();
        if let Err(e) = s.send(Msg::CapabilityReport(report)).await {
            return e;
        }
        let mut inbound = match AgentPlaneClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => return End::Refused(status),
        };
        tracing::info!(server = %self.server, "agent plane connected");
        let mut last_seq = self.spool.last_seq.clone();
        let discovered = lock(&self.enforcer).discovered_all();
        for update in discovered {
            if let Err(e) = s.send(Msg::DiscoveredAgent(update)).await {
                return e;
            }
        }
        if let Err(e) = self.fill(s).await {
            return e;
        }
        loop {
            let step = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => match m.msg {
                        Some(msg) => self.on_message(s, msg).await,
                        None => Ok(()),
                    },
                    Ok(None) => Err(End::Failed("the server closed the stream".into())),
                    Err(status) => Err(End::Refused(status)),
                },
                _ = s.ticker.tick() => self.on_heartbeat(s).await,
                changed = last_seq.changed() => match changed {
                    Ok(()) => self.fill(s).await,
                    Err(_) => Err(End::Failed("the spool is closed".into())),
                },
            };
            if let Err(e) = step {
                return e;
            }
        }
    }

    /// Sends pending spool records until [`WINDOW`] batches are in flight.
    async fn fill(&self, s: &mut Session) -> Result<(), End> {
        while s.in_flight.len() < WINDOW {
            let pending = self
                .spool
                .pending(s.next, BATCH)
                .await
                .map_err(End::Failed)?;
            if s.acked.is_none() {
                let first = pending.first().map(|&(seq, _)| seq);
                s.acked = Some(first.map_or(*self.spool.last_seq.borrow(), |f| f - 1));
            }
            let Some(&(last, _)) = pending.last() else {
                return Ok(());
            };
            let mut wire_max = 0;
            let mut records = Vec::with_capacity(pending.len());
            for (seq, record) in pending {
                let (r, max) = records::to_wire(&self.agent_uuid, seq, record);
                wire_max = wire_max.max(max);
                records.push(r);
            }
            s.send(Msg::EventBatch(EventBatch { records })).await?;
            s.in_flight.push_back((last, wire_max));
            s.next = last + 1;
        }
        Ok(())
    }

    async fn on_message(&mut self, s: &mut Session, msg: server_message::Msg) -> Result<(), End> {
        match msg {
            server_message::Msg::PolicyPush(push) => {
                let ack = apply_policy(&self.state_dir, &push, &self.enforcer);
                s.healthy = true;
                s.send(Msg::PolicyAck(ack)).await
            }
            server_message::Msg::EventAck(ack) => {
                let Some((last, wire_max)) = s.in_flight.pop_front() else {
                    return Err(End::Failed(format!("unexpected EventAck {}", ack.seq)));
                };
                if ack.seq != wire_max {
                    return Err(End::Failed(format!(
                        "EventAck {} does not match the batch ending at {wire_max}",
                        ack.seq
                    )));
                }
                self.spool.ack(last).await;
                s.acked = Some(last);
                self.fill(s).await
            }
            server_message::Msg::Reclassify(r) => {
                match lock(&self.enforcer).reclassify(&r.discovered_agent_id, &r.agent_type) {
                    Ok(moved) => tracing::info!(
                        discovered_agent_id = %r.discovered_agent_id,
                        agent_type = %r.agent_type,
                        processes = moved,
                        "discovered agent reclassified by the server"
                    ),
                    Err(e) => tracing::warn!(
                        discovered_agent_id = %r.discovered_agent_id,
                        "reclassification not applied: {e}"
                    ),
                }
                Ok(())
            }
            server_message::Msg::RenewResponse(r) => {
                s.renewing = false;
                match self
                    .identity
                    .replace_cert(&self.state_dir, r.client_cert_pem)
                {
                    Ok(()) => tracing::info!("client certificate renewed"),
                    Err(e) => tracing::error!("cannot store the renewed certificate: {e}"),
                }
                Ok(())
            }
            server_message::Msg::Ping(_) => self.send_heartbeat(s).await,
            server_message::Msg::ConfigUpdate(update) => {
                self.on_config_update(s, &update);
                Ok(())
            }
        }
    }

    /// Applies the server's overrides of `tyrd.yaml` settings for the rest of this process's
    /// life (a zero field leaves its setting unchanged).
    fn on_config_update(&mut self, s: &mut Session, update: &ConfigUpdate) {
        if update.heartbeat_interval_s > 0 {
            self.heartbeat = Duration::from_secs(u64::from(update.heartbeat_interval_s));
            s.ticker = ticker(self.heartbeat, self.heartbeat);
            tracing::info!(
                heartbeat_interval_s = update.heartbeat_interval_s,
                "heartbeat interval set by the server"
            );
        }
        let allow = match update.events_allow() {
            EventsAllow::Unspecified => return,
            EventsAllow::Agents => AllowEvents::Agents,
            EventsAllow::All => AllowEvents::All,
        };
        match lock(&self.enforcer).set_events_allow(allow) {
            Ok(()) => tracing::info!(?allow, "events.allow set by the server"),
            Err(e) => tracing::error!(?allow, "events.allow from the server not applied: {e}"),
        }
    }

    async fn send_heartbeat(&self, s: &Session) -> Result<(), End> {
        let last_seq = *self.spool.last_seq.borrow();
        let ring_drops = lock(&self.enforcer).ring_drops_total();
        s.send(Msg::Heartbeat(Heartbeat {
            sent_at_ns: now_ns(),
            spool_pending: last_seq.saturating_sub(s.acked.unwrap_or(last_seq)),
            ring_drops,
        }))
        .await
    }

    /// A heartbeat, the discovered agents that changed since the last one, and a certificate
    /// renewal when it is due.
    async fn on_heartbeat(&self, s: &mut Session) -> Result<(), End> {
        self.send_heartbeat(s).await?;
        let changes = lock(&self.enforcer).discovered_changes();
        for update in changes {
            s.send(Msg::DiscoveredAgent(update)).await?;
        }
        if !s.renewing
            && self
                .identity
                .renew_at()
                .is_ok_and(|at| SystemTime::now() >= at)
        {
            let csr_pem = identity::csr_for_pem(&self.identity.key_pem)?;
            s.renewing = true;
            tracing::info!("renewing the client certificate");
            s.send(Msg::RenewRequest(RenewRequest { csr_pem })).await?;
        }
        Ok(())
    }
}

/// A heartbeat timer ticking every `period`, first after `first` (zero: at once).
fn ticker(period: Duration, first: Duration) -> Interval {
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// The enforcer, even if a panic poisoned its lock (its state is replaced whole).
fn lock(enforcer: &Shared) -> std::sync::MutexGuard<'_, crate::enforce::Enforcer> {
    enforcer.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles and loads a pushed policy, then persists it in `state_dir/policy.json`; the
/// acknowledgement says whether it could be (on failure the previous policy stays in force).
fn apply_policy(state_dir: &Path, push: &PolicyPush, enforcer: &Shared) -> PolicyAck {
    let result = serde_json::from_str::<serde_json::Value>(&push.effective_set_json)
        .map_err(|e| format!("effective_set_json: {e}"))
        .and_then(|set| {
            let parsed = serde_json::from_value(set.clone())
                .map_err(|e| format!("effective_set_json: {e}"))?;
            lock(enforcer).apply(&push.policy_version, parsed)?;
            let doc = serde_json::json!({
                "policy_version": push.policy_version,
                "effective_set": set,
            });
            identity::write_file(state_dir, "policy.json", doc.to_string().as_bytes(), 0o600)
                .map_err(|e| e.to_string())
        });
    match &result {
        Ok(()) => tracing::info!(version = %push.policy_version, "policy received"),
        Err(e) => tracing::error!(version = %push.policy_version, "policy not applied: {e}"),
    }
    PolicyAck {
        policy_version: push.policy_version.clone(),
        ok: result.is_ok(),
        error: result.err().unwrap_or_default(),
    }
}
