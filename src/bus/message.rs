//! What an event looks like on NATS and inside the process: the audit log's JSON entry
//! (`GET /events`) plus the VM's owner, the status the event left the VM in, and the job change
//! it made. The relay writes it; the hub and the WebSocket replay read it back, so a frame is the
//! same whether it came live or from the log.

use std::sync::{Arc, OnceLock};

use bytestring::ByteString;

use serde_json::{json, Value};

use crate::store::feed::FeedRow;
use crate::store::jobs::JobStatus;
use crate::store::EventMetadata;
use crate::vm::{JobOutcome, Operation, VmStatus};

/// A job was queued or ended by an event.
#[derive(Debug, Clone, PartialEq)]
pub struct JobChange {
    pub job_id: String,
    /// `Queued`, or the outcome: `Succeeded`, `Failed`, `Cancelled`.
    pub status: JobStatus,
    /// Set when the event queued the job.
    pub kind: Option<Operation>,
    pub error: Option<String>,
}

impl JobChange {
    fn from_metadata(m: &EventMetadata) -> Option<JobChange> {
        let job_id = m.job_id.clone()?;
        if let Some(kind) = m.job_kind {
            return Some(JobChange {
                job_id,
                status: JobStatus::Queued,
                kind: Some(kind),
                error: None,
            });
        }
        m.job_outcome.map(|outcome| JobChange {
            job_id,
            status: ended(outcome),
            kind: None,
            error: m.job_error.clone(),
        })
    }

    pub fn to_json(&self, vm_id: &str, position: i64) -> Value {
        json!({
            "position": position,
            "jobId": self.job_id,
            "vmId": vm_id,
            "kind": self.kind.map(Operation::as_str),
            "status": self.status.as_str(),
            "error": self.error,
        })
    }
}

/// The job status an outcome leaves.
fn ended(outcome: JobOutcome) -> JobStatus {
    match outcome {
        JobOutcome::Succeeded => JobStatus::Succeeded,
        JobOutcome::Failed => JobStatus::Failed,
        JobOutcome::Cancelled => JobStatus::Cancelled,
    }
}

/// One committed event, as the feed carries it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub position: i64,
    pub vm_id: String,
    pub owner_id: Option<String>,
    pub event_type: String,
    pub status: Option<VmStatus>,
    pub job: Option<JobChange>,
    /// The wire JSON (shared: one event goes to many connections).
    pub body: Arc<Value>,
    /// The WebSocket frames made from this event, shared by every connection it goes to.
    pub frames: Arc<FrameCache>,
}

/// Frames rendered once per event rather than once per connection: with 1,000 subscribers an
/// event is serialised once. What goes in is decided where frames are made (`ws::protocol`).
#[derive(Debug, Default)]
pub struct FrameCache {
    pub status: OnceLock<ByteString>,
    pub job: OnceLock<Option<ByteString>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the message is not a VoidVM event: {0}")]
pub struct NotAnEvent(&'static str);

impl FeedEvent {
    pub fn from_row(row: &FeedRow) -> FeedEvent {
        let mut body = row.row.to_json();
        let job = JobChange::from_metadata(&row.row.metadata);
        let status = row.row.metadata.status;
        body["owner"] = json!(row.owner_id);
        body["status"] = json!(status.map(VmStatus::as_str));
        body["job"] = match &job {
            Some(j) => json!({
                "id": j.job_id,
                "kind": j.kind.map(Operation::as_str),
                "status": j.status.as_str(),
                "error": j.error,
            }),
            None => Value::Null,
        };
        FeedEvent {
            position: row.row.position,
            vm_id: row.row.aggregate_id.clone(),
            owner_id: row.owner_id.clone(),
            event_type: row.row.event_type.clone(),
            status,
            job,
            body: Arc::new(body),
            frames: Arc::default(),
        }
    }

    /// Reads back what `to_bytes` wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<FeedEvent, NotAnEvent> {
        let body: Value = serde_json::from_slice(bytes).map_err(|_| NotAnEvent("not JSON"))?;
        let text = |k: &str| body[k].as_str().map(str::to_string);
        let position = body["position"].as_i64().ok_or(NotAnEvent("no position"))?;
        let vm_id = text("vmId").ok_or(NotAnEvent("no vmId"))?;
        let event_type = text("type").ok_or(NotAnEvent("no type"))?;
        let job = match &body["job"] {
            Value::Object(j) => Some(JobChange {
                job_id: j
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or(NotAnEvent("a job without id"))?
                    .to_string(),
                status: j
                    .get("status")
                    .and_then(Value::as_str)
                    .ok_or(NotAnEvent("a job without status"))
                    .and_then(|s| {
                        JobStatus::try_from(s.to_string())
                            .map_err(|_| NotAnEvent("a job with an unknown status"))
                    })?,
                kind: match j.get("kind").and_then(Value::as_str) {
                    Some(kind) => {
                        Some(Operation::parse(kind).ok_or(NotAnEvent("a job of an unknown kind"))?)
                    }
                    None => None,
                },
                error: j.get("error").and_then(Value::as_str).map(str::to_string),
            }),
            _ => None,
        };
        Ok(FeedEvent {
            position,
            owner_id: text("owner"),
            status: body["status"].as_str().and_then(VmStatus::parse),
            vm_id,
            event_type,
            job,
            body: Arc::new(body),
            frames: Arc::default(),
        })
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(self.body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::AuditRow;

    fn row(metadata: Value) -> FeedRow {
        FeedRow {
            row: AuditRow {
                position: 42,
                aggregate_type: "vm".into(),
                aggregate_id: "vm-1".into(),
                sequence: 3,
                event_type: "StartRequested".into(),
                version: "1".into(),
                payload: json!({"StartRequested": {"jobId": "job-1"}}),
                metadata: serde_json::from_value(metadata).expect("stored metadata reads"),
                recorded_at: chrono::Utc::now(),
                level: "info".into(),
            },
            owner_id: Some("user-1".into()),
        }
    }

    #[test]
    fn an_event_survives_the_wire() {
        let sent = FeedEvent::from_row(&row(json!({
            "actor_id": "user-1", "actor_name": "ann", "via": "rest",
            "job_id": "job-1", "job_kind": "start", "status": "starting", "owner_id": "user-1"
        })));
        let got = FeedEvent::from_bytes(&sent.to_bytes()).expect("an event");
        assert_eq!(got.position, 42);
        assert_eq!(got.vm_id, "vm-1");
        assert_eq!(got.owner_id.as_deref(), Some("user-1"));
        assert_eq!(got.status, Some(VmStatus::Starting));
        assert_eq!(got.job, sent.job);
        assert_eq!(got.job.map(|j| j.status), Some(JobStatus::Queued));
        assert_eq!(*got.body, *sent.body);
        assert_eq!(
            sent.body["job"],
            json!({"id": "job-1", "kind": "start", "status": "queued", "error": null})
        );
        assert_eq!(sent.body["status"], "starting");
    }

    #[test]
    fn an_outcome_closes_its_job() {
        let e = FeedEvent::from_row(&row(json!({
            "job_id": "job-1", "job_outcome": "failed", "job_error": "no disk"
        })));
        let job = e.job.expect("a job change");
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.error.as_deref(), Some("no disk"));
    }

    #[test]
    fn an_event_without_a_job_has_no_job_change() {
        let e = FeedEvent::from_row(&row(json!({"actor_id": "u"})));
        assert!(e.job.is_none());
        assert_eq!(e.body["job"], Value::Null);
    }

    #[test]
    fn a_foreign_message_is_refused() {
        assert!(FeedEvent::from_bytes(b"{\"hello\":1}").is_err());
        let unknown_job = json!({
            "position": 1, "vmId": "vm-1", "type": "VmStarted",
            "job": {"id": "job-1", "status": "exploded"}
        });
        assert!(FeedEvent::from_bytes(unknown_job.to_string().as_bytes()).is_err());
        assert!(FeedEvent::from_bytes(b"nope").is_err());
    }
}
