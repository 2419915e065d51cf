//! The database: one code path for SQLite and PostgreSQL through sqlx's `any` driver, with
//! the schema's two dialects in `migrations/`.
//!
//! SQLite allows one writer at a time, so writes go through a pool of one connection
//! (queued fairly by the pool instead of spinning in SQLite's busy handler) and reads through
//! a pool of several (WAL lets them run beside the writer). PostgreSQL uses one pool for
//! both; row locks serialise what must be serialised.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, SqlStr, Transaction};
use tracing::info;

use crate::Error;

/// Which database is behind the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Where the catalogue's data lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file (created if missing), with `synchronous=FULL` when `full_sync`, else
    /// `NORMAL`.
    Sqlite {
        /// The file.
        path: std::path::PathBuf,
        /// `synchronous=FULL` rather than `NORMAL`.
        full_sync: bool,
    },
    /// A PostgreSQL URL.
    Postgres(String),
}

pub(crate) struct Db {
    pub read: AnyPool,
    pub write: AnyPool,
    pub backend: Backend,
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "catalogue",
        include_str!("../migrations/sqlite/0001_catalogue.sql"),
    ),
    (
        2,
        "operators",
        include_str!("../migrations/sqlite/0002_operators.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "catalogue",
        include_str!("../migrations/postgres/0001_catalogue.sql"),
    ),
    (
        2,
        "operators",
        include_str!("../migrations/postgres/0002_operators.sql"),
    ),
];

fn migrator(list: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

impl Db {
    pub async fn open(location: &Location, max_connections: u32) -> Result<Db, Error> {
        install_default_drivers();
        match location {
            Location::Sqlite { path, full_sync } => {
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let sync = if *full_sync { "FULL" } else { "NORMAL" };
                let options = |n: u32| {
                    AnyPoolOptions::new()
                        .max_connections(n)
                        .min_connections(1)
                        .acquire_timeout(Duration::from_secs(30))
                        .after_connect(move |conn, _| {
                            Box::pin(async move {
                                // WAL: readers never block the writer, and a commit is one
                                // append to the log (fsynced when synchronous=FULL).
                                conn.execute("PRAGMA journal_mode = WAL").await?;
                                let sql = format!("PRAGMA synchronous = {sync}");
                                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                                conn.execute("PRAGMA foreign_keys = ON").await?;
                                conn.execute("PRAGMA busy_timeout = 10000").await?;
                                Ok(())
                            })
                        })
                };
                let write = options(1).connect(&url).await?;
                migrator(SQLITE_MIGRATIONS).run(&write).await?;
                let read = options(max_connections.max(1)).connect(&url).await?;
                info!(path = %path.display(), synchronous = sync, "catalogue database: sqlite");
                Ok(Db {
                    read,
                    write,
                    backend: Backend::Sqlite,
                })
            }
            Location::Postgres(url) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?;
                // Several relays may start together: sqlx takes an advisory lock around this.
                migrator(POSTGRES_MIGRATIONS).run(&pool).await?;
                info!("catalogue database: postgresql");
                Ok(Db {
                    read: pool.clone(),
                    write: pool,
                    backend: Backend::Postgres,
                })
            }
        }
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`),
    /// so a transaction that reads before it writes cannot fail to upgrade.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, Error> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
