//! Appends events to the streams that are not VMs (users, roles, the configuration, webhooks,
//! images):
//! their commands are decided in memory against a locked read-model row, and their events are
//! written here inside the caller's transaction, with who acted in the metadata.

use serde::Serialize;
use sqlx::PgConnection;

use super::metadata::EventMetadata;
use super::{CommandMeta, StoreError};

/// The kinds of stream written here.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    User,
    Role,
    Config,
    Webhook,
    Image,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::User => "user",
            Stream::Role => "role",
            Stream::Config => "config",
            Stream::Webhook => "webhook",
            Stream::Image => "image",
        }
    }
}

/// An event as stored: its type, version and externally tagged payload.
pub struct Stored {
    type_name: &'static str,
    version: &'static str,
    payload: serde_json::Value,
}

pub fn stored<E: Serialize>(
    type_name: &'static str,
    version: &'static str,
    event: &E,
) -> Result<Stored, StoreError> {
    let payload = serde_json::to_value(event).map_err(|e| {
        StoreError::Unexpected(anyhow::Error::new(e).context("an event could not be serialised"))
    })?;
    Ok(Stored {
        type_name,
        version,
        payload,
    })
}

fn metadata(meta: &CommandMeta) -> EventMetadata {
    EventMetadata {
        actor_id: Some(meta.actor_id.clone()),
        actor_name: Some(meta.actor_name.clone()),
        via: Some(meta.via),
        request_id: meta.request_id.clone(),
        client_addr: meta.client_addr.clone(),
        ..EventMetadata::default()
    }
}

/// The job a non-VM event opens, closes or concerns, for the `jobs` trigger (which reads these
/// metadata keys by name; a VM's job rows are written by `super::record` instead).
#[derive(Debug, Clone)]
pub enum JobMark<'a> {
    Opens {
        job_id: &'a str,
        kind: super::jobs::JobKind,
    },
    Closes {
        job_id: &'a str,
        outcome: crate::vm::JobOutcome,
        error: Option<&'a str>,
    },
    Concerns {
        job_id: &'a str,
    },
}

/// Appends `events` to a stream whose last sequence is `version`.
pub async fn append(
    conn: &mut PgConnection,
    stream: Stream,
    id: &str,
    version: i64,
    events: &[Stored],
    meta: &CommandMeta,
) -> Result<i64, StoreError> {
    append_for_job(conn, stream, id, version, events, meta, None).await
}

/// [`append`], recording that the events open, close or concern a job.
pub async fn append_for_job(
    conn: &mut PgConnection,
    stream: Stream,
    id: &str,
    version: i64,
    events: &[Stored],
    meta: &CommandMeta,
    job: Option<JobMark<'_>>,
) -> Result<i64, StoreError> {
    let mut metadata = serde_json::to_value(metadata(meta)).map_err(|e| {
        StoreError::Unexpected(anyhow::Error::new(e).context("metadata could not be serialised"))
    })?;
    if let (Some(job), Some(map)) = (job, metadata.as_object_mut()) {
        use serde_json::Value;
        match job {
            JobMark::Opens { job_id, kind } => {
                map.insert("job_id".into(), Value::from(job_id));
                map.insert("job_kind".into(), Value::from(kind.as_str()));
            }
            JobMark::Closes {
                job_id,
                outcome,
                error,
            } => {
                map.insert("job_id".into(), Value::from(job_id));
                map.insert("job_outcome".into(), Value::from(outcome.as_str()));
                if let Some(error) = error {
                    map.insert("job_error".into(), Value::from(error));
                }
            }
            JobMark::Concerns { job_id } => {
                map.insert("job_id".into(), Value::from(job_id));
            }
        }
    }
    let mut sequence = version;
    for event in events {
        sequence += 1;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(stream.as_str())
        .bind(id)
        .bind(sequence)
        .bind(event.type_name)
        .bind(event.version)
        .bind(&event.payload)
        .bind(&metadata)
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => e.into(),
        })?;
    }
    Ok(sequence)
}
