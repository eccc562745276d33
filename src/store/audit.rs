//! The event log as an audit log: filtered, keyset-paged reads by global position, a streaming
//! export, and a human view with levels. Every read stops at the bound of [`super::visible`], so
//! paging by position never skips an event that commits later.

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;

use super::metadata::EventMetadata;
use super::visible::{self, Bound};
use super::StoreError;

/// What `GET /events` may filter on. Everything is optional; all given filters must hold.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of VMs this user owns (set for non-admins).
    pub owner_id: Option<String>,
    pub vm_id: Option<String>,
    pub types: Vec<String>,
    /// A user id or a user name.
    pub actor: Option<String>,
    pub job_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after: Option<i64>,
    pub before: Option<i64>,
    /// A cursor within one VM's stream (`/vms/{id}/events`).
    pub after_sequence: Option<i64>,
    /// Minimum level (`/logs`).
    pub min_level: Option<Level>,
    /// Also the account streams (users, roles, the configuration), for callers who may read
    /// users; otherwise VM streams only.
    pub accounts: bool,
    /// Only streams of this kind.
    pub stream_type: Option<StreamType>,
}

/// The kinds of stream in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    Vm,
    User,
    Role,
    Config,
    Webhook,
    Image,
}

impl StreamType {
    pub fn parse(s: &str) -> Option<StreamType> {
        match s {
            "vm" => Some(StreamType::Vm),
            "user" => Some(StreamType::User),
            "role" => Some(StreamType::Role),
            "config" => Some(StreamType::Config),
            "webhook" => Some(StreamType::Webhook),
            "image" => Some(StreamType::Image),
            _ => None,
        }
    }

    /// The condition on the stream type, for `/events` and the feed (`super::feed`). VM streams
    /// hold nearly every event, so theirs is in a form no index serves (`IS TRUE`): where the
    /// events' statistics are missing or stale (a young log under load), the planner took the
    /// primary key (first column: the stream type) for a selective index and read all of it at
    /// every read: 3 to 7 ms a relay read instead of 0.1 to 0.4, a page of `/events` that read
    /// and sorted the whole log (`benches/command_load.rs`, `tests/api/log_plans.rs`). The other
    /// kinds are few, and the key finds them.
    pub(super) fn condition(self) -> &'static str {
        match self {
            StreamType::Vm => "(e.aggregate_type = 'vm') IS TRUE",
            StreamType::User => "e.aggregate_type = 'user'",
            StreamType::Role => "e.aggregate_type = 'role'",
            StreamType::Config => "e.aggregate_type = 'config'",
            StreamType::Webhook => "e.aggregate_type = 'webhook'",
            StreamType::Image => "e.aggregate_type = 'image'",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// The level an event gets in `/logs`: failures and crashes are errors; retries, cancellations
/// and things the machine did that nobody asked for (a guest powering off, a pause) are warnings.
pub(crate) const LEVEL_SQL: &str = "CASE
    WHEN e.event_type IN ('OperationFailed', 'VmCrashed', 'ImageImportFailed') THEN 'error'
    WHEN e.event_type IN ('JobCancelled', 'OperationRetried', 'StaleObservationIgnored',
                          'ImageImportCancelled')
      OR (e.event_type IN ('VmStopped', 'VmPaused', 'VmResumed') AND NOT e.metadata ? 'job_id')
      THEN 'warn'
    ELSE 'info' END";

/// One entry of the audit log, as the API and the feed show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// The global position: a cursor for `after` and for the WebSocket's `since`.
    pub position: i64,
    pub stream_id: String,
    /// `vm`, `user`, `role`, `config`, `webhook` or `image`.
    pub stream_type: String,
    /// The VM, for a VM's event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    /// The event's number within its VM's stream, from 1.
    pub sequence: i64,
    /// The event type, e.g. `VmStarted` (schemas in `schemas/events/`).
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: String,
    /// The event's own fields.
    pub data: Value,
    pub actor: Actor,
    pub job_id: Option<String>,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// Who caused an event, and through what.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Actor {
    pub id: Option<String>,
    pub name: Option<String>,
    /// `rest`, `websocket` or `system`.
    pub via: Option<String>,
}

/// One row of the event log with what the API needs.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub position: i64,
    #[serde(rename = "streamType")]
    pub aggregate_type: String,
    #[serde(rename = "streamId")]
    pub aggregate_id: String,
    pub sequence: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: String,
    pub payload: Value,
    #[sqlx(json)]
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
    pub level: String,
}

impl AuditRow {
    /// The API shape: `data` is the event's own fields; who acted, how and where, are lifted out
    /// of the metadata.
    pub fn entry(&self) -> AuditEntry {
        let m = &self.metadata;
        let data = self
            .payload
            .get(&self.event_type)
            .cloned()
            .unwrap_or_else(|| self.payload.clone());
        AuditEntry {
            position: self.position,
            stream_id: self.aggregate_id.clone(),
            stream_type: self.aggregate_type.clone(),
            vm_id: (self.aggregate_type == "vm").then(|| self.aggregate_id.clone()),
            sequence: self.sequence,
            event_type: self.event_type.clone(),
            version: self.version.clone(),
            data,
            actor: Actor {
                id: m.actor_id.clone(),
                name: m.actor_name.clone(),
                via: m.via.map(|via| via.as_str().to_string()),
            },
            job_id: m.job_id.clone(),
            request_id: m.request_id.clone(),
            client_addr: m.client_addr.clone(),
            recorded_at: self.recorded_at,
        }
    }

    /// [`AuditRow::entry`] as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.entry()).unwrap_or(Value::Null)
    }

    /// One sentence for people, for `/logs`.
    pub fn describe(&self) -> String {
        let actor = self.metadata.actor_name.as_deref().unwrap_or("someone");
        let vm = &self.aggregate_id;
        let data = self.payload.get(&self.event_type).unwrap_or(&Value::Null);
        let reason = data["reason"].as_str().unwrap_or("no reason given");
        let requested = |what: &str| format!("{actor} asked to {what} {vm}.");
        match self.event_type.as_str() {
            "VmCreated" => format!(
                "{actor} created {vm} ({}).",
                data["spec"]["name"].as_str().unwrap_or("unnamed")
            ),
            "VmProvisioned" => format!("{vm} was provisioned."),
            "StartRequested" => requested("start"),
            "StopRequested" => requested("stop"),
            "RestartRequested" => requested("restart"),
            "PauseRequested" => requested("pause"),
            "ResumeRequested" => requested("resume"),
            "ResetRequested" => requested("reset"),
            "DeleteRequested" => requested("delete"),
            "VmStarted" => format!("{vm} started."),
            "VmStopped" => format!("{vm} stopped: {reason}"),
            "VmRestarted" => format!("{vm} restarted."),
            "VmPaused" => format!("{vm} paused."),
            "VmResumed" => format!("{vm} resumed."),
            "VmReset" => format!("{vm} was reset."),
            "VmReconfigured" => format!("{actor} changed the settings of {vm}."),
            "VmOwnerChanged" => format!(
                "{actor} handed {vm} from {} to {}.",
                data["from"]["name"].as_str().unwrap_or("its owner"),
                data["to"]["name"].as_str().unwrap_or("another user")
            ),
            "VmDeleted" => format!("{vm} was deleted."),
            "IsoChangeRequested" => match data["image"].as_str() {
                Some(image) => format!("{actor} asked to put the ISO of {image} in {vm}."),
                None => format!("{actor} asked to take the ISO out of {vm}."),
            },
            "VmIsoChanged" => match data["image"].as_str() {
                Some(image) => format!("The ISO of {image} is in {vm}'s CD-ROM."),
                None => format!("{vm}'s CD-ROM is empty."),
            },
            "SnapshotRequested" => format!(
                "{actor} asked to snapshot {vm} as {}{}.",
                data["name"].as_str().unwrap_or("?"),
                if data["memory"] == true {
                    " with its memory"
                } else {
                    ""
                }
            ),
            "SnapshotTaken" => format!(
                "Snapshot {} of {vm} was taken.",
                data["name"].as_str().unwrap_or("?")
            ),
            "SnapshotRestoreRequested" => format!(
                "{actor} asked to restore {vm} to snapshot {}.",
                data["name"].as_str().unwrap_or("?")
            ),
            "SnapshotRestored" => format!(
                "{vm} was restored to snapshot {}.",
                data["name"].as_str().unwrap_or("?")
            ),
            "SnapshotDeleteRequested" => format!(
                "{actor} asked to delete snapshot {} of {vm}.",
                data["name"].as_str().unwrap_or("?")
            ),
            "SnapshotDeleted" => format!(
                "Snapshot {} of {vm} was deleted.",
                data["name"].as_str().unwrap_or("?")
            ),
            "VmCrashed" => format!("{vm} crashed: {reason}"),
            "OperationFailed" => format!(
                "The {} of {vm} failed: {reason}",
                data["operation"].as_str().unwrap_or("operation")
            ),
            "OperationRetried" => format!(
                "Attempt {} to {} {vm} failed and will be retried: {reason}",
                data["attempt"],
                data["operation"].as_str().unwrap_or("change")
            ),
            "JobCancelled" => format!("{actor} cancelled a job of {vm}."),
            "StaleObservationIgnored" => format!(
                "QEMU process {} of {vm} {}, but it was no longer the VM's process; ignored.",
                data["pid"],
                data["observation"].as_str().unwrap_or("acting")
            ),
            "ConsoleOpened" => format!(
                "{actor} opened the {} console of {vm}.",
                data["console"].as_str().unwrap_or("a")
            ),
            "ConsoleClosed" => format!(
                "{actor} closed the {} console of {vm}.",
                data["console"].as_str().unwrap_or("a")
            ),
            "UserCreated" => format!(
                "{actor} created user {} ({vm}) with role {}.",
                data["username"].as_str().unwrap_or("?"),
                data["role"].as_str().unwrap_or("?")
            ),
            "UserChanged" => format!("{actor} changed user {vm}: {data}."),
            "UserPasswordChanged" => format!("{actor} set a new password for user {vm}."),
            "UserDeleted" => format!("{actor} deleted user {vm}."),
            "RoleCreated" => format!("{actor} added role {vm}."),
            "RoleChanged" => format!("{actor} changed role {vm}: {data}."),
            "RoleDeleted" => format!("{actor} deleted role {vm}."),
            "ConfigChanged" => format!("{actor} changed the configuration: {}.", data["changes"]),
            "ImageImportRequested" => format!(
                "{actor} asked to import image {vm} from {}.",
                data["url"].as_str().unwrap_or("a URL")
            ),
            "ImageImportProgressed" => {
                format!("The import of image {vm} has {} bytes.", data["bytesDone"])
            }
            "ImageImported" => format!("Image {vm} was imported."),
            "ImageImportFailed" => format!("The import of image {vm} failed: {reason}"),
            "ImageImportCancelled" => format!("{actor} cancelled the import of image {vm}."),
            "ImageUploaded" => format!("{actor} uploaded image {vm}."),
            "ImageDeleted" => format!("{actor} deleted image {vm}."),
            other => format!("{other} happened to {vm}."),
        }
    }
}

fn select(filter: &EventFilter, bound: Bound) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(format!(
        "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                e.event_version AS version, e.payload, e.metadata, e.recorded_at,
                {LEVEL_SQL} AS level
         FROM events e WHERE {}",
        stream_types(filter)
    ));
    where_clauses(&mut q, filter, bound);
    q
}

/// Which streams a filter reads.
fn stream_types(filter: &EventFilter) -> &'static str {
    if filter.vm_id.is_some() || filter.owner_id.is_some() {
        return "e.aggregate_type = 'vm'";
    }
    if let Some(kind) = filter.stream_type {
        return kind.condition();
    }
    if filter.accounts && filter.vm_id.is_none() && filter.owner_id.is_none() {
        "(e.aggregate_type IN ('vm', 'user', 'role', 'config', 'webhook', 'image')) IS TRUE"
    } else {
        StreamType::Vm.condition()
    }
}

fn where_clauses(q: &mut QueryBuilder<'static, Postgres>, f: &EventFilter, bound: Bound) {
    visible::push_below(q, bound);
    if let Some(owner) = &f.owner_id {
        q.push(" AND e.aggregate_id IN (SELECT id FROM vms WHERE owner_id = ")
            .push_bind(owner.clone())
            .push(")");
    }
    if let Some(vm) = &f.vm_id {
        q.push(" AND e.aggregate_id = ").push_bind(vm.clone());
    }
    if !f.types.is_empty() {
        q.push(" AND e.event_type = ANY(")
            .push_bind(f.types.clone())
            .push(")");
    }
    if let Some(actor) = &f.actor {
        q.push(" AND (e.metadata ->> 'actor_id' = ")
            .push_bind(actor.clone())
            .push(" OR e.metadata ->> 'actor_name' = ")
            .push_bind(actor.clone())
            .push(")");
    }
    if let Some(job) = &f.job_id {
        q.push(" AND e.metadata ->> 'job_id' = ")
            .push_bind(job.clone());
    }
    if let Some(from) = f.from {
        q.push(" AND e.recorded_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        q.push(" AND e.recorded_at < ").push_bind(to);
    }
    if let Some(after) = f.after {
        q.push(" AND e.position > ").push_bind(after);
    }
    if let Some(before) = f.before {
        q.push(" AND e.position < ").push_bind(before);
    }
    if let Some(after) = f.after_sequence {
        q.push(" AND e.sequence > ").push_bind(after);
    }
    if let Some(level) = f.min_level {
        let levels: Vec<String> = [Level::Info, Level::Warn, Level::Error]
            .into_iter()
            .filter(|l| *l >= level)
            .map(|l| json!(l).as_str().unwrap_or_default().to_string())
            .collect();
        q.push(format!(" AND ({LEVEL_SQL}) = ANY("))
            .push_bind(levels)
            .push(")");
    }
}

/// Up to `limit` events after the filter's cursor, oldest first.
pub async fn page(
    pool: &PgPool,
    filter: &EventFilter,
    limit: u32,
) -> Result<Vec<AuditRow>, StoreError> {
    let bound = visible::bound(pool).await?;
    Ok(page_query(filter, bound, limit)
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

fn page_query(filter: &EventFilter, bound: Bound, limit: u32) -> QueryBuilder<'static, Postgres> {
    let mut q = select(filter, bound);
    q.push(" ORDER BY e.position LIMIT ")
        .push_bind(i64::from(limit));
    q
}

/// The statement [`page`] sends for `filter`, as PostgreSQL receives it. Its parameters are the
/// bound, then the filter's values in the order `where_clauses` adds them, then the limit.
pub fn page_sql(filter: &EventFilter) -> String {
    page_query(filter, Bound::for_text(), 0).sql().to_string()
}

/// A page by offset, newest first, and the total: the `/logs` view for people.
pub async fn page_by_offset(
    pool: &PgPool,
    filter: &EventFilter,
    page: u32,
    limit: u32,
) -> Result<(Vec<AuditRow>, i64), StoreError> {
    let bound = visible::bound(pool).await?;
    let mut q = select(filter, bound);
    q.push(" ORDER BY e.position DESC LIMIT ")
        .push_bind(i64::from(limit))
        .push(" OFFSET ")
        .push_bind(i64::from(page.saturating_sub(1)) * i64::from(limit));
    let rows = q.build_query_as().fetch_all(pool).await?;
    let mut count = QueryBuilder::new(format!(
        "SELECT count(*) FROM events e WHERE {}",
        stream_types(filter)
    ));
    where_clauses(&mut count, filter, bound);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    Ok((rows, total))
}

/// Every matching event, oldest first, as a stream that holds one connection and only the rows
/// in flight: an export of any size runs in bounded memory.
pub fn stream<'c>(
    conn: &'c mut PgConnection,
    query: &'c mut QueryBuilder<'static, Postgres>,
) -> impl Stream<Item = Result<AuditRow, StoreError>> + 'c {
    query
        .build_query_as::<AuditRow>()
        .fetch(conn)
        .map(|r| r.map_err(StoreError::from))
}

/// The ordered query `stream` runs, below `bound` (from [`visible::bound`]).
pub fn export_query(filter: &EventFilter, bound: Bound) -> QueryBuilder<'static, Postgres> {
    let mut q = select(filter, bound);
    q.push(" ORDER BY e.position");
    q
}

/// The sequence a VM's stream had reached at `at` (the last event recorded at or before it).
pub async fn sequence_at(
    pool: &PgPool,
    vm_id: &str,
    at: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT max(sequence) FROM events
         WHERE aggregate_type = 'vm' AND aggregate_id = $1 AND recorded_at <= $2",
    )
    .bind(vm_id)
    .bind(at)
    .fetch_one(pool)
    .await?)
}

/// The last sequence in a VM's stream (0 when it has none).
pub async fn latest_sequence(pool: &PgPool, vm_id: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(max(sequence), 0) FROM events
         WHERE aggregate_type = 'vm' AND aggregate_id = $1",
    )
    .bind(vm_id)
    .fetch_one(pool)
    .await?)
}

/// When a VM's event `sequence` and its first event were recorded.
pub async fn recorded_at(
    pool: &PgPool,
    vm_id: &str,
    sequence: i64,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT (SELECT recorded_at FROM events
                 WHERE aggregate_type = 'vm' AND aggregate_id = $1 AND sequence = 1),
                recorded_at
         FROM events WHERE aggregate_type = 'vm' AND aggregate_id = $1 AND sequence = $2",
    )
    .bind(vm_id)
    .bind(sequence)
    .fetch_optional(pool)
    .await?)
}
