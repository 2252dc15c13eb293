//! The data directory: created `0700`, key files `0600`, refused when group/world readable.
//!
//! Files: `jwt.key` (64 random bytes), `ca.key`/`ca.pem`, `server.key`/`server.pem`
//! (re-issued when `TYR_SERVER_NAMES` change, the CA changed, or it expires within 30 days).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::pki::{Ca, PkiError, inspect_cert};

/// Files holding secrets; each must be `0600` (or stricter).
pub const KEY_FILES: [&str; 3] = ["jwt.key", "ca.key", "server.key"];
const JWT_KEY_LEN: usize = 64;
const RENEW_BEFORE_SECS: i64 = 30 * 86400;

/// Errors of the data directory bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A key file is readable by group or others.
    #[error(
        "refusing to start: {path} has mode {mode:o} and is readable by group or others; run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file is too short or not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate handling failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// No randomness from the OS.
    #[error("no OS randomness: {0}")]
    Random(getrandom::Error),
}

/// Everything loaded from the data directory.
#[derive(Debug)]
pub struct Keys {
    /// HS256 secret.
    pub jwt_secret: Vec<u8>,
    /// The CA.
    pub ca: Ca,
    /// PEM of the server certificate.
    pub server_cert_pem: String,
    /// PEM of the server key.
    pub server_key_pem: String,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates the data directory (mode `0700`) if missing.
pub fn ensure_data_dir(dir: &Path) -> Result<(), KeyError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    let mode = fs::metadata(dir).map_err(io_err(dir))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data directory is accessible by group or others; 0700 is recommended");
    }
    Ok(())
}

/// Refuses key files readable (or writable) by group or others.
pub fn check_permissions(dir: &Path) -> Result<(), KeyError> {
    for name in KEY_FILES {
        let path = dir.join(name);
        match fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions { path, mode });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyError::Io { path, source: e }),
        }
    }
    Ok(())
}

/// Writes a file atomically with the given mode (temp file + rename).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

fn read_text_opt(path: &Path) -> Result<Option<String>, KeyError> {
    read_opt(path)?
        .map(|b| {
            String::from_utf8(b).map_err(|_| KeyError::Invalid {
                path: path.to_owned(),
                reason: "not UTF-8 PEM".into(),
            })
        })
        .transpose()
}

fn load_jwt_secret(dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = dir.join("jwt.key");
    if let Some(secret) = read_opt(&path)? {
        if secret.len() < 32 {
            return Err(KeyError::Invalid {
                path,
                reason: "shorter than 32 bytes; delete it to generate a new one".into(),
            });
        }
        return Ok(secret);
    }
    let mut secret = vec![0u8; JWT_KEY_LEN];
    getrandom::fill(&mut secret).map_err(KeyError::Random)?;
    write_file(&path, &secret, 0o600)?;
    tracing::info!(path = %path.display(), "generated a new JWT signing key");
    Ok(secret)
}

fn load_ca(dir: &Path) -> Result<Ca, KeyError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    match (read_text_opt(&cert_path)?, read_text_opt(&key_path)?) {
        (Some(cert), Some(key)) => Ok(Ca::from_pem(&cert, &key)?),
        (None, None) => {
            let ca = Ca::generate()?;
            write_file(&key_path, ca.key_pem().as_bytes(), 0o600)?;
            write_file(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
            tracing::info!(path = %cert_path.display(), "created a new CA");
            Ok(ca)
        }
        (Some(_), None) | (None, Some(_)) => Err(KeyError::Invalid {
            path: dir.to_owned(),
            reason: "only one of ca.pem and ca.key exists; restore the other (or remove both to create a new CA, which forces every daemon to re-enroll)".into(),
        }),
    }
}

fn server_cert_current(cert: &str, ca: &Ca, names: &[String]) -> bool {
    let Ok(facts) = inspect_cert(cert, ca.cert_pem()) else {
        return false;
    };
    let mut have = facts.names;
    let mut want = names.to_vec();
    have.sort();
    want.sort();
    let now = crate::store::time::now_ms() / 1000;
    facts.signed_by_ca && have == want && facts.not_after - now > RENEW_BEFORE_SECS
}

fn load_server_cert(dir: &Path, ca: &Ca, names: &[String]) -> Result<(String, String), KeyError> {
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    if let (Some(cert), Some(key)) = (read_text_opt(&cert_path)?, read_text_opt(&key_path)?)
        && server_cert_current(&cert, ca, names)
    {
        return Ok((cert, key));
    }
    let sc = ca.issue_server_cert(names)?;
    write_file(&key_path, sc.key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, sc.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(names = ?names, "issued the server certificate");
    Ok((sc.cert_pem, sc.key_pem))
}

/// Checks permissions, then loads or creates the JWT key, the CA and the server certificate.
pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Keys, KeyError> {
    ensure_data_dir(dir)?;
    check_permissions(dir)?;
    let jwt_secret = load_jwt_secret(dir)?;
    let ca = load_ca(dir)?;
    let (server_cert_pem, server_key_pem) = load_server_cert(dir, &ca, server_names)?;
    Ok(Keys {
        jwt_secret,
        ca,
        server_cert_pem,
        server_key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    #[test]
    fn creates_dir_and_keys_with_strict_modes_and_reuses_them() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("data");
        let k1 = load_or_create(&dir, &names()).expect("first boot");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in KEY_FILES {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert!(k1.jwt_secret.len() >= 32);
        let k2 = load_or_create(&dir, &names()).expect("second boot");
        assert_eq!(k1.jwt_secret, k2.jwt_secret);
        assert_eq!(k1.ca.cert_pem(), k2.ca.cert_pem());
        assert_eq!(k1.server_cert_pem, k2.server_cert_pem);
    }

    #[test]
    fn refuses_group_or_world_readable_key_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        load_or_create(tmp.path(), &names()).expect("boot");
        for f in KEY_FILES {
            let path = tmp.path().join(f);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
            let err = load_or_create(tmp.path(), &names()).expect_err("must refuse");
            assert!(
                matches!(&err, KeyError::Permissions { path: p, mode: 0o640 } if *p == path),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        load_or_create(tmp.path(), &names()).expect("fixed");
    }

    #[test]
    fn deleting_jwt_key_rotates_it_and_name_change_reissues_server_cert() {
        let tmp = tempfile::tempdir().expect("tmp");
        let k1 = load_or_create(tmp.path(), &names()).expect("boot");
        fs::remove_file(tmp.path().join("jwt.key")).expect("rm");
        let k2 = load_or_create(tmp.path(), &names()).expect("boot");
        assert_ne!(k1.jwt_secret, k2.jwt_secret);
        assert_eq!(k1.server_cert_pem, k2.server_cert_pem);

        let more = vec![
            "tyr.example".to_owned(),
            "localhost".into(),
            "127.0.0.1".into(),
        ];
        let k3 = load_or_create(tmp.path(), &more).expect("boot");
        assert_ne!(k2.server_cert_pem, k3.server_cert_pem);
        let facts = inspect_cert(&k3.server_cert_pem, k3.ca.cert_pem()).expect("inspect");
        assert_eq!(facts.names, more);
        assert_eq!(k2.ca.cert_pem(), k3.ca.cert_pem());
    }
}
