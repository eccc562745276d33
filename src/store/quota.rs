//! Quotas enforced where they cannot be raced: in the transaction that records a VM or grows it.
//! The owner's user row is locked first, so concurrent creates of one user are decided one after
//! the other (other users' are not held up), and their usage is read after the lock.

use sqlx::{PgConnection, PgPool};

use super::{users, QuotaExceeded, StoreError};
use crate::accounts::{Quota, QuotaOverrides, Usage};
use crate::vm::{Vm, VmStatus};

/// What a commit takes from `before` to `after` adds to its owner's usage (growth only).
pub fn growth(before: &Vm, after: &Vm) -> Usage {
    let holds = |vm: &Vm| vm.status.is_some_and(|s| s != VmStatus::Deleted);
    let (b, a) = (holds(before), holds(after));
    if !a {
        return Usage::default();
    }
    let new = !b || before.owner.id != after.owner.id;
    let more = |old: u64, now: u64| if new { now } else { now.saturating_sub(old) };
    Usage {
        vms: u64::from(new),
        vcpus: more(u64::from(before.spec.cpu), u64::from(after.spec.cpu)),
        memory: more(before.spec.memory, after.spec.memory),
        disk: more(before.spec.disk, after.spec.disk),
    }
}

async fn overrides(
    conn: &mut PgConnection,
    owner_id: &str,
    lock: bool,
) -> Result<QuotaOverrides, StoreError> {
    let sql = if lock {
        "SELECT quota FROM users WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT quota FROM users WHERE id = $1"
    };
    let quota: Option<serde_json::Value> = sqlx::query_scalar(sql)
        .bind(owner_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(quota
        .and_then(|q| serde_json::from_value(q).ok())
        .unwrap_or_default())
}

/// Refuses the commit when it would take the owner past their quota (`defaults` with the
/// user's overrides on top).
pub async fn check(
    conn: &mut PgConnection,
    defaults: Quota,
    before: &Vm,
    after: &Vm,
) -> Result<(), StoreError> {
    let adding = growth(before, after);
    if adding == Usage::default() {
        return Ok(());
    }
    let owner = &after.owner.id;
    let quota = Quota::with(defaults, &overrides(conn, owner, true).await?);
    let used = users::usage(&mut *conn, owner).await?;
    // The VM's own row still shows it as it was before this commit.
    match quota.exceeded_by(&used, &adding) {
        None => Ok(()),
        Some((resource, limit)) => Err(StoreError::QuotaExceeded(QuotaExceeded {
            resource,
            limit,
            used: used.get(resource),
            requested: adding.get(resource),
        })),
    }
}

/// The quota of a user (`None` for a role with none).
pub async fn of_user(
    pool: &PgPool,
    user_id: &str,
    defaults: Option<Quota>,
) -> Result<Quota, StoreError> {
    let Some(defaults) = defaults else {
        return Ok(Quota::unlimited());
    };
    let mut conn = pool.acquire().await?;
    Ok(Quota::with(
        defaults,
        &overrides(&mut conn, user_id, false).await?,
    ))
}
