//! The VM list the API reads: one row per VM holding its latest state, written after each commit
//! and caught up from the log at start-up.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::StoreError;
use crate::vm::{Vm, VmStatus};

/// A VM as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub cpu: u32,
    pub memory: u64,
    pub disk: u64,
    pub os: String,
    pub image: ImageView,
    pub status: VmStatus,
    pub status_reason: Option<String>,
    pub owner: String,
    pub owner_id: String,
    pub pending_job_id: Option<String>,
    pub pid: Option<u32>,
    pub accel: Option<String>,
    pub requires_restart: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ImageView {
    pub name: String,
    pub present: bool,
}

impl VmView {
    pub fn new(
        vm: &Vm,
        version: i64,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> VmView {
        VmView {
            id: vm.id.clone(),
            name: vm.spec.name.clone(),
            description: vm.spec.description.clone(),
            cpu: vm.spec.cpu,
            memory: vm.spec.memory,
            disk: vm.spec.disk,
            os: vm.spec.os.clone(),
            image: ImageView {
                name: vm.spec.os.clone(),
                present: vm.image_present,
            },
            status: vm.status.unwrap_or(VmStatus::Creating),
            status_reason: vm.status_reason.clone(),
            owner: vm.owner.name.clone(),
            owner_id: vm.owner.id.clone(),
            pending_job_id: vm.pending.as_ref().map(|p| p.id.clone()),
            pid: vm.pid,
            accel: vm.accel.clone(),
            requires_restart: vm.requires_restart,
            created_at,
            updated_at,
            version,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    version: i64,
    state: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_view(self) -> Result<VmView, StoreError> {
        let vm: Vm = serde_json::from_value(self.state).map_err(|e| {
            StoreError::Unexpected(anyhow::Error::new(e).context("a VM row could not be read"))
        })?;
        Ok(VmView::new(
            &vm,
            self.version,
            self.created_at,
            self.updated_at,
        ))
    }
}

/// Writes a VM's state at `version`, unless the row already holds a later one.
pub async fn upsert(pool: &PgPool, vm: &Vm, version: usize) -> Result<(), StoreError> {
    let state = serde_json::to_value(vm).map_err(|e| {
        StoreError::Unexpected(anyhow::Error::new(e).context("a VM could not be serialised"))
    })?;
    let status = vm.status.unwrap_or(VmStatus::Creating);
    sqlx::query(
        "INSERT INTO vms (id, owner_id, owner_name, name, status, version, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7,
                 COALESCE((SELECT min(recorded_at) FROM events
                           WHERE aggregate_type = 'vm' AND aggregate_id = $1), now()),
                 now())
         ON CONFLICT (id) DO UPDATE
         SET owner_name = EXCLUDED.owner_name, name = EXCLUDED.name, status = EXCLUDED.status,
             version = EXCLUDED.version, state = EXCLUDED.state, updated_at = now()
         WHERE vms.version < EXCLUDED.version",
    )
    .bind(&vm.id)
    .bind(&vm.owner.id)
    .bind(&vm.owner.name)
    .bind(&vm.spec.name)
    .bind(status.as_str())
    .bind(version as i64)
    .bind(state)
    .execute(pool)
    .await?;
    if status == VmStatus::Deleted {
        sqlx::query("DELETE FROM vm_names WHERE vm_id = $1")
            .bind(&vm.id)
            .execute(pool)
            .await?;
    }
    Ok(())
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<VmView>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as("SELECT version, state, created_at, updated_at FROM vms WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(Row::into_view).transpose()
}

/// The VM's state as the list holds it (what a worker needs to know about the machine, read
/// without asking the VM's actor).
pub async fn state(pool: &PgPool, id: &str) -> Result<Option<Vm>, StoreError> {
    let state: Option<Value> = sqlx::query_scalar("SELECT state FROM vms WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    state
        .map(|s| {
            serde_json::from_value(s).map_err(|e| {
                StoreError::Unexpected(anyhow::Error::new(e).context("a VM row could not be read"))
            })
        })
        .transpose()
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub owner_id: Option<String>,
    pub status: Option<VmStatus>,
    pub page: u32,
    pub limit: u32,
}

/// A page of VMs, newest first, and how many match in all. Deleted VMs are listed only when
/// asked for by status.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<(Vec<VmView>, i64), StoreError> {
    let status = filter.status.map(|s| s.as_str());
    let offset = i64::from(filter.page.saturating_sub(1)) * i64::from(filter.limit);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT version, state, created_at, updated_at FROM vms
         WHERE ($1::text IS NULL OR owner_id = $1)
           AND (($2::text IS NULL AND status <> 'deleted') OR status = $2)
         ORDER BY created_at DESC, id DESC
         LIMIT $3 OFFSET $4",
    )
    .bind(&filter.owner_id)
    .bind(status)
    .bind(i64::from(filter.limit))
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM vms
         WHERE ($1::text IS NULL OR owner_id = $1)
           AND (($2::text IS NULL AND status <> 'deleted') OR status = $2)",
    )
    .bind(&filter.owner_id)
    .bind(status)
    .fetch_one(pool)
    .await?;
    let views = rows
        .into_iter()
        .map(Row::into_view)
        .collect::<Result<_, _>>()?;
    Ok((views, total))
}

/// VMs whose row is missing or behind their stream: written after a commit that the server did
/// not live to project.
pub async fn stale_ids(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT e.aggregate_id FROM events e
         LEFT JOIN vms v ON v.id = e.aggregate_id
         WHERE e.aggregate_type = 'vm'
         GROUP BY e.aggregate_id, v.version
         HAVING max(e.sequence) > COALESCE(v.version, 0)",
    )
    .fetch_all(pool)
    .await?)
}

/// Ids of VMs in any of `statuses`.
pub async fn ids_with_status(
    pool: &PgPool,
    statuses: &[VmStatus],
) -> Result<Vec<String>, StoreError> {
    Ok(owners_with_status(pool, statuses)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Ids and owners of VMs in any of `statuses`.
pub async fn owners_with_status(
    pool: &PgPool,
    statuses: &[VmStatus],
) -> Result<Vec<(String, String)>, StoreError> {
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    Ok(
        sqlx::query_as("SELECT id, owner_id FROM vms WHERE status = ANY($1) ORDER BY id")
            .bind(statuses)
            .fetch_all(pool)
            .await?,
    )
}

/// Reserves `name` for `vm_id` among its owner's VMs. False when another VM holds it.
pub async fn reserve_name(
    pool: &PgPool,
    owner_id: &str,
    name: &str,
    vm_id: &str,
) -> Result<bool, StoreError> {
    let holder: Option<String> = sqlx::query_scalar(
        "INSERT INTO vm_names (owner_id, name, vm_id) VALUES ($1, $2, $3)
         ON CONFLICT (owner_id, name) DO UPDATE SET owner_id = vm_names.owner_id
         RETURNING vm_id",
    )
    .bind(owner_id)
    .bind(name)
    .bind(vm_id)
    .fetch_optional(pool)
    .await?;
    Ok(holder.as_deref() == Some(vm_id))
}

pub async fn release_name(
    pool: &PgPool,
    owner_id: &str,
    name: &str,
    vm_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM vm_names WHERE owner_id = $1 AND name = $2 AND vm_id = $3")
        .bind(owner_id)
        .bind(name)
        .bind(vm_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops reservations that no live VM holds under that name (left by a crash between reserving
/// and committing).
pub async fn release_orphan_names(pool: &PgPool) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM vm_names n WHERE NOT EXISTS (
             SELECT 1 FROM vms v
             WHERE v.id = n.vm_id AND v.name = n.name AND v.status <> 'deleted')",
    )
    .execute(pool)
    .await?
    .rows_affected())
}
