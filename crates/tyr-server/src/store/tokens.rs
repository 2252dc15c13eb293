//! Enrollment tokens: `tyr_et_` + 160 random bits (hex), stored argon2id-hashed with a clear
//! 8-character lookup prefix. Consumption is one conditional `UPDATE`, so concurrent
//! registrations never exceed `max_uses`.

use super::{RowExt, Store, StoreError, StoreResult, on_pool, time::now_ms};
use crate::auth::{hash_secret, verify_secret};

/// Plaintext prefix of every generated token.
pub const TOKEN_PREFIX: &str = "tyr_et_";
const LOOKUP_LEN: usize = 8;

/// A stored enrollment token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// UUID.
    pub id: String,
    /// Clear lookup prefix (first characters of the random part).
    pub prefix: String,
    /// Operator label.
    pub label: String,
    /// Maximum registrations.
    pub max_uses: i64,
    /// Registrations so far.
    pub uses: i64,
    /// Expiry (unix ms).
    pub expires_at: i64,
    /// Revoked by an admin.
    pub revoked: bool,
    /// Creation time (unix ms).
    pub created_at: i64,
}

/// Fields of a new token.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// Operator label.
    pub label: &'a str,
    /// Maximum registrations (≥ 1).
    pub max_uses: i64,
    /// Expiry (unix ms).
    pub expires_at: i64,
    /// Creating user id, if any.
    pub created_by: Option<&'a str>,
}

/// Why a token cannot be consumed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// No token with this secret.
    #[error("unknown enrollment token")]
    Unknown,
    /// Past its expiry.
    #[error("enrollment token expired")]
    Expired,
    /// Revoked by an admin.
    #[error("enrollment token revoked")]
    Revoked,
    /// `uses` reached `max_uses`.
    #[error("enrollment token exhausted")]
    Exhausted,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn lookup_prefix(plaintext: &str) -> String {
    let rest = plaintext.strip_prefix(TOKEN_PREFIX).unwrap_or(plaintext);
    rest.chars().take(LOOKUP_LEN).collect()
}

/// A fresh plaintext token.
fn generate() -> StoreResult<String> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Internal(format!("no OS randomness: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

async fn hash(secret: String) -> StoreResult<String> {
    crate::auth::run_argon2(move || hash_secret(&secret))
        .await
        .map_err(|e| StoreError::Internal(format!("hashing task failed: {e}")))?
        .map_err(|e| StoreError::Internal(format!("hashing failed: {e}")))
}

fn token_from(r: &impl RowExt) -> Result<EnrollmentToken, sqlx::Error> {
    Ok(EnrollmentToken {
        id: r.text("id")?,
        prefix: r.text("prefix")?,
        label: r.text("label")?,
        max_uses: r.int("max_uses")?,
        uses: r.int("uses")?,
        expires_at: r.int("expires_at")?,
        revoked: r.flag("revoked")?,
        created_at: r.int("created_at")?,
    })
}

const TOKEN_COLS: &str = "id, prefix, label, max_uses, uses, expires_at, revoked, created_at";

impl Store {
    /// Creates a token; returns the record and the plaintext (shown once).
    pub async fn create_enrollment_token(
        &self,
        new: NewToken<'_>,
    ) -> StoreResult<(EnrollmentToken, String)> {
        let plaintext = generate()?;
        let record = self.insert_token(&plaintext, new).await?;
        Ok((record, plaintext))
    }

    /// Stores the given plaintext as a token unless a token with that secret exists
    /// (`TYR_BOOTSTRAP_ENROLLMENT_TOKEN`). Returns whether it was inserted.
    pub async fn seed_enrollment_token(
        &self,
        plaintext: &str,
        new: NewToken<'_>,
    ) -> StoreResult<bool> {
        if self.find_token_id(plaintext).await?.is_some() {
            return Ok(false);
        }
        self.insert_token(plaintext, new).await?;
        Ok(true)
    }

    async fn insert_token(
        &self,
        plaintext: &str,
        new: NewToken<'_>,
    ) -> StoreResult<EnrollmentToken> {
        let record = EnrollmentToken {
            id: uuid::Uuid::new_v4().to_string(),
            prefix: lookup_prefix(plaintext),
            label: new.label.to_owned(),
            max_uses: new.max_uses,
            uses: 0,
            expires_at: new.expires_at,
            revoked: false,
            created_at: now_ms(),
        };
        let token_hash = hash(plaintext.to_owned()).await?;
        on_pool!(self, p => sqlx::query(
            "INSERT INTO enrollment_tokens (id, prefix, token_hash, label, max_uses, uses, expires_at, revoked, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, FALSE, $7, $8)",
        )
        .bind(&record.id)
        .bind(&record.prefix)
        .bind(&token_hash)
        .bind(&record.label)
        .bind(record.max_uses)
        .bind(record.expires_at)
        .bind(record.created_at)
        .bind(new.created_by)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(record)
    }

    /// The id of the token whose hash matches `plaintext`.
    async fn find_token_id(&self, plaintext: &str) -> StoreResult<Option<String>> {
        let prefix = lookup_prefix(plaintext);
        let candidates: Vec<(String, String)> = on_pool!(self, p => sqlx::query(
            "SELECT id, token_hash FROM enrollment_tokens WHERE prefix = $1 LIMIT 16",
        )
        .bind(&prefix)
        .fetch_all(p)
        .await?
        .iter()
        .map(|r| Ok::<_, sqlx::Error>((r.text("id")?, r.text("token_hash")?)))
        .collect::<Result<_, _>>()?);
        let secret = plaintext.to_owned();
        crate::auth::run_argon2(move || {
            candidates
                .into_iter()
                .find(|(_, h)| verify_secret(&secret, h))
                .map(|(id, _)| id)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("verify task failed: {e}")))
    }

    /// Atomically uses one registration of the token `plaintext`; returns its id.
    pub async fn consume_enrollment_token(&self, plaintext: &str) -> Result<String, ConsumeError> {
        let id = self
            .find_token_id(plaintext)
            .await?
            .ok_or(ConsumeError::Unknown)?;
        let now = now_ms();
        let used = on_pool!(self, p => sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1 \
             WHERE id = $1 AND uses < max_uses AND revoked = FALSE AND expires_at > $2 RETURNING id",
        )
        .bind(&id)
        .bind(now)
        .fetch_optional(p)
        .await
        .map_err(StoreError::from)?
        .is_some());
        if used {
            return Ok(id);
        }
        let t = self
            .enrollment_token(&id)
            .await?
            .ok_or(ConsumeError::Unknown)?;
        Err(if t.revoked {
            ConsumeError::Revoked
        } else if t.expires_at <= now {
            ConsumeError::Expired
        } else {
            ConsumeError::Exhausted
        })
    }

    /// One token by id.
    pub async fn enrollment_token(&self, id: &str) -> StoreResult<Option<EnrollmentToken>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLS} FROM enrollment_tokens WHERE id = $1"
        ));
        on_pool!(self, p => sqlx::query(sql).bind(id).fetch_optional(p).await?
            .map(|r| token_from(&r)).transpose().map_err(StoreError::from))
    }

    /// All tokens, newest first.
    pub async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentToken>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLS} FROM enrollment_tokens ORDER BY created_at DESC, id"
        ));
        on_pool!(self, p => sqlx::query(sql).fetch_all(p).await?
            .iter().map(token_from).collect::<Result<_, _>>().map_err(StoreError::from))
    }

    /// Revokes a token; false if there is no such token.
    pub async fn revoke_enrollment_token(&self, id: &str) -> StoreResult<bool> {
        let n = on_pool!(self, p => sqlx::query("UPDATE enrollment_tokens SET revoked = TRUE WHERE id = $1")
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(n > 0)
    }
}
