//! Enrollment (`tyrd enroll`, or `tyrd run` when not enrolled yet): a P-256 key made here, a
//! CSR for it, `Register` with the one-time token over TLS trusting only `ca_file`; the
//! certificate, CA and agent id are stored in `state_dir` and the token is removed from the
//! configuration file.

use std::path::Path;

use tyr_proto::agent::RegisterRequest;
use tyr_proto::agent::agent_plane_client::AgentPlaneClient;

use crate::agent_plane::identity::{self, Identity};
use crate::agent_plane::{self, PlaneError};
use crate::config::{self, Config};

fn proc_value(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The running kernel's release (`uname -r`).
pub fn kernel_version() -> String {
    proc_value("/proc/sys/kernel/osrelease")
}

/// Enrolls with the server and stores the identity; `config_path` is the file the token is
/// removed from.
pub async fn enroll(config: &Config, config_path: &Path) -> Result<Identity, PlaneError> {
    let token = config.enrollment_token.clone().ok_or_else(|| {
        PlaneError::Invalid(format!(
            "not enrolled and {} has no enrollment_token",
            config_path.display()
        ))
    })?;
    let ca_pem = std::fs::read_to_string(&config.ca_file).map_err(|source| PlaneError::Io {
        path: config.ca_file.display().to_string(),
        source,
    })?;
    let (key_pem, csr_pem) = identity::new_key_and_csr()?;
    let channel = agent_plane::connect(&config.server, &ca_pem, None).await?;
    let response = AgentPlaneClient::new(channel)
        .register(RegisterRequest {
            agent_name: config.name.clone(),
            enrollment_token: token,
            csr_pem,
            kernel_version: kernel_version(),
            arch: std::env::consts::ARCH.to_owned(),
            hostname: proc_value("/proc/sys/kernel/hostname"),
        })
        .await
        .map_err(PlaneError::Refused)?
        .into_inner();
    let agent_id = uuid::Uuid::parse_str(&response.agent_id)
        .map_err(|_| PlaneError::Invalid("the server sent a malformed agent_id".into()))?
        .to_string();
    let identity = Identity {
        agent_id,
        cert_pem: response.client_cert_pem,
        key_pem,
        ca_pem: response.ca_cert_pem,
    };
    identity.save(&config.state_dir)?;
    tracing::info!(agent_id = %identity.agent_id, "enrolled");
    match config::remove_enrollment_token(config_path) {
        Ok(_) => {}
        Err(e) => tracing::warn!("enrolled, but the token stays in the configuration: {e}"),
    }
    Ok(identity)
}
