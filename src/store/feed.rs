//! Reads of the event log for the real-time feed: the relay to NATS and the WebSocket replay
//! both read "everything after position P" of the VM and image streams, in position order, with
//! who owns each event.
//! Both read only below the bound of [`super::visible`], so resuming after P never skips an event.

use sqlx::{PgPool, Postgres, QueryBuilder};

use super::audit::{AuditRow, StreamType, LEVEL_SQL};
use super::visible::{self, Bound};
use super::StoreError;

/// One event with its owner: a VM event's VM owner (from the event's metadata; for events
/// recorded before owners were written there, from the VM list), or for an image event the user
/// who asked for the image.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedRow {
    #[sqlx(flatten)]
    pub row: AuditRow,
    pub owner_id: Option<String>,
}

/// Which streams a reader follows. The feed carries VM and image streams; the other streams
/// (users, roles, the configuration, webhooks) are only in `/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Streams {
    /// Every VM and every image.
    #[default]
    All,
    /// Every VM.
    Vms,
    /// One VM.
    Vm(String),
    /// Every image.
    Images,
}

/// Which events a reader may have.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub streams: Streams,
    /// Only events this user owns (their VMs' events and the events of images they asked for);
    /// unset for admins, and for readers of images, which every user with `image:read` sees.
    pub owner_id: Option<String>,
}

/// The owner of an event, in SQL (see [`FeedRow`]).
const OWNER_SQL: &str = "COALESCE(e.metadata ->> 'owner_id', v.owner_id, i.created_by)";

/// Up to `limit` events after `after`, oldest first.
pub async fn after(
    pool: &PgPool,
    after: i64,
    limit: u32,
    scope: &Scope,
) -> Result<Vec<FeedRow>, StoreError> {
    let bound = visible::bound(pool).await?;
    Ok(read(after, bound, limit, scope)
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

/// The statement [`after`] sends for `scope`, as PostgreSQL receives it. Its parameters are, in
/// order: the position to read after, the bound, the VM's id (when the scope is one VM), the
/// owner's id (when it has one), the limit.
pub fn after_sql(scope: &Scope) -> String {
    read(0, Bound::for_text(), 0, scope).sql().to_string()
}

/// The stream types are tested as `StreamType::condition` explains: never through the primary
/// key for VM streams, which hold nearly every event.
fn read(after: i64, bound: Bound, limit: u32, scope: &Scope) -> QueryBuilder<'_, Postgres> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                e.event_version AS version, e.payload, e.metadata, e.recorded_at,
                {LEVEL_SQL} AS level,
                {OWNER_SQL} AS owner_id
         FROM events e
         LEFT JOIN vms v ON e.aggregate_type = 'vm' AND v.id = e.aggregate_id
         LEFT JOIN images i ON e.aggregate_type = 'image' AND i.name = e.aggregate_id
         WHERE e.position > "
    ));
    q.push_bind(after);
    visible::push_below(&mut q, bound);
    match &scope.streams {
        Streams::All => q.push(" AND (e.aggregate_type IN ('vm', 'image')) IS TRUE"),
        Streams::Vms => q.push(" AND ").push(StreamType::Vm.condition()),
        Streams::Vm(vm) => q
            .push(" AND e.aggregate_type = 'vm' AND e.aggregate_id = ")
            .push_bind(vm.clone()),
        // Images' events are few: the primary key finds them.
        Streams::Images => q.push(" AND e.aggregate_type = 'image'"),
    };
    if let Some(owner) = &scope.owner_id {
        q.push(format!(" AND {OWNER_SQL} = "))
            .push_bind(owner.clone());
    }
    q.push(" ORDER BY e.position LIMIT ")
        .push_bind(i64::from(limit));
    q
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
