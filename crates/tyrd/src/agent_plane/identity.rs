//! The daemon's identity in `state_dir`: `agent.key` (P-256, mode 0600, never leaves the
//! host), `agent.pem` (the CA-signed client certificate), `ca.pem` (the server CA) and
//! `agent_id`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PlaneError;

const KEY: &str = "agent.key";
const CERT: &str = "agent.pem";
const CA: &str = "ca.pem";
const ID: &str = "agent_id";

/// An enrolled daemon's key, certificate and CA.
#[derive(Clone)]
pub struct Identity {
    /// UUID given by the server.
    pub agent_id: String,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
    /// PEM of the server CA.
    pub ca_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PlaneError + '_ {
    move |source| PlaneError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read(path: &Path) -> Result<String, PlaneError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Writes `bytes` to `dir/name` atomically (temp file, fsync, rename) with `mode`.
pub(crate) fn write_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<(), PlaneError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })()
    .map_err(io_err(&path))
}

/// A fresh P-256 key (PKCS#8 PEM) and a CSR (PEM) for it.
pub fn new_key_and_csr() -> Result<(String, String), PlaneError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PlaneError::Invalid(format!("cannot generate a key: {e}")))?;
    let csr = csr_for(&key)?;
    Ok((key.serialize_pem(), csr))
}

/// A CSR (PEM) for the key `key_pem`.
pub fn csr_for_pem(key_pem: &str) -> Result<String, PlaneError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PlaneError::Invalid(format!("{KEY}: {e}")))?;
    csr_for(&key)
}

fn csr_for(key: &KeyPair) -> Result<String, PlaneError> {
    CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(key))
        .and_then(|csr| csr.pem())
        .map_err(|e| PlaneError::Invalid(format!("cannot build the CSR: {e}")))
}

impl Identity {
    /// Whether `state_dir` holds an identity (it may still be unreadable).
    pub fn exists(state_dir: &Path) -> bool {
        [KEY, CERT, CA, ID]
            .iter()
            .all(|f| state_dir.join(f).exists())
    }

    /// Reads the identity from `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Identity, PlaneError> {
        Ok(Identity {
            agent_id: read(&state_dir.join(ID))?.trim().to_owned(),
            cert_pem: read(&state_dir.join(CERT))?,
            key_pem: read(&state_dir.join(KEY))?,
            ca_pem: read(&state_dir.join(CA))?,
        })
    }

    /// Writes every file of the identity to `state_dir` (the key with mode 0600).
    pub fn save(&self, state_dir: &Path) -> Result<(), PlaneError> {
        write_file(state_dir, KEY, self.key_pem.as_bytes(), 0o600)?;
        write_file(state_dir, CA, self.ca_pem.as_bytes(), 0o644)?;
        write_file(state_dir, CERT, self.cert_pem.as_bytes(), 0o644)?;
        write_file(
            state_dir,
            ID,
            format!("{}\n", self.agent_id).as_bytes(),
            0o644,
        )
    }

    /// Replaces the certificate (after a renewal) in memory and in `state_dir`.
    pub fn replace_cert(&mut self, state_dir: &Path, cert_pem: String) -> Result<(), PlaneError> {
        validity(&cert_pem)?;
        write_file(state_dir, CERT, cert_pem.as_bytes(), 0o644)?;
        self.cert_pem = cert_pem;
        Ok(())
    }

    /// When the certificate should be renewed: half-way through its validity.
    pub fn renew_at(&self) -> Result<SystemTime, PlaneError> {
        let (from, to) = validity(&self.cert_pem)?;
        Ok(from + (to.duration_since(from).unwrap_or_default() / 2))
    }
}

/// `(not_before, not_after)` of a PEM certificate.
fn validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), PlaneError> {
    let bad = || PlaneError::Invalid("malformed client certificate".into());
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| bad())?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|_| bad())?;
    let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Ok((
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_identity_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let (key_pem, csr) = new_key_and_csr().expect("key");
        assert!(csr.contains("CERTIFICATE REQUEST"));
        assert!(
            csr_for_pem(&key_pem)
                .expect("csr")
                .contains("CERTIFICATE REQUEST")
        );
        let id = Identity {
            agent_id: "a".into(),
            cert_pem: "c".into(),
            key_pem,
            ca_pem: "ca".into(),
        };
        assert!(!Identity::exists(&state));
        id.save(&state).expect("save");
        assert!(Identity::exists(&state));
        let mode = fs::metadata(state.join(KEY)).expect("meta").permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let back = Identity::load(&state).expect("load");
        assert_eq!(back.agent_id, "a");
        assert_eq!(back.key_pem, id.key_pem);
    }
}
