//! Records account commands (users, roles, the live configuration): each one's events, in the same
//! log as the VMs, and its read-model row, in the caller's transaction (which also holds the
//! request's idempotency key and answer), with the row locked while the decision is made (so two
//! admins changing one user are serialised on that user alone).

use sqlx::{PgConnection, PgPool};

use super::append::{append, stored, Stored, Stream};
use super::users::UserRow;
use super::{CommandMeta, StoreError};
use crate::accounts::role::RoleCommand;
use crate::accounts::user::UserCommand;
use crate::accounts::{
    AccountError, ConfigEvent, ConfigOverrides, QuotaOverrides, Role, RoleEvent, User, UserEvent,
    UserStatus,
};
use crate::auth::permission::Scope;

/// Why an account change was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum AccountWriteError {
    #[error(transparent)]
    Refused(#[from] AccountError),
    #[error("the username '{0}' is taken")]
    UsernameTaken(String),
    #[error("role '{0}' does not exist")]
    NoSuchRole(String),
    #[error("the user owns virtual machines ({0})")]
    UserHasVms(i64),
    #[error("{0} users have this role")]
    RoleInUse(i64),
    #[error("the role id '{0}' is taken")]
    RoleTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AccountWriteError {
    fn from(e: sqlx::Error) -> Self {
        AccountWriteError::Store(e.into())
    }
}

fn user_events(events: &[UserEvent]) -> Result<Vec<Stored>, StoreError> {
    events
        .iter()
        .map(|e| stored(e.type_name(), e.version(), e))
        .collect()
}

fn user_state(row: &UserRow) -> User {
    User {
        username: row.username.clone(),
        email: row.email.clone(),
        role: row.role.clone(),
        status: UserStatus::parse(&row.status),
        quota: serde_json::from_value::<QuotaOverrides>(row.quota.clone()).unwrap_or_default(),
        rate_limit: row.rate_limit.and_then(|r| u32::try_from(r).ok()),
        deleted: false,
    }
}

fn role_missing(role: &str, e: sqlx::Error) -> AccountWriteError {
    match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            AccountWriteError::NoSuchRole(role.to_string())
        }
        _ => e.into(),
    }
}

/// Creates a user with the hash of their password (kept in the row, never in the log).
pub async fn create_user(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
    command: UserCommand,
    password_hash: &str,
) -> Result<(), AccountWriteError> {
    let events = User::default().decide(command)?;
    let mut user = User::default();
    for event in events.clone() {
        user.apply(event);
    }
    let inserted = sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, email, status, quota, rate_limit, version)
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8) ON CONFLICT (username) DO NOTHING",
    )
    .bind(id)
    .bind(&user.username)
    .bind(password_hash)
    .bind(&user.role)
    .bind(&user.email)
    .bind(sqlx::types::Json(user.quota))
    .bind(user.rate_limit.map(i64::from))
    .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await
    .map_err(|e| role_missing(&user.role, e))?;
    if inserted.rows_affected() == 0 {
        return Err(AccountWriteError::UsernameTaken(user.username));
    }
    append(tx, Stream::User, id, 0, &user_events(&events)?, meta).await?;
    Ok(())
}

async fn lock_user(tx: &mut PgConnection, id: &str) -> Result<UserRow, AccountWriteError> {
    super::users::by_id_for_update(tx, id)
        .await?
        .ok_or(AccountWriteError::Refused(AccountError::NotFound))
}

/// Changes a user's settings and/or sets a new password (`password_hash`, with `SetPassword`),
/// deciding the commands in turn.
pub async fn change_user(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
    commands: &[UserCommand],
    password_hash: Option<&str>,
) -> Result<User, AccountWriteError> {
    let row = lock_user(tx, id).await?;
    let mut user = user_state(&row);
    let mut events = Vec::new();
    // A command that changes nothing does not stop the others (an unchanged email beside a new
    // password); only a request that changes nothing at all is refused as such.
    for command in commands {
        let decided = match user.decide(command.clone()) {
            Err(AccountError::NothingToChange) => continue,
            other => other?,
        };
        for event in decided {
            user.apply(event.clone());
            events.push(event);
        }
    }
    if events.is_empty() {
        return Err(AccountError::NothingToChange.into());
    }
    let version = append(
        tx,
        Stream::User,
        id,
        row.version,
        &user_events(&events)?,
        meta,
    )
    .await?;
    sqlx::query(
        "UPDATE users SET email = $2, role = $3, status = $4, quota = $5, rate_limit = $6,
                          version = $7, updated_at = now(),
                          -- Disabling ends the user's tokens for good: enabled again, they log in.
                          token_generation = token_generation
                              + CASE WHEN $4 = 'disabled' AND status <> 'disabled' THEN 1 ELSE 0 END
         WHERE id = $1",
    )
    .bind(id)
    .bind(&user.email)
    .bind(&user.role)
    .bind(user.status.unwrap_or(UserStatus::Active).as_str())
    .bind(sqlx::types::Json(user.quota))
    .bind(user.rate_limit.map(i64::from))
    .bind(version)
    .execute(&mut *tx)
    .await
    .map_err(|e| role_missing(&user.role, e))?;
    if let Some(hash) = password_hash {
        sqlx::query(
            "UPDATE users SET password_hash = $2, password_changed_at = now(),
                              token_generation = token_generation + 1
             WHERE id = $1",
        )
        .bind(id)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    }
    Ok(user)
}

/// Deletes a user who owns no VM that is not deleted (their VMs are handed over first).
pub async fn delete_user(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
    transferred_to: Option<String>,
) -> Result<(), AccountWriteError> {
    let row = lock_user(tx, id).await?;
    let owned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM vms WHERE owner_id = $1 AND status <> 'deleted'")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if owned > 0 {
        return Err(AccountWriteError::UserHasVms(owned));
    }
    let events = user_state(&row).decide(UserCommand::Delete { transferred_to })?;
    append(
        tx,
        Stream::User,
        id,
        row.version,
        &user_events(&events)?,
        meta,
    )
    .await?;
    super::webhooks::delete_owned_by(tx, meta, id).await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoleRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub scope: String,
    pub rate_limit: Option<i32>,
    pub built_in: bool,
    pub version: i64,
}

impl RoleRow {
    pub fn state(&self) -> Role {
        Role {
            name: self.name.clone(),
            description: self.description.clone(),
            permissions: self.permissions.clone(),
            scope: Scope::parse(&self.scope).unwrap_or(Scope::Own),
            rate_limit: self.rate_limit.and_then(|r| u32::try_from(r).ok()),
            built_in: self.built_in,
            exists: true,
        }
    }
}

const ROLE_COLUMNS: &str =
    "id, name, description, permissions, scope, rate_limit, built_in, version";

pub async fn roles(pool: &PgPool) -> Result<Vec<RoleRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {ROLE_COLUMNS} FROM roles ORDER BY built_in DESC, id"
    ))
    .fetch_all(pool)
    .await?)
}

pub async fn role<'e>(
    pool: impl sqlx::PgExecutor<'e>,
    id: &str,
) -> Result<Option<RoleRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Creates, changes or deletes role `id`; answers the role as it is after (none once deleted).
pub async fn write_role(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    id: &str,
    command: RoleCommand,
) -> Result<Option<Role>, AccountWriteError> {
    // The id's lock first: a role that does not exist yet has no row to lock, and concurrent
    // creates of one id must be decided in turn (the later ones find it taken).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("voidvm-role:{id}"))
        .execute(&mut *tx)
        .await?;
    let row: Option<RoleRow> = sqlx::query_as(&format!(
        "SELECT {ROLE_COLUMNS} FROM roles WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let mut role = row.as_ref().map(RoleRow::state).unwrap_or_default();
    let deleting = command == RoleCommand::Delete;
    let events = match role.decide(id, command) {
        Err(AccountError::AlreadyExists) => {
            return Err(AccountWriteError::RoleTaken(id.to_string()))
        }
        other => other?,
    };
    if deleting {
        let holders: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        if holders > 0 {
            return Err(AccountWriteError::RoleInUse(holders));
        }
    }
    for event in events.clone() {
        role.apply(event);
    }
    let version = row.as_ref().map_or(0, |r| r.version);
    let stored: Vec<Stored> = events
        .iter()
        .map(|e: &RoleEvent| stored(e.type_name(), e.version(), e))
        .collect::<Result<_, _>>()?;
    let version = append(tx, Stream::Role, id, version, &stored, meta).await?;
    if role.exists {
        sqlx::query(
            "INSERT INTO roles (id, name, description, permissions, scope, rate_limit, built_in, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET name = $2, description = $3, permissions = $4, scope = $5,
                 rate_limit = $6, version = $8, updated_at = now()",
        )
        .bind(id)
        .bind(&role.name)
        .bind(&role.description)
        .bind(&role.permissions)
        .bind(role.scope.as_str())
        .bind(role.rate_limit.and_then(|r| i32::try_from(r).ok()))
        .bind(role.built_in)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query("DELETE FROM roles WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(role.exists.then_some(role))
}

/// The configuration overrides in force and the config stream's version.
pub async fn config(pool: &PgPool) -> Result<(ConfigOverrides, i64), StoreError> {
    let row: Option<(serde_json::Value, i64)> =
        sqlx::query_as("SELECT overrides, version FROM config WHERE id = 1")
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        Some((overrides, version)) => (
            serde_json::from_value(overrides).unwrap_or_default(),
            version,
        ),
        None => (ConfigOverrides::default(), 0),
    })
}

/// The overrides in force after a `PUT /config`, at the config stream's version, and whether
/// that request changed them.
#[derive(Debug)]
pub struct ConfigWritten {
    pub overrides: ConfigOverrides,
    pub version: i64,
    pub changed: bool,
}

/// Records `patch` as a `ConfigChanged` event and the overrides it leaves; answers them. A patch
/// that leaves the overrides as they are records nothing and answers them as they are (a client
/// that puts back what it read gets a 200, as for any idempotent PUT).
pub async fn change_config(
    tx: &mut PgConnection,
    meta: &CommandMeta,
    patch: ConfigOverrides,
) -> Result<ConfigWritten, AccountWriteError> {
    sqlx::query(
        "INSERT INTO config (id, overrides, version) VALUES (1, '{}', 0) ON CONFLICT DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    let (overrides, version): (serde_json::Value, i64) =
        sqlx::query_as("SELECT overrides, version FROM config WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let overrides: ConfigOverrides = serde_json::from_value(overrides).unwrap_or_default();
    let next = overrides.patched(&patch);
    if next == overrides {
        return Ok(ConfigWritten {
            overrides,
            version,
            changed: false,
        });
    }
    let event = ConfigEvent::ConfigChanged { changes: patch };
    let stored = [stored(event.type_name(), event.version(), &event)?];
    let version = append(tx, Stream::Config, "config", version, &stored, meta).await?;
    sqlx::query("UPDATE config SET overrides = $1, version = $2, updated_at = now() WHERE id = 1")
        .bind(sqlx::types::Json(next))
        .bind(version)
        .execute(&mut *tx)
        .await?;
    Ok(ConfigWritten {
        overrides: next,
        version,
        changed: true,
    })
}
