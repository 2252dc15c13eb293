//! `Stream`: one daemon's session. The daemon reports its capabilities first; the server
//! answers with its effective policy and pushes it again whenever an assignment affecting it
//! changes; event batches are stored (with drift) and acknowledged after commit; a revocation
//! cuts the session at once.

use std::time::Instant;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};
use tyr_proto::agent::{
    self, AgentMessage, CapabilityReport, EventAck, Layer, PolicyAck, PolicyPush, PolicyVersion,
    RenewResponse, ServerMessage, agent_message::Msg, server_message,
};
use tyr_proto::events::{EventBatch, Gap, GapReason, record};

use super::{Plane, peer_agent_id};
use crate::drift::Tier;
use crate::fleet::Notice;
use crate::ingest::{self, IngestError};
use crate::store::agent_plane::GapRecord;
use crate::store::agents::DiscoveredUpdate;
use crate::store::time::now_ms;
use crate::store::{StoreError, StoreResult};

/// Server messages buffered per session before the session waits for the daemon.
const OUTBOX: usize = 64;

type Outbox = mpsc::Sender<Result<ServerMessage, Status>>;

fn revoked() -> Status {
    Status::permission_denied("the daemon is revoked or unknown: enroll again")
}

fn unavailable(e: &StoreError) -> Status {
    tracing::error!(error = %e, "agent plane: database failure");
    Status::unavailable("the server cannot reach its database")
}

/// Checks the caller and starts its session; the receiver feeds the response stream.
pub(super) async fn open(
    plane: &Plane,
    request: Request<Streaming<AgentMessage>>,
) -> Result<mpsc::Receiver<Result<ServerMessage, Status>>, Status> {
    let agent_id = peer_agent_id(&request)?;
    let fingerprint = request
        .peer_certs()
        .and_then(|certs| {
            certs
                .first()
                .map(|c| crate::pki::fingerprint_of(c.as_ref()))
        })
        .unwrap_or_default();
    // Subscribed before the check, so a revocation right after it is not missed.
    let notices = plane.fleet.subscribe_notices();
    match plane.store.daemon(&agent_id).await {
        // Only the certificate last issued to the daemon opens a stream: one that a renewal
        // replaced, or any other the CA signed for this id, is refused.
        Ok(Some(d)) if !d.revoked && d.cert_fingerprint == fingerprint => {}
        Ok(Some(d)) if !d.revoked => {
            tracing::warn!(
                agent_id,
                "stream refused: not the daemon's current certificate"
            );
            return Err(Status::permission_denied(
                "this is not the daemon's current certificate (replaced by a renewal?): \
                 use the latest one, or enroll again",
            ));
        }
        Ok(_) => {
            tracing::warn!(agent_id, "stream refused: daemon revoked or unknown");
            return Err(revoked());
        }
        Err(e) => return Err(unavailable(&e)),
    }
    let (tx, rx) = mpsc::channel(OUTBOX);
    let session = Session {
        plane: plane.clone(),
        agent_id,
        tx,
        reported: false,
        pushed: None,
        push_started: None,
    };
    tokio::spawn(session.run(request.into_inner(), notices));
    Ok(rx)
}

struct Session {
    plane: Plane,
    agent_id: String,
    tx: Outbox,
    /// A CapabilityReport was received (it must come first).
    reported: bool,
    /// The effective-set version last pushed.
    pushed: Option<String>,
    /// The version pushed and when the push was triggered, until the daemon acknowledges it.
    push_started: Option<(String, Instant)>,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<AgentMessage>,
        mut notices: broadcast::Receiver<Notice>,
    ) {
        let mut stopping = self.plane.stopping.clone();
        tracing::info!(agent_id = %self.agent_id, "daemon connected");
        let end = loop {
            let step = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.on_message(m).await,
                    Ok(None) => break Ok(()),
                    Err(status) => {
                        tracing::debug!(agent_id = %self.agent_id, %status, "daemon stream failed");
                        break Ok(());
                    }
                },
                notice = notices.recv() => self.on_notice(notice).await,
                () = self.tx.closed() => break Ok(()),
                _ = stopping.changed() => break Err(Status::unavailable("the server is shutting down")),
            };
            if let Err(status) = step {
                break Err(status);
            }
        };
        tracing::info!(agent_id = %self.agent_id, "daemon disconnected");
        if let Err(status) = end {
            let _ = self.tx.send(Err(status)).await;
        }
    }

    async fn send(&self, msg: server_message::Msg) -> Result<(), Status> {
        self.tx
            .send(Ok(ServerMessage { msg: Some(msg) }))
            .await
            .map_err(|_| Status::cancelled("the daemon went away"))
    }

    async fn on_message(&mut self, m: AgentMessage) -> Result<(), Status> {
        let msg = m
            .msg
            .ok_or_else(|| Status::invalid_argument("empty AgentMessage"))?;
        if let Msg::CapabilityReport(report) = msg {
            return self.on_capabilities(report).await;
        }
        if !self.reported {
            return Err(Status::failed_precondition(
                "the first message must be a CapabilityReport",
            ));
        }
        match msg {
            Msg::CapabilityReport(_) => Ok(()),
            Msg::Heartbeat(_) => self.touch().await,
            Msg::EventBatch(batch) => self.on_batch(batch).await,
            Msg::DiscoveredAgent(update) => self.on_discovered(update).await,
            Msg::PolicyAck(ack) => {
                self.on_policy_ack(ack);
                Ok(())
            }
            Msg::RenewRequest(req) => self.on_renew(&req.csr_pem).await,
        }
    }

    async fn touch(&self) -> Result<(), Status> {
        match self
            .plane
            .store
            .touch_daemon(&self.agent_id, now_ms())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(revoked()),
            Err(e) => Err(unavailable(&e)),
        }
    }

    async fn on_capabilities(&mut self, c: CapabilityReport) -> Result<(), Status> {
        let tier = match c.tier() {
            agent::Tier::Lsm => Tier::Lsm,
            agent::Tier::Tracepoint => Tier::Tracepoint,
            agent::Tier::Observe => Tier::Observe,
            agent::Tier::Unspecified => {
                return Err(Status::invalid_argument(
                    "CapabilityReport.tier is unspecified",
                ));
            }
        };
        let hooks: Vec<_> = c
            .hooks
            .iter()
            .map(|h| serde_json::json!({"name": h.name, "loaded": h.loaded, "reason": h.reason}))
            .collect();
        let report = serde_json::json!({
            "kernel_version": c.kernel_version,
            "tier": tier.as_str(),
            "hooks": hooks,
            "features": c.features,
            "downgrade_reason": c.downgrade_reason,
        });
        let stored = self
            .plane
            .store
            .set_daemon_capabilities(&self.agent_id, tier, &c.kernel_version, &report)
            .await
            .map_err(|e| unavailable(&e))?;
        if !stored {
            return Err(revoked());
        }
        self.touch().await?;
        tracing::info!(agent_id = %self.agent_id, tier = tier.as_str(), "capabilities reported");
        if !self.reported {
            self.reported = true;
            self.push_policy(Instant::now()).await?;
        }
        Ok(())
    }

    /// Sends the daemon's effective policy unless that version was the last one pushed.
    async fn push_policy(&mut self, started: Instant) -> Result<(), Status> {
        let effective = self
            .plane
            .fleet
            .effective(&self.plane.store, &self.agent_id)
            .await
            .map_err(|e| unavailable(&e))?;
        if self.pushed.as_deref() == Some(effective.version.as_str()) {
            return Ok(());
        }
        let effective_set_json = serde_json::to_string(&effective.set)
            .map_err(|e| Status::internal(format!("cannot encode the policy: {e}")))?;
        let v32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        let mut versions = Vec::with_capacity(effective.overlays.len() + 1);
        if let Some(b) = &effective.base {
            versions.push(PolicyVersion {
                policy: b.policy.clone(),
                version: v32(b.version),
                layer: Layer::Base.into(),
                agent_type: String::new(),
            });
        }
        for o in &effective.overlays {
            versions.push(PolicyVersion {
                policy: o.policy.clone(),
                version: v32(o.version),
                layer: Layer::Overlay.into(),
                agent_type: o.agent_type.clone().unwrap_or_default(),
            });
        }
        self.send(server_message::Msg::PolicyPush(PolicyPush {
            policy_version: effective.version.clone(),
            effective_set_json,
            versions,
        }))
        .await?;
        tracing::info!(agent_id = %self.agent_id, version = %effective.version, "policy pushed");
        self.pushed = Some(effective.version.clone());
        self.push_started = Some((effective.version.clone(), started));
        Ok(())
    }

    fn on_policy_ack(&mut self, ack: PolicyAck) {
        if !ack.ok {
            tracing::warn!(agent_id = %self.agent_id, version = %ack.policy_version, error = %ack.error, "daemon could not apply the policy");
            return;
        }
        if let Some((version, started)) =
            self.push_started.take_if(|(v, _)| *v == ack.policy_version)
        {
            let latency = started.elapsed();
            self.plane.fleet.metrics.observe_policy_push(latency);
            tracing::info!(agent_id = %self.agent_id, %version, latency_ms = latency.as_secs_f64() * 1e3, "policy applied");
        }
    }

    async fn on_notice(&mut self, notice: Result<Notice, RecvError>) -> Result<(), Status> {
        let started = Instant::now();
        match notice {
            Ok(Notice::DaemonRevoked { daemon_id }) if daemon_id == self.agent_id => {
                tracing::info!(agent_id = %self.agent_id, "daemon revoked: session cut");
                Err(revoked())
            }
            Ok(Notice::Reclassified {
                daemon_id,
                discovered_agent_id,
                agent_type,
            }) if daemon_id == self.agent_id => {
                self.send(server_message::Msg::Reclassify(agent::Reclassify {
                    discovered_agent_id,
                    agent_type,
                }))
                .await
            }
            Ok(Notice::AssignmentChanged {
                target_type,
                target_id,
            }) if target_type != "daemon" || target_id == self.agent_id => {
                if self.reported {
                    self.push_policy(started).await
                } else {
                    Ok(())
                }
            }
            Ok(_) => Ok(()),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(agent_id = %self.agent_id, missed = n, "notices missed; rechecking");
                self.touch().await?;
                if self.reported {
                    self.push_policy(started).await?;
                }
                Ok(())
            }
            Err(RecvError::Closed) => Err(Status::unavailable("the server is shutting down")),
        }
    }

    /// Stores the gap records and the events, then acknowledges the highest seq of the batch
    /// (so nothing is acknowledged before it is committed).
    async fn on_batch(&self, batch: EventBatch) -> Result<(), Status> {
        let mut events = Vec::with_capacity(batch.records.len());
        let mut last = 0;
        for r in batch.records {
            match r.record {
                Some(record::Record::Event(e)) => {
                    last = last.max(e.seq);
                    events.push(e);
                }
                Some(record::Record::Gap(g)) => {
                    last = last.max(g.last_seq).max(g.first_seq);
                    self.on_gap(&g).await?;
                }
                None => {}
            }
        }
        match ingest::ingest(&self.plane.store, &self.plane.fleet, &self.agent_id, events).await {
            Ok(_) => {}
            Err(IngestError::Revoked(_) | IngestError::UnknownDaemon(_)) => return Err(revoked()),
            Err(IngestError::Store(e)) => return Err(unavailable(&e)),
        }
        if last > 0 {
            self.send(server_message::Msg::EventAck(EventAck { seq: last }))
                .await?;
        }
        Ok(())
    }

    /// Adds a gap record to the daemon's lost-event count (once, however often it is resent).
    /// A malformed one is logged and skipped.
    async fn on_gap(&self, g: &Gap) -> Result<(), Status> {
        let reason = match g.reason() {
            GapReason::SpoolFull => "spool_full",
            GapReason::RingBuffer => "ring_buffer",
            GapReason::Unspecified => "",
        };
        let seq = |n: u64| i64::try_from(n).ok().filter(|&n| n > 0);
        let (Some(first_seq), Some(last_seq)) = (seq(g.first_seq), seq(g.last_seq)) else {
            tracing::warn!(agent_id = %self.agent_id, ?g, "gap record without valid seqs skipped");
            return Ok(());
        };
        if reason.is_empty() || first_seq > last_seq {
            tracing::warn!(agent_id = %self.agent_id, ?g, "malformed gap record skipped");
            return Ok(());
        }
        let noticed_at = match g.timestamp_ns {
            0 => now_ms(),
            ns => i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX),
        };
        let record = GapRecord {
            first_seq,
            last_seq,
            dropped: i64::try_from(g.dropped).unwrap_or(i64::MAX),
            reason,
            noticed_at,
        };
        match self.plane.store.record_gap(&self.agent_id, record).await {
            Ok(Some(added)) => {
                tracing::warn!(
                    agent_id = %self.agent_id,
                    first_seq,
                    last_seq,
                    dropped = g.dropped,
                    newly_lost = added,
                    reason,
                    "daemon reports lost events"
                );
                let added = u64::try_from(added).unwrap_or(0);
                self.plane.fleet.metrics.gap(reason, added);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(unavailable(&e)),
        }
    }

    async fn on_discovered(&self, u: agent::DiscoveredAgentUpdate) -> Result<(), Status> {
        if let Err(why) = check_discovered(&u) {
            tracing::warn!(agent_id = %self.agent_id, id = %u.id.escape_debug(), "discovered agent update refused: {why}");
            return Ok(());
        }
        let ms = |ns: u64| i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX);
        let update = DiscoveredUpdate {
            id: &u.id,
            agent_type: &u.agent_type,
            display_name: &u.display_name,
            process_signature: &u.process_signature,
            pids: &u.pids,
            first_seen: ms(u.first_seen_ns),
            last_seen: ms(u.last_seen_ns),
        };
        let stored: StoreResult<_> = self
            .plane
            .store
            .upsert_discovered_agent(&self.agent_id, update)
            .await;
        match stored {
            // An admin reclassified it (perhaps while the daemon was away): say so again
            // until the daemon reports the admin's type.
            Ok(a) if a.agent_type != u.agent_type => {
                self.send(server_message::Msg::Reclassify(agent::Reclassify {
                    discovered_agent_id: a.id,
                    agent_type: a.agent_type,
                }))
                .await
            }
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => {
                tracing::warn!(agent_id = %self.agent_id, id = %u.id, "discovered agent id belongs to another daemon");
                Ok(())
            }
            Err(e) => Err(unavailable(&e)),
        }
    }

    async fn on_renew(&self, csr_pem: &str) -> Result<(), Status> {
        let cert = self
            .plane
            .ca
            .sign_client_csr(csr_pem, &self.agent_id)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        let stored = self
            .plane
            .store
            .update_daemon_cert(
                &self.agent_id,
                &cert.serial,
                &cert.fingerprint,
                cert.not_after_ms,
            )
            .await
            .map_err(|e| unavailable(&e))?;
        if !stored {
            return Err(revoked());
        }
        tracing::info!(agent_id = %self.agent_id, "client certificate renewed");
        self.send(server_message::Msg::RenewResponse(RenewResponse {
            client_cert_pem: cert.cert_pem,
        }))
        .await
    }
}

/// Longest accepted display name or process signature of a discovered agent.
const MAX_DISCOVERED_TEXT: usize = 1024;
/// Most live pids accepted for one discovered agent.
const MAX_DISCOVERED_PIDS: usize = 4096;

/// Why a daemon's discovered-agent update is not stored (the daemon is authenticated, not
/// trusted: these strings reach the database and the console).
fn check_discovered(u: &agent::DiscoveredAgentUpdate) -> Result<(), String> {
    if uuid::Uuid::parse_str(&u.id).is_err() {
        return Err("id is not a UUID".into());
    }
    let type_ok = (1..=64).contains(&u.agent_type.len())
        && u.agent_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !type_ok {
        return Err("agent_type must be 1-64 letters, digits, '.', '_' or '-'".into());
    }
    for (name, value) in [
        ("display_name", &u.display_name),
        ("process_signature", &u.process_signature),
    ] {
        if value.len() > MAX_DISCOVERED_TEXT || value.chars().any(char::is_control) {
            return Err(format!(
                "{name} must be at most {MAX_DISCOVERED_TEXT} bytes without control characters"
            ));
        }
    }
    if u.pids.len() > MAX_DISCOVERED_PIDS {
        return Err(format!("more than {MAX_DISCOVERED_PIDS} pids"));
    }
    Ok(())
}

#[cfg(test)]
mod discovered_tests {
    use super::*;

    #[test]
    fn discovered_updates_are_checked_before_they_are_stored() {
        let good = agent::DiscoveredAgentUpdate {
            id: "0192f0c4-1111-8000-8000-000000000001".into(),
            agent_type: "claude-code".into(),
            display_name: "Claude Code".into(),
            process_signature: "claude-code:/usr/bin/claude:uid=1000".into(),
            pids: vec![1, 2],
            first_seen_ns: 1,
            last_seen_ns: 2,
        };
        assert_eq!(check_discovered(&good), Ok(()));
        let bad = [
            agent::DiscoveredAgentUpdate {
                id: "x".into(),
                ..good.clone()
            },
            agent::DiscoveredAgentUpdate {
                agent_type: "a/b".into(),
                ..good.clone()
            },
            agent::DiscoveredAgentUpdate {
                agent_type: String::new(),
                ..good.clone()
            },
            agent::DiscoveredAgentUpdate {
                display_name: "a\u{1b}[31m".into(),
                ..good.clone()
            },
            agent::DiscoveredAgentUpdate {
                process_signature: "x".repeat(2000),
                ..good.clone()
            },
            agent::DiscoveredAgentUpdate {
                pids: vec![1; 5000],
                ..good.clone()
            },
        ];
        for u in bad {
            assert!(check_discovered(&u).is_err(), "{u:?}");
        }
    }
}
