//! Which event log a NATS stream carries, so that a node never mistakes another log's stream, or
//! a stream ahead of its own log, for its own and silently skips positions it never published.
//!
//! The stream's description names the log (`VoidVM event log <id>`, the id made once by migration
//! 0009) and every message carries a `Voidvm-Log` header. Before the relay publishes and before
//! the hub follows, the node checks the stream:
//! - labelled with another log: another database publishes there under the same stream name;
//! - its last event is not this log's event at that position: the database was restored from a
//!   backup (the stream is ahead of the log), or the log moved on differently since.
//!
//! Either way the node refuses to relay or follow until an operator acts: one ERROR line names the
//! stream, both logs and positions; `/ready` answers 503 with the same sentence; and
//! `voidvm stream reset` deletes the stream, after which the relay republishes this log from
//! position 1. A stream from before log ids (no label) is adopted when it is empty or its last
//! event is this log's.

use std::sync::Mutex;

use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use serde_json::Value;
use sqlx::PgPool;

use super::subjects::{LOG_HEADER, POSITION_HEADER};
use super::{Bus, BusError};
use crate::store::audit::AuditRow;
use crate::store::log_identity::{self, LogId};
use crate::store::{feed, StoreError};

const LABEL: &str = "VoidVM event log ";

/// The stream description naming `log`.
pub fn label(log: LogId) -> String {
    format!("{LABEL}{log}: committed VM events and job changes")
}

/// The log a stream description names, if it names one.
fn labelled(description: Option<&str>) -> Option<LogId> {
    let rest = description?.strip_prefix(LABEL)?;
    rest.split(':').next()?.trim().parse().ok()
}

/// Why this node does not relay to (or follow) its configured stream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamConflict {
    #[error(
        "NATS stream {stream} carries event log {} (last position {}), not this database's log \
         {ours} (last position {our_position}); nothing is relayed until an operator acts: stop \
         the other server and run `voidvm stream reset`, or give this one its own stream and \
         prefix (VOIDVM_NATS__STREAM, VOIDVM_NATS__PREFIX)",
        theirs.map_or_else(|| "(unlabelled)".to_string(), |l| l.to_string()),
        their_position.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    Foreign {
        stream: String,
        theirs: Option<LogId>,
        their_position: Option<i64>,
        ours: LogId,
        our_position: i64,
    },
    #[error(
        "NATS stream {stream} of event log {log} holds position {stream_position}, which this \
         database's log does not have (its last position is {log_position}): the database was \
         restored from a backup? Nothing is relayed until an operator runs `voidvm stream reset` \
         (the stream is deleted and the log republished from its first position)"
    )]
    Missing {
        stream: String,
        log: LogId,
        stream_position: i64,
        log_position: i64,
    },
    #[error(
        "NATS stream {stream} of event log {log} holds at position {position} another event \
         ({theirs}) than the log ({ours}): the database was restored from a backup and has moved \
         on since. Nothing is relayed until an operator runs `voidvm stream reset` (the stream \
         is deleted and the log republished from its first position)"
    )]
    Diverged {
        stream: String,
        log: LogId,
        position: i64,
        theirs: String,
        ours: String,
    },
}

impl StreamConflict {
    /// The same problem, whatever the positions now.
    fn same_kind(&self, other: &StreamConflict) -> bool {
        match (self, other) {
            (
                StreamConflict::Foreign { theirs: a, .. },
                StreamConflict::Foreign { theirs: b, .. },
            ) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Conflict(#[from] StreamConflict),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the event log could not be read")]
    Store(#[from] StoreError),
    #[error("NATS did not answer about stream {stream}")]
    Nats {
        stream: String,
        #[source]
        source: async_nats::Error,
    },
}

/// What `voidvm stream reset` did.
#[derive(Debug)]
pub enum Reset {
    /// The stream carries this log: nothing was deleted.
    NothingToDo,
    /// The stream was deleted for this reason.
    Deleted(StreamConflict),
}

/// The stream's last message, as far as the check needs it.
struct LastMessage {
    position: Option<i64>,
    log: Option<LogId>,
    is_job: bool,
    body: Value,
}

/// Checks the configured stream for this node's log and remembers the verdict for `/ready`.
pub struct StreamOwner {
    bus: Bus,
    pool: PgPool,
    conflict: Mutex<Option<StreamConflict>>,
}

impl StreamOwner {
    pub fn new(bus: Bus, pool: PgPool) -> StreamOwner {
        StreamOwner {
            bus,
            pool,
            conflict: Mutex::new(None),
        }
    }

    /// For the `voidvm stream` command: this database's log and the configured stream.
    pub async fn connect(settings: &crate::config::Settings) -> anyhow::Result<StreamOwner> {
        use anyhow::Context as _;
        let pool = PgPool::connect(&settings.database_url)
            .await
            .context("PostgreSQL refused the connection")?;
        let log = log_identity::load(&pool)
            .await
            .context("the event log's id could not be read (has the server run once?)")?;
        let bus = Bus::connect(settings, log).await?;
        Ok(StreamOwner::new(bus, pool))
    }

    /// The conflict the last check found, if any.
    pub fn conflict(&self) -> Option<StreamConflict> {
        self.lock().clone()
    }

    /// The stream, when it carries this log (creating it, labelled, when it does not exist).
    /// A conflict is logged once, when it is first seen, and again once it is resolved.
    pub async fn check(&self) -> Result<stream::Stream, CheckError> {
        let outcome = self.inspect().await;
        match &outcome {
            Ok(_) => self.record(None),
            Err(CheckError::Conflict(c)) => self.record(Some(c.clone())),
            Err(_) => {}
        }
        outcome
    }

    /// Deletes the stream if it does not carry this log (the operator's `voidvm stream reset`).
    pub async fn reset(&self) -> Result<Reset, CheckError> {
        match self.inspect().await {
            Ok(_) => Ok(Reset::NothingToDo),
            Err(CheckError::Conflict(conflict)) => {
                self.bus
                    .jetstream
                    .delete_stream(&self.bus.stream)
                    .await
                    .map_err(|e| self.nats(e))?;
                Ok(Reset::Deleted(conflict))
            }
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StreamConflict>> {
        self.conflict.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the latest verdict (for `/ready`); logs only a new kind of conflict, not the same
    /// one with positions that moved on, and the end of one.
    fn record(&self, now: Option<StreamConflict>) {
        let mut was = self.lock();
        match (&*was, &now) {
            (Some(before), Some(conflict)) if before.same_kind(conflict) => {}
            (_, Some(conflict)) => tracing::error!(stream = %self.bus.stream, "{conflict}"),
            (Some(_), None) => tracing::info!(
                stream = %self.bus.stream,
                log = %self.bus.log,
                "the stream carries this event log now; relaying resumes"
            ),
            (None, None) => {}
        }
        *was = now;
    }

    fn nats(&self, e: impl Into<async_nats::Error>) -> CheckError {
        CheckError::Nats {
            stream: self.bus.stream.clone(),
            source: e.into(),
        }
    }

    async fn inspect(&self) -> Result<stream::Stream, CheckError> {
        let ours = self.bus.log;
        let mut stream = self.bus.ensure_stream().await?;
        let info = stream.info().await.map_err(|e| self.nats(e))?.clone();
        let last = self.last_message(&stream, info.state.last_sequence).await?;
        let foreign = |theirs: Option<LogId>, last: &Option<LastMessage>, our_position| {
            StreamConflict::Foreign {
                stream: self.bus.stream.clone(),
                theirs,
                their_position: last.as_ref().and_then(|m| m.position),
                ours,
                our_position,
            }
        };
        match labelled(info.config.description.as_deref()) {
            Some(theirs) if theirs != ours => {
                let head = feed::head(&self.pool).await?;
                Err(foreign(Some(theirs), &last, head).into())
            }
            Some(_) => {
                self.verify(&last).await?;
                Ok(stream)
            }
            None if info.state.messages == 0 => self.adopt(stream, info.config).await,
            None => match self.verify(&last).await {
                Ok(()) => self.adopt(stream, info.config).await,
                Err(CheckError::Conflict(_)) => {
                    let head = feed::head(&self.pool).await?;
                    Err(foreign(None, &last, head).into())
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Labels a stream from before log ids with this log.
    async fn adopt(
        &self,
        mut stream: stream::Stream,
        mut config: stream::Config,
    ) -> Result<stream::Stream, CheckError> {
        config.description = Some(label(self.bus.log));
        self.bus
            .jetstream
            .update_stream(&config)
            .await
            .map_err(|e| self.nats(e))?;
        stream.info().await.map_err(|e| self.nats(e))?;
        tracing::info!(stream = %self.bus.stream, log = %self.bus.log, "the stream holds this event log; it is labelled with it now");
        Ok(stream)
    }

    async fn last_message(
        &self,
        stream: &stream::Stream,
        sequence: u64,
    ) -> Result<Option<LastMessage>, CheckError> {
        if sequence == 0 {
            return Ok(None);
        }
        let message = match stream.get_raw_message(sequence).await {
            Ok(m) => m,
            // Aged out: nothing left to compare.
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(self.nats(e)),
        };
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
        Ok(Some(LastMessage {
            position: header(POSITION_HEADER).and_then(|p| p.parse().ok()),
            log: header(LOG_HEADER).and_then(|l| l.parse().ok()),
            is_job: message
                .subject
                .as_str()
                .starts_with(&self.bus.subjects.all_jobs().replace('>', "")),
            body: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
        }))
    }

    /// Is the stream's last message this log's (the same event at the same position)?
    async fn verify(&self, last: &Option<LastMessage>) -> Result<(), CheckError> {
        let Some(last) = last else { return Ok(()) };
        let ours = self.bus.log;
        if let Some(theirs) = last.log.filter(|l| *l != ours) {
            let head = feed::head(&self.pool).await?;
            return Err(StreamConflict::Foreign {
                stream: self.bus.stream.clone(),
                theirs: Some(theirs),
                their_position: last.position,
                ours,
                our_position: head,
            }
            .into());
        }
        let Some(position) = last.position else {
            return Ok(());
        };
        let Some(row) = log_identity::event_at(&self.pool, position).await? else {
            return Err(StreamConflict::Missing {
                stream: self.bus.stream.clone(),
                log: ours,
                stream_position: position,
                log_position: feed::head(&self.pool).await?,
            }
            .into());
        };
        if same_event(last, &row) {
            return Ok(());
        }
        Err(StreamConflict::Diverged {
            stream: self.bus.stream.clone(),
            log: ours,
            position,
            theirs: describe_message(&last.body),
            ours: describe_row(&row),
        }
        .into())
    }
}

/// The stream's message and the log's row are the same event (or its job message).
fn same_event(message: &LastMessage, row: &AuditRow) -> bool {
    let body = &message.body;
    if subject(message) != Some(row.aggregate_id.as_str()) {
        return false;
    }
    if message.is_job {
        return row
            .metadata
            .job_id
            .as_deref()
            .is_some_and(|job_id| body["jobId"].as_str() == Some(job_id));
    }
    body["sequence"].as_i64() == Some(row.sequence)
        && body["type"].as_str() == Some(row.event_type.as_str())
        && serde_json::to_value(row.recorded_at).is_ok_and(|at| body["recordedAt"] == at)
}

/// The stream a message is about: an event names it as `streamId` (a VM's id or an image's
/// name), a job message as `vmId` or, for an image import, `image`.
fn subject(message: &LastMessage) -> Option<&str> {
    let body = &message.body;
    let named = |key: &str| body[key].as_str();
    if message.is_job {
        named("vmId").or_else(|| named("image"))
    } else {
        named("streamId").or_else(|| named("vmId"))
    }
}

fn describe_message(body: &Value) -> String {
    let subject = ["streamId", "vmId", "image"]
        .iter()
        .map(|key| &body[*key])
        .find(|v| v.is_string())
        .unwrap_or(&Value::Null);
    match body["type"].as_str() {
        Some(kind) => format!(
            "{kind} #{} of {subject} at {}",
            body["sequence"], body["recordedAt"]
        ),
        None => format!("job message of {subject} for job {}", body["jobId"]),
    }
}

fn describe_row(row: &AuditRow) -> String {
    format!(
        "{} #{} of \"{}\" at {}",
        row.event_type,
        row.sequence,
        row.aggregate_id,
        serde_json::to_value(row.recorded_at).unwrap_or(Value::Null)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventMetadata;

    #[test]
    fn a_conflict_whose_positions_moved_on_is_the_same_one() {
        let ahead = |log_position| StreamConflict::Missing {
            stream: "VOIDVM".into(),
            log: LogId::new(uuid::Uuid::nil()),
            stream_position: 9,
            log_position,
        };
        assert!(ahead(2).same_kind(&ahead(3)));
        let diverged = StreamConflict::Diverged {
            stream: "VOIDVM".into(),
            log: LogId::new(uuid::Uuid::nil()),
            position: 9,
            theirs: "a".into(),
            ours: "b".into(),
        };
        assert!(!ahead(2).same_kind(&diverged));
    }

    #[test]
    fn a_label_names_its_log() {
        let log = LogId::new(uuid::Uuid::new_v4());
        assert_eq!(labelled(Some(&label(log))), Some(log));
        assert_eq!(
            labelled(Some("VoidVM: committed VM events and job changes")),
            None
        );
        assert_eq!(labelled(None), None);
    }

    fn row() -> AuditRow {
        AuditRow {
            position: 5,
            aggregate_type: "vm".into(),
            aggregate_id: "vm-1".into(),
            sequence: 3,
            event_type: "VmStarted".into(),
            version: "1".into(),
            payload: serde_json::json!({"VmStarted": {}}),
            metadata: EventMetadata {
                job_id: Some("job-1".into()),
                ..EventMetadata::default()
            },
            recorded_at: chrono::Utc::now(),
            level: "info".into(),
        }
    }

    fn message(is_job: bool, body: Value) -> LastMessage {
        LastMessage {
            position: Some(5),
            log: None,
            is_job,
            body,
        }
    }

    #[test]
    fn the_same_event_matches_and_another_at_the_same_position_does_not() {
        let row = row();
        let mut body = row.to_json();
        assert!(same_event(&message(false, body.clone()), &row));
        // A restored log reuses the position for an event recorded later.
        body["recordedAt"] = serde_json::json!("2020-01-01T00:00:00Z");
        assert!(!same_event(&message(false, body), &row));
        let other_vm = serde_json::json!({"vmId": "vm-2", "sequence": 3, "type": "VmStarted"});
        assert!(!same_event(&message(false, other_vm), &row));
    }

    #[test]
    fn an_image_event_and_its_import_job_match_by_the_images_name() {
        let mut row = row();
        row.aggregate_type = "image".into();
        row.aggregate_id = "debian".into();
        row.event_type = "ImageUploaded".into();
        let body = row.to_json();
        assert!(body["vmId"].is_null(), "{body}");
        assert!(same_event(&message(false, body), &row));
        let job = serde_json::json!({"position": 5, "jobId": "job-1", "image": "debian"});
        assert!(same_event(&message(true, job), &row));
        let other = serde_json::json!({"position": 5, "jobId": "job-1", "image": "ubuntu"});
        assert!(!same_event(&message(true, other), &row));
    }

    #[test]
    fn a_job_message_matches_its_events_job() {
        let row = row();
        let job = serde_json::json!({"position": 5, "jobId": "job-1", "vmId": "vm-1"});
        assert!(same_event(&message(true, job), &row));
        let other = serde_json::json!({"position": 5, "jobId": "job-2", "vmId": "vm-1"});
        assert!(!same_event(&message(true, other), &row));
    }

    #[test]
    fn a_conflict_names_the_stream_both_logs_and_positions() {
        let ours = LogId::new(uuid::Uuid::new_v4());
        let theirs = LogId::new(uuid::Uuid::new_v4());
        let text = StreamConflict::Foreign {
            stream: "VOIDVM".into(),
            theirs: Some(theirs),
            their_position: Some(42),
            ours,
            our_position: 7,
        }
        .to_string();
        for part in [
            "VOIDVM".to_string(),
            theirs.to_string(),
            ours.to_string(),
            "last position 42".into(),
            "last position 7".into(),
            "voidvm stream reset".into(),
        ] {
            assert!(text.contains(&part), "{part} missing from: {text}");
        }
    }
}
