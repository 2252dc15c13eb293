//! Embedded migrations, one list per backend.
//!
//! `sqlx::migrate!` needs the `sqlx-macros` crate (which builds SQLite a second time); the
//! files are embedded with `include_str!` instead. To add a migration, create
//! `migrations/{sqlite,postgres}/NNNN_name.sql` with the next number of that backend and add
//! it to its list below (the backends are numbered separately: PostgreSQL's 0003 has no
//! SQLite counterpart). Never edit a released migration: sqlx checks their checksums.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "daemon_gaps",
        include_str!("../../migrations/sqlite/0002_daemon_gaps.sql"),
    ),
];

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "daemon_gaps",
        include_str!("../../migrations/postgres/0002_daemon_gaps.sql"),
    ),
    (
        3,
        "slim_event_indexes",
        include_str!("../../migrations/postgres/0003_slim_event_indexes.sql"),
    ),
];

fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// Migrations of the SQLite backend.
pub(super) fn sqlite() -> Migrator {
    migrator(SQLITE)
}

/// Migrations of the PostgreSQL backend.
pub(super) fn postgres() -> Migrator {
    migrator(POSTGRES)
}
