//! Reads of the event log for the real-time feed: the relay to NATS and the WebSocket replay
//! both read "everything after position P", in position order, with who owns each event's VM.
//! Both read only below the bound of [`super::visible`], so resuming after P never skips an event.

use sqlx::{PgPool, Postgres, QueryBuilder};

use super::audit::{AuditRow, LEVEL_SQL};
use super::visible;
use super::StoreError;

/// One event with the owner of its VM (from the event's metadata; for events recorded before
/// owners were written there, from the VM list).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedRow {
    #[sqlx(flatten)]
    pub row: AuditRow,
    pub owner_id: Option<String>,
}

/// Which events a reader may have.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this VM's events.
    pub vm_id: Option<String>,
    /// Only events of VMs this user owns (unset for admins).
    pub owner_id: Option<String>,
}

/// Up to `limit` events after `after`, oldest first.
pub async fn after(
    pool: &PgPool,
    after: i64,
    limit: u32,
    scope: &Scope,
) -> Result<Vec<FeedRow>, StoreError> {
    let bound = visible::bound(pool).await?;
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                e.event_version AS version, e.payload, e.metadata, e.recorded_at,
                {LEVEL_SQL} AS level,
                COALESCE(e.metadata ->> 'owner_id', v.owner_id) AS owner_id
         FROM events e LEFT JOIN vms v ON v.id = e.aggregate_id
         WHERE e.aggregate_type = 'vm' AND e.position > "
    ));
    q.push_bind(after);
    visible::push_below(&mut q, bound);
    if let Some(vm) = &scope.vm_id {
        q.push(" AND e.aggregate_id = ").push_bind(vm.clone());
    }
    if let Some(owner) = &scope.owner_id {
        q.push(" AND COALESCE(e.metadata ->> 'owner_id', v.owner_id) = ")
            .push_bind(owner.clone());
    }
    q.push(" ORDER BY e.position LIMIT ")
        .push_bind(i64::from(limit));
    Ok(q.build_query_as().fetch_all(pool).await?)
}

/// The newest position a reader can resume after without skipping anything (0 when the log is
/// empty): the last event below the bound, once the events committed so far are below it.
pub async fn head(pool: &PgPool) -> Result<i64, StoreError> {
    let bound = visible::bound(pool).await?;
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT COALESCE(max(e.position), 0) FROM events e WHERE true",
    );
    visible::push_below(&mut q, bound);
    Ok(q.build_query_scalar().fetch_one(pool).await?)
}

/// The last position the named relay had confirmed (0 when it never ran).
pub async fn offset(pool: &PgPool, name: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT position FROM relay_offsets WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?
            .unwrap_or(0),
    )
}

/// Records that the named relay has confirmed everything up to `position`.
pub async fn confirm(pool: &PgPool, name: &str, position: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO relay_offsets (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = GREATEST(relay_offsets.position, $2),
                                          updated_at = now()",
    )
    .bind(name)
    .bind(position)
    .execute(pool)
    .await?;
    Ok(())
}
