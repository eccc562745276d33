//! PostgreSQL: the event log (our repository over sqlx), and the tables derived from it.

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub mod accounts;
pub mod append;
pub mod audit;
pub mod cloud_init;
pub mod conditions;
pub mod deliveries;
pub mod event_store;
pub mod feed;
pub mod idempotency;
pub mod images;
pub mod jobs;
pub mod log_identity;
pub mod metadata;
pub mod ports;
pub mod quota;
pub mod record;
pub mod repository;
pub mod solo;
pub mod system_samples;
pub mod system_stats;
pub mod upcasters;
pub mod users;
pub mod visible;
pub mod vm_cache;
pub mod vm_view;
pub mod webhooks;

pub use event_store::{VmEventStore, VmState};
pub use metadata::{CommandMeta, EventMetadata, Via};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached; a retry may work.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another writer changed the same stream first.
    #[error("another change to the same virtual machine was recorded first")]
    Conflict,
    /// The owner already has a VM of that name; nothing was recorded.
    #[error("the owner already has a virtual machine named '{name}'")]
    NameTaken { name: String },
    /// Another VM holds a host port this VM's network forwards; nothing was recorded.
    #[error("host port {port}/{} is forwarded to another virtual machine", .protocol.as_str())]
    PortTaken {
        protocol: crate::vm::Protocol,
        port: u16,
    },
    /// A cancel found its job no longer queued (a worker took it); nothing was recorded.
    #[error("job {job_id} is {status}")]
    JobNotQueued { job_id: String, status: String },
    /// The user's idempotency key was taken by another request first; nothing was recorded.
    #[error("the idempotency key was already used")]
    KeyTaken,
    /// The change would take its owner past a quota; nothing was recorded.
    #[error("{0}")]
    QuotaExceeded(QuotaExceeded),
    /// The VM's image was deleted before the VM's creation committed; nothing was recorded.
    #[error("the image '{0}' was deleted")]
    ImageGone(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Which quota a change would exceed, its limit, what the owner uses and what the change adds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The {resource} quota is {limit}{unit}: {used}{unit} in use, and this asks for {requested}{unit} more.", unit = resource.unit())]
pub struct QuotaExceeded {
    pub resource: crate::accounts::QuotaResource,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
            other => StoreError::Unexpected(anyhow::Error::new(other).context("a query failed")),
        }
    }
}

/// `pool.begin()`, safe to cancel. sqlx 0.8 counts a transaction as begun only once `BEGIN`'s
/// answer is read; a future dropped between sending `BEGIN` and reading the answer (an HTTP
/// handler whose client went away) returns its connection to the pool inside an open
/// transaction that nothing ends. Every later statement on that connection, such as a command's
/// single-statement commit, then stays uncommitted and holds its locks. Here `BEGIN` runs in a
/// task of its own that always finishes, so a transaction nobody takes is rolled back as any
/// dropped transaction is.
pub async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| {
            StoreError::Unexpected(anyhow::Error::new(e).context("a transaction could not begin"))
        })?
        .map_err(StoreError::from)
}

/// Connections a node's HTTP workers may hold in all (each gets its share, at least 2). With the
/// node's own pool (16, for the VM actors, the job workers and the background loops) and its
/// listeners, a node holds at most about 37 of PostgreSQL's default 100 connections, leaving
/// room for a second node, or for pgbench's 64 clients measuring the database beside it.
/// Commands go through the actors' pool; the HTTP workers' connections serve reads.
const HTTP_CONNECTIONS: usize = 16;

/// How many connections each of `workers` HTTP workers may open.
pub fn worker_pool_size(workers: usize) -> u32 {
    u32::try_from((HTTP_CONNECTIONS / workers.max(1)).max(2)).unwrap_or(2)
}

/// An HTTP worker's own pool, opened lazily: its connections are made on first use, by the
/// worker's own runtime (see `app::AppState`). One idle for a minute is closed.
pub fn worker_pool(options: sqlx::postgres::PgConnectOptions, max: u32) -> PgPool {
    pool_options()
        .max_connections(max)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options)
}

/// How long a pooled connection may sit idle before it is checked (a round trip) on its way out.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The pool's options: a connection that has been idle for a while is pinged before it is handed
/// out (one that broke while idle, e.g. across a PostgreSQL restart, is replaced), but one in
/// steady use is not: sqlx's default pings on every acquire, a round trip before every query.
pub fn pool_options() -> PgPoolOptions {
    use sqlx::Connection;
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Connects (creating the database when it does not exist yet) and applies `migrations/`.
pub async fn connect_and_migrate(url: &str) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    if !sqlx::Postgres::database_exists(url)
        .await
        .context("PostgreSQL could not be reached to check that the database exists")?
    {
        sqlx::Postgres::create_database(url)
            .await
            .context("the database could not be created")?;
    }
    let pool = pool_options()
        .max_connections(16)
        .connect(url)
        .await
        .context("PostgreSQL refused the connection")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("the migrations could not be applied")?;
    visible::check_positions_ahead(&pool).await?;
    Ok(pool)
}
