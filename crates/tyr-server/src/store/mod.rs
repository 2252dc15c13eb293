//! Persistence: one [`Store`] over SQLite or PostgreSQL.
//!
//! Every query is written once, in SQL that runs on both backends (`$1` placeholders,
//! `RETURNING`, `ON CONFLICT`, `BOOLEAN`, `BIGINT`), and executed through [`on_pool!`], which
//! expands the same body for each backend's pool. Rows are read through [`RowExt`] so row
//! mappers are written once too. Queries live in one file per resource (`users.rs`,
//! `tokens.rs`, …) as `impl Store` blocks.
//!
//! Conventions: ids are UUID strings, times are `BIGINT` unix milliseconds (UTC, see
//! [`time`]), JSON documents are `TEXT`. Integer columns are `BIGINT` (read as `i64`).

pub mod agent_plane;
pub mod agents;
pub mod events;
pub mod policies;
pub mod time;
pub mod tokens;
pub mod users;

mod migrations;

use std::str::FromStr;
use std::time::Duration;

use sqlx::{Connection, Row};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique constraint was violated (e.g. a duplicate username).
    #[error("already exists")]
    Conflict,
    /// A non-database failure inside the store (randomness, a hashing task).
    #[error("internal store error: {0}")]
    Internal(String),
    /// `DATABASE_URL` is neither `sqlite:` nor `postgres:`.
    #[error("unsupported DATABASE_URL scheme (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
}

/// Result alias of the storage layer.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (default).
    Sqlite,
    /// PostgreSQL 14+.
    Postgres,
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
}

#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool (`&SqlitePool` or `&PgPool`).
/// The body is compiled once per backend, so it must only use SQL valid on both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        let store = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // Event ingest is page-bound: a 64 MiB page cache and a memory-mapped database
                // cut the writer's pread/pwrite calls.
                .pragma("cache_size", "-65536")
                .pragma("mmap_size", "1073741824")
                .pragma("temp_store", "memory")
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            // One direct connection first: the pool would hide the cause behind a timeout.
            SqliteConnection::connect_with(&opts).await?.close().await?;
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Store {
                db: Db::Sqlite(pool),
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            PgConnection::connect_with(&opts).await?.close().await?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Store {
                db: Db::Postgres(pool),
            }
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    async fn migrate(&self) -> StoreResult<()> {
        match &self.db {
            Db::Sqlite(p) => migrations::sqlite().run(p).await?,
            Db::Postgres(p) => migrations::postgres().run(p).await?,
        }
        Ok(())
    }

    /// Cheap liveness probe used by `/health`.
    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ())?);
        Ok(())
    }

    /// Closes every pooled connection (graceful shutdown).
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
pub(crate) fn conflict_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Db(e),
    }
}

/// Typed column access shared by both backends' rows, so row mappers are written once.
/// Add a method (and its line in `impl_row_ext!`) for another column type.
pub(crate) trait RowExt {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
impl_row_ext!(SqliteRow);
impl_row_ext!(PgRow);
