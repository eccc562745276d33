//! The VM list the API reads: one row per VM holding its latest state, and the per-owner name
//! reservations. Both are written by the event repository in the transaction that commits the
//! VM's events, so a read after a command's answer always sees it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::vm::{
    mac_address, tap_name, BootDevice, CloudInitSpec, NetworkMode, PortForward, Vm, VmSnapshot,
    VmStatus,
};

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
    pub network: NetworkView,
    /// What cloud-init is told at the next boot; passwords and user-data show only as set.
    pub cloud_init: Option<CloudInitSpec>,
    /// Devices the firmware boots from, in order; empty is the default (the disk).
    pub boot_order: Vec<BootDevice>,
    /// The image whose ISO is in the VM's CD-ROM (`POST /vms/{id}/iso`), if any.
    pub iso: Option<String>,
    /// The snapshots on the VM's disk, oldest first (`GET /vms/{id}/snapshots`).
    pub snapshots: Vec<VmSnapshot>,
    pub requires_restart: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// A VM's network: its mode, its forwards with the host port each got, its NIC's MAC address
/// (stable per VM; none without a NIC), and in `bridge` mode the host bridge and the name of the
/// VM's tap device on it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkView {
    pub mode: NetworkMode,
    pub ports: Vec<PortForward>,
    pub mac: Option<String>,
    /// The host bridge (`bridge` mode only).
    pub bridge: Option<String>,
    /// The VM's tap device on the bridge while it runs (`bridge` mode only), e.g. `vv0123456789ab`.
    pub tap: Option<String>,
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
            network: NetworkView {
                mode: vm.spec.network.mode,
                ports: vm.spec.network.ports.clone(),
                mac: match vm.spec.network.mode {
                    NetworkMode::User | NetworkMode::Bridge => Some(mac_address(&vm.id)),
                    NetworkMode::None => None,
                },
                bridge: vm.spec.network.bridge.clone(),
                tap: (vm.spec.network.mode == NetworkMode::Bridge).then(|| tap_name(&vm.id)),
            },
            cloud_init: vm.spec.cloud_init.clone(),
            boot_order: vm.spec.boot_order.clone(),
            iso: vm.iso.clone(),
            snapshots: vm.snapshots.clone(),
            requires_restart: vm.requires_restart,
            created_at,
            updated_at,
            version,
        }
    }
}

/// A row of the list; the state is decoded straight from the column's JSON into a [`Vm`].
#[derive(sqlx::FromRow)]
struct Row {
    version: i64,
    state: sqlx::types::Json<Vm>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_view(self) -> Result<VmView, StoreError> {
        Ok(VmView::new(
            &self.state.0,
            self.version,
            self.created_at,
            self.updated_at,
        ))
    }
}

/// The name a VM holds among its owner's VMs: none once deleted (or before it exists).
fn held_name(vm: &Vm) -> Option<(&str, &str)> {
    vm.status
        .filter(|s| *s != VmStatus::Deleted)
        .map(|_| (vm.owner.id.as_str(), vm.spec.name.as_str()))
}

/// Whether a change from `before` to `after` takes or releases a name reservation.
pub fn name_changes(before: &Vm, after: &Vm) -> bool {
    held_name(before) != held_name(after)
}

/// Keeps the VM's name reservation in step with a change from `before` to `after`: a VM that is
/// not deleted holds its name among its owner's VMs. Another VM holding the name is
/// [`StoreError::NameTaken`] (and the caller's transaction records nothing).
pub async fn hold_name(conn: &mut PgConnection, before: &Vm, after: &Vm) -> Result<(), StoreError> {
    let (old, new) = (held_name(before), held_name(after));
    if old == new {
        return Ok(());
    }
    // Both names are locked first, in one order: two VMs swapping names would otherwise each
    // wait for the other's freed name (a deadlock) instead of one finding the name taken.
    let mut keys: Vec<String> = [(&before.owner.id, old), (&after.owner.id, new)]
        .into_iter()
        .filter_map(|(owner, held)| held.map(|(_, name)| format!("vm-name:{owner}:{name}")))
        .collect();
    keys.sort_unstable();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
    )
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    if let Some((_, old)) = old {
        sqlx::query("DELETE FROM vm_names WHERE owner_id = $1 AND name = $2 AND vm_id = $3")
            .bind(&before.owner.id)
            .bind(old)
            .bind(&before.id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some((_, new)) = new {
        sqlx::query("INSERT INTO vm_names (owner_id, name, vm_id) VALUES ($1, $2, $3)")
            .bind(&after.owner.id)
            .bind(new)
            .bind(&after.id)
            .execute(&mut *conn)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::NameTaken {
                    name: new.to_string(),
                },
                _ => e.into(),
            })?;
    }
    Ok(())
}

/// The ids of the VMs `owner_id` owns that are not deleted.
pub async fn owned_by(pool: &PgPool, owner_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM vms WHERE owner_id = $1 AND status <> 'deleted' ORDER BY created_at, id",
    )
    .bind(owner_id)
    .fetch_all(pool)
    .await?)
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<VmView>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as("SELECT version, state, created_at, updated_at FROM vms WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(Row::into_view).transpose()
}

/// The rows of the VMs among `ids` that exist, in no particular order (`store::vm_reads`).
pub async fn get_many(pool: &PgPool, ids: &[&str]) -> Result<Vec<VmView>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT version, state, created_at, updated_at FROM vms WHERE id = ANY($1::text[])",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Row::into_view).collect()
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
