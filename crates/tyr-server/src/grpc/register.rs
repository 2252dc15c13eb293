//! `Register`: enrolment with a one-time token and a CSR made on the host.
//!
//! Order of work, cheapest first, so an unauthenticated caller cannot make the server do more
//! than syntax checks: field and PEM syntax, the failure limit of the caller's address, the
//! token (one argon2 verification, an atomic use), and only then the CSR's ASN.1, its
//! signature and the signing of the certificate.

use std::net::IpAddr;

use tonic::Status;
use tonic::metadata::MetadataValue;
use tyr_proto::agent::{RegisterRequest, RegisterResponse};

use super::Plane;
use crate::pki;
use crate::store::agents::NewDaemon;
use crate::store::tokens::ConsumeError;

/// Longest accepted name, hostname, kernel version or architecture.
const MAX_FIELD: usize = 255;
/// Longest accepted enrollment token.
const MAX_TOKEN: usize = 256;

fn check(req: &RegisterRequest) -> Result<(), Status> {
    let fields = [
        ("agent_name", &req.agent_name),
        ("hostname", &req.hostname),
        ("kernel_version", &req.kernel_version),
        ("arch", &req.arch),
    ];
    for (name, value) in fields {
        if value.len() > MAX_FIELD || value.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "{name} must be at most {MAX_FIELD} bytes without control characters"
            )));
        }
    }
    if req.agent_name.trim().is_empty() {
        return Err(Status::invalid_argument("agent_name must not be empty"));
    }
    Ok(())
}

/// `RESOURCE_EXHAUSTED` saying when to retry, in the message and as `retry-after` (seconds).
fn limited(retry_after: std::time::Duration) -> Status {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut status = Status::resource_exhausted(format!(
        "too many failed registrations from this address: retry in {secs} s"
    ));
    status
        .metadata_mut()
        .insert("retry-after", MetadataValue::from(secs));
    status
}

/// Checks the caller's failure limit, consumes one use of the token, verifies the CSR,
/// issues the client certificate and records the daemon. A bad token stores nothing,
/// answers `UNAUTHENTICATED` with the reason and counts as a failure of the caller's address
/// (`peer`); too many failures answer `RESOURCE_EXHAUSTED` with a retry hint. A bad CSR
/// answers `INVALID_ARGUMENT` and gives the token's use back.
pub(super) async fn register(
    plane: &Plane,
    peer: Option<IpAddr>,
    req: RegisterRequest,
) -> Result<RegisterResponse, Status> {
    check(&req)?;
    let csr = pki::parse_csr_pem(&req.csr_pem)
        .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
    let limit_keys: Vec<String> = peer.map(|ip| format!("addr:{ip}")).into_iter().collect();
    plane.register_limiter.check(&limit_keys).map_err(limited)?;
    let consumed = if req.enrollment_token.is_empty() || req.enrollment_token.len() > MAX_TOKEN {
        Err(ConsumeError::Unknown)
    } else {
        plane
            .store
            .consume_enrollment_token(&req.enrollment_token)
            .await
    };
    let token_id = match consumed {
        Ok(id) => id,
        Err(ConsumeError::Store(e)) => {
            tracing::error!(error = %e, "enrollment token lookup failed");
            return Err(Status::unavailable("the server cannot reach its database"));
        }
        Err(e) => {
            plane.register_limiter.record_failure(&limit_keys);
            tracing::warn!(agent_name = %req.agent_name, ?peer, reason = %e, "registration refused");
            return Err(Status::unauthenticated(e.to_string()));
        }
    };
    let agent_id = uuid::Uuid::new_v4().to_string();
    let cert = match plane.ca.sign_client_csr_der(csr.as_ref(), &agent_id) {
        Ok(cert) => cert,
        Err(e) => {
            give_back(plane, &token_id).await;
            return Err(Status::invalid_argument(format!("csr_pem: {e}")));
        }
    };
    let daemon = NewDaemon {
        id: &agent_id,
        name: req.agent_name.trim(),
        hostname: &req.hostname,
        kernel_version: &req.kernel_version,
        arch: &req.arch,
        enrollment_token_id: Some(&token_id),
        cert_serial: &cert.serial,
        cert_fingerprint: &cert.fingerprint,
        cert_not_after: cert.not_after_ms,
    };
    if let Err(e) = plane.store.create_daemon(daemon).await {
        tracing::error!(error = %e, "cannot record the new daemon");
        give_back(plane, &token_id).await;
        return Err(Status::unavailable("the server cannot record the daemon"));
    }
    tracing::info!(agent_id, name = %req.agent_name.trim(), "daemon enrolled");
    Ok(RegisterResponse {
        agent_id,
        client_cert_pem: cert.cert_pem,
        ca_cert_pem: plane.ca.cert_pem().to_owned(),
    })
}

/// Returns the use of a token whose registration failed after it was consumed.
async fn give_back(plane: &Plane, token_id: &str) {
    if let Err(e) = plane.store.release_enrollment_token_use(token_id).await {
        tracing::error!(error = %e, token_id, "cannot give back an enrollment token use");
    }
}
