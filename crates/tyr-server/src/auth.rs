//! Authentication primitives: roles, password hashing (argon2id) and JWT (HS256).

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::store::time::now_ms;

/// Minimum password length (SPEC §4).
pub const MIN_PASSWORD_LEN: usize = 12;
/// Lifetime of a login token.
pub const TOKEN_TTL_SECS: i64 = 24 * 3600;

/// A user's role. `Admin` includes everything `Viewer` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything except secrets.
    Viewer,
    /// Everything.
    Admin,
}

impl Role {
    /// The stored/serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored/serialised name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn argon2() -> Argon2<'static> {
    // m=19456 KiB, t=2, p=1 (SPEC §4); these constants are valid, so the fallback is unreachable.
    let params = Params::new(19456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// At most this many argon2id computations run at once. Each holds 19 MiB, and the allocator
/// keeps that memory per thread: unbounded, a burst of registrations grew the server to 4 GB.
static ARGON2_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::sync::Semaphore::new(cores)
});

/// Runs `f` (argon2id hashing or verification) on the blocking pool, one per core at a time;
/// further callers wait their turn.
pub async fn run_argon2<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    // The semaphore is never closed, so a permit is always granted.
    let _permit = ARGON2_SLOTS.acquire().await.ok();
    tokio::task::spawn_blocking(f).await
}

/// Hashes a secret (password or enrollment token) into a PHC string. CPU-heavy: call through
/// [`run_argon2`].
pub fn hash_secret(secret: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(argon2().hash_password(secret.as_bytes())?.to_string())
}

/// Verifies a secret against a PHC string; false on mismatch or a malformed hash.
/// CPU-heavy: call through [`run_argon2`].
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    argon2().verify_password(secret.as_bytes(), phc).is_ok()
}

/// Claims of a login token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user's id (UUID).
    pub sub: String,
    /// The role at issue time (the server re-reads the role from the store on every request).
    pub role: Role,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// Why a bearer token was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct TokenError(#[from] jsonwebtoken::errors::Error);

/// HS256 signing and verification with the server's `jwt.key`.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    /// Keys from the raw secret.
    pub fn new(secret: &[u8]) -> JwtKeys {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Issues a 24 h token for a user; returns it with its claims.
    pub fn issue(&self, user_id: &str, role: Role) -> Result<(String, Claims), TokenError> {
        let iat = now_ms() / 1000;
        let claims = Claims {
            sub: user_id.to_owned(),
            role,
            iat,
            exp: iat + TOKEN_TTL_SECS,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm (HS256 only) and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let phc = hash_secret("correct horse battery").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_secret("correct horse battery", &phc));
        assert!(!verify_secret("wrong horse battery", &phc));
        assert!(!verify_secret("x", "not a phc string"));
    }

    #[test]
    fn tokens_round_trip_and_reject_other_keys() {
        let keys = JwtKeys::new(&[7; 32]);
        let (token, claims) = keys.issue("u1", Role::Admin).expect("issue");
        assert_eq!(claims.exp - claims.iat, TOKEN_TTL_SECS);
        assert_eq!(keys.verify(&token).expect("verify"), claims);
        assert!(JwtKeys::new(&[8; 32]).verify(&token).is_err());
    }
}
