//! Users and the one-time setup flag.

use super::{RowExt, Store, StoreError, StoreResult, conflict_or, on_pool, time::now_ms};
use crate::auth::Role;

/// A console/API user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Creation time (unix ms).
    pub created_at: i64,
}

/// Outcome of [`Store::delete_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteUser {
    /// The user is gone; their tokens no longer authenticate.
    Deleted,
    /// No such user.
    NotFound,
    /// Refused: the last admin cannot be deleted.
    LastAdmin,
}

const USER_COLS: &str = "id, username, role, created_at";

fn user_from(r: &impl RowExt) -> Result<User, sqlx::Error> {
    let role = r.text("role")?;
    Ok(User {
        id: r.text("id")?,
        username: r.text("username")?,
        role: Role::parse(&role)
            .ok_or_else(|| sqlx::Error::Decode(format!("bad role {role:?}").into()))?,
        created_at: r.int("created_at")?,
    })
}

impl Store {
    /// Whether the first admin has been created.
    pub async fn is_configured(&self) -> StoreResult<bool> {
        let row = on_pool!(self, p => sqlx::query("SELECT 1 FROM settings WHERE key = 'setup_completed'")
            .fetch_optional(p)
            .await?
            .is_some());
        Ok(row)
    }

    /// Creates the first admin, atomically with the setup flag. `None` when setup was
    /// already done.
    pub async fn setup_first_admin(
        &self,
        username: &str,
        password_hash: &str,
    ) -> StoreResult<Option<User>> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            role: Role::Admin,
            created_at: now_ms(),
        };
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let done = sqlx::query(
                "INSERT INTO settings (key, value) VALUES ('setup_completed', $1) ON CONFLICT (key) DO NOTHING",
            )
            .bind(user.created_at.to_string())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query("INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&user.id)
                .bind(&user.username)
                .bind(password_hash)
                .bind(user.role.as_str())
                .bind(user.created_at)
                .execute(&mut *tx)
                .await
                .map_err(conflict_or)?;
            tx.commit().await?;
        });
        Ok(Some(user))
    }

    /// Creates a user; [`StoreError::Conflict`] if the username is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> StoreResult<User> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            role,
            created_at: now_ms(),
        };
        on_pool!(self, p => sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(user.created_at)
        .execute(p)
        .await
        .map(|_| ())
        .map_err(conflict_or)?);
        Ok(user)
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE id = $1"));
        on_pool!(self, p => sqlx::query(sql).bind(id).fetch_optional(p).await?
            .map(|r| user_from(&r)).transpose().map_err(StoreError::from))
    }

    /// A user and their password hash, by username (login).
    pub async fn user_for_login(&self, username: &str) -> StoreResult<Option<(User, String)>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS}, password_hash FROM users WHERE username = $1"
        ));
        on_pool!(self, p => sqlx::query(sql).bind(username).fetch_optional(p).await?
            .map(|r| Ok::<_, sqlx::Error>((user_from(&r)?, r.text("password_hash")?)))
            .transpose().map_err(StoreError::from))
    }

    /// All users, by username.
    pub async fn list_users(&self) -> StoreResult<Vec<User>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users ORDER BY username"));
        on_pool!(self, p => sqlx::query(sql).fetch_all(p).await?
            .iter().map(user_from).collect::<Result<_, _>>().map_err(StoreError::from))
    }

    /// Deletes a user unless it is the last admin.
    pub async fn delete_user(&self, id: &str) -> StoreResult<DeleteUser> {
        let done = on_pool!(self, p => sqlx::query(
            "DELETE FROM users WHERE id = $1 AND (role <> 'admin' OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)",
        )
        .bind(id)
        .execute(p)
        .await?
        .rows_affected());
        if done > 0 {
            return Ok(DeleteUser::Deleted);
        }
        Ok(match self.user_by_id(id).await? {
            Some(_) => DeleteUser::LastAdmin,
            None => DeleteUser::NotFound,
        })
    }
}
