//! The daemon's side of the agent plane (SPEC §5): its identity on disk, TLS channels to the
//! server, and the link between the stream task and the spool owned by the main loop.

pub mod identity;
pub mod link;
pub mod records;

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsIdentity};

/// Time allowed to establish a TCP + TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent plane could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// Reading or writing the state directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file of the state directory or a server answer is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The TLS or HTTP/2 connection failed.
    #[error("cannot connect to {server}: {message}")]
    Connect {
        /// `host:port`.
        server: String,
        /// The cause.
        message: String,
    },
    /// The server refused the call.
    #[error("{}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
}

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The host part of `host:port` (brackets of an IPv6 address removed), the TLS server name.
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Opens an HTTP/2 + TLS channel to `server` trusting only `ca_pem`, presenting
/// `client` (certificate PEM, key PEM) when given.
pub async fn connect(
    server: &str,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<Channel, PlaneError> {
    let connect_err = |message: String| PlaneError::Connect {
        server: server.to_owned(),
        message,
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(host_of(server));
    if let Some((cert, key)) = client {
        tls = tls.identity(TlsIdentity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{server}"))
        .map_err(|e| connect_err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| connect_err(error_chain(&e)))
}

/// An error with its sources, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:7700"), "127.0.0.1");
        assert_eq!(host_of("tyr.example:7700"), "tyr.example");
        assert_eq!(host_of("[::1]:7700"), "::1");
    }
}
