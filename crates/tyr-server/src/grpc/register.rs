//! `Register`: enrolment with a one-time token and a CSR made on the host.

use tonic::Status;
use tyr_proto::agent::{RegisterRequest, RegisterResponse};

use super::Plane;
use crate::store::agents::NewDaemon;
use crate::store::tokens::ConsumeError;

/// Longest accepted name, hostname, kernel version or architecture.
const MAX_FIELD: usize = 255;
/// Longest accepted enrollment token.
const MAX_TOKEN: usize = 256;
/// Longest accepted CSR PEM.
const MAX_CSR: usize = 16 * 1024;

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
    if req.enrollment_token.is_empty() || req.enrollment_token.len() > MAX_TOKEN {
        return Err(Status::unauthenticated("unknown enrollment token"));
    }
    if req.csr_pem.len() > MAX_CSR {
        return Err(Status::invalid_argument("csr_pem is too large"));
    }
    Ok(())
}

/// Verifies the CSR, consumes one use of the token, issues the client certificate and
/// records the daemon. A bad token stores nothing and answers `UNAUTHENTICATED` with the
/// reason; a bad CSR answers `INVALID_ARGUMENT` without using the token.
pub(super) async fn register(
    plane: &Plane,
    req: RegisterRequest,
) -> Result<RegisterResponse, Status> {
    check(&req)?;
    let agent_id = uuid::Uuid::new_v4().to_string();
    let cert = plane
        .ca
        .sign_client_csr(&req.csr_pem, &agent_id)
        .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
    let token_id = match plane
        .store
        .consume_enrollment_token(&req.enrollment_token)
        .await
    {
        Ok(id) => id,
        Err(ConsumeError::Store(e)) => {
            tracing::error!(error = %e, "enrollment token lookup failed");
            return Err(Status::unavailable("the server cannot reach its database"));
        }
        Err(e) => {
            tracing::warn!(agent_name = %req.agent_name, reason = %e, "registration refused");
            return Err(Status::unauthenticated(e.to_string()));
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
    plane.store.create_daemon(daemon).await.map_err(|e| {
        tracing::error!(error = %e, "cannot record the new daemon");
        Status::unavailable("the server cannot record the daemon")
    })?;
    tracing::info!(agent_id, name = %req.agent_name.trim(), "daemon enrolled");
    Ok(RegisterResponse {
        agent_id,
        client_cert_pem: cert.cert_pem,
        ca_cert_pem: plane.ca.cert_pem().to_owned(),
    })
}
