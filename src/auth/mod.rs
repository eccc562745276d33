//! Who is calling: passwords (argon2), tokens (JWT, HS256), the per-node cache of users and
//! revocations, and the `AuthUser` extractor that every `/api/v1` handler except login takes.

pub mod cache;
pub mod jwt;
pub mod login_guard;
pub mod password;
pub mod permission;
pub mod user;

pub use cache::AuthCache;
pub use jwt::{Claims, TokenKeys};
pub use permission::{Permission, RoleGrant};
pub use user::AuthUser;

use std::path::Path;

use anyhow::Context;
use sqlx::PgPool;

use crate::accounts::user::UserCommand;
use crate::accounts::QuotaOverrides;
use crate::store::{accounts, users, CommandMeta};

/// The password the first-start admin gets (the seed's quick start logs in with it).
pub const DEFAULT_ADMIN_PASSWORD: &str = "admin123";

/// Creates `admin`/`admin123` on a first start (a log that has never recorded a user), and warns
/// while that password is unchanged. Never again after: an `admin` deleted or renamed away stays
/// gone, whatever restarts (making it anew would bring back a login everyone knows).
pub async fn ensure_admin(pool: &PgPool) -> anyhow::Result<()> {
    let first_start = !users::any_ever_recorded(pool)
        .await
        .context("the log's users could not be looked up")?;
    if first_start {
        return create_first_admin(pool).await;
    }
    let existing = users::by_username(pool, "admin")
        .await
        .context("the admin user could not be looked up")?;
    if existing.is_some_and(|user| user.password_changed_at.is_none()) {
        tracing::warn!("user 'admin' still has the default password; change it with POST /api/v1/auth/password");
    }
    Ok(())
}

async fn create_first_admin(pool: &PgPool) -> anyhow::Result<()> {
    let hash = password::hash(DEFAULT_ADMIN_PASSWORD.to_string())
        .await
        .context("the admin password could not be hashed")?;
    let id = format!("user-{}", nanoid::nanoid!(10, &ID_ALPHABET));
    let create = UserCommand::Create {
        username: "admin".to_string(),
        email: None,
        role: "admin".to_string(),
        quota: QuotaOverrides::default(),
        rate_limit: None,
    };
    let meta = CommandMeta::system("first start");
    let mut tx = crate::store::begin(pool)
        .await
        .context("the admin user's transaction could not begin")?;
    let created = match accounts::create_user(&mut tx, &meta, &id, create, &hash).await {
        Ok(()) => tx
            .commit()
            .await
            .map_err(|e| accounts::AccountWriteError::Store(e.into())),
        Err(e) => Err(e),
    };
    match created {
        Ok(()) => {
            tracing::warn!("created user 'admin' with the default password 'admin123'; change it with POST /api/v1/auth/password");
            Ok(())
        }
        // Another node starting on the same new database made it first.
        Err(accounts::AccountWriteError::UsernameTaken(_)) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("the admin user could not be created")),
    }
}

/// Lower-case letters and digits: ids that are safe in paths, file names and URLs.
pub const ID_ALPHABET: [char; 36] = [
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's',
    't', 'u', 'v', 'w', 'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
];

/// The configured secret, or the one generated on first start and kept in the data dir.
pub fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(secret) = configured {
        return Ok(secret.to_string());
    }
    let path = data_dir.join("jwt-secret");
    if path.exists() {
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("the JWT secret in {} could not be read", path.display()))?;
        return Ok(secret.trim().to_string());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("the data dir {} could not be created", data_dir.display()))?;
    let secret = nanoid::nanoid!(64);
    std::fs::write(&path, &secret)
        .with_context(|| format!("the JWT secret could not be written to {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .context("the JWT secret's permissions could not be set")?;
    }
    Ok(secret)
}
