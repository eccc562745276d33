//! A node's memory of who may call: users and revoked tokens, so that authenticating a request
//! needs no database round trip in the common case.
//!
//! PostgreSQL tells every node what changed: triggers on `users` and `revoked_tokens`
//! (`migrations/0010_auth_notify.sql`) send `NOTIFY voidvm_auth` at commit, and each node LISTENs
//! on a connection of its own. The cache is trusted only while that connection listens: before
//! it first listens, and from the moment it is lost until it listens again, every check reads the
//! database. After it (re)connects it LISTENs first and then reloads everything, so nothing that
//! changed while it was away is missed. Every change also bumps a counter that open WebSocket
//! connections watch, so they check their token again at once (a logout or a password change
//! closes them on every node).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::permission::{Grants, Permission, RoleGrant, Scope};
use crate::accounts::UserStatus;
use crate::store::{users, StoreError};

/// The channel the triggers notify on.
const CHANNEL: &str = "voidvm_auth";

/// What the cache knows of a user.
#[derive(Debug, Clone)]
pub struct CachedUser {
    pub id: String,
    pub username: String,
    pub role: RoleGrant,
    pub status: UserStatus,
    /// The user's own request rate (a minute), over the role's.
    pub rate_limit: Option<u32>,
    /// Tokens issued in an older generation (before a password change) are refused.
    pub token_generation: i64,
}

/// Why a token whose signature and expiry are fine is refused anyway.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("The token has been revoked.")]
    Revoked,
    #[error("The token was issued before the user's password changed or the user was disabled; log in again.")]
    PasswordChanged,
    #[error("The token's user no longer exists.")]
    UserGone,
    #[error("The token's user is disabled.")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The token being checked: its id, its user and the generation it was issued in.
#[derive(Debug, Clone, Copy)]
pub struct TokenRef<'a> {
    pub jti: &'a str,
    pub user_id: &'a str,
    pub generation: i64,
}

#[derive(Default)]
struct Cached {
    /// Whether the listener listens: only then is what follows trusted.
    live: bool,
    /// Users by id; `None` remembers that there is no such user.
    users: HashMap<String, Option<CachedUser>>,
    /// Revoked token ids and when each token expires (seconds since the epoch).
    revoked: HashMap<String, i64>,
}

/// What a notification says changed.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Change {
    User {
        id: String,
    },
    Revoked {
        jti: String,
        #[serde(rename = "expiresAt")]
        expires_at: i64,
    },
    /// A role changed: every cached user may carry it.
    Role,
    /// The live configuration changed.
    Config,
}

pub struct AuthCache {
    cached: Mutex<Cached>,
    /// Bumped after every change; also the epoch that keeps a slow read from caching stale data.
    changes: watch::Sender<u64>,
    /// Bumped when the live configuration changed, or may have while the listener was away.
    config_changes: watch::Sender<u64>,
}

impl AuthCache {
    pub fn new() -> Arc<AuthCache> {
        Arc::new(AuthCache {
            cached: Mutex::new(Cached::default()),
            changes: watch::channel(0).0,
            config_changes: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes, for WebSocket connections that check their token again on each.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Changes of the live configuration (see `accounts::live`), announced by the same listener.
    pub fn changes_of_config(&self) -> watch::Receiver<u64> {
        self.config_changes.subscribe()
    }

    fn bump_config(&self) {
        self.config_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The token's user, unless the token was revoked, its user is gone, or the password changed
    /// since it was issued.
    pub async fn check(&self, pool: &PgPool, token: TokenRef<'_>) -> Result<CachedUser, Refusal> {
        let epoch = *self.changes.borrow();
        let (live, revoked, user) = {
            let cached = self.lock();
            (
                cached.live,
                cached.revoked.contains_key(token.jti),
                cached.users.get(token.user_id).cloned(),
            )
        };
        let revoked = if live {
            revoked
        } else {
            users::is_revoked(pool, token.jti).await?
        };
        if revoked {
            return Err(Refusal::Revoked);
        }
        let user = match user.filter(|_| live) {
            Some(user) => user,
            None => {
                let user = load_user(pool, token.user_id).await?;
                let mut cached = self.lock();
                // A change that arrived during the read may be newer than what was read.
                if cached.live && *self.changes.borrow() == epoch {
                    cached.users.insert(token.user_id.to_string(), user.clone());
                }
                user
            }
        };
        let user = user.ok_or(Refusal::UserGone)?;
        if user.status == UserStatus::Disabled {
            return Err(Refusal::Disabled);
        }
        if token.generation < user.token_generation {
            return Err(Refusal::PasswordChanged);
        }
        Ok(user)
    }

    /// Takes effect on this node at once, before the notification comes back.
    pub fn note_revoked(&self, jti: &str, expires_at: i64) {
        self.lock().add_revoked(jti.to_string(), expires_at);
        self.bump();
    }

    /// Forgets a user on this node at once, before the notification comes back.
    pub fn forget_user(&self, user_id: &str) {
        self.lock().users.remove(user_id);
        self.bump();
    }

    /// Listens for changes until `shutdown` is cancelled, reconnecting (and reloading) after a
    /// lost connection.
    pub async fn listen(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        tokio::select! {
            () = self.listen_forever(&pool) => {}
            () = shutdown.cancelled() => tracing::debug!("auth cache listener stopped"),
        }
        self.go_dark();
    }

    async fn listen_forever(&self, pool: &PgPool) {
        let mut failures = 0u32;
        loop {
            match self.listen_once(pool).await {
                Ok(()) => {
                    failures = 0;
                    tracing::warn!("the auth cache lost its listener; checking tokens against the database until it is back");
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %crate::telemetry::chain(&e), "the auth cache listener could not listen; checking tokens against the database");
                    }
                }
            }
            self.go_dark();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// LISTENs, reloads, then applies notifications until the connection is lost (`Ok`).
    async fn listen_once(&self, pool: &PgPool) -> Result<(), StoreError> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Read after LISTEN: a change from now on is either in this read or notified after it.
        let revoked = users::revoked_tokens(pool).await?;
        {
            let mut cached = self.lock();
            cached.users.clear();
            cached.revoked = revoked.into_iter().collect();
            cached.live = true;
        }
        self.bump();
        self.bump_config();
        tracing::debug!("auth cache listening");
        while let Some(notification) = listener.try_recv().await? {
            if !self.apply(notification.payload()) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies one notification; `false` when it cannot be understood (then reload everything).
    fn apply(&self, payload: &str) -> bool {
        let change = match serde_json::from_str::<Change>(payload) {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(payload, error = %e, "an auth notification could not be read; reloading");
                return false;
            }
        };
        {
            let mut cached = self.lock();
            match change {
                Change::User { id } => {
                    cached.users.remove(&id);
                }
                Change::Revoked { jti, expires_at } => cached.add_revoked(jti, expires_at),
                Change::Role => cached.users.clear(),
                Change::Config => {
                    drop(cached);
                    self.bump_config();
                    return true;
                }
            }
        }
        self.bump();
        true
    }

    /// Stops trusting the cache until the listener listens again.
    fn go_dark(&self) {
        {
            let mut cached = self.lock();
            cached.live = false;
            cached.users.clear();
            cached.revoked.clear();
        }
        self.bump();
    }
}

impl Cached {
    fn add_revoked(&mut self, jti: String, expires_at: i64) {
        self.revoked.insert(jti, expires_at);
        // An expired token fails its signature check anyway; keep only those that could pass.
        if self.revoked.len().is_multiple_of(1024) {
            let now = chrono::Utc::now().timestamp();
            self.revoked.retain(|_, exp| *exp >= now);
        }
    }
}

async fn load_user(pool: &PgPool, id: &str) -> Result<Option<CachedUser>, StoreError> {
    Ok(users::with_role(pool, id).await?.map(cached))
}

/// What the cache keeps of a user and their role.
fn cached(row: users::UserWithRole) -> CachedUser {
    let rate = |r: Option<i32>| r.and_then(|r| u32::try_from(r).ok());
    // A permission this version does not know (stored by another) grants nothing here.
    let grants = if row.permissions.iter().any(|p| p == "*") {
        Grants::Everything
    } else {
        Grants::Only(
            row.permissions
                .iter()
                .filter_map(|p| Permission::parse(p))
                .collect(),
        )
    };
    CachedUser {
        id: row.id,
        username: row.username,
        role: RoleGrant {
            id: row.role_id,
            grants,
            scope: Scope::parse(&row.scope).unwrap_or(Scope::Own),
            rate_limit: rate(row.role_rate_limit),
        },
        // An unknown status is refused, never let through.
        status: UserStatus::parse(&row.status).unwrap_or(UserStatus::Disabled),
        rate_limit: rate(row.rate_limit),
        token_generation: row.token_generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_as_the_triggers_write_them() {
        let cache = AuthCache::new();
        cache.lock().live = true;
        cache.lock().users.insert("u1".into(), None);
        let before = *cache.changes.borrow();
        assert!(cache.apply(r#"{"kind": "user", "id": "u1"}"#));
        assert!(!cache.lock().users.contains_key("u1"));
        assert!(cache.apply(r#"{"kind": "revoked", "jti": "j1", "expiresAt": 4000000000}"#));
        assert!(cache.lock().revoked.contains_key("j1"));
        assert_eq!(
            *cache.changes.borrow(),
            before + 2,
            "each change is announced"
        );
        assert!(!cache.apply(r#"{"kind": "mystery"}"#), "unknown: reload");
    }

    /// A pool whose every query fails: what the cache answers without it needed no round trip.
    fn unreachable() -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://voidvm@127.0.0.1:1/unreachable")
            .expect("a lazy pool")
    }

    #[tokio::test]
    async fn a_listening_cache_answers_without_the_database() {
        let pool = unreachable();
        let cache = AuthCache::new();
        {
            let mut cached = cache.lock();
            cached.live = true;
            let alice = CachedUser {
                id: "u1".into(),
                username: "alice".into(),
                role: RoleGrant {
                    id: "user".into(),
                    grants: crate::auth::permission::Grants::Everything,
                    scope: crate::auth::permission::Scope::Own,
                    rate_limit: None,
                },
                status: UserStatus::Active,
                rate_limit: None,
                token_generation: 1,
            };
            cached.users.insert("u1".into(), Some(alice));
        }
        let token = |jti, generation| TokenRef {
            jti,
            user_id: "u1",
            generation,
        };
        let user = cache.check(&pool, token("j1", 1)).await;
        assert_eq!(user.map(|u| u.username).ok().as_deref(), Some("alice"));
        let older = cache.check(&pool, token("j1", 0)).await;
        assert!(matches!(older, Err(Refusal::PasswordChanged)), "{older:?}");
        cache.note_revoked("j1", i64::MAX);
        let revoked = cache.check(&pool, token("j1", 1)).await;
        assert!(matches!(revoked, Err(Refusal::Revoked)), "{revoked:?}");
        // Without its listener the cache is not trusted: the database is asked.
        cache.go_dark();
        let dark = cache.check(&pool, token("j2", 1)).await;
        assert!(matches!(dark, Err(Refusal::Store(_))), "{dark:?}");
    }

    #[test]
    fn losing_the_listener_forgets_everything() {
        let cache = AuthCache::new();
        cache.note_revoked("j1", 4_000_000_000);
        cache.lock().live = true;
        cache.go_dark();
        let cached = cache.lock();
        assert!(!cached.live && cached.revoked.is_empty() && cached.users.is_empty());
    }
}
