//! Whether this node is the only one writing to its database, told by a PostgreSQL advisory lock,
//! so that it may answer VM reads from memory ([`VmCache`]) without breaking "a read after a
//! command's answer sees it" on any node.
//!
//! Every node holds the lock from a connection of its own: a node alone holds it exclusively
//! (it is *solo*), nodes that share the database hold it shared (they are *members*). A member
//! also takes it shared in the transaction of each command it commits (`record`'s
//! `solo_lock` parameter), so a member whose lock connection was lost unnoticed still cannot
//! commit while another node is solo. A solo node commits without it.
//!
//! A node starting beside a solo one asks for the lock shared and waits. The solo node looks for
//! anyone waiting every [`CHECK_EVERY`]; seeing one, it stops serving reads from memory, empties
//! its cache, and only then takes the lock shared and lets go of its exclusive hold, so the
//! newcomer's first commit comes after the last read served from memory. A member tries every
//! [`UPGRADE_EVERY`] to take the lock exclusively, which succeeds once no other node holds it
//! (they stopped) and no command of another node is committing.
//!
//! Reads are served only for [`LEASE`] after the last successful check: a solo node whose lock
//! connection stops answering stops serving within that time. A solo node that lets a newcomer
//! wait for several seconds (frozen, or its checks failing) is past its lease, and the newcomer
//! terminates its lock session rather than wait for ever. If an operator terminates the
//! lock's session, reads on the solo node may be answered from memory until its next check (at
//! most [`CHECK_EVERY`]) while another node starts committing; the README says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::vm_cache::VmCache;

/// The lock's key ("\0voidsol").
pub const SOLO_LOCK: i64 = 0x0076_6f69_6473_6f6c;
/// How often a solo node checks that no other node waits (and renews its lease).
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long reads may be served after a successful check.
pub const LEASE: Duration = Duration::from_secs(1);
/// How often a member tries to become solo.
pub const UPGRADE_EVERY: Duration = Duration::from_secs(1);
/// How long one wait for the lock lasts before it is asked for again (and said in the log).
const WAIT_STEP: &str = "2s";
/// The rows of `pg_locks` that are this database's solo-writer lock (`$1` is its key).
const LOCK_ROWS: &str = "l.locktype = 'advisory' AND l.objsubid = 1
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid = ($1 >> 32)::oid AND l.objid = ($1 & 4294967295)::oid";
/// After how many waits a lone node that does not share the lock is fenced off.
const FENCE_AFTER: u32 = 3;

/// What this node is, as far as the lock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not decided yet, or the lock connection is lost: commits take the lock, reads go to
    /// PostgreSQL.
    Unsure,
    Member,
    Solo,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unsure => "unsure",
            Role::Member => "member",
            Role::Solo => "solo",
        }
    }
}

/// The node's side of the lock: whether commits must take it, and the cache it guards.
pub struct SoloWriter {
    cache: Arc<VmCache>,
    /// Whether a commit must take the lock shared (every role but solo).
    shared_per_commit: AtomicBool,
    role: watch::Sender<Role>,
}

impl Default for SoloWriter {
    fn default() -> Self {
        SoloWriter {
            cache: Arc::new(VmCache::default()),
            shared_per_commit: AtomicBool::new(true),
            role: watch::Sender::new(Role::Unsure),
        }
    }
}

impl SoloWriter {
    pub fn cache(&self) -> &Arc<VmCache> {
        &self.cache
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Waits until the node's role is decided (or `limit` passes) and says which it is.
    pub async fn settled(&self, limit: Duration) -> Role {
        let mut role = self.role.subscribe();
        let _ = tokio::time::timeout(limit, role.wait_for(|r| *r != Role::Unsure)).await;
        self.role()
    }

    /// The lock key a commit starting now takes shared: none when this node is solo.
    pub fn commit_lock(&self) -> Option<i64> {
        self.shared_per_commit
            .load(Ordering::SeqCst)
            .then_some(SOLO_LOCK)
    }

    fn set_role(&self, role: Role) {
        if self.role() != role {
            tracing::info!(role = role.as_str(), "{}", role_said(role));
        }
        self.role.send_replace(role);
    }

    /// Stops serving and makes commits take the lock (before anything else may write).
    fn step_down(&self, role: Role) {
        self.cache.stop_serving();
        self.shared_per_commit.store(true, Ordering::SeqCst);
        self.set_role(role);
    }

    /// Holds the lock until `shutdown`, again after every lost connection.
    pub async fn keep(self: Arc<Self>, pool: PgPool, node_id: String, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let since = std::time::Instant::now();
            let held = tokio::select! {
                () = shutdown.cancelled() => break,
                held = self.hold(&pool, &node_id) => held,
            };
            self.step_down(Role::Unsure);
            if let Err(e) = held {
                tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "the solo-writer lock's connection was lost: VM reads go to PostgreSQL until it is back");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            // Back off while connecting keeps failing; a hold that lasted starts over.
            delay = if since.elapsed() > Duration::from_secs(30) {
                Duration::from_millis(100)
            } else {
                (delay * 2).min(Duration::from_secs(5))
            };
        }
        self.step_down(Role::Unsure);
    }

    /// Takes the lock and keeps it; returns only when its connection fails.
    async fn hold(&self, pool: &PgPool, node_id: &str) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect_with(&pool.connect_options())
            .await
            .context("the solo-writer lock's connection failed")?;
        sqlx::query("SELECT set_config('application_name', $1, false), set_config('lock_timeout', $2, false)")
            .bind(format!("voidvm {node_id} solo-writer lock"))
            .bind(WAIT_STEP)
            .execute(&mut conn)
            .await
            .context("the solo-writer lock's connection could not be set up")?;
        let mut solo = try_exclusive(&mut conn).await?;
        if !solo {
            wait_shared(&mut conn).await?;
        }
        loop {
            if solo {
                self.shared_per_commit.store(false, Ordering::SeqCst);
                self.set_role(Role::Solo);
                self.serve(&mut conn).await?;
                // Another node waits: step down before it may commit.
                self.step_down(Role::Member);
                sqlx::query("SELECT pg_advisory_lock_shared($1), pg_advisory_unlock($1)")
                    .bind(SOLO_LOCK)
                    .execute(&mut conn)
                    .await
                    .context("the solo-writer lock could not be shared")?;
                solo = false;
            } else {
                self.set_role(Role::Member);
                tokio::time::sleep(UPGRADE_EVERY).await;
                if try_exclusive(&mut conn).await? {
                    sqlx::query("SELECT pg_advisory_unlock_shared($1)")
                        .bind(SOLO_LOCK)
                        .execute(&mut conn)
                        .await
                        .context("the solo-writer lock's shared hold could not be let go")?;
                    solo = true;
                }
            }
        }
    }

    /// Serves reads from memory, renewing the lease at every check, until another node waits.
    async fn serve(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        loop {
            let waiting: bool = sqlx::query_scalar(&format!(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE {LOCK_ROWS} AND NOT l.granted)"
            ))
            .bind(SOLO_LOCK)
            .fetch_one(&mut *conn)
            .await
            .context("the solo-writer lock could not be checked")?;
            if waiting {
                return Ok(());
            }
            self.cache.serve_until(LEASE);
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
}

fn role_said(role: Role) -> &'static str {
    match role {
        Role::Unsure => {
            "this node does not know whether it writes alone: VM reads go to PostgreSQL"
        }
        Role::Member => "another node writes to this database: VM reads go to PostgreSQL",
        Role::Solo => {
            "this node is the only one writing to its database: VM reads are answered from memory"
        }
    }
}

async fn try_exclusive(conn: &mut PgConnection) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SOLO_LOCK)
        .fetch_one(conn)
        .await
        .context("the solo-writer lock could not be asked for")
}

/// Waits for the lock shared: a solo node lets go of it within a check or two. One that has
/// not after [`FENCE_AFTER`] waits is frozen or cut off (it would have seen this wait at its next
/// check, and it trusts its memory for only [`LEASE`] after its last one): its lock session is
/// terminated, so that it cannot hold every other node's commits back.
async fn wait_shared(conn: &mut PgConnection) -> anyhow::Result<()> {
    let mut waits = 0u32;
    loop {
        match sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(SOLO_LOCK)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                waits += 1;
                let holder: Option<(i32, String)> = sqlx::query_as(&format!(
                    "SELECT a.pid, a.application_name
                     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE {LOCK_ROWS} AND l.granted AND l.mode = 'ExclusiveLock' LIMIT 1"
                ))
                .bind(SOLO_LOCK)
                .fetch_optional(&mut *conn)
                .await
                .context("the solo-writer lock's holder could not be found")?;
                let Some((pid, name)) = holder else { continue };
                if waits < FENCE_AFTER {
                    tracing::warn!(waits, holder_pid = pid, holder = %name, "still waiting for the node that writes alone to share the solo-writer lock");
                    continue;
                }
                tracing::warn!(waits, holder_pid = pid, holder = %name, "the node that writes alone did not share the solo-writer lock: its lock session is terminated");
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&mut *conn)
                    .await
                    .context("the solo-writer lock's holder could not be terminated")?;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("the solo-writer lock could not be taken"))
            }
        }
    }
}
