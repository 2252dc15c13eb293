//! The internal CA: creation, server certificates and agent client certificates from CSRs.
//! Pure crypto, no file I/O (see [`crate::keys`] for the data directory).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Validity of the CA certificate.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of the server certificate (re-issued at start when less than 30 days remain).
pub const SERVER_VALIDITY_DAYS: i64 = 365;
/// Validity of an agent client certificate (SPEC §5).
pub const CLIENT_VALIDITY_DAYS: i64 = 30;
/// Longest accepted CSR PEM, at registration and at renewal (a daemon's is under 1 KiB).
pub const MAX_CSR_PEM: usize = 16 * 1024;

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to build or sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM/DER input could not be parsed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A CSR PEM longer than [`MAX_CSR_PEM`], refused before parsing.
    #[error("certificate signing request is too large (over {MAX_CSR_PEM} bytes)")]
    CsrTooLarge,
    /// The CSR's self-signature does not verify.
    #[error("certificate signing request signature is invalid")]
    BadCsrSignature,
}

/// The CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(..)")
    }
}

/// A certificate just issued, with the facts the store records about it.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// PEM of the certificate.
    pub cert_pem: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// Expiry, unix milliseconds.
    pub not_after_ms: i64,
}

/// A server certificate with its freshly generated key.
#[derive(Debug)]
pub struct ServerCert {
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // Without OS randomness nothing here is safe; rcgen then picks its own serial.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = [0; 16];
    }
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days);
}

fn issued(cert: &rcgen::Certificate, params: &CertificateParams) -> IssuedCert {
    let der = cert.der();
    IssuedCert {
        cert_pem: cert.pem(),
        serial: params
            .serial_number
            .as_ref()
            .map(|s| hex::encode(s.to_bytes()))
            .unwrap_or_default(),
        fingerprint: fingerprint_of(der.as_ref()),
        not_after_ms: i64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(i64::MAX),
    }
}

impl Ca {
    /// Creates a new CA (ECDSA P-256, 10 years).
    pub fn generate() -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Tyr CA");
        dn.push(DnType::OrganizationName, "Tyr");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem,
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|_| PkiError::Malformed("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|_| PkiError::Malformed("CA certificate"))?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// PEM of the CA certificate (served at `/api/v1/ca.pem`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// PEM of the CA private key (written to `ca.key`).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a TLS server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server_cert(&self, names: &[String]) -> Result<ServerCert, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("tyr-server", String::as_str),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, SERVER_VALIDITY_DAYS);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's PKCS#10 CSR into a 30-day client certificate (clientAuth EKU) whose
    /// subject CN and SAN (`urn:uuid:<agent_id>`) carry `agent_id`. Only the CSR's public key
    /// is used: its requested subject and extensions are ignored. The CSR's signature must
    /// verify (proof of possession). A PEM over [`MAX_CSR_PEM`] is refused before parsing.
    pub fn sign_client_csr(&self, csr_pem: &str, agent_id: &str) -> Result<IssuedCert, PkiError> {
        let der = parse_csr_pem(csr_pem)?;
        self.sign_client_csr_der(der.as_ref(), agent_id)
    }

    /// [`Ca::sign_client_csr`] for a DER-encoded CSR.
    pub fn sign_client_csr_der(
        &self,
        csr_der: &[u8],
        agent_id: &str,
    ) -> Result<IssuedCert, PkiError> {
        let (_, csr) = X509CertificationRequest::from_der(csr_der)
            .map_err(|_| PkiError::Malformed("certificate signing request"))?;
        csr.verify_signature()
            .map_err(|_| PkiError::BadCsrSignature)?;
        let spki = SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|_| PkiError::Malformed("CSR public key"))?;

        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(format!("urn:uuid:{agent_id}").try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, CLIENT_VALIDITY_DAYS);
        let cert = params.signed_by(&spki, &self.issuer)?;
        Ok(issued(&cert, &params))
    }
}

/// The agent id (subject CN) of a client certificate given as DER.
pub fn agent_id_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

fn pem_cert(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| PkiError::Malformed("certificate PEM"))
}

/// Facts about an existing server certificate, to decide whether to re-issue it.
#[derive(Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// DNS and IP subject alternative names, as strings.
    pub names: Vec<String>,
    /// Expiry, unix seconds.
    pub not_after: i64,
    /// Whether the certificate's signature verifies against the given CA.
    pub signed_by_ca: bool,
}

/// Reads the SANs, expiry and issuer check of a PEM certificate against a CA PEM.
pub fn inspect_cert(cert_pem: &str, ca_pem: &str) -> Result<CertFacts, PkiError> {
    let cert_der = pem_cert(cert_pem)?;
    let ca_der = pem_cert(ca_pem)?;
    let (_, cert) =
        X509Certificate::from_der(&cert_der).map_err(|_| PkiError::Malformed("certificate"))?;
    let (_, ca) =
        X509Certificate::from_der(&ca_der).map_err(|_| PkiError::Malformed("CA certificate"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(
                        IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()).to_string(),
                    ),
                    16 => names.push(
                        IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()).to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertFacts {
        names,
        not_after: cert.validity().not_after.timestamp(),
        signed_by_ca: cert.verify_signature(Some(ca.public_key())).is_ok(),
    })
}

/// The SHA-256 fingerprint (hex) of a DER certificate, as stored for each daemon.
pub fn fingerprint_of(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER of a CSR PEM of at most [`MAX_CSR_PEM`] bytes (the size is checked first).
pub fn parse_csr_pem(csr_pem: &str) -> Result<CertificateSigningRequestDer<'static>, PkiError> {
    if csr_pem.len() > MAX_CSR_PEM {
        return Err(PkiError::CsrTooLarge);
    }
    CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| PkiError::Malformed("certificate signing request"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::ParsedExtension;

    fn csr_with_extras() -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "admin");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn signs_csr_into_client_cert_ignoring_requested_subject_and_extensions() {
        let ca = Ca::generate().expect("ca");
        let agent = "0196a3b2-7d1e-7c00-8000-000000000001";
        let issued = ca.sign_client_csr(&csr_with_extras(), agent).expect("sign");
        let der = pem_cert(&issued.cert_pem).expect("pem");
        let (_, cert) = X509Certificate::from_der(&der).expect("der");

        assert_eq!(agent_id_of(&der).as_deref(), Some(agent));
        let days = (cert.validity().not_after.timestamp()
            - OffsetDateTime::now_utc().unix_timestamp())
            / 86400;
        assert!((29..=30).contains(&days), "{days} days");
        let ca_der = pem_cert(ca.cert_pem()).expect("ca pem");
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("ca der");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert_eq!(issued.fingerprint, hex::encode(Sha256::digest(&der)));
        assert_eq!(issued.serial, hex::encode(cert.raw_serial()));

        let mut saw_client_auth = false;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    assert!(eku.client_auth && !eku.server_auth);
                    saw_client_auth = true;
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    let names: Vec<String> =
                        san.general_names.iter().map(|n| n.to_string()).collect();
                    assert_eq!(names, vec![format!("URI(urn:uuid:{agent})")]);
                }
                ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca),
                _ => {}
            }
        }
        assert!(saw_client_auth);
    }

    #[test]
    fn rejects_garbage_and_forged_csrs() {
        let ca = Ca::generate().expect("ca");
        assert!(ca.sign_client_csr("not a csr", "a").is_err());
        let csr = csr_with_extras();
        let mut der = pem_der(&csr);
        let last = der.len() - 1;
        der[last] ^= 0x55; // corrupt the signature
        assert!(matches!(
            ca.sign_client_csr_der(&der, "a"),
            Err(PkiError::BadCsrSignature | PkiError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_csrs_are_refused_before_parsing() {
        let ca = Ca::generate().expect("ca");
        // A valid CSR behind explanatory text (which PEM allows) grown past the limit.
        let csr = csr_with_extras();
        let padded = format!("{}\n{csr}", "x".repeat(MAX_CSR_PEM));
        assert!(CertificateSigningRequestDer::from_pem_slice(padded.as_bytes()).is_ok());
        assert!(matches!(
            ca.sign_client_csr(&padded, "a"),
            Err(PkiError::CsrTooLarge)
        ));
        let at_limit = format!("{}\n{csr}", "x".repeat(MAX_CSR_PEM - csr.len() - 1));
        assert_eq!(at_limit.len(), MAX_CSR_PEM);
        assert!(ca.sign_client_csr(&at_limit, "a").is_ok());
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .expect("csr pem")
            .as_ref()
            .to_vec()
    }

    #[test]
    fn server_cert_carries_names_and_is_signed_by_ca() {
        let ca = Ca::generate().expect("ca");
        let names = vec!["tyr.example".to_owned(), "127.0.0.1".to_owned()];
        let sc = ca.issue_server_cert(&names).expect("server cert");
        let facts = inspect_cert(&sc.cert_pem, ca.cert_pem()).expect("inspect");
        assert_eq!(facts.names, names);
        assert!(facts.signed_by_ca);
        let other = Ca::generate().expect("other ca");
        assert!(
            !inspect_cert(&sc.cert_pem, other.cert_pem())
                .expect("inspect")
                .signed_by_ca
        );
        let reloaded = Ca::from_pem(ca.cert_pem(), ca.key_pem()).expect("reload");
        let sc2 = reloaded.issue_server_cert(&names).expect("reissue");
        assert!(
            inspect_cert(&sc2.cert_pem, ca.cert_pem())
                .expect("inspect")
                .signed_by_ca
        );
    }
}
